"""``fintweet models``: the trained versions of each kind, which one is current, rolling back to
an earlier one, and removing old ones."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fintweet.cli.options import add_models_dir_option
from fintweet.core.errors import UserError

DEFAULT_KEEP = 3


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models", help="list the trained versions of each model kind; switch or prune them",
        description="Each `fintweet train` publishes a new version of a kind under "
                    "<models>/<kind>/ and points <kind>/current at it. Without an action, list "
                    "every kind's versions, newest first: when trained, holdout accuracy of both "
                    "heads, size, and which is current (*). `use` points current at another "
                    "version (a rollback: the artifact is verified first); `prune` removes old "
                    "versions, never the current one.")
    add_models_dir_option(parser)
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    use = actions.add_parser(
        "use", help="point KIND/current at VERSION (e.g. to roll back)",
        description="Point <models>/KIND/current at VERSION, atomically, after verifying its "
                    "files. Running workers and web apps keep the model they loaded: restart "
                    "them to serve it.")
    use.add_argument("kind", metavar="KIND")
    use.add_argument("version", metavar="VERSION", help="a version name `fintweet models` lists")
    prune = actions.add_parser(
        "prune", help="remove old versions of KIND, keeping the newest N and the current one",
        description="Remove the versions of KIND past the newest --keep, never the one "
                    "current names. A process that loaded a removed version keeps serving it.")
    prune.add_argument("kind", metavar="KIND")
    prune.add_argument("--keep", type=int, default=DEFAULT_KEEP, metavar="N",
                       help=f"the newest N versions (1 or more) are kept, and the current one "
                            f"whatever its age; a version named by hand is never removed "
                            f"(default {DEFAULT_KEEP})")
    for action in (use, prune):  # also after the action: `fintweet models use ann V --models D`
        add_models_dir_option(action, default=argparse.SUPPRESS)
    parser.set_defaults(func=run, _parser=parser)


def run(args: argparse.Namespace) -> int:
    from fintweet.core.config import Settings

    settings = Settings.from_env(models_dir=args.models_dir).check("models_dir")
    root = Path(settings.models_dir)
    if not root.is_dir():
        what = "a file, not a models folder" if root.exists() else "no such models folder"
        raise UserError(f"{root}: {what} (--models or FINTWEET_MODELS_DIR names the folder "
                        "`fintweet train --out` wrote)")
    if args.action == "use":
        return use(root, args.kind, args.version)
    if args.action == "prune":
        if args.keep < 1:
            args._parser.error(f"--keep must be 1 or more (the newest version is always kept: "
                               f"a running train may have just written it), got {args.keep}")
        return prune(root, args.kind, args.keep)
    print(listing(root))
    return 0


def _kind_dir(root: Path, kind: str) -> Path:
    from fintweet.core.artifacts import MODEL_KINDS, versions

    kind_dir = root / kind
    if not versions(kind_dir):
        kinds = [child.name for child in sorted(root.iterdir()) if versions(child)]
        remedy = (f"`fintweet train --models {kind} --out {root}` makes one" if kind in MODEL_KINDS
                  else f"{kind!r} is no model kind: {', '.join(MODEL_KINDS)}")
        raise UserError(f"{kind_dir}: no trained versions of {kind!r} (kinds with versions "
                        f"here: {', '.join(kinds) or 'none'}; {remedy})")
    return kind_dir


def use(root: Path, kind: str, version: str) -> int:
    from fintweet.core.artifacts import current_version, switch_current, versions

    kind_dir = _kind_dir(root, kind)
    known = versions(kind_dir)
    if version not in known:
        raise UserError(f"{kind_dir}: no version {version!r}; its versions, newest first: "
                        f"{', '.join(known)}")
    before = current_version(kind_dir)
    switch_current(kind_dir, version)  # verifies every file's hash first
    if before == version:
        print(f"{kind}: {version} is already current (its files verified)")
        return 0
    print(f"{kind}: current → {version} (was {before or 'none'}); restart the workers and the "
          "web app to serve it")
    return 0


def prune(root: Path, kind: str, keep: int) -> int:
    from fintweet.core.artifacts import current_version, prune_versions, versions

    kind_dir = _kind_dir(root, kind)
    sizes = {path: _size(path) for path in kind_dir.iterdir() if path.is_dir()}
    removed = prune_versions(kind_dir, keep)
    freed = sum(sizes.get(path, 0) for path in removed)
    print(f"{kind}: removed {len(removed)} version(s), {freed / 1e6:,.0f} MB; "
          f"{len(versions(kind_dir))} left, the current one ({current_version(kind_dir)}) "
          "among them")
    return 0


def listing(root: Path) -> str:
    from fintweet.core.artifacts import versions

    kinds = [child for child in sorted(root.iterdir()) if versions(child)]
    if not kinds:
        return (f"no trained models in {root} (`fintweet train` makes them; --models or "
                "FINTWEET_MODELS_DIR names another folder)")
    lines = [f"{'':2}{'kind':<12}{'version':<26}{'trained (UTC)':<18}{'topic':>7}"
             f"{'sentiment':>10}{'size MB':>9}"]
    for kind_dir in kinds:
        lines.extend(_rows(kind_dir))
    lines.append("* current; accuracy on the holdout of its training run (`fintweet evaluate` "
                 "scores any version)")
    return "\n".join(lines)


def _rows(kind_dir: Path) -> list[str]:
    from fintweet.core.artifacts import (
        ARTIFACT_FILE,
        CURRENT,
        METRICS_FILE,
        current_version,
        versions,
    )

    current = current_version(kind_dir)
    rows = []
    use = f"`fintweet models --models {kind_dir.parent} use {kind_dir.name} VERSION`"
    if (kind_dir / CURRENT).exists() and not (kind_dir / CURRENT).is_symlink():
        what = "folder" if (kind_dir / CURRENT).is_dir() else "file"
        rows.append(f"{'!':2}{kind_dir.name:<12}{CURRENT} is a {what}, not the link to a version "
                    f"(copied without links?); move it aside, then {use}")
    elif current not in versions(kind_dir):  # nothing marked *: say why
        rows.append(f"{'!':2}{kind_dir.name:<12}{CURRENT} names "
                    f"{'no version' if current is None else repr(current)}, which is none of "
                    f"these: {use}")
    for version in versions(kind_dir):
        path = kind_dir / version
        manifest = _json(path / ARTIFACT_FILE)
        metrics = _json(path / METRICS_FILE)
        trained = str(manifest.get("created_at", ""))[:16].replace("T", " ")
        rows.append(f"{'*' if version == current else '':2}{kind_dir.name:<12}{version:<26}"
                    f"{trained:<18}{_accuracy(metrics, 'topic'):>7}"
                    f"{_accuracy(metrics, 'sentiment'):>10}{_size(path) / 1e6:>9,.0f}")
    return rows


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _accuracy(metrics: dict[str, Any], task: str) -> str:
    figures = metrics.get(task)
    value = figures.get("accuracy") if isinstance(figures, dict) else None
    return f"{value:.4f}" if isinstance(value, int | float) else "-"


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
