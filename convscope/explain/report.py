"""Report sections and the single self-contained report.html they become (images as base64 PNG).

A Section is one step of the story (the input, one layer, the training curves, ...): a title, a
paragraph, and figures already rendered to PNG bytes. `write_report` writes every figure as its own
PNG file beside report.html, and the HTML embeds the same bytes, so the page needs nothing else.
"""

import base64
import html
import os
from dataclasses import dataclass, field

from convscope.explain.figures import count_panels, figure_png, save_png

REPORT_NAME = "report.html"


@dataclass
class Picture:
    name: str  # file stem, e.g. "conv2d-feature-maps"
    caption: str
    png: bytes
    panels: int = 0  # map panels counted in the figure (channels, kernels, ...), 0 for charts


@dataclass
class Section:
    anchor: str  # HTML id, also the chip in the pipeline strip
    kind: str  # "photo", "input", "conv", "relu", "pool", "flatten", "dense", "softmax", "training", ...
    title: str
    text: str
    pictures: list = field(default_factory=list)

    def add(self, name: str, caption: str, fig) -> "Section":
        """Render a matplotlib figure to PNG and keep it in this section, with its panel count."""
        self.pictures.append(Picture(name, caption, figure_png(fig), count_panels(fig)))
        return self


COLOUR_SCALES = (
    ("input pixels", "linear-gradient(90deg, #000, #fff)", "0 (black) to 1 (white), the model's input range"),
    (
        "never negative (after ReLU or pooling)",
        "linear-gradient(90deg, #000004, #51127c, #b73779, #fc8961, #fcfdbf)",
        "magma, 0 (black) to the largest value in that block; one scale for all its panels",
    ),
    (
        "can be negative (conv before ReLU, kernels, dense)",
        "linear-gradient(90deg, #053061, #4393c3, #f7f7f7, #d6604d, #67001f)",
        "RdBu_r, blue negative, white 0, red positive, symmetric around 0; one scale per figure",
    ),
)

STYLE = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; color: #222; background: #fafafa;
       max-width: 1180px; margin: 0 auto; padding: 24px 28px 80px; line-height: 1.5; }
h1 { font-size: 1.9em; margin-bottom: 0.2em; }
h2 { font-size: 1.3em; margin: 0 0 0.3em; }
.lead { color: #555; margin-top: 0; }
nav.pipeline { display: flex; flex-wrap: wrap; align-items: center; gap: 4px; margin: 18px 0; }
nav.pipeline a { text-decoration: none; color: #222; padding: 3px 10px; border-radius: 12px;
                 font-size: 0.85em; border: 1px solid #ccc; background: #fff; }
nav.pipeline span { color: #999; }
section { background: #fff; border-left: 6px solid #bbb; border-radius: 4px; margin: 22px 0;
          padding: 16px 20px; box-shadow: 0 1px 3px rgba(0,0,0,0.08); }
section p { max-width: 900px; }
figure { margin: 12px 0 4px; }
figure img { max-width: 100%; height: auto; }
figcaption { color: #666; font-size: 0.88em; }
.scales { display: grid; grid-template-columns: max-content 160px 1fr; gap: 6px 14px; align-items: center;
          font-size: 0.88em; }
.swatch { height: 14px; border: 1px solid #aaa; }
.kind-photo { border-color: #8e44ad; } .kind-input { border-color: #555; }
.kind-conv { border-color: #c0392b; } .kind-relu { border-color: #e67e22; }
.kind-pool { border-color: #27ae60; }
.kind-flatten { border-color: #16a085; } .kind-dense { border-color: #2980b9; }
.kind-softmax { border-color: #d35400; } .kind-training, .kind-evaluation { border-color: #7f8c8d; }
.kind-why { border-color: #f1c40f; } .kind-health { border-color: #2c3e50; }
.kind-growth { border-color: #1abc9c; }
"""


def _picture_html(picture: Picture, file_name: str) -> str:
    data = base64.b64encode(picture.png).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(picture.caption)}">'
        f"<figcaption>{html.escape(picture.caption)} ({html.escape(file_name)})</figcaption></figure>"
    )


def _scales_html() -> str:
    rows = "".join(
        f'<div>{html.escape(name)}</div><div class="swatch" style="background: {gradient}"></div>'
        f"<div>{html.escape(text)}</div>"
        for name, gradient, text in COLOUR_SCALES
    )
    heading = "<h2>How to read the colours</h2>"
    return f'<section class="kind-input">{heading}<div class="scales">{rows}</div></section>'


def picture_file_names(sections) -> list:
    """The PNG file name of every picture, section by section: '03-conv2d-feature-maps.png'."""
    return [
        [f"{number:02d}-{picture.name}.png" for picture in section.pictures]
        for number, section in enumerate(sections)
    ]


def render_html(title: str, lead: str, sections) -> str:
    """The whole report as one HTML string: title, pipeline strip, colour legend, then every section."""
    chips = "<span>→</span>".join(
        f'<a href="#{section.anchor}">{html.escape(section.anchor)}</a>' for section in sections
    )
    names = picture_file_names(sections)
    body = "".join(
        f'<section id="{section.anchor}" class="kind-{section.kind}"><h2>{html.escape(section.title)}</h2>'
        f"<p>{html.escape(section.text)}</p>"
        + "".join(_picture_html(p, n) for p, n in zip(section.pictures, files, strict=True))
        + "</section>"
        for section, files in zip(sections, names, strict=True)
    )
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        f'<p class="lead">{html.escape(lead)}</p><nav class="pipeline">{chips}</nav>'
        f"{_scales_html()}{body}</body></html>"
    )


def write_report(sections, out_dir, title: str, lead: str) -> str:
    """Write every picture as a PNG and report.html (pictures embedded) into out_dir; the HTML's path."""
    os.makedirs(out_dir, exist_ok=True)
    for section, files in zip(sections, picture_file_names(sections), strict=True):
        for picture, file_name in zip(section.pictures, files, strict=True):
            save_png(picture.png, os.path.join(out_dir, file_name))
    path = os.path.join(out_dir, REPORT_NAME)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(render_html(title, lead, sections))
    return path
