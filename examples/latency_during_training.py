"""Predict latency of the explorer with and without a training job running: load_predict.py's bounded load
(rounds of simultaneous POST /api/models/NAME/predict) first on an idle server, then while the designer's
seed CNN trains on DATASET, then the job is stopped. Only a server on this machine is accepted.

    convscope serve --model m.convscope --data-dir ../shared/data --port 8765 &
    python examples/latency_during_training.py http://127.0.0.1:8765/ m --dataset fashion-mnist
"""

import argparse
import json
import os
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load_predict  # noqa: E402  (the bounded load next to this script)

SEED_CNN = [
    {"type": "Conv2D", "config": {"filters": 16, "kernel_size": 3, "padding": "same"}},
    {"type": "ReLU"},
    {"type": "MaxPool2D", "config": {"pool_size": 2}},
    {"type": "Conv2D", "config": {"filters": 32, "kernel_size": 3, "padding": "same"}},
    {"type": "ReLU"},
    {"type": "MaxPool2D", "config": {"pool_size": 2}},
    {"type": "Flatten"},
    {"type": "Dense", "config": {"units": 128}},
    {"type": "ReLU"},
    {"type": "Dense", "config": {"units": 10}},
    {"type": "Softmax"},
]


def call(url: str, path: str, body=None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read())


def steps_done(url: str) -> int:
    return call(url, "api/training")["steps_done"]


def measure(url: str, model: str, label: str, loads: list[tuple[int, int]]):
    for concurrency, rounds in loads:
        print(f"{label}: ", end="", flush=True)
        load = ["--concurrency", str(concurrency), "--rounds", str(rounds), "--warmup", "2"]
        load_predict.main([url, model, *load])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("model")
    parser.add_argument("--dataset", default="fashion-mnist", help="a 28x28 gray data set of the server")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    loads = [(1, 50), (8, 10)]
    measure(args.url, args.model, "idle", loads)
    body = {
        "dataset": args.dataset,
        "epochs": 100,
        "batch_size": args.batch_size,
        "client": "latency_during_training.py",
        "architecture": {"name": "seed-cnn", "layers": SEED_CNN},
    }
    call(args.url, "api/training", body)
    while steps_done(args.url) < 20:  # past loading and the first steps
        time.sleep(0.2)
    began, first = time.perf_counter(), steps_done(args.url)
    measure(args.url, args.model, "training", loads)
    under_load = (steps_done(args.url) - first) * args.batch_size / (time.perf_counter() - began)
    began, first = time.perf_counter(), steps_done(args.url)
    time.sleep(5)
    alone = (steps_done(args.url) - first) * args.batch_size / (time.perf_counter() - began)
    call(args.url, "api/training/stop", {})
    print(f"training speed: {alone:,.0f} images/s alone, {under_load:,.0f} images/s under the predict load")


if __name__ == "__main__":
    main()
