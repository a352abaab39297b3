"""GPU check of the transformer kind: the same weights served by Keras on JAX or PyTorch.

Two steps, because the GPU machine has no TensorFlow and takes at most 64 MiB of files:

1. ``prepare`` copies a trained artifact into ``DIR/model`` with float16 weights (a 6-layer
   MiniLM is 91 MB in float32, 45 MB in float16), loads that copy back and stores its
   predictions on up to 2,000 tweets of a CSV in ``DIR/reference_predictions.npz`` (texts,
   class ids, and the backend and precision that made them; no pickle). The reference is the
   float16 copy's own output, so agreement measures backend and precision, not weight rounding.
2. ``run`` loads the copy on whatever backend it is started with, classifies ``--n`` tweets
   (the reference tweets repeated) at ``--batch`` and prints one JSON line: tweets/s and, per
   head, the share of reference tweets whose class matches the reference's. The timed pass is
   the second over the same tweets, so compilation (XLA on JAX, once per batch shape) is not in
   the rate; the first pass's time and the tokenizer's alone are printed beside it.
   ``--n 0`` skips the timing (agreement only).

``holdout`` stores any artifact's probabilities on the two holdouts the trainer carved (its
own head per task, and the labels) in an ``.npz``, so that models trained on different
machines (several seeds on the GPU, the linear model here) can be averaged and compared
afterwards by ``bench/seed_average.py`` without carrying their weights back.

Either step runs on either machine. With a model trained on the CPU: ``prepare`` here on
TensorFlow, ``run`` there on JAX. With one fine-tuned on the GPU machine (``bench/gpu_run.sh``):
both there, then ``run --n 0`` here for the agreement of TensorFlow on the CPU.

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

CHECK_FILE = "reference_predictions.npz"
MODEL_DIR = "model"


def _set_backend(backend: str | None) -> None:
    if backend:
        os.environ["KERAS_BACKEND"] = backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pack_encoder(encoder: Path | None, out: Path) -> None:
    """The checkpoint fine-tuning starts from, float16 (91 → 45 MB), for the 64 MiB carry."""
    import numpy as np

    from fintweet.models.bert import (
        ENCODER_FILES,
        WEIGHTS_FILE,
        read_weights,
        resolve_encoder_dir,
        write_weights,
    )

    source = resolve_encoder_dir(encoder)
    out.mkdir(parents=True, exist_ok=True)
    for name in ENCODER_FILES:
        if name != WEIGHTS_FILE:
            shutil.copyfile(source / name, out / name)
    weights = read_weights(source / WEIGHTS_FILE)
    write_weights(out / WEIGHTS_FILE,
                  {k: v.astype(np.float16) if v.dtype == np.float32 else v
                   for k, v in weights.items()})
    print(f"wrote {out}: {source.name} with float16 weights")


def prepare(model_path: Path, data: Path, out: Path, limit: int, holdout: bool = False) -> None:
    import keras
    import numpy as np

    from fintweet.core.artifacts import read_artifact, read_json
    from fintweet.core.text import prepare_model_texts
    from fintweet.models.bert import read_weights, write_weights
    from fintweet.models.transformer import WEIGHTS_FILE, TransformerModel, resolve_precision

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

    # The trainer's holdout of the whole CSV: tweets the model did not train on (its least
    # confident answers, the hardest), unless it trained with --max-rows (gpu_run.sh's dry run),
    # whose holdout is its subsample's.
    if holdout:
        from fintweet.core.data import load_labelled_csv, stratified_holdout

        rows = load_labelled_csv(data)
        raw = [rows.texts[i] for i in stratified_holdout(rows.labels)[1]][:limit]
    else:
        with open(data, newline="", encoding="utf-8") as handle:
            raw = [row["text"] for row in csv.DictReader(handle)][:limit]
    if not raw:  # an empty reference set would only fail later, in run, on the GPU machine
        sys.exit(f"{data}: no tweets to store as the reference (an empty CSV, or --limit "
                 f"{limit}); bench/gpu.py run needs some")
    texts = prepare_model_texts(raw)
    # Keras in float32, whatever the machine's default runtime and precision: a fixed reference
    # wherever it is made (on the GPU machine "auto" is bfloat16, which compared with itself)
    model = TransformerModel.load(target, {**read_json(target / "config.json"),
                                           "runtime": "keras", "precision": "float32"})
    proba = model.predict_proba(texts)
    np.savez(out / CHECK_FILE, texts=np.array(texts, dtype=str),
             topic=proba.topic.argmax(axis=1), sentiment=proba.sentiment.argmax(axis=1),
             backend=np.array(keras.backend.backend()),
             precision=np.array(resolve_precision(model.config.precision)))
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({size / 2**20:.1f} MiB): model copy and its {keras.backend.backend()} "
          f"predictions on {len(texts)} tweets")


def run(check: Path, n: int, batch: int, precision: str | None,
        runtime: str = "keras") -> dict[str, object]:
    import keras
    import numpy as np

    from fintweet.core.artifacts import read_json
    from fintweet.models.transformer import TransformerModel, gpu_visible, resolve_precision

    with np.load(check / CHECK_FILE, allow_pickle=False) as stored:
        texts = [str(t) for t in stored["texts"]]
        reference = {task: stored[task] for task in ("topic", "sentiment")}
        made_by = {key: str(stored[key]) for key in ("backend", "precision") if key in stored}
    if not texts:  # checked before the model loads: agreement and n // len(texts) need some
        sys.exit(f"{check / CHECK_FILE}: no reference tweets; rerun bench/gpu.py prepare with a "
                 f"--data CSV that has rows and a --limit above 0")
    config = read_json(check / MODEL_DIR / "config.json")
    config["predict_batch_size"] = batch
    if precision:
        config["precision"] = precision
    config["runtime"] = runtime
    model = TransformerModel.load(check / MODEL_DIR, config)
    mine = model.predict_proba(texts)  # also the warm-up: every bucket shape is compiled here
    agreement = {task: float((getattr(mine, task).argmax(axis=1) == reference[task]).mean())
                 for task in reference}
    result: dict[str, object] = {
        "backend": keras.backend.backend(), "gpu": gpu_visible(),
        "precision": resolve_precision(model.config.precision), "runtime": model.runtime_,
        "agreement": agreement, "reference_tweets": len(texts), "reference": made_by,
    }
    if n > 0:
        many = (texts * (n // len(texts) + 1))[:n]
        # The untimed pass: sorted by length, n tweets make batches of padded lengths that the
        # reference tweets at this batch size never did, and each new shape compiles (XLA);
        # the first GPU run timed that (3,986 tweets/s) instead of the classifier.
        started = time.perf_counter()
        model.predict_proba(many)
        first = time.perf_counter() - started
        started = time.perf_counter()
        model.predict_proba(many)
        seconds = time.perf_counter() - started
        assert model.texts_ is not None
        started = time.perf_counter()
        model.texts_.encode(many)
        tokenize = time.perf_counter() - started
        result.update(n=n, batch=batch, first_pass_s=round(first, 3), seconds=round(seconds, 3),
                      tweets_per_s=round(n / seconds, 1), tokenize_s=round(tokenize, 3))
    return result


def holdout(model_path: Path, data_dir: Path | None, max_rows: int | None, out: Path,
            runtime: str = "keras") -> dict[str, float]:
    """The model's probabilities on the holdouts of the CSVs it was trained on, refused when
    the artifact's data fingerprint says it was trained on other rows (a wrong ``--max-rows``
    or data dir would otherwise score it on tweets it saw). Returns each task's accuracy."""
    import numpy as np

    from fintweet.core.artifacts import read_artifact
    from fintweet.core.config import Settings
    from fintweet.core.labels import TASKS
    from fintweet.models import load
    from fintweet.trainer.train import load_splits

    data_dir = data_dir or Settings.from_env().data_dir  # where fintweet train reads
    splits = load_splits(data_dir, max_rows=max_rows)
    info = read_artifact(model_path)
    if info.manifest.get("data_fingerprint") != splits.fingerprint():
        rows = f"--max-rows {max_rows}" if max_rows else "all their rows"
        sys.exit(f"{info.path}: trained on other rows than {data_dir} with {rows}; give the "
                 "data dir and --max-rows it was trained with")
    model = load(model_path, transformer_runtime=runtime)
    arrays: dict[str, np.ndarray] = {"version": np.array(info.version),
                                     "kind": np.array(info.kind),
                                     "data_fingerprint": np.array(splits.fingerprint())}
    accuracy = {}
    for task in TASKS:
        split = splits.task(task)
        proba = model.predict_proba(split.texts("holdout")).task(task)
        arrays[f"{task}_proba"] = proba.astype(np.float32)
        arrays[f"{task}_labels"] = split.holdout.labels
        accuracy[task] = round(float((proba.argmax(axis=1) == split.holdout.labels).mean()), 4)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **arrays)
    return accuracy


