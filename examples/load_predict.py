"""A bounded load test of the explorer's predictions: ROUNDS rounds of CONCURRENCY simultaneous
POST /api/models/NAME/predict requests of one small PNG, against a server on this machine only.

    convscope serve --model digits.convscope --port 8765 &
    python examples/load_predict.py http://127.0.0.1:8765/ digits --concurrency 100 --rounds 5

Prints the median and 95th percentile of the client-side latencies and of the server's own
`elapsed_ms`, and the wall time of each round. Refuses any host but 127.0.0.1, ::1 and localhost.
"""

import argparse
import http.client
import io
import json
import statistics
import threading
import time
import urllib.parse
import uuid

import numpy as np
from PIL import Image

LOCAL = ("127.0.0.1", "::1", "localhost")
MAX_REQUESTS = 5000


def small_png(side: int = 28) -> bytes:
    """A light-on-dark stroke, like a drawing, as PNG bytes."""
    pixels = np.zeros((side, side), dtype=np.uint8)
    pixels[4:-4, side // 2 - 2 : side // 2 + 2] = 255
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def multipart(png: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="d.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode() + png
    body += f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="drawing"\r\n\r\ntrue'.encode()
    body += f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def one_request(url, path, body, content_type, start, results, lock):
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    start.wait()
    began = time.perf_counter()
    connection.request("POST", path, body=body, headers={"Content-Type": content_type})
    answer = connection.getresponse()
    payload = answer.read()
    took = (time.perf_counter() - began) * 1000
    connection.close()
    server_ms = json.loads(payload)["elapsed_ms"] if answer.status == 200 else None
    with lock:
        results.append((answer.status, took, server_ms))


def run_round(url, name, concurrency, body, content_type):
    path = f"/api/models/{urllib.parse.quote(name)}/predict"
    start, lock, results = threading.Barrier(concurrency + 1), threading.Lock(), []
    threads = [
        threading.Thread(target=one_request, args=(url, path, body, content_type, start, results, lock))
        for _ in range(concurrency)
    ]
    for thread in threads:
        thread.start()
    began = time.perf_counter()
    start.wait()
    for thread in threads:
        thread.join()
    return results, (time.perf_counter() - began) * 1000


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="the explorer, e.g. http://127.0.0.1:8765/")
    parser.add_argument("model", help="the model's name in the explorer")
    parser.add_argument("--concurrency", type=int, default=100, help="simultaneous requests (default 100)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of them (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="rounds not counted (default 1)")
    args = parser.parse_args(argv)
    url = urllib.parse.urlsplit(args.url)
    if url.hostname not in LOCAL:
        parser.error(f"only a server on this machine ({', '.join(LOCAL)}) may be loaded, got {url.hostname}")
    if not 1 <= args.concurrency * (args.rounds + args.warmup) <= MAX_REQUESTS:
        parser.error(f"at most {MAX_REQUESTS} requests in all")
    body, content_type = multipart(small_png())
    latencies, server, walls = [], [], []
    for round_index in range(args.warmup + args.rounds):
        results, wall = run_round(url, args.model, args.concurrency, body, content_type)
        failed = [status for status, _, _ in results if status != 200]
        if failed:
            raise SystemExit(f"{len(failed)} requests failed, e.g. with status {failed[0]}")
        if round_index >= args.warmup:
            latencies += [took for _, took, _ in results]
            server += [ms for _, _, ms in results]
            walls.append(wall)
    median, p95 = statistics.median(latencies), percentile(latencies, 0.95)
    print(
        f"{len(latencies)} requests, {args.concurrency} at a time: latency median {median:.1f} ms, "
        f"p95 {p95:.1f} ms; server elapsed_ms median {statistics.median(server):.1f}, "
        f"p95 {percentile(server, 0.95):.1f}; round wall time median {statistics.median(walls):.0f} ms"
    )


if __name__ == "__main__":
    main()
