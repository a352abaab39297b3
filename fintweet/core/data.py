"""Labelled CSV loading: local files always, the Hugging Face hub when no file is given, strict
validation with errors that name the file, the row and the problem, and the deterministic
stratified holdout every report in this project is measured on."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fintweet.core.errors import UserError
from fintweet.core.labels import NUM_SENTIMENTS, NUM_TOPICS, TASKS, is_class_index, num_classes
from fintweet.core.text import text_problem

TOPIC_HUB_BASE_URL = (
    "https://huggingface.co/datasets/zeroshot/twitter-financial-news-topic/resolve/main"
)
SENTIMENT_HUB_BASE_URL = (
    "https://huggingface.co/datasets/zeroshot/twitter-financial-news-sentiment/resolve/main"
)
# split → the local file name (also its name under a FINTWEET_HUB_URL mirror)
HUB_FILES = {
    "train": "topic_train.csv", "valid": "topic_valid.csv",
    "sentiment_train": "sentiment_train.csv", "sentiment_valid": "sentiment_valid.csv",
}
# split → (dataset URL, file name on the hub), where the hub's name differs from ours
_HUB_SOURCES = {
    "sentiment_train": (SENTIMENT_HUB_BASE_URL, "sent_train.csv"),
    "sentiment_valid": (SENTIMENT_HUB_BASE_URL, "sent_valid.csv"),
}


def train_split(task: str) -> str:
    """The split name of ``task``'s training CSV (``resolve_split``'s argument)."""
    if task not in TASKS:
        raise DataError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    return "train" if task == "topic" else f"{task}_train"
HOLDOUT_FRACTION = 0.15
HOLDOUT_SEED = 20_190


class DataError(UserError, ValueError):
    """A labelled CSV that cannot be used; the message names the file, the row and the problem."""


@dataclass(frozen=True)
class LabelledData:
    texts: list[str]
    labels: np.ndarray  # int64, shape (n,)
    source: str  # where the rows came from, for error messages and artifact metadata
    ids: list[str] | None = None  # the CSV's id column, when it has one

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, index: Sequence[int] | np.ndarray) -> LabelledData:
        index = np.asarray(index, dtype=np.int64)
        return LabelledData(
            texts=[self.texts[i] for i in index],
            labels=self.labels[index],
            source=self.source,
            ids=None if self.ids is None else [self.ids[i] for i in index],
        )

    def fingerprint(self) -> str:
        """SHA-256 over texts and labels, stored with every artifact so a model names its data."""
        digest = hashlib.sha256()
        for text, label in zip(self.texts, self.labels.tolist(), strict=True):
            digest.update(text.encode())
            digest.update(b"\x1f")
            digest.update(str(label).encode())
            digest.update(b"\x1e")
        return digest.hexdigest()


def _parse_label(raw: str, where: str, n_classes: int) -> int:
    value = raw.strip()
    if value.startswith("LABEL_"):
        value = value[6:]
    # ASCII digits only: int() also reads "1_0" as 10, "+3", and other scripts' digits.
    if not is_class_index(value.removeprefix("-")):
        raise DataError(f"{where}: label {raw!r} is not an integer (give the class id, "
                        f"0..{n_classes - 1}, or LABEL_<id>)")
    label = int(value)
    if not 0 <= label < n_classes:
        # A topic id read as a sentiment: the usual cause is the topic CSV given for the other.
        hint = ("; the topic CSV's ids go to 19: is this the topic CSV where the sentiment one "
                "belongs?" if n_classes == NUM_SENTIMENTS and label < NUM_TOPICS else "")
        raise DataError(f"{where}: label {label} is outside 0..{n_classes - 1}{hint}")
    return label


def row_hashes(texts: Sequence[str], labels: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row's text and label, what an artifact keeps of the rows it
    trained on (``TRAINED_ROWS_FILE``) so that `evaluate` can tell how many rows of any file
    are training rows: a copy of the training CSV reordered, cut or merged into another file
    has another fingerprint."""
    return text_hashes([f"{label}\x1f{text}"
                        for text, label in zip(texts, np.asarray(labels).tolist(), strict=True)])


def text_hashes(texts: Sequence[str]) -> np.ndarray:
    """A 64-bit hash of each text: of model texts, what tells `evaluate` which rows repeat a
    text the model trained on (whichever task's row it was)."""
    return np.array([int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(),
                                    "little") for text in texts], dtype=np.uint64)