def adopt(check: Path, out: Path) -> Path:
    """A model fine-tuned on the GPU machine and packed by ``bench/gpu_run.sh`` becomes a
    models-folder artifact here, so evaluate, the worker and the ensemble can use it. Its
    weights are the float16 copy (rounded once; loaded as float32), so the manifest's hashes
    are recomputed and ``adopted_from`` says what the file is."""
    from fintweet.core.artifacts import (
        MANIFEST_KEYS,
        TRAINED_ROWS_FILE,
        read_json,
        write_artifact,
    )
    from fintweet.models.transformer import TransformerModel

    manifest = read_json(check / "artifact.json")
    config = read_json(check / MODEL_DIR / "config.json")
    model = TransformerModel.load(check / MODEL_DIR, config)
    keep = {k: v for k, v in manifest.items() if k not in MANIFEST_KEYS}
    keep["adopted_from"] = (f"{manifest['version']} via bench/gpu.py adopt: weights rounded "
                            "to float16 for the transfer")

    def write_files(directory: Path) -> None:
        model.save(directory)
        if (check / TRAINED_ROWS_FILE).is_file():  # what evaluate checks its rows against
            shutil.copyfile(check / TRAINED_ROWS_FILE, directory / TRAINED_ROWS_FILE)

    return write_artifact(out, "transformer", write_files,
                          metrics=read_json(check / "metrics.json"), config=config,
                          data_fingerprint=manifest["data_fingerprint"], extra=keep,
                          version=manifest["version"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("jax", "torch", "tensorflow", "numpy"),
                        help="Keras backend (default: $KERAS_BACKEND, else Keras's own)")
    commands = parser.add_subparsers(dest="command", required=True)
    enc = commands.add_parser("encoder", help="the checkpoint to fine-tune, float16")
    enc.add_argument("--encoder", type=Path, help="checkpoint dir (default: the package's)")
    enc.add_argument("--out", type=Path, default=Path(".gpucheck/encoder"))
    prep = commands.add_parser("prepare", help="model copy + its reference predictions")
    prep.add_argument("--model", type=Path, required=True, help="transformer artifact dir")
    prep.add_argument("--data", type=Path, required=True, help="CSV with a text column")
    prep.add_argument("--out", type=Path, default=Path(".gpucheck"))
    prep.add_argument("--limit", type=int, default=2000, help="reference tweets (default 2000)")
    prep.add_argument("--holdout", action="store_true",
                      help="take them from the trainer's holdout of --data (a labelled CSV)")
    go = commands.add_parser("run", help="rate and agreement with the reference")
    go.add_argument("--check", type=Path, default=Path(".gpucheck"))
    go.add_argument("--n", type=int, default=100_000, help="tweets timed (0: none)")
    go.add_argument("--batch", type=int, default=1024)
    go.add_argument("--precision", choices=("auto", "float32", "mixed_bfloat16"))
    go.add_argument("--runtime", choices=("keras", "onnx", "onnx-int8"), default="keras",
                    help="keras (default: what a GPU runs), or ONNX Runtime on a CPU")
    take = commands.add_parser("adopt", help="a GPU-trained model packed by bench/gpu_run.sh "
                               "becomes an artifact in a models folder")
    take.add_argument("--check", type=Path, required=True, help="the unpacked check dir")
    take.add_argument("--out", type=Path, required=True, help="models folder")
    held = commands.add_parser("holdout", help="an artifact's probabilities on its two holdouts, "
                               "for bench/seed_average.py")
    held.add_argument("--model", type=Path, required=True, help="any artifact dir")
    held.add_argument("--data-dir", type=Path, help="the CSVs it was trained on (default: "
                      "the trainer's, $FINTWEET_DATA_DIR or ../shared/data)")
    held.add_argument("--max-rows", type=int, help="as given to fintweet train, if it was")
    held.add_argument("--out", type=Path, required=True, help="the .npz to write")
    held.add_argument("--runtime", choices=("keras", "onnx", "onnx-int8"), default="keras",
                      help="how a transformer is served (default keras)")
    args = parser.parse_args(argv)
    _set_backend(args.backend)
    from fintweet.core.errors import UserError

    try:
        return dispatch(args)
    except UserError as exc:  # a missing model or CSV: one line, not a traceback
        sys.exit(f"gpu.py {args.command}: {exc}")


def dispatch(args: argparse.Namespace) -> int:
    if args.command == "holdout":
        accuracy = holdout(args.model, args.data_dir, args.max_rows, args.out, args.runtime)
        print(json.dumps({"model": str(args.model), "out": str(args.out), "accuracy": accuracy}))
        return 0
    if args.command == "prepare":
        prepare(args.model, args.data, args.out, args.limit, args.holdout)
    elif args.command == "encoder":
        pack_encoder(args.encoder, args.out)
    elif args.command == "adopt":
        print(f"wrote {adopt(args.check, args.out)}")
    else:
        print(json.dumps(run(args.check, args.n, args.batch, args.precision, args.runtime)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
