"""GPU check of the transformer kind: the same weights served by Keras on JAX or PyTorch.

Two steps, because the GPU machine has no TensorFlow and takes at most 64 MiB of files:

1. here, on the CPU (TensorFlow backend)::

       python bench/gpu.py prepare --model models/transformer/current \\
           --data ../shared/data/topic_train.csv --out .gpucheck

   copies the model into ``.gpucheck/model`` with float16 weights (a 6-layer MiniLM is 91 MB in
   float32, 45 MB in float16), loads that copy back and stores its CPU predictions on up to
   2,000 tweets of the CSV in ``.gpucheck/cpu_predictions.npz`` (texts and class ids, no
   pickle). The reference is the float16 copy's own output, so the agreement measures the
   backend and precision, not the weight rounding.
2. there, with Keras (and its small pure-Python deps) carried as wheels::

       KERAS_BACKEND=jax python bench/gpu.py run --check .gpucheck --n 100000 --batch 1024

   classifies ``--n`` tweets (the reference tweets repeated) at ``--batch`` and prints tweets/s
   and the share of the reference tweets whose class matches the CPU's, per head, as one JSON
   line. The timed pass follows one warm-up pass over every bucket shape, so compilation (XLA on
   JAX) is not in the rate.

Nothing here imports TensorFlow unless the backend is TensorFlow: the backend is set from
``--backend`` (else ``$KERAS_BACKEND``) before Keras is imported.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

CHECK_FILE = "cpu_predictions.npz"
MODEL_DIR = "model"


def _set_backend(backend: str | None) -> None:
    if backend:
        os.environ["KERAS_BACKEND"] = backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def prepare(model_path: Path, data: Path, out: Path, limit: int) -> None:
    import numpy as np

    from fintweet.core.artifacts import read_artifact, read_json
    from fintweet.core.text import prepare_model_texts
    from fintweet.models.bert import read_weights, write_weights
    from fintweet.models.transformer import WEIGHTS_FILE, TransformerModel

    info = read_artifact(model_path)
    if info.kind != "transformer":
        sys.exit(f"{info.path}: a {info.kind} model; bench/gpu.py checks a transformer")
    target = out / MODEL_DIR
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in ("config.json", "bert_config.json", "tokenizer.json"):
        shutil.copyfile(info.file(name), target / name)
    weights = read_weights(info.file(WEIGHTS_FILE))
    write_weights(target / WEIGHTS_FILE, {k: v.astype(np.float16) for k, v in weights.items()})

    with open(data, newline="", encoding="utf-8") as handle:
        raw = [row["text"] for row in csv.DictReader(handle)][:limit]
    texts = prepare_model_texts(raw)
    model = TransformerModel.load(target, read_json(target / "config.json"))
    proba = model.predict_proba(texts)
    np.savez(out / CHECK_FILE, texts=np.array(texts, dtype=str),
             topic=proba.topic.argmax(axis=1), sentiment=proba.sentiment.argmax(axis=1))
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({size / 2**20:.1f} MiB): model copy and CPU predictions on "
          f"{len(texts)} tweets")


def run(check: Path, n: int, batch: int, precision: str | None) -> dict[str, object]:
    import keras
    import numpy as np

    from fintweet.core.artifacts import read_json
    from fintweet.models.transformer import TransformerModel, gpu_visible, resolve_precision

    config = read_json(check / MODEL_DIR / "config.json")
    config["predict_batch_size"] = batch
    if precision:
        config["precision"] = precision
    model = TransformerModel.load(check / MODEL_DIR, config)
    with np.load(check / CHECK_FILE, allow_pickle=False) as stored:
        texts = [str(t) for t in stored["texts"]]
        cpu = {task: stored[task] for task in ("topic", "sentiment")}
    ref = model.predict_proba(texts)  # also the warm-up: every bucket shape is compiled here
    agreement = {task: float((getattr(ref, task).argmax(axis=1) == cpu[task]).mean())
                 for task in cpu}
    many = (texts * (n // len(texts) + 1))[:n]
    model.predict_proba(many[: batch * 4])
    started = time.perf_counter()
    model.predict_proba(many)
    seconds = time.perf_counter() - started
    return {
        "backend": keras.backend.backend(), "gpu": gpu_visible(),
        "precision": resolve_precision(model.config.precision), "n": n, "batch": batch,
        "seconds": round(seconds, 3), "tweets_per_s": round(n / seconds, 1),
        "agreement": agreement, "reference_tweets": len(texts),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("jax", "torch", "tensorflow", "numpy"),
                        help="Keras backend (default: $KERAS_BACKEND, else Keras's own)")
    commands = parser.add_subparsers(dest="command", required=True)
    prep = commands.add_parser("prepare", help="on the CPU: model copy + CPU predictions")
    prep.add_argument("--model", type=Path, required=True, help="transformer artifact dir")
    prep.add_argument("--data", type=Path, required=True, help="CSV with a text column")
    prep.add_argument("--out", type=Path, default=Path(".gpucheck"))
    prep.add_argument("--limit", type=int, default=2000, help="reference tweets (default 2000)")
    go = commands.add_parser("run", help="on the GPU machine: rate and agreement")
    go.add_argument("--check", type=Path, default=Path(".gpucheck"))
    go.add_argument("--n", type=int, default=100_000)
    go.add_argument("--batch", type=int, default=1024)
    go.add_argument("--precision", choices=("auto", "float32", "mixed_bfloat16"))
    args = parser.parse_args(argv)
    _set_backend(args.backend)
    if args.command == "prepare":
        prepare(args.model, args.data, args.out, args.limit)
    else:
        print(json.dumps(run(args.check, args.n, args.batch, args.precision)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
