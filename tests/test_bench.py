import json
import time

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
    assert result["train"][0]["model"] == "seed_cnn" and "blas_kernel" in result["machine"]
    assert result["machine"]["processor"]
    assert "train   28x28x1  batch    64  seed_cnn" in capsys.readouterr().out


def test_bench_with_torch_reports_a_ratio():
    pytest.importorskip("torch")
    from convscope.bench import bench_train

    row = bench_train("seed_cnn", (28, 28, 1), 8, repeats=3, with_torch=True)
    low, high = row["ratio_spread"]
    assert row["torch_ips"] > 0 and low <= row["ratio"] <= high


def test_bench_infers_beside_torch_and_onnxruntime():
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from convscope.bench import bench_infer, format_row

    row = bench_infer("seed_cnn", (28, 28, 1), 4, repeats=1, with_torch=True, with_ort=True)
    assert row["ort_ips"] > 0 and row["ratio_ort_spread"][0] == row["ratio_ort"] == row["ratio_ort_spread"][1]
    assert " ort " in format_row("infer", row)


def test_bench_warns_when_openblas_coretype_forces_another_kernel(monkeypatch):
    from convscope import bench

    monkeypatch.setenv("OPENBLAS_CORETYPE", "Prescott")
    monkeypatch.setattr(bench, "blas_kernel", lambda env=None: "Haswell" if env else "Prescott")
    lines = []
    info = bench.blas_note(log=lines.append)
    assert info["blas_kernel"] == "Prescott" and info["blas_kernel_native"] == "Haswell"
    assert "warning: OPENBLAS_CORETYPE=Prescott forces the Prescott kernel" in lines[-1]


def test_bench_rejects_bad_repeats(capsys):
    assert main(["bench", "--repeats", "0"]) == 2
    assert "--repeats must be >= 1" in capsys.readouterr().err


def test_rewarm_runs_the_engine_until_the_time_is_up():
    from convscope.bench import _run_for

    starts = []
    _run_for(lambda: starts.append(time.perf_counter()), 0.0)
    assert len(starts) == 1  # at least once, even with no time

    starts.clear()
    begin = time.perf_counter()
    _run_for(lambda: (starts.append(time.perf_counter()), time.sleep(0.01)), 0.05)
    assert time.perf_counter() - begin >= 0.05  # ran until the time was up
    assert len(starts) >= 2 and starts[-1] - begin < 0.05  # and started no call after it
