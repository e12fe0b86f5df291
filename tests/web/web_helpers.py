"""Helpers for the web tests: image and data files made on the fly."""

import contextlib
import io
import re
import signal
import struct
import subprocess
import sys
import time
import urllib.request
import zlib

import numpy as np


def png_bytes(pixels: np.ndarray) -> bytes:
    """An (H, W) or (H, W, C) array as PNG file bytes: 16-bit for uint16, else 8-bit."""
    from PIL import Image

    pixels = np.asarray(pixels)
    buffer = io.BytesIO()
    Image.fromarray(pixels if pixels.dtype == np.uint16 else pixels.astype(np.uint8)).save(
        buffer, format="PNG"
    )
    return buffer.getvalue()


def write_idx(path, array: np.ndarray):
    """A plain (uncompressed) IDX file of uint8 values."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height gray pixels but holds no image data: a decompression bomb's
    header, cheap to make."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def assert_error(response, status, *words):
    """Check a JSON error answer: its status and that its sentence holds each of `words`."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == status
    for word in words:
        assert word in body["error"]
    return body["error"]


START_SECONDS = 60


def _wait_for_url(process, log_path) -> str:
    """The URL that `convscope serve` printed, once the server answers there."""
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"convscope serve exited with {process.returncode}:\n{log_path.read_text()}")
        found = re.search(r"convscope explorer: (http://\S+)", log_path.read_text())
        try:
            if found:
                with urllib.request.urlopen(found.group(1) + "api/health", timeout=1) as answer:
                    if answer.status == 200:
                        return found.group(1)
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"convscope serve did not answer within {START_SECONDS} s:\n{log_path.read_text()}")


@contextlib.contextmanager
def running_server(arguments, folder):
    """`convscope serve ARGUMENTS --port 0` in a subprocess (its output in folder/server.log), yielding its
    URL; stopped with SIGINT like Ctrl+C, and killed if it does not stop, whatever happens."""
    log_path = folder / "server.log"
    command = [sys.executable, "-m", "convscope", "serve", *arguments, "--host", "127.0.0.1", "--port", "0"]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        yield _wait_for_url(process, log_path)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
