"""Web API latency and throughput from a client on loopback:

1. ``POST /v1/classify`` with 1 text and with 64 texts: p50/p99 latency over bounded loops;
2. ``GET /v1/tweets?limit=50`` (one page of stored results): requests/s over a bounded loop.

The server is the real app on uvicorn in its own process (a client in the same process would
share its GIL), over an embedded redis-server seeded with ``--stored`` results. Requests are
sequential on one keep-alive connection: latency is one request's, not a queue's. Texts are
real tweets from the shared ``topic_train.csv`` when present.

    PYTHONPATH=. python bench/api.py --models models --model ann
    PYTHONPATH=. python bench/api.py --test-model     # the keyword model of the tests
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # the tests' keyword model and seeding helper

from fintweet.core.config import Settings  # noqa: E402
from fintweet.core.labels import NUM_SENTIMENTS, NUM_TOPICS  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=os.environ.get("FINTWEET_MODELS_DIR", "models"),
                        help="models directory (env FINTWEET_MODELS_DIR)")
    parser.add_argument("--model", default="ann", help="model kind (default ann)")
    parser.add_argument("--test-model", action="store_true",
                        help="serve the tests' deterministic keyword model instead")
    parser.add_argument("--single", type=int, default=400, help="requests with 1 text")
    parser.add_argument("--batch", type=int, default=100, help="requests with 64 texts")
    parser.add_argument("--reads", type=int, default=2000, help="GET /v1/tweets requests")
    parser.add_argument("--stored", type=int, default=2000, help="results seeded into Redis")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    # internal: the server process
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", default="", help=argparse.SUPPRESS)
    return parser.parse_args()


def load_texts(n: int) -> list[str]:
    path = Settings().data_dir / "topic_train.csv"
    if path.is_file():
        with path.open(newline="", encoding="utf-8") as handle:
            texts = [row["text"] for row in csv.DictReader(handle)]
        rng = np.random.default_rng(0)
        return [texts[i] for i in rng.choice(len(texts), size=min(n, len(texts)), replace=False)]
    return [f"$AAPL beats Q{i % 4 + 1} estimates, revenue up {i % 9}% https://t.co/x{i}"
            for i in range(n)]


def serve(args: argparse.Namespace) -> None:
    """The server process: the app over the given Redis with the chosen model."""
    import uvicorn

    from fintweet.core.reader import ResultReader
    from fintweet.core.store import ResultStore
    from fintweet.web.app import create_app
    from fintweet.web.classify import load_classifier

    if args.test_model:
        from tests.rule_model import RuleModel

        model = RuleModel()
    else:
        model = load_classifier(args.models, args.model)
    store = ResultStore.from_url(args.redis_url)
    app = create_app(ResultReader(store.client), store, model)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.asarray(samples) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "mean_ms": round(float(ms.mean()), 2), "n": len(samples)}


def time_classify(client: httpx.Client, batches: list[list[str]]) -> list[float]:
    samples = []
    for texts in batches:
        started = time.perf_counter()
        response = client.post("/v1/classify", json={"texts": texts})
        samples.append(time.perf_counter() - started)
        response.raise_for_status()
    return samples


def main() -> int:
    args = parse_args()
    if args.serve:
        serve(args)
        return 0
    from fintweet.devstack.stack import EmbeddedStack
    from fintweet.web.server import free_port
    from tests.seed import make_result, seed

    texts = load_texts(max(args.stored, 64 * 8))
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        stack = EmbeddedStack(tmp, kafka_port=0, redis_port=0, topics=())
        stack.start_redis()
        try:
            client_redis = __import__("redis").Redis.from_url(stack.redis_url)
            stored = [make_result(f"b{i}", texts[i % len(texts)], int(rng.integers(NUM_TOPICS)),
                                  int(rng.integers(NUM_SENTIMENTS))) for i in range(args.stored)]
            for start in range(0, len(stored), 500):
                seed(client_redis, stored[start:start + 500])
            port = free_port()
            server_args = [sys.executable, __file__, "--serve", "--port", str(port),
                           "--redis-url", stack.redis_url, "--models", args.models,
                           "--model", args.model] + (["--test-model"] if args.test_model else [])
            server = subprocess.Popen(server_args, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
            try:
                result = run_client(args, port, texts, server)
            finally:
                server.terminate()
                server.wait(timeout=30)
        finally:
            stack.stop()
    if args.json:
        print(json.dumps(result))
    else:
        print(f"model {result['model']}")
        for key in ("classify_1", "classify_64"):
            r = result[key]
            print(f"POST /v1/classify {key.split('_')[1]:>2} text(s): p50 {r['p50_ms']:.2f} ms  "
                  f"p99 {r['p99_ms']:.2f} ms  (mean {r['mean_ms']:.2f} ms, {r['n']} requests)")
        reads = result["tweets"]
        print(f"GET /v1/tweets?limit=50: {reads['requests_per_s']:,.0f} requests/s "
              f"(p50 {reads['p50_ms']:.2f} ms, p99 {reads['p99_ms']:.2f} ms, "
              f"{reads['n']} requests)")
    return 0


def run_client(args: argparse.Namespace, port: int, texts: list[str],
               server: subprocess.Popen) -> dict:
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base, timeout=60) as client:
        deadline = time.monotonic() + 180  # model load (TensorFlow import) included
        while True:
            if server.poll() is not None:
                raise SystemExit(f"the server exited with {server.returncode}")
            try:
                if client.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the server did not become ready in 180 s")
            time.sleep(0.2)
        model = client.get("/readyz").json()["model"]
        # Warm-up: first calls build model caches and connection state.
        time_classify(client, [[t] for t in texts[:20]] + [texts[:64]] * 3)
        singles = [[texts[i % len(texts)]] for i in range(args.single)]
        batches = [[texts[(i * 64 + k) % len(texts)] for k in range(64)]
                   for i in range(args.batch)]
        one = percentiles(time_classify(client, singles))
        sixty_four = percentiles(time_classify(client, batches))
        for _ in range(50):
            client.get("/v1/tweets", params={"limit": 50}).raise_for_status()
        samples = []
        started = time.perf_counter()
        for _ in range(args.reads):
            t0 = time.perf_counter()
            response = client.get("/v1/tweets", params={"limit": 50})
            samples.append(time.perf_counter() - t0)
            response.raise_for_status()
        elapsed = time.perf_counter() - started
        reads = {**percentiles(samples), "requests_per_s": round(args.reads / elapsed, 1)}
    return {"model": model, "classify_1": one, "classify_64": sixty_four, "tweets": reads,
            "cpus": os.cpu_count()}


if __name__ == "__main__":
    sys.exit(main())
