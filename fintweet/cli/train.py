"""``fintweet train``: rebuild the topic models from a labelled CSV and write artifacts."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_MODELS = "linear,ann,cnn,ensemble"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train the topic models and write versioned artifacts",
        description=(
            "Train topic models on topic_train.csv (from --data, --data-dir, or downloaded from "
            "the Hugging Face hub), select epochs and report metrics on a fixed stratified 15% "
            "holdout, then (unless --no-refit) refit each model on train + holdout with the "
            "chosen settings, and write <out>/<model>/<version>/ with <out>/<model>/current "
            "pointing at the newest complete version. The holdout figures printed are those of "
            "the selection run."
        ),
    )
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="folder holding topic_train.csv (default: FINTWEET_DATA_DIR / "
                             "../shared/data; downloaded there if absent)")
    parser.add_argument("--data", type=Path, default=None,
                        help="a labelled CSV (columns text,label) instead of --data-dir")
    parser.add_argument("--models", default=DEFAULT_MODELS,
                        help=f"comma-separated kinds to train (default {DEFAULT_MODELS}; the "
                             "ensemble averages the other three and is assembled from them "
                             "when they are trained in the same run)")
    parser.add_argument("--out", type=Path, default=None,
                        help="models folder (default: FINTWEET_MODELS_DIR or ./models)")
    parser.add_argument("--max-rows", type=int, default=None,
                        help="train on a stratified subsample of at most N rows (quick runs)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="maximum epochs for the Keras models (default: each model's own)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    parser.add_argument("--no-refit", dest="refit", action="store_false",
                        help="ship the model selected on the holdout as it is, trained on the "
                             "85%% train split only (keeps the holdout unseen, e.g. for `fintweet "
                             "demo`, which replays it; default: refit on train + holdout)")
    parser.set_defaults(func=run)


def parse_kinds(raw: str) -> list[str]:
    from fintweet.models import KINDS

    kinds = [k.strip() for k in raw.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        error = ValueError(
            f"--models {raw!r}: unknown kind(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(KINDS)}"
        )
        error.user_facing = True  # type: ignore[attr-defined]
        raise error
    return list(dict.fromkeys(kinds))


def member_overrides(kind: str, overrides: dict[str, object]) -> dict[str, object]:
    if kind == "linear":  # the linear model has no epochs
        return {k: v for k, v in overrides.items() if k != "epochs"}
    return dict(overrides)


def run(args: argparse.Namespace) -> int:
    from fintweet.core.config import Settings
    from fintweet.core.data import load_labelled_csv, resolve_split, split_train_holdout
    from fintweet.trainer.train import results_table, stratified_subsample, train_models

    kinds = parse_kinds(args.models)
    settings = Settings().override(data_dir=args.data_dir, models_dir=args.out)
    csv_path = args.data or resolve_split("train", settings.data_dir)
    data = load_labelled_csv(csv_path)
    if args.max_rows is not None:
        if args.max_rows < 20:
            error = ValueError(f"--max-rows {args.max_rows}: need at least 20 rows")
            error.user_facing = True  # type: ignore[attr-defined]
            raise error
        data = stratified_subsample(data, args.max_rows)
    train, holdout = split_train_holdout(data)
    overrides: dict[str, object] = {}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.seed is not None:
        overrides["seed"] = args.seed
    config = {kind: member_overrides(kind, overrides) for kind in kinds}
    if "ensemble" in config:  # used when its members are not trained in this same run
        from fintweet.models.ensemble import MEMBER_KINDS

        config["ensemble"] = {"member_configs": {
            kind: member_overrides(kind, overrides) for kind in MEMBER_KINDS
        }}
    print(f"data: {csv_path} ({len(data)} rows; train {len(train)}, holdout {len(holdout)})",
          file=sys.stderr)
    paths = train_models(
        train, holdout, kinds, settings.models_dir, config, data_fingerprint=data.fingerprint(),
        refit=args.refit,
    )
    print(results_table(paths))
    return 0