def row_id(row_number: int, text: str) -> str:
    """An id for a CSV row that has none: the row number and the text, hashed. The row number
    keeps two identical tweets in one file apart (the dataset has such rows, and each is one
    labelled example); the text keeps row 3 of one file apart from row 3 of another."""
    digest = hashlib.sha256(f"{row_number}\x1f{text}".encode()).hexdigest()
    return f"r{digest[:24]}"


def parse_labelled_csv(
    raw: bytes, source: str, require_labels: bool = True, task: str = "topic"
) -> LabelledData:
    """Validate and parse CSV bytes whose labels are ``task``'s class ids. With
    ``require_labels=False`` a CSV without a label column is accepted (its labels are all -1),
    which is what replay of unlabelled tweets needs."""
    n_classes = num_classes(task)
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{source}: line {line}: bytes are not valid UTF-8 ({exc.reason} at byte {exc.start});"
            " save the file as UTF-8 (a spreadsheet's \"CSV UTF-8\")"
        ) from None
    if not content.strip():
        raise DataError(f"{source}: file is empty, expected a header row with 'text' and 'label'")
    # strict: an unclosed quote is an error, not the rest of the file read as one text
    reader = csv.DictReader(io.StringIO(content, newline=""), strict=True)
    try:
        return _parse_rows(reader, source, require_labels, n_classes)
    except csv.Error as exc:  # a field past the csv module's limit (128 KiB) or a bad quote
        # line_num counts the lines of the rows read whole: the bad one starts on the next
        raise DataError(f"{source}: line {reader.line_num + 1}: not valid CSV ({exc}); check "
                        "the quoting from there") from None


def extra_fields_problem(row: Mapping[Any, Any], columns: Sequence[str]) -> str | None:
    """Why a ``csv.DictReader`` row has more fields than the header, or None. Most often an
    unquoted comma in a text, which would cut it there silently; a spreadsheet's empty trailing
    cells are no such fields."""
    extra = row.get(None) or []  # DictReader's restkey
    if not any(field.strip() for field in extra):
        return None
    return (f"{len(columns) + len(extra)} fields where the header has {len(columns)}; quote a "
            "text that holds a comma")


def repeated_columns_problem(columns: Sequence[str]) -> str | None:
    """A header naming ``text``, ``label`` or ``id`` twice, or None: ``csv.DictReader`` would
    silently read the last column of each."""
    repeated = sorted({name for name in ("text", "label", "id") if list(columns).count(name) > 1})
    if not repeated:
        return None
    return (f"the header names {' and '.join(map(repr, repeated))} more than once (columns are "
            f"{list(columns)}); keep one of each")


def _parse_rows(reader: csv.DictReader[str], source: str, require_labels: bool,
                n_classes: int) -> LabelledData:
    columns = reader.fieldnames or []
    if "text" not in columns:
        raise DataError(f"{source}: no 'text' column (columns are {columns}); the header "
                        "must name one 'text' (and 'label')")
    if problem := repeated_columns_problem(columns):
        raise DataError(f"{source}: {problem}")
    has_labels = "label" in columns
    if require_labels and not has_labels:
        raise DataError(f"{source}: no 'label' column (columns are {columns}); add the class "
                        "id of each row as 'label'")
    has_ids = "id" in columns
    texts: list[str] = []
    labels: list[int] = []
    ids: list[str] = []
    for row in reader:
        # Data rows start on line 2; DictReader's line_num is where the row ends (quoted newlines).
        where = f"{source}: row {len(texts) + 1} (line {reader.line_num})"
        problem = extra_fields_problem(row, columns)
        if problem:
            raise DataError(f"{where}: {problem}")
        text = row.get("text")
        if text is None or not text.strip():
            raise DataError(f"{where}: text is empty")
        # What a Tweet refuses (blank once decoded, too long, a NUL) is refused here too, so
        # train, evaluate and eda read a file exactly when a replay of it can publish it.
        problem = text_problem(text)
        if problem:
            raise DataError(f"{where}: {problem}")
        texts.append(text)
        if has_labels:
            raw_label = row.get("label")
            if raw_label is None or raw_label.strip() == "":
                raise DataError(f"{where}: label is empty")
            labels.append(_parse_label(raw_label, where, n_classes))
        else:
            labels.append(-1)
        if has_ids:
            # A blank cell gets the id a row of an id-less file gets: a bare row number would
            # be the same id in every such file, and the worker would skip the second as seen.
            ids.append((row.get("id") or "").strip() or row_id(len(texts), text))
    if not texts:
        raise DataError(f"{source}: no data rows after the header; add rows of text and label")
    return LabelledData(
        texts=texts,
        labels=np.asarray(labels, dtype=np.int64),
        source=source,
        ids=ids if has_ids else None,
    )


