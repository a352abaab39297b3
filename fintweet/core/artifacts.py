"""The on-disk model artifact: ``<out>/<kind>/<version>/`` plus a ``current`` symlink beside the
versions.

Why this shape: a model is published while workers run (each loads ``current`` when it starts,
and keeps that model until restarted), so a worker starting meanwhile must never see a
half-written one; and nobody should have to run untrusted code to read a model. So a version is
built in a hidden temp dir, every file is fsynced, the dir is renamed into place, and only then is
``current`` switched (a symlink made under a temp name and ``os.replace``d over the old one, which
is atomic on POSIX). The temp dir is locked while written, so the next write or prune removes one
whose writer was killed. Everything except ``model.keras`` is JSON or ``.npz`` read with
``allow_pickle=False``; ``artifact.json`` is written last and lists a SHA-256 per file, so a
missing, truncated or edited file is an :class:`ArtifactError` on load rather than a wrong answer.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import sys
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from fintweet.core.errors import UserError
from fintweet.core.labels import TASKS, label_map

# 2: every model has a topic and a sentiment head; labels.json holds both label maps.
# 1: topic-only models (refused with the command that rebuilds them).
FORMAT_VERSION = 2
ARTIFACT_FILE = "artifact.json"
# The manifest entries write_artifact sets itself; anything else in a manifest came as ``extra``.
MANIFEST_KEYS = ("format_version", "kind", "version", "created_at", "data_fingerprint", "files")
LABELS_FILE = "labels.json"
METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.json"
CURRENT = "current"
# The kinds an artifact can be (``fintweet.models.KINDS`` maps each to its estimator): here so
# that an error about a missing model can tell a kind not trained yet from a name that is none.
MODEL_KINDS = ("linear", "ann", "cnn", "ensemble", "transformer", "cascade")
# The files every artifact has, whatever its kind; the model adds its own (model.keras, *.npz...).
COMMON_FILES = (LABELS_FILE, METRICS_FILE, CONFIG_FILE)
# Per task, a 64-bit hash of each row (text and label) the model trained on
# (``fintweet.core.data.row_hashes``), and under ``MODEL_TEXTS`` one of each model text it trained
# on, both tasks' (``text_hashes``); written by `fintweet train`, absent from older artifacts.
TRAINED_ROWS_FILE = "trained_rows.npz"
MODEL_TEXTS = "model_texts"
# A version being written: ``.tmp-<version>``, locked (flock) by its writer until renamed.
TMP_PREFIX = ".tmp-"
# An unlocked temp dir younger than this may be one whose writer has made it but not yet locked
# it; older, its writer was killed (a lock dies with its process) and it is removed.
ABANDONED_AFTER_S = 60.0


def labels_document() -> dict[str, Any]:
    """What ``labels.json`` holds: the label map of each head, in head order."""
    return {task: label_map(task) for task in TASKS}


class ArtifactError(UserError, ValueError):
    """A model artifact that cannot be used; the message names the path and what is wrong."""


@dataclass(frozen=True)
class ArtifactInfo:
    """A verified version dir and what its ``artifact.json`` says."""

    path: Path
    kind: str
    version: str
    manifest: dict[str, Any]

    def file(self, name: str) -> Path:
        return self.path / name


# What new_version names: its UTC time, then six hex digits.
VERSION_NAME = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{6}")


def new_version(seed_text: str = "", now: datetime | None = None) -> str:
    """``20261123T221500Z-ab12cd``: sorts by time; the suffix (a hash of ``seed_text`` and random
    bytes) keeps two versions made in the same second apart."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    digest = hashlib.sha256(seed_text.encode() + secrets.token_bytes(8)).hexdigest()[:6]
    return f"{stamp}-{digest}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc})") from None


