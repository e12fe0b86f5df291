"""The checkout stays clean after the README's commands, and the package metadata builds without
deprecation warnings."""

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUTS = [
    "demo-output/model.convscope",
    "convolve.png",
    "explain-output/report.html",
    "model.convscope",
]


def _readme_outputs() -> list:
    """Every file or folder a README command line names with --out, --json, --report or --checkpoint."""
    lines = [
        line for line in (ROOT / "README.md").read_text().splitlines() if "convscope " in line or "--" in line
    ]
    found = re.findall(r"--(?:out|json|report|checkpoint|out-dir) +([\w./-]+)", "\n".join(lines))
    return sorted({name for name in found if not name.startswith(("PATH", "DIR", "FILE", "."))})


def test_the_readme_commands_leave_only_ignored_files_in_the_checkout():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    outputs = _readme_outputs() + DEFAULT_OUTPUTS
    assert "fm.ckpt" in outputs and "fm-torch" in outputs and "bench.json" in outputs
    result = subprocess.run(
        ["git", "check-ignore", "--no-index", "--verbose", "--non-matching", *outputs],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    not_ignored = [line.split("\t")[-1] for line in result.stdout.splitlines() if line.startswith("::")]
    assert not not_ignored, f"README outputs not covered by .gitignore: {not_ignored}"


def test_the_license_is_an_spdx_string():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT"  # a TOML table is deprecated by setuptools (error in 2027)
    assert any(r.startswith("setuptools>=77") for r in project["build-system"]["requires"])
