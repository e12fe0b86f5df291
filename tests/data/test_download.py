"""Downloads against a local HTTP server on 127.0.0.1 (never the network)."""

import gzip
import hashlib
import io
import socket
import tarfile
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from convscope.cli import main
from convscope.data import load
from convscope.data.download import ChecksumError, DownloadError, cache_dir, download, is_downloaded
from convscope.data.idx import DataFormatError

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 even behind a proxy


class FakeMirror(BaseHTTPRequestHandler):
    """Serves self.server.files; honours Range (unless server.ranges is False); each entry of
    server.failures[name] spoils one request: 503, 404, or 'cut' (the connection drops halfway)."""

    def do_GET(self):
        server = self.server
        name = self.path.lstrip("/")
        server.requests.append((name, self.headers.get("Range")))
        failure = server.failures.get(name, []).pop(0) if server.failures.get(name) else None
        if failure in (404, 503) or name not in server.files:
            self.send_error(failure or 404)
            return
        body, start = server.files[name], 0
        requested = self.headers.get("Range")
        if requested and server.ranges:
            start = int(requested.removeprefix("bytes=").rstrip("-"))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        rest = body[start:]
        self.wfile.write(rest[: len(rest) // 2] if failure == "cut" else rest)

    def log_message(self, *args):
        pass


@pytest.fixture
def mirror():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeMirror)
    server.files, server.failures, server.requests, server.ranges = {}, {}, [], True
    server.url = f"http://127.0.0.1:{server.server_address[1]}/data/"
    server.files_at = lambda files: server.files.update({f"data/{k}": v for k, v in files.items()})
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVSCOPE_DATA", str(tmp_path / "cache"))
    return tmp_path / "cache"


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def idx_gz(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


def fake_mnist(n=6):
    rng = np.random.default_rng(0)
    files = {}
    for prefix in ("train", "t10k"):
        files[f"{prefix}-images-idx3-ubyte.gz"] = idx_gz(rng.integers(0, 256, (n, 28, 28)))
        files[f"{prefix}-labels-idx1-ubyte.gz"] = idx_gz(np.arange(n) % 10)
    return files


def fetch(mirror, name, folder=None, files=None, **options):
    """download() from the fake mirror, with the fake files' own MD5s; returns (folder, log, waits)."""
    log, waits = [], []
    checksums = {k: md5(v) for k, v in (files or {}).items()} or options.pop("checksums")
    folder = download(
        name, folder, base_url=mirror.url, checksums=checksums, opener=NO_PROXY, progress=False,
        log=log.append, sleep=waits.append, **options,
    )  # fmt: skip
    return folder, log, waits


def test_download_checks_saves_and_load_finds_the_cache(mirror, cache):
    files = fake_mnist()
    mirror.files_at(files)
    folder, log, _ = fetch(mirror, "mnist", files=files)
    assert folder == cache / "mnist" == cache_dir("mnist")
    assert sorted(p.name for p in folder.iterdir()) == sorted(files)
    assert all((folder / name).read_bytes() == data for name, data in files.items())
    test = load("mnist", split="test")  # no data_dir: the cache folder
    assert test.images.shape == (6, 28, 28, 1) and test.labels.tolist() == [0, 1, 2, 3, 4, 5]
    mirror.requests.clear()
    _, log, _ = fetch(mirror, "mnist", files=files)
    assert mirror.requests == [] and all("already in" in line for line in log)


def test_checksum_mismatch_keeps_nothing_new_and_loses_nothing_saved(mirror, tmp_path):
    files = fake_mnist()
    mirror.files_at(files)
    checksums = {k: md5(v) for k, v in files.items()}
    good, old = "train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz"
    (tmp_path / good).write_bytes(files[good])  # saved earlier
    (tmp_path / old).write_bytes(b"an older copy")  # the wrong MD5: fetched again, kept if that fails
    checksums[old] = md5(b"what the publisher promised")
    with pytest.raises(ChecksumError, match=rf"{old}: MD5 {md5(files[old])} differs from the published"):
        fetch(mirror, "mnist", tmp_path, checksums=checksums)
    assert (tmp_path / good).read_bytes() == files[good]
    assert (tmp_path / old).read_bytes() == b"an older copy"
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob(".*"))


def test_resume_from_a_part_file_with_a_range_request(mirror, tmp_path):
    body = np.random.default_rng(1).bytes(300_000)
    mirror.files_at({"cifar-big.bin": body})
    (tmp_path / "cifar-big.bin.part").write_bytes(body[:120_000])
    _, log, _ = fetch(mirror, "cifar10", tmp_path, files={"cifar-big.bin": body})
    assert mirror.requests == [("data/cifar-big.bin", "bytes=120000-")]
    assert (tmp_path / "cifar-big.bin").read_bytes() == body and "resuming from byte 120,000" in log[0]
    mirror.ranges = False  # a server that ignores Range: the download starts over
    (tmp_path / "cifar-big.bin").unlink()
    (tmp_path / "cifar-big.bin.part").write_bytes(b"x" * 1000)
    fetch(mirror, "cifar10", tmp_path, files={"cifar-big.bin": body})
    assert (tmp_path / "cifar-big.bin").read_bytes() == body
    mirror.ranges = True  # a .part that is already complete: 416, then checked and kept
    (tmp_path / "cifar-big.bin").rename(tmp_path / "cifar-big.bin.part")
    fetch(mirror, "cifar10", tmp_path, files={"cifar-big.bin": body})
    assert (tmp_path / "cifar-big.bin").read_bytes() == body
    assert not (tmp_path / "cifar-big.bin.part").exists()


def test_retries_with_backoff_after_transient_failures(mirror, tmp_path):
    body = np.random.default_rng(2).bytes(50_000)
    mirror.files_at({"a.gz": body})
    mirror.failures["data/a.gz"] = [503, "cut"]
    _, log, waits = fetch(mirror, "mnist", tmp_path, files={"a.gz": body}, backoff=0.5)
    assert (tmp_path / "a.gz").read_bytes() == body and not (tmp_path / "a.gz.part").exists()
    assert waits == [0.5, 1.0]
    assert [r for _, r in mirror.requests] == [None, None, "bytes=25000-"]  # the cut one resumed
    assert any("HTTP 503" in line for line in log)
    assert any("after 25,000 of 50,000 bytes" in line for line in log)
    mirror.failures["data/b.gz"] = [503] * 5
    mirror.files_at({"b.gz": body})
    with pytest.raises(DownloadError, match="HTTP 503"):
        fetch(mirror, "mnist", tmp_path, files={"b.gz": body}, retries=2)


def test_next_mirror_after_a_404(mirror, tmp_path):
    mirror.files_at({"x.gz": b"hello"})
    download(
        "mnist", tmp_path, base_url=[mirror.url + "gone", mirror.url], checksums={"x.gz": md5(b"hello")},
        opener=NO_PROXY, progress=False, log=print,
    )  # fmt: skip
    assert (tmp_path / "x.gz").read_bytes() == b"hello"
    assert [name for name, _ in mirror.requests] == ["data/gone/x.gz", "data/x.gz"]


def closed_port_url():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/mnist"


def test_offline_says_which_files_to_put_where(tmp_path):
    url = closed_port_url()
    waits = []
    with pytest.raises(DownloadError) as raised:
        download("mnist", tmp_path / "m", base_url=url, opener=NO_PROXY, progress=False, sleep=waits.append)
    message = str(raised.value)
    for name in ("train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        assert f"{name}: {url}/{name}" in message
    assert f"in {tmp_path / 'm'}" in message and "convscope data download mnist --dir" in message
    assert "Connection refused" in message and waits == []  # refused: no pointless retries
    assert not list((tmp_path / "m").iterdir())


def test_cli_download_offline_and_list(cache, capsys):
    assert main(["data", "download", "cifar10:cat,dog", "--mirror", closed_port_url()]) == 2
    err = capsys.readouterr().err
    assert "cifar-10-binary.tar.gz:" in err and f"in {cache / 'cifar10'}" in err
    assert "data_batch_1.bin" in err and "`convscope data download cifar10` again" in err
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert f"not downloaded  {cache / 'mnist'}" in out and "CONVSCOPE_DATA" in out
    assert main(["train", "--dataset", "fashion-mnist"]) == 2
    assert "convscope data download fashion-mnist" in capsys.readouterr().err


def cifar_tarball(extra_members=()):
    """A small cifar-10-binary.tar.gz: 2 records per batch, plus `extra_members` (TarInfo, bytes)."""
    rng = np.random.default_rng(3)
    members = {f"data_batch_{i}.bin": None for i in range(1, 6)} | {"test_batch.bin": None}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:

        def add(info, data):
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for name in members:
            records = rng.integers(0, 256, (2, 3073), dtype=np.uint8)
            records[:, 0] = [3, 5]
            add(tarfile.TarInfo(f"cifar-10-batches-bin/{name}"), records.tobytes())
        names = "airplane automobile bird cat deer dog frog horse ship truck".replace(" ", "\n")
        add(tarfile.TarInfo("cifar-10-batches-bin/batches.meta.txt"), names.encode())
        add(tarfile.TarInfo("cifar-10-batches-bin/readme.html"), b"<html>")
        for info, data in extra_members:
            add(info, data)
    return buffer.getvalue()


def test_cifar_tarball_is_unpacked_safely_into_the_cache(mirror, cache, tmp_path):
    sneaky = tarfile.TarInfo("../../outside.bin")
    tarball = cifar_tarball([(sneaky, b"escape")])
    mirror.files_at({"cifar-10-binary.tar.gz": tarball})
    folder, log, _ = fetch(mirror, "cifar10", files={"cifar-10-binary.tar.gz": tarball})
    expected = {f"data_batch_{i}.bin" for i in range(1, 6)} | {"test_batch.bin", "batches.meta.txt"}
    assert {p.name for p in folder.iterdir()} == expected  # tarball removed, readme and ../ member left out
    assert not list(tmp_path.rglob("outside.bin"))
    assert "unpacked" in log[-1]
    cats_dogs = load("cifar10:cat,dog", split="test")
    assert cats_dogs.images.shape == (2, 32, 32, 3) and cats_dogs.labels.tolist() == [0, 1]
    assert is_downloaded("cifar10") and is_downloaded("cifar10", folder)


def test_links_in_the_tarball_are_refused(mirror, tmp_path):
    link = tarfile.TarInfo("cifar-10-batches-bin/test_batch.bin")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    tarball = cifar_tarball([(link, b"")])
    mirror.files_at({"cifar-10-binary.tar.gz": tarball})
    with pytest.raises(DataFormatError, match="test_batch.bin is not a plain file"):
        fetch(mirror, "cifar10", tmp_path, files={"cifar-10-binary.tar.gz": tarball})
    assert not list(tmp_path.glob(".*.tmp"))
