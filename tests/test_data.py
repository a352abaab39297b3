"""Labelled CSV loading: strict validation with errors that say where and what, the deterministic
stratified holdout every report is measured on, and the hub download against a real local HTTP
server (no network, no mocks of urllib)."""

from __future__ import annotations

import csv
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from fintweet.core.config import Settings
from fintweet.core.data import (
    HOLDOUT_FRACTION,
    HUB_FILES,
    DataError,
    LabelledData,
    download,
    load_labelled_csv,
    resolve_split,
    row_id,
    split_train_holdout,
    stratified_holdout,
    train_split,
)
from fintweet.core.labels import NUM_TOPICS, looks_like_sentiment
from fintweet.devstack.process import free_port

SHARED_TRAIN = Settings().data_dir / "topic_train.csv"

# --- validation ----------------------------------------------------------------------------------

BAD_CSVS = [
    pytest.param(b"", ["file is empty"], id="empty-file"),
    pytest.param(b"\n \n", ["file is empty"], id="only-blank-lines"),
    pytest.param(b"tweet,label\nFed hikes,1\n", ["no 'text' column", "'tweet'"],
                 id="missing-text-column"),
    pytest.param(b"text\nFed hikes\n", ["no 'label' column"], id="missing-label-column"),
    pytest.param(b"text,text,label\nFed hikes,Oil,1\n", ["names 'text' more than once"],
                 id="text-column-twice"),  # the last one was read, silently
    pytest.param(b"text,label\n", ["no data rows"], id="header-only"),
    pytest.param(b"text,label\nFed hikes,1\nOil jumps,20\n",
                 ["row 2 (line 3)", "label 20 is outside 0..19"], id="label-too-large"),
    pytest.param(b"text,label\nFed hikes,-1\n",
                 ["row 1 (line 2)", "label -1 is outside 0..19"], id="label-negative"),
    pytest.param(b"text,label\nFed hikes,1\nOil jumps,6\nGold up,gold\n",
                 ["row 3 (line 4)", "label 'gold' is not an integer"], id="label-not-integer"),
    pytest.param(b"text,label\nFed hikes,1.0\n",
                 ["row 1 (line 2)", "label '1.0' is not an integer"], id="label-float"),
    pytest.param(b"text,label\nFed hikes,1_0\n",
                 ["row 1 (line 2)", "label '1_0' is not an integer"], id="label-underscore"),
    pytest.param("text,label\nFed hikes,\u0663\n".encode(),
                 ["row 1 (line 2)", "label '\u0663' is not an integer"], id="label-arabic-digit"),
    pytest.param(b"text,label\nFed hikes,+3\n",
                 ["row 1 (line 2)", "label '+3' is not an integer"], id="label-plus"),
    pytest.param(b"label,text\n3,Apple beats, shares up 5%\n",
                 ["row 1 (line 2)", "3 fields where the header has 2", "quote a text"],
                 id="unquoted-comma"),
    pytest.param(b"text,label\nFed hikes,LABEL_20\n",
                 ["row 1 (line 2)", "label 20 is outside 0..19"], id="label-key-too-large"),
    pytest.param(b"text,label\nFed hikes,1\nOil jumps,\n",
                 ["row 2 (line 3)", "label is empty"], id="label-empty"),
    pytest.param(b"text,label\nFed hikes\n", ["row 1 (line 2)", "label is empty"],
                 id="row-too-short"),
    pytest.param(b"text,label\nFed hikes,1\n,6\n", ["row 2 (line 3)", "text is empty"],
                 id="text-empty"),
    pytest.param(b'text,label\nFed hikes,1\n"   ",6\n', ["row 2 (line 3)", "text is empty"],
                 id="text-whitespace"),
    pytest.param(b"text,label\nFed hikes,1\nOil \xff\xfe jumps,6\n",
                 ["line 3", "not valid UTF-8"], id="invalid-utf8"),
    pytest.param("text,label\nCafé talk,9\n".encode("latin-1"),
                 ["line 2", "not valid UTF-8"], id="latin1-not-utf8"),
    pytest.param(b'text,label\n"Fed hikes\nrates again",1\nOil,99\n',
                 ["row 2 (line 4)", "label 99 is outside"], id="line-counts-quoted-newline"),
    # the rest of the file was one text before, silently
    pytest.param(b'text,label\nFed hikes,1\n"Oil jumps,2\nGold up,3\n',
                 ["line 3", "not valid CSV", "unexpected end of data"], id="unclosed-quote"),
    # a csv.Error traceback before
    pytest.param(b"text,label\n" + b"a" * 200_000 + b",1\n",
                 ["line 2", "not valid CSV", "field larger than field limit"], id="huge-field"),
]