def load_labelled_csv(
    path: str | os.PathLike[str], require_labels: bool = True, task: str = "topic"
) -> LabelledData:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a CSV file") from None
    return parse_labelled_csv(raw, str(path), require_labels=require_labels, task=task)


def download(split: str, dest_dir: Path, base_url: str | None = None) -> Path:
    """Fetch one split of the dataset from the hub into ``dest_dir`` (kept there as a cache).
    ``base_url`` (or ``FINTWEET_HUB_URL``) points elsewhere, e.g. a mirror or a test server."""
    if split not in HUB_FILES:
        raise DataError(f"unknown split {split!r}; expected one of {sorted(HUB_FILES)}")
    from fintweet.core.config import Settings

    base = base_url or Settings().hub_url
    if base:
        url = f"{base.rstrip('/')}/{HUB_FILES[split]}"
    else:
        hub_base, hub_name = _HUB_SOURCES.get(split, (TOPIC_HUB_BASE_URL, HUB_FILES[split]))
        url = f"{hub_base}/{hub_name}"
    def cannot_keep(problem: str) -> DataError:
        return DataError(f"{dest_dir}: cannot keep downloaded data there ({problem}); point "
                         "FINTWEET_DATA_DIR (or --data-dir) at a folder")

    if dest_dir.exists() and not dest_dir.is_dir():  # said before a download for nothing
        raise cannot_keep("not a directory")
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            raw = response.read()
    except (OSError, ValueError) as exc:  # ValueError: not a URL urllib can open
        hint = "check FINTWEET_HUB_URL or " if base else ""
        raise DataError(f"{url}: download failed ({exc}); {hint}pass a local CSV instead"
                        ) from None
    task = "sentiment" if split.startswith("sentiment") else "topic"
    parse_labelled_csv(raw, url, task=task)  # validated before it replaces a good cache
    # Made only now: a failed download leaves no empty folder behind (a misspelt --data-dir).
    dest = dest_dir / HUB_FILES[split]
    tmp = dest.with_suffix(".part")
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(raw)
        os.replace(tmp, dest)
    except OSError as exc:  # read-only, full, not ours
        tmp.unlink(missing_ok=True)
        raise cannot_keep(exc.strerror or str(exc)) from None
    return dest


def resolve_split(split: str, data_dir: Path, base_url: str | None = None) -> Path:
    """The local file for a split if ``data_dir`` (``Settings.data_dir``) has it, otherwise a
    download into ``data_dir``."""
    if split not in HUB_FILES:
        raise DataError(f"unknown split {split!r}; expected one of {sorted(HUB_FILES)}")
    local = Path(data_dir) / HUB_FILES[split]
    if local.is_file():
        return local
    if local.exists():  # a download would fail to replace it, after fetching for nothing
        raise DataError(f"{local}: is not a file; expected the {split} CSV there")
    try:
        return download(split, Path(data_dir), base_url)
    except DataError as exc:
        # The folder is the likelier mistake (a misspelt --data-dir): say it before the URL.
        raise DataError(f"no {HUB_FILES[split]} in {data_dir}, and {exc}") from None


def stratified_holdout(
    labels: np.ndarray, fraction: float = HOLDOUT_FRACTION, seed: int = HOLDOUT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, holdout), sorted. Per class, a seeded shuffle and the first
    ``round(fraction * n)`` rows (at least one for any class of two or more) go to the holdout,
    so the split depends only on the labels, the fraction and the seed."""
    if not 0 < fraction < 1:
        raise ValueError(f"holdout fraction {fraction} must be between 0 and 1")
    rng = np.random.default_rng(seed)
    holdout: list[np.ndarray] = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        rng.shuffle(members)
        take = round(fraction * len(members))
        if take == 0 and len(members) >= 2:
            take = 1
        holdout.append(members[:take])
    held = np.sort(np.concatenate(holdout)) if holdout else np.empty(0, dtype=np.int64)
    mask = np.ones(len(labels), dtype=bool)
    mask[held] = False
    return np.flatnonzero(mask), held


def split_train_holdout(data: LabelledData) -> tuple[LabelledData, LabelledData]:
    train_idx, holdout_idx = stratified_holdout(data.labels)
    return data.subset(train_idx), data.subset(holdout_idx)
