import json

import pytest

from convscope.cli import main


def test_bench_writes_the_documented_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--no-torch", "--repeats", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result) >= {"train", "infer", "peak_rss_mb", "import_s"}
    assert result["train"][0]["input"] == "28x28x1" and result["train"][0]["batch"] == 64
    assert result["train"][0]["convscope_ips"] > 0 and result["infer"][0]["convscope_ips"] > 0
    assert 10 < result["peak_rss_mb"]["convscope"] < 2000
    assert "train   28x28x1  batch    64" in capsys.readouterr().out


def test_bench_with_torch_reports_a_ratio():
    pytest.importorskip("torch")
    from convscope.bench import bench_train

    row = bench_train((28, 28, 1), 8, repeats=1, with_torch=True)
    assert row["ratio"] == pytest.approx(row["convscope_ips"] / row["torch_ips"], rel=0.01)


def test_bench_rejects_bad_repeats(capsys):
    assert main(["bench", "--repeats", "0"]) == 2
    assert "--repeats must be >= 1" in capsys.readouterr().err