@pytest.mark.parametrize(("content", "fragments"), BAD_CSVS)
def test_bad_csv_error_names_file_row_and_problem(
    tmp_path: Path, content: bytes, fragments: list[str]
) -> None:
    path = tmp_path / "tweets.csv"
    path.write_bytes(content)
    with pytest.raises(DataError) as caught:
        load_labelled_csv(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    for fragment in fragments:
        assert fragment in message


def test_missing_file_and_directory_are_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.csv: no such file"):
        load_labelled_csv(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="is a directory"):
        load_labelled_csv(tmp_path)


def test_label_keys_numbers_bom_quotes_and_ids_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "mixed.csv"
    path.write_bytes(
        "\ufeffid,text,label\n"
        'a1,"Fed hikes, again",LABEL_1\n'
        "a2,$TSLA up 5%, 19\n"
        ',"Two\nlines",LABEL_0\n'.encode()
    )
    data = load_labelled_csv(path)
    assert data.texts == ["Fed hikes, again", "$TSLA up 5%", "Two\nlines"]
    assert data.labels.tolist() == [1, 19, 0]
    assert data.labels.dtype == np.int64
    assert data.ids == ["a1", "a2", row_id(3, "Two\nlines")]
    assert data.source == str(path)


def test_unlabelled_csv_allowed_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "replay.csv"
    path.write_text("text\nFed hikes\nOil jumps\n")
    with pytest.raises(DataError, match="no 'label' column"):
        load_labelled_csv(path)
    assert load_labelled_csv(path, require_labels=False).labels.tolist() == [-1, -1]


def test_fingerprint_tracks_texts_and_labels() -> None:
    base = LabelledData(["a", "b"], np.array([1, 2]), "x")
    assert base.fingerprint() == LabelledData(["a", "b"], np.array([1, 2]), "y").fingerprint()
    assert base.fingerprint() != LabelledData(["a", "b"], np.array([1, 3]), "x").fingerprint()
    assert base.fingerprint() != LabelledData(["ab", ""], np.array([1, 2]), "x").fingerprint()


# --- holdout -------------------------------------------------------------------------------------


def imbalanced_labels() -> np.ndarray:
    """Twenty classes sized like the real data's long tail, shuffled."""
    sizes = [2, 3, 5, 7, 11, 13, 20, 33, 44, 69, 100, 166, 255, 321, 359, 487, 501, 624, 837, 987]
    labels = np.repeat(np.arange(NUM_TOPICS), sizes)
    return np.random.default_rng(7).permutation(labels)


def assert_good_holdout(labels: np.ndarray, train: np.ndarray, held: np.ndarray) -> None:
    assert np.intersect1d(train, held).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, held])), np.arange(len(labels)))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(held) > 0)  # sorted, no repeats
    for cls in np.unique(labels):
        size = int((labels == cls).sum())
        in_holdout = int((labels[held] == cls).sum())
        assert in_holdout >= 1, f"class {cls} ({size} rows) missing from the holdout"
        assert in_holdout < size, f"class {cls} has no training rows left"
        assert abs(in_holdout - HOLDOUT_FRACTION * size) <= 1, (cls, size, in_holdout)


def test_holdout_is_stratified_disjoint_and_complete() -> None:
    labels = imbalanced_labels()
    train, held = stratified_holdout(labels)
    assert_good_holdout(labels, train, held)
    assert abs(len(held) - HOLDOUT_FRACTION * len(labels)) <= NUM_TOPICS


def test_holdout_is_deterministic_and_seeded() -> None:
    labels = imbalanced_labels()
    first = stratified_holdout(labels)
    second = stratified_holdout(labels.copy())
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    other_seed = stratified_holdout(labels, seed=1)
    assert not np.array_equal(first[1], other_seed[1])
    assert_good_holdout(labels, *other_seed)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_holdout_rejects_impossible_fraction(fraction: float) -> None:
    with pytest.raises(ValueError, match="fraction"):
        stratified_holdout(np.array([0, 0, 1, 1]), fraction=fraction)


def test_holdout_on_the_real_training_csv() -> None:
    data = load_labelled_csv(SHARED_TRAIN)
    train, holdout = split_train_holdout(data)
    assert len(train) + len(holdout) == len(data)
    assert_good_holdout(data.labels, *stratified_holdout(data.labels))
    assert set(holdout.labels.tolist()) == set(range(NUM_TOPICS))
    # The subsets keep texts and labels paired.
    _, held_idx = stratified_holdout(data.labels)
    assert holdout.texts[5] == data.texts[held_idx[5]]
    assert holdout.labels[5] == data.labels[held_idx[5]]
    assert split_train_holdout(data)[1].fingerprint() == holdout.fingerprint()


