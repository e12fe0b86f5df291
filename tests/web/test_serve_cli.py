"""`convscope serve`: arguments and the errors it gives before serving anything."""

import json
import socket
import time
import urllib.request

from web_helpers import running_server

from convscope.cli import build_parser, main
from convscope.web.server import url_for


def test_serve_arguments_and_defaults():
    args = build_parser().parse_args(["serve", "--model", "a.convscope", "--model", "b.convscope"])
    assert args.model == ["a.convscope", "b.convscope"]
    assert (args.host, args.port) == ("127.0.0.1", 8000)
    assert (args.models_dir, args.data_dir) == ("convscope-models", [])


def test_a_missing_model_file_is_a_clear_error(tmp_path, capsys):
    assert main(["serve", "--model", str(tmp_path / "missing.convscope")]) == 2
    assert "missing.convscope: no such model file" in capsys.readouterr().err


def test_a_missing_data_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["serve", "--data-dir", str(tmp_path / "nothing-here"), "--models-dir", str(tmp_path)]) == 2
    assert "no such data folder" in capsys.readouterr().err


def test_a_port_in_use_is_a_clear_error(tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--port", str(port), "--models-dir", str(tmp_path)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_url_for():
    assert url_for("127.0.0.1", 8000) == "http://127.0.0.1:8000/"
    assert url_for("0.0.0.0", 80) == "http://127.0.0.1:80/"
    assert url_for("::1", 9000) == "http://[::1]:9000/"


def test_serve_runs_the_app_until_ctrl_c(digits_model, tmp_path):
    with running_server(["--model", str(digits_model[0]), "--models-dir", str(tmp_path)], tmp_path) as url:
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0/")
        with urllib.request.urlopen(url + "api/models") as answer:
            assert [m["name"] for m in json.loads(answer.read())["models"]] == ["digits"]
        with urllib.request.urlopen(url) as answer:
            assert b"convscope explorer" in answer.read()
        stopped = time.monotonic()
    assert time.monotonic() - stopped < 10
    log = (tmp_path / "server.log").read_text()
    assert "models: digits" in log and f"trained models are saved in {tmp_path}" in log
    assert "Traceback" not in log
