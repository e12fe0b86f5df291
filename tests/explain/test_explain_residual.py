"""`convscope explain` on a ResNet: each residual block's section shows the maps inside it (body,
shortcut) and its output, says what the block does, and the receptive fields grow through blocks."""

import numpy as np
from PIL import Image

from convscope.cli import main
from convscope.explain import blocks
from convscope.explain.receptive import receptive_fields
from convscope.explain.report import Section
from convscope.explain.story import layer_text
from convscope.models import resnet


def test_explain_a_resnet_shows_inside_every_block(tmp_path, capsys):
    model = resnet(8, (12, 12, 3), 4, width=4, class_names=["a", "b", "c", "d"])
    path = tmp_path / "r.convscope"
    model.save(path)
    Image.fromarray((np.random.default_rng(0).random((12, 12, 3)) * 255).astype(np.uint8)).save(
        tmp_path / "x.png"
    )
    out = tmp_path / "report"
    assert main(["explain", str(path), str(tmp_path / "x.png"), "--out", str(out)]) == 0
    assert f"report: {out / 'report.html'}" in capsys.readouterr().out
    names = " ".join(sorted(p.name for p in out.iterdir()))
    for block in ("residual", "residual_1", "residual_2"):
        assert f"-{block}-feature-maps.png" in names
        assert all(f"-{block}.body.{i}-feature-maps.png" in names for i in range(5))
    assert "-residual_1.shortcut.0-feature-maps.png" in names
    assert "-residual.shortcut" not in names  # the first block's shortcut is the identity: nothing to draw
    html = (out / "report.html").read_text()
    assert "A residual block: its body (Conv2D - BatchNorm2D - ReLU - Conv2D - BatchNorm2D)" in html
    assert "zero channels appended" in html and "inside the block (shortcut)" in html


def test_block_insides_and_receptive_fields():
    model = resnet(8, (12, 12, 3), 4, width=4, shortcut="B")
    fields = receptive_fields(model)
    assert [field.size for field in fields[:4]] == [(3, 3), (3, 3), (3, 3), (7, 7)]  # a block: two 3x3 convs
    assert fields[4].size == (13, 13) and fields[4].jump == (2, 2)  # a 3x3 with stride 2, a 3x3 at jump 2
    block = model.layers[5]
    section = Section(block.name, "relu", "title", layer_text(block, fields[5]))
    blocks.add_insides(section, block, np.random.default_rng(1).random((6, 6, 8), dtype=np.float32))
    captions = [picture.caption for picture in section.pictures]
    assert len(captions) == 5 + 2  # the body's layers, the projection shortcut's conv and batch norm
    assert captions[-2] == "inside the block (shortcut): residual_2.shortcut.0 (Conv2D)"
    assert "a projection: the paper's option B" in section.text and "receptive field" in section.text