def test_a_spreadsheet_s_empty_trailing_cells_are_no_extra_fields(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text("text,label\ngold rally,10,\noil falls,6,,\n")
    assert load_labelled_csv(path).texts == ["gold rally", "oil falls"]
    path.write_text("text,label\ngold rally,10,x\n")
    with pytest.raises(DataError, match=r"row 1 \(line 2\): 3 fields where the header has 2"):
        load_labelled_csv(path)


def test_sentiment_labels_are_checked_against_three_classes(tmp_path: Path) -> None:
    path = tmp_path / "sentiment.csv"
    path.write_text("text,label\n$TSLA soars,1\nFed holds,LABEL_2\n$AAPL sinks,0\n")
    assert load_labelled_csv(path, task="sentiment").labels.tolist() == [1, 2, 0]
    path.write_text("text,label\n$TSLA soars,1\nOil jumps,6\n")
    with pytest.raises(DataError, match=r"row 2 \(line 3\): label 6 is outside 0\.\.2"):
        load_labelled_csv(path, task="sentiment")
    assert load_labelled_csv(path).labels.tolist() == [1, 6]  # a valid topic file


def test_the_sentiment_csv_read_as_topics_is_told_from_a_topic_sample() -> None:
    """Topic is every command's default task, so the sentiment CSV read without --task
    sentiment passes every label check; its labels give it away."""
    real = load_labelled_csv(Settings().data_dir / "sentiment_train.csv")  # as topics
    assert looks_like_sentiment(real.labels)
    assert looks_like_sentiment([0, 1, 2] * 17)
    assert not looks_like_sentiment([0, 1, 2] * 16)  # too few rows to tell
    assert not looks_like_sentiment([0, 1] * 40)  # a topic file cut to two topics
    assert not looks_like_sentiment([0, 1, 2, 3] * 20)
    assert not looks_like_sentiment([0, 1, 2] * 20 + [-1] * 100 + [5])
    assert looks_like_sentiment([0, 1, 2] * 20 + [-1] * 100)  # unlabelled rows do not count
    topic = load_labelled_csv(Settings().data_dir / "topic_train.csv")
    assert not looks_like_sentiment(topic.labels)


def test_the_real_sentiment_csv_splits_with_every_class_held_out() -> None:
    path = Settings().data_dir / "sentiment_train.csv"
    assert resolve_split(train_split("sentiment"), Settings().data_dir) == path
    data = load_labelled_csv(path, task="sentiment")
    train, holdout = split_train_holdout(data)
    assert np.bincount(holdout.labels).tolist() == [
        round(HOLDOUT_FRACTION * n) for n in np.bincount(data.labels)]
    assert len(train) + len(holdout) == len(data) == 9543


# --- hub download against a local server ----------------------------------------------------------

GOOD_CSV = b"text,label\nFed hikes 75bp,1\n$AAPL beats,5\nOil jumps,6\n"


@dataclass
class LocalHub:
    base_url: str
    root: Path
    requests: list[str] = field(default_factory=list)

    def serve(self, split: str, content: bytes, prefix: str = "") -> None:
        folder = self.root / prefix
        folder.mkdir(parents=True, exist_ok=True)
        (folder / HUB_FILES[split]).write_bytes(content)


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[LocalHub]:
    root = tmp_path / "served"
    root.mkdir()
    requests: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            requests.append(self.path)

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield LocalHub(f"http://{host}:{port}", root, requests)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_download_fetches_validates_and_caches(hub: LocalHub, tmp_path: Path) -> None:
    hub.serve("train", GOOD_CSV, prefix="resolve/main")
    cache = tmp_path / "cache"
    path = download("train", cache, base_url=f"{hub.base_url}/resolve/main/")
    assert path == cache / "topic_train.csv"
    assert path.read_bytes() == GOOD_CSV
    assert load_labelled_csv(path).labels.tolist() == [1, 5, 6]
    assert hub.requests == ["/resolve/main/topic_train.csv"]
    assert list(cache.iterdir()) == [path]  # no partial file left behind


def test_resolve_split_prefers_local_file_then_downloads(
    hub: LocalHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.serve("valid", GOOD_CSV)
    base = hub.base_url
    data_dir = tmp_path / "data"
    # The env var is the documented way to point at a mirror when no base_url is passed.
    monkeypatch.setenv("FINTWEET_HUB_URL", base)
    fetched = resolve_split("valid", data_dir)
    assert fetched == data_dir / "topic_valid.csv"
    assert fetched.read_bytes() == GOOD_CSV
    assert len(hub.requests) == 1
    # Now that it is local, no second request.
    assert resolve_split("valid", data_dir, base_url=base) == fetched
    assert len(hub.requests) == 1
    # A folder where the CSV should be is named, not downloaded over (IsADirectoryError after
    # the fetch before)
    (tmp_path / "odd" / "topic_valid.csv").mkdir(parents=True)
    with pytest.raises(DataError, match=r"topic_valid\.csv: is not a file"):
        resolve_split("valid", tmp_path / "odd", base_url=base)
    assert len(hub.requests) == 1


def test_download_404_is_a_data_error_naming_the_url(hub: LocalHub, tmp_path: Path) -> None:
    with pytest.raises(DataError) as caught:
        download("train", tmp_path / "cache", base_url=hub.base_url)
    message = str(caught.value)
    assert f"{hub.base_url}/topic_train.csv" in message
    assert "404" in message
    assert not (tmp_path / "cache").exists()  # nothing left behind, not even the folder


def test_served_invalid_csv_never_replaces_a_good_cache(hub: LocalHub, tmp_path: Path) -> None:
    base = hub.base_url
    cache = tmp_path / "cache"
    cache.mkdir()
    cached = cache / "topic_train.csv"
    cached.write_bytes(GOOD_CSV)
    hub.serve("train", b"text,label\nFed hikes,1\nbroken row,42\n")
    with pytest.raises(DataError) as caught:
        download("train", cache, base_url=base)
    assert str(caught.value).startswith(f"{base}/topic_train.csv: row 2 (line 3): label 42")
    assert cached.read_bytes() == GOOD_CSV
    assert sorted(p.name for p in cache.iterdir()) == ["topic_train.csv"]


def test_sentiment_split_downloads_its_own_file(hub: LocalHub, tmp_path: Path) -> None:
    hub.serve("sentiment_train", b"text,label\n$TSLA soars,1\n$AAPL sinks,0\n")
    path = download("sentiment_train", tmp_path / "cache", base_url=hub.base_url)
    assert path.name == "sentiment_train.csv"
    assert load_labelled_csv(path, task="sentiment").labels.tolist() == [1, 0]
    hub.serve("sentiment_valid", b"text,label\n$TSLA soars,7\n")
    with pytest.raises(DataError, match=r"label 7 is outside 0\.\.2"):  # read as sentiment
        download("sentiment_valid", tmp_path / "cache", base_url=hub.base_url)


@pytest.mark.parametrize(("text", "says"), [
    ("&nbsp;", "text is blank (once HTML entities are decoded)"),
    ("nul\x00inside", "text contains a NUL"),
    ("x" * 10_001, "text is 10,001 characters"),
])
def test_a_row_no_tweet_could_carry_is_refused_by_every_reader(tmp_path: Path, text: str,
                                                              says: str) -> None:
    """train, evaluate and eda accepted what `ingest replay` of the same file refused."""
    path = tmp_path / "rows.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("text", "label"), ("fine", 3), (text, 4)])
    with pytest.raises(DataError, match=re.escape(f"row 2 (line 3): {says}")):
        load_labelled_csv(path)


def test_unreachable_hub_is_a_data_error(tmp_path: Path) -> None:
    port = free_port()  # free a moment ago: connection refused
    with pytest.raises(DataError, match="download failed"):
        download("train", tmp_path, base_url=f"http://127.0.0.1:{port}")


def test_a_hub_url_that_is_no_url_and_a_data_dir_that_is_a_file_are_data_errors(
        tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"not-a-url/.*download failed.*check FINTWEET_HUB_URL"):
        download("train", tmp_path, base_url="not-a-url")
    a_file = tmp_path / "afile"
    a_file.write_text("")
    with pytest.raises(DataError, match="afile: cannot keep downloaded data there"):
        download("train", a_file, base_url="http://127.0.0.1:9")


def test_a_data_dir_without_the_csv_is_named_first_and_a_failed_download_leaves_no_folder(
        tmp_path: Path) -> None:
    """A misspelt --data-dir read as a failed download from the hub, and left an empty folder
    (with its missing parents) behind."""
    misspelt = tmp_path / "no" / "such" / "dir"
    port = free_port()
    with pytest.raises(DataError) as raised:
        resolve_split("train", misspelt, base_url=f"http://127.0.0.1:{port}")
    assert str(raised.value).startswith(f"no topic_train.csv in {misspelt}, and http://127.0.0.1:"
                                        f"{port}/topic_train.csv: download failed (")
    assert not (tmp_path / "no").exists()


def test_unknown_split_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown split 'test'"):
        download("test", tmp_path)
    with pytest.raises(DataError, match="unknown split 'test'"):
        resolve_split("test", tmp_path)