def save_arrays(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Plain numeric/str arrays only: object arrays would need pickle to read back."""
    for name, array in arrays.items():
        if np.asarray(array).dtype == object:
            raise TypeError(f"array {name!r} has dtype object; artifacts store no pickles")
    with open(path, "wb") as handle:
        named: dict[str, Any] = {k: np.asarray(v) for k, v in arrays.items()}
        np.savez(handle, **named)


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        # NumPy reads a file that is no archive as a pickle, and says to allow pickles: never.
        if not zipfile.is_zipfile(path):
            what = "not a valid weights file (no .npz archive)"
        elif "allow_pickle" in str(exc):
            what = "holds object arrays, which only pickle reads and artifacts never store"
        else:
            what = f"not a valid weights file ({exc})"
        raise ArtifactError(f"{path}: {what}; copy the model again, or retrain it") from None


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_artifact(
    out_dir: Path,
    kind: str,
    write_model_files: Callable[[Path], None],
    *,
    metrics: Mapping[str, Any],
    config: Mapping[str, Any],
    data_fingerprint: str,
    extra: Mapping[str, Any] | None = None,
    version: str | None = None,
) -> Path:
    """Write one complete version of ``kind`` under ``out_dir`` and point ``current`` at it.
    Returns the version dir. ``current`` is untouched if anything fails before the end."""
    kind_dir = Path(out_dir) / kind
    check_switchable(kind_dir)
    kind_dir.mkdir(parents=True, exist_ok=True)
    seed_text = f"{kind}:{data_fingerprint}:{json.dumps(config, sort_keys=True)}"
    version = version or new_version(seed_text)
    final = kind_dir / version
    if final.exists():
        raise ArtifactError(f"{final}: version already exists")
    remove_abandoned(kind_dir)
    tmp = kind_dir / f"{TMP_PREFIX}{version}"
    tmp.mkdir()
    lock: int | None = None
    try:
        # Locked while written, so that a later write can tell this dir from one whose writer
        # was SIGKILLed (an out-of-memory kill mid-train), which nothing else would remove.
        # Where a directory cannot be locked (NFS emulates flock with write locks), unlocked:
        # remove_abandoned cannot lock it either, so it leaves it alone.
        lock = os.open(tmp, os.O_RDONLY)
        with contextlib.suppress(OSError):
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new dir: nobody else holds it
        write_model_files(tmp)
        write_json(tmp / LABELS_FILE, labels_document())
        write_json(tmp / METRICS_FILE, dict(metrics))
        write_json(tmp / CONFIG_FILE, dict(config))
        # Relative POSIX paths: a composite model (the ensemble) keeps each member in a sub-dir.
        files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        manifest = {
            "format_version": FORMAT_VERSION,
            "kind": kind,
            "version": version,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "data_fingerprint": data_fingerprint,
            "files": {name: sha256_file(tmp / name) for name in files},
            **(dict(extra) if extra else {}),
        }
        write_json(tmp / ARTIFACT_FILE, manifest)
        for name in [*files, ARTIFACT_FILE]:
            _fsync_path(tmp / name)
        for directory in sorted({(tmp / name).parent for name in files}, reverse=True):
            _fsync_path(directory)
        # Into place and current in one hold of the kind's lock: between the two, a prune
        # (which keeps the newest by name, and names sort only to the second) could take the
        # new version for an old one and remove it before the switch.
        with kind_locked(kind_dir):
            os.rename(tmp, final)
            try:
                _fsync_path(kind_dir)
                _switch_current(kind_dir, version)
            except BaseException:
                # Stopped (a Ctrl-C, a failed check) before ``current`` moved: a complete version
                # nothing names, which the trainer reports as not published, and which a prune
                # would take for the newest. Back to its temp name, still under the lock, and
                # removed with the rest below; kept if the switch itself was done.
                with contextlib.suppress(OSError):
                    if current_version(kind_dir) != version:
                        os.rename(final, tmp)
                raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if lock is not None:
            os.close(lock)
    return final


def check_switchable(kind_dir: Path, then: str = "train again") -> None:
    """Refuse a kind's folder that is a file, and a ``current`` that is not a link:
    :func:`switch_current` cannot replace a directory, and a models folder copied with ``scp -r``
    or ``rsync -L`` has one. Checked before training, not after an hour of it. ``then``: what to
    run once the obstacle is moved aside."""
    kind_dir = Path(kind_dir)
    if kind_dir.exists() and not kind_dir.is_dir():
        raise ArtifactError(f"{kind_dir}: a file, not the folder of {kind_dir.name}'s versions; "
                            f"move it aside, then {then}")
    current = kind_dir / CURRENT
    if current.exists() and not current.is_symlink():
        raise ArtifactError(f"{current}: a {'directory' if current.is_dir() else 'file'}, not the "
                            "link to the version in use (copied without links?); move it aside, "
                            f"then {then}")


def remove_abandoned(kind_dir: Path, now: float | None = None) -> list[Path]:
    """Remove the temp dirs of writers that died (no lock held, older than
    :data:`ABANDONED_AFTER_S`) and return them. A half-written version can be as large as a
    whole one (a transformer is ~90 MB), and nothing reads these dirs."""
    now = time.time() if now is None else now
    removed = []
    for child in sorted(kind_dir.glob(f"{TMP_PREFIX}*")):
        if child.is_symlink() or not child.is_dir():
            continue
        try:
            fd = os.open(child, os.O_RDONLY)
        except OSError:  # renamed into place or removed meanwhile
            continue
        try:
            # Its writer alive (BlockingIOError), or no locks here (NFS): left alone.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # The dir this fd holds, still at this name: its writer may have renamed it into
            # place (or removed it) between the open and the lock, and released the lock.
            held = os.fstat(fd)
            abandoned = (os.stat(child).st_ino == held.st_ino
                         and now - held.st_mtime >= ABANDONED_AFTER_S)
            if abandoned:
                shutil.rmtree(child, ignore_errors=True)
        except OSError:
            abandoned = False
        finally:
            os.close(fd)
        if abandoned and not child.exists():
            removed.append(child)
            print(f"removed {child}: a version whose writer stopped before finishing it",
                  file=sys.stderr, flush=True)
    return removed


@contextlib.contextmanager
def kind_locked(kind_dir: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive lock (flock) on the kind's dir itself, so that switches of ``current``
    and prunes run one at a time across processes: `fintweet models use OLD` must not verify OLD
    while a `prune` that read another version as current removes it. The dir, not a lock file,
    so that nothing is added beside the versions. Where the filesystem has no locks (some NFS
    mounts), unlocked."""
    fd = os.open(kind_dir, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):  # EOPNOTSUPP/ENOLCK: no locks here
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def switch_current(kind_dir: Path, version: str) -> None:
    """Atomically point ``<kind_dir>/current`` at ``version`` (relative link, so the models dir can
    be moved or mounted elsewhere). The target must be a complete, verified version; it is
    verified under the kind's lock, so a concurrent prune cannot remove it before the switch."""
    with kind_locked(kind_dir):
        _switch_current(Path(kind_dir), version)


def _switch_current(kind_dir: Path, version: str) -> None:
    # os.replace cannot put a link over a directory (IsADirectoryError, after the verification)
    check_switchable(kind_dir, then=f"run `fintweet models --models {kind_dir.parent} use "
                                   f"{kind_dir.name} {version}`")
    read_artifact(kind_dir / version)
    link_tmp = kind_dir / f".current-{os.getpid()}-{secrets.token_hex(4)}"
    os.symlink(version, link_tmp)
    try:
        os.replace(link_tmp, kind_dir / CURRENT)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            link_tmp.unlink()
        raise
    _fsync_path(kind_dir)


def versions(kind_dir: str | os.PathLike[str]) -> list[str]:
    """The complete versions of one kind, newest first (a version's name starts with its UTC
    time, so names sort by age); temp dirs and the ``current`` link are not versions."""
    root = Path(kind_dir)
    if not root.is_dir():
        return []
    return sorted((child.name for child in root.iterdir()
                   if not child.name.startswith(".") and child.name != CURRENT
                   and child.is_dir() and not child.is_symlink()
                   and (child / ARTIFACT_FILE).is_file()), reverse=True)


def current_version(kind_dir: str | os.PathLike[str]) -> str | None:
    """The version ``current`` names, or None without a link (its target may be missing)."""
    link = Path(kind_dir) / CURRENT
    return Path(os.readlink(link)).name if link.is_symlink() else None


def prune_versions(kind_dir: str | os.PathLike[str], keep: int) -> list[Path]:
    """Remove all but the ``keep`` newest versions, never the one ``current`` names: each
    version is a full copy (an ANN's is ~160 MB) and training adds one per run. A process that
    loaded a removed version keeps serving it; ensembles and cascades hold copies of their
    members, so none depends on another kind's version. Returns the removed dirs."""
    if keep < 1:
        # The newest is always kept: it may be one a running train has just renamed into place
        # and is about to point current at.
        raise ValueError(f"keep must be 1 or more, got {keep}")
    root = Path(kind_dir)
    with kind_locked(root):
        return _prune_versions(root, keep)


def _prune_versions(root: Path, keep: int) -> list[Path]:
    current = current_version(root)
    if current is None or not (root / CURRENT / ARTIFACT_FILE).is_file():
        # Which version serves is unknown: removing "all but the current one" could remove
        # the one an operator meant to point it back at.
        raise ArtifactError(f"{root / CURRENT}: names no version here, so none is known to be "
                            "the one to keep; point it at one first (`fintweet models use`)")
    # Half-written versions of killed trainings: as large as whole ones, and only the next
    # training removed them. A running training's is locked, and left alone.
    remove_abandoned(root)
    removed = []
    # A copy named by hand is no one's to remove, nor counted among the newest.
    trained = [version for version in versions(root) if VERSION_NAME.fullmatch(version)]
    for version in trained[keep:]:
        if version != current:
            _remove_version(root, version)
            removed.append(root / version)
    if removed:
        _fsync_path(root)
    return removed


def _remove_version(root: Path, version: str) -> None:
    """Rename the version out of the listing, then remove it: removed in place, an interrupted
    prune left a half-deleted version that was still listed (its manifest among the files
    left). Renamed to a temp dir, what an interruption leaves is removed by the next write or
    prune; locked meanwhile, so that neither removes it under this one."""
    doomed = root / f"{TMP_PREFIX}{version}-removed-{secrets.token_hex(3)}"
    fd = os.open(root / version, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):  # no locks here (NFS): unlocked, as a writer's
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(root / version, doomed)
        shutil.rmtree(doomed)
    finally:
        os.close(fd)


def resolve_version_dir(path: str | os.PathLike[str]) -> Path:
    """``<out>/<kind>/current``, ``<out>/<kind>/<version>`` or ``<out>/<kind>`` → the version dir.
    The ``current`` link is resolved once, here, so a switch during a load cannot mix versions."""
    path = Path(path)
    if not path.exists():
        if path.is_symlink():
            raise ArtifactError(f"{path}: dangling link (points at {os.readlink(path)}); "
                                f"{_train_hint(path)}")
        raise ArtifactError(f"{path}: no such model artifact; {_train_hint(path)}")
    if not path.is_dir():
        raise ArtifactError(f"{path}: not a directory; expected a model artifact dir")
    if (path / ARTIFACT_FILE).exists():
        return path.resolve()
    current = path / CURRENT
    if current.exists():
        # publish() links a version by its bare name; a link elsewhere would serve whatever
        # directory it names, vouched for only by its own manifest.
        target = current.resolve()
        if target.parent != path.resolve():
            raise ArtifactError(f"{current}: points at {os.readlink(current)}, outside "
                                f"{path}; {_train_hint(current)}")
        return target
    if current.is_symlink():
        raise ArtifactError(f"{current}: dangling link (points at {os.readlink(current)}); "
                            f"{_train_hint(current)}")
    if VERSION_NAME.fullmatch(path.name):  # named as train names a version: not a kind
        raise ArtifactError(f"{path}: a version folder with no {ARTIFACT_FILE} (unfinished, "
                            f"or copied in part); {version_remedy(path)}")
    raise ArtifactError(
        f"{path}: neither a model version (no {ARTIFACT_FILE}) nor a model dir with a "
        f"'{CURRENT}' link; {_train_hint(path)}"
    )


def _train_command(kind_dir: Path) -> str:
    """The command that writes ``<out>/<kind>``."""
    return f"`fintweet train --models {kind_dir.name} --out {kind_dir.parent}`"


def _train_hint(path: Path) -> str:
    """What to run for a missing ``<out>/<kind>`` (or its ``current``)."""
    kind_dir = path.parent if path.name == CURRENT else path
    if VERSION_NAME.fullmatch(kind_dir.name):  # a version named, not a kind
        return version_remedy(kind_dir)
    if kind_dir.name not in MODEL_KINDS:
        return (f"{kind_dir.name!r} is not a model kind ({', '.join(MODEL_KINDS)}); name one, or "
                "the folder of a trained model")
    if kind_dir.parent.exists() and not kind_dir.parent.is_dir():  # FINTWEET_MODELS_DIR a file
        return (f"{kind_dir.parent} is a file, not a models folder: point --models / "
                "FINTWEET_MODELS_DIR at the folder `fintweet train --out` wrote")
    if known := versions(kind_dir):  # a link lost or broken, its versions still there
        return (f"point it at a version with `fintweet models --models {kind_dir.parent} use "
                f"{kind_dir.name} {known[0]}` (the newest of {len(known)}), or train one with "
                f"{_train_command(kind_dir)}")
    return f"train one with {_train_command(kind_dir)}"


def read_artifact(path: str | os.PathLike[str], verify: bool = True) -> ArtifactInfo:
    """Read and (by default) verify a version: format version, labels, and that the files are
    exactly the listed ones with their hashes. Every refusal says what to run."""
    version_dir = resolve_version_dir(path)
    try:
        return _read_version(version_dir, verify)
    except ArtifactError as exc:
        raise ArtifactError(f"{exc}; {version_remedy(version_dir)}") from None


def _manifest_kind(version_dir: Path) -> str | None:
    """The kind the version's manifest names, if it can be read and names one plausibly (a kind,
    or the name of the folder the version is in)."""
    try:
        kind = json.loads((version_dir / ARTIFACT_FILE).read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        return None
    plausible = isinstance(kind, str) and kind in (*MODEL_KINDS, version_dir.parent.name)
    return kind if plausible else None


def version_remedy(version_dir: Path) -> str:
    """What to do about a version that cannot be used. Its kind comes from its manifest, else
    from the folder it is in when that is named as a kind: a copy elsewhere (``copies/mine``)
    was sent to `fintweet train --models copies`, which is no kind."""
    kind_dir = version_dir.parent
    kind = _manifest_kind(version_dir) or (kind_dir.name if kind_dir.name in MODEL_KINDS
                                           else None)
    if kind is None:
        return ("copy it again from the models folder it came from, or retrain its kind with "
                "`fintweet train --models KIND`")
    if kind != kind_dir.name:  # a copy outside a models folder
        return (f"copy it again from the models folder it came from, or retrain with "
                f"`fintweet train --models {kind}` and copy the new version")
    others = [v for v in versions(kind_dir) if v != version_dir.name]
    switch = (f"switch to another version (`fintweet models --models {kind_dir.parent} use "
              f"{kind} {others[0]}`, the newest other) or " if others else "")
    return f"{switch}retrain with {_train_command(kind_dir)}"


def _read_version(version_dir: Path, verify: bool) -> ArtifactInfo:
    manifest = read_json(version_dir / ARTIFACT_FILE)
    where = version_dir / ARTIFACT_FILE
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{where}: expected a JSON object")
    for key in (k for k in MANIFEST_KEYS if k != "created_at"):
        if key not in manifest:
            raise ArtifactError(f"{where}: no {key!r} entry")
    if manifest["format_version"] == 1:
        raise ArtifactError(
            f"{where}: a topic-only model from an earlier fintweet (format 1); models now "
            "predict topic and sentiment"
        )
    if manifest["format_version"] != FORMAT_VERSION:
        found = manifest["format_version"]
        what = ("is not supported" if isinstance(found, int) and not isinstance(found, bool)
                else "is no whole number (edited by hand?)")  # "2" read as 2 said: 2 unsupported
        raise ArtifactError(f"{where}: format version {found!r} {what}; this fintweet reads "
                            f"version {FORMAT_VERSION}")
    files = manifest["files"]
    if not isinstance(files, dict):
        raise ArtifactError(f"{where}: 'files' must map file names to SHA-256 hashes")
    for name in COMMON_FILES:
        if name not in files:
            raise ArtifactError(f"{where}: does not list {name}")
    for name in files:
        parts = Path(name).parts
        if not parts or Path(name).is_absolute() or ".." in parts or "\\" in name:
            raise ArtifactError(f"{where}: file name {name!r} points outside the artifact")
    if verify:
        # A file the loader reads but the manifest does not list would be read unverified.
        on_disk = {file.relative_to(version_dir).as_posix() for file in version_dir.rglob("*")
                   if file.is_file()} - {ARTIFACT_FILE}
        unlisted = sorted(on_disk - set(files))
        if unlisted:
            raise ArtifactError(f"{version_dir / unlisted[0]}: not listed in {ARTIFACT_FILE} "
                                "(added after training)")
        for name, expected in files.items():
            file = version_dir / name
            if not file.is_file():
                raise ArtifactError(f"{file}: missing (listed in {ARTIFACT_FILE})")
            if sha256_file(file) != expected:
                raise ArtifactError(
                    f"{file}: contents do not match the SHA-256 in {ARTIFACT_FILE} "
                    "(modified or truncated after training)"
                )
        labels = read_json(version_dir / LABELS_FILE)
        if labels != labels_document():
            raise ArtifactError(
                f"{version_dir / LABELS_FILE}: label map differs from this fintweet's labels"
            )
    return ArtifactInfo(
        path=version_dir, kind=str(manifest["kind"]), version=str(manifest["version"]),
        manifest=manifest,
    )


def available(models_dir: str | os.PathLike[str]) -> list[str]:
    """The model kinds under ``models_dir`` whose ``current`` link points at a version dir."""
    root = Path(models_dir)
    if not root.is_dir():
        return []
    return sorted(
        child.name for child in root.iterdir()
        if child.is_dir() and (child / CURRENT / ARTIFACT_FILE).is_file()
    )
