"""The estimators trained for real on small stratified subsamples of both tasks: artifact round
trip, both heads better than the majority class, deterministic, and the ``fintweet train``
command around them. Small configs keep the whole file to a few minutes on two cores."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fintweet.core.config import Settings
from fintweet.core.labels import NUM_SENTIMENTS, NUM_TOPICS, TASKS
from fintweet.core.text import tokenize
from fintweet.models.base import Proba, class_weights
from fintweet.models.features import (
    NgramConfig,
    NgramVectorizer,
    SequenceConfig,
    SubwordConfig,
    SubwordVectorizer,
    TokenIndexer,
)
from fintweet.models.features.ngrams import char_ngrams

SAMPLE_ROWS = 1200  # per task
# Small but real: enough capacity and epochs to learn, small enough to train in seconds.
SMALL: dict[str, dict[str, Any]] = {
    "linear": {"topic_c_values": (10.0,), "sentiment_c_values": (10.0,), "char_max_n": 4},
    "ann": {"word_units": 64, "subword_units": 32, "sentiment_word_units": 32,
            "sentiment_subword_units": 16, "epochs": 4, "batch_size": 32, "verbose": False},
    "cnn": {"embedding_dim": 32, "filters": 32, "widths": (2, 3), "max_len": 40,
            "epochs": 5, "batch_size": 32, "learning_rate": 3e-3, "verbose": False},
}
SMALL["ensemble"] = {"member_configs": {kind: dict(SMALL[kind]) for kind in ("linear", "ann",
                                                                             "cnn")}}
KINDS = tuple(SMALL)


def data_dir() -> Path:
    folder = Settings().data_dir
    for name in ("topic_train.csv", "sentiment_train.csv"):
        if not (folder / name).is_file():
            pytest.fail(f"{folder / name} not found (set FINTWEET_DATA_DIR to the folder with "
                        "topic_train.csv and sentiment_train.csv)")
    return folder


@pytest.fixture(scope="module")
def splits() -> Any:
    from fintweet.trainer.train import load_splits

    return load_splits(data_dir(), max_rows=SAMPLE_ROWS)


@pytest.fixture(scope="module")
def trained(splits: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """All four kinds; the ensemble is assembled from the three trained here."""
    from fintweet.trainer.train import train_models

    return train_models(splits, KINDS, tmp_path_factory.mktemp("models"), SMALL)


def holdout_texts(splits: Any, task: str) -> list[str]:
    return splits.task(task).texts("holdout")


# ---- features and weights (no training) ----

def test_class_weights_are_tempered_and_average_one() -> None:
    labels = np.array([2] * 90 + [11] * 10)
    weights = class_weights(labels, NUM_TOPICS)
    assert weights[labels].mean() == pytest.approx(1.0)
    assert weights[11] / weights[2] == pytest.approx(3.0, rel=1e-5)  # sqrt(90/10), not 9
    assert weights[0] == 0.0  # absent class


def tokens(*texts: str) -> list[list[str]]:
    from fintweet.core.text import prepare_model_texts

    return [tokenize(t) for t in prepare_model_texts(list(texts))]


def test_ngram_vectorizer_rows_are_canonical_and_state_round_trips() -> None:
    texts = tokens("$TSLA beats on earnings https://t.co/x", "Fed hikes rates", "$tsla misses")
    vectorizer = NgramVectorizer(NgramConfig("word", 1, 2, min_df=1)).fit(texts)
    assert "$tsla" in vectorizer.vocabulary_ and "xxurl" in vectorizer.vocabulary_
    assert "fed hikes" in vectorizer.vocabulary_
    matrix = vectorizer.transform([*texts, *tokens("nothing known here", "Fed fed FED")])
    assert matrix.dtype == np.float32 and matrix.has_sorted_indices
    norms = np.sqrt(matrix.multiply(matrix).sum(axis=1).A1)
    np.testing.assert_allclose(norms, [1, 1, 1, 0, 1], atol=1e-6)
    assert matrix[4].nnz == 1  # "fed" three times is one column; "fed fed" was never seen
    meta, arrays = vectorizer.state()
    again = NgramVectorizer.from_state(json.loads(json.dumps(meta)), arrays)
    assert (again.transform(texts) != vectorizer.transform(texts)).nnz == 0


def test_subword_vector_is_a_sum_of_normalised_token_vectors() -> None:
    vectorizer = SubwordVectorizer(SubwordConfig(2, 4, min_df=1)).fit(
        tokens("downgrade downgrades", "upgrade", "downgraded"))
    matrix = vectorizer.transform(
        tokens("downgrade", "downgrade downgrade", "qqqq")).toarray()
    np.testing.assert_allclose(np.linalg.norm(matrix[0]), 1.0, rtol=1e-6)
    np.testing.assert_allclose(matrix[1], matrix[0] * 2 / np.sqrt(2), rtol=1e-6)
    assert not matrix[2].any()  # no known n-gram


def test_token_rows_and_tweet_rows_match_a_per_token_reference() -> None:
    """c(t), computed here one token at a time the plain way (known n-gram counts times idf,
    L2-normalised), against token_matrix (which the ANN's serving table is built from) and
    against transform's tweet rows (sum of c(t) over the tokens, over sqrt(n_tokens))."""
    vectorizer = SubwordVectorizer(SubwordConfig(2, 4, min_df=1)).fit(
        tokens("downgrade downgrades", "upgrade", "downgraded $tsla"))

    def reference(word: str) -> np.ndarray:
        vector = np.zeros(vectorizer.n_features)
        for gram in char_ngrams([word], 2, 4):
            if gram in vectorizer.vocabulary_:
                vector[vectorizer.vocabulary_[gram]] += 1
        vector *= vectorizer.idf_
        norm = np.linalg.norm(vector)
        return vector / norm if norm else vector

    words = ["downgrade", "qqqq", "upgraded", "$tsla", "a", "downgrade"]
    matrix = vectorizer.token_matrix(words)
    assert matrix.shape == (len(words), vectorizer.n_features) and matrix.dtype == np.float32
    np.testing.assert_allclose(matrix.toarray(), [reference(w) for w in words], atol=1e-6)
    assert matrix[1].nnz == 0
    tweets = [["downgrade", "qqqq", "downgrade"], [], ["$tsla", "upgraded"]]
    expected = [sum((reference(w) for w in t), np.zeros(vectorizer.n_features))
                / np.sqrt(max(len(t), 1)) for t in tweets]
    rows = vectorizer.transform(tweets)
    assert rows.has_sorted_indices and rows.dtype == np.float32
    np.testing.assert_allclose(rows.toarray(), expected, atol=1e-6)


def test_token_indexer_pads_truncates_and_marks_unknowns() -> None:
    indexer = TokenIndexer(SequenceConfig(min_df=1, max_len=4)).fit(
        tokens("fed hikes rates", "fed cuts"))
    ids = indexer.transform(tokens("fed hikes", "fed fed fed fed fed", "zzz"))
    assert ids.shape == (3, 4) and ids.dtype == np.int32
    assert ids[0, 2:].tolist() == [0, 0]
    assert ids[1].tolist() == [indexer.vocabulary_["fed"]] * 4
    assert ids[2].tolist() == [1, 0, 0, 0]
    meta, arrays = indexer.state()
    assert TokenIndexer.from_state(meta, arrays).vocabulary_ == indexer.vocabulary_


# ---- trained models ----

def assert_proba(proba: Proba, n: int) -> None:
    assert proba.topic.dtype == np.float32 and proba.topic.shape == (n, NUM_TOPICS)
    assert proba.sentiment.dtype == np.float32 and proba.sentiment.shape == (n, NUM_SENTIMENTS)
    for head in (proba.topic, proba.sentiment):
        np.testing.assert_allclose(head.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_gives_identical_probabilities(
    kind: str, trained: dict[str, Path], splits: Any
) -> None:
    from fintweet import models

    loaded = models.load(trained[kind].parent)  # <out>/<kind> → current
    again = models.load(trained[kind])  # the version dir itself
    assert loaded.name == kind and loaded.version == trained[kind].name
    assert loaded.info is not None and loaded.info.kind == kind
    assert loaded.info.holdout["sentiment"]["accuracy"] > 0
    assert loaded.info.data("sentiment")["n_holdout"] == len(splits.sentiment.holdout)
    texts = holdout_texts(splits, "topic") + holdout_texts(splits, "sentiment")
    proba = loaded.predict_proba(texts)
    assert_proba(proba, len(texts))
    other = again.predict_proba(texts)
    np.testing.assert_array_equal(proba.topic, other.topic)
    np.testing.assert_array_equal(proba.sentiment, other.sentiment)
    assert_proba(loaded.predict_proba([]), 0)
    predicted = loaded.predict(texts)  # every kind has scikit-learn's predict
    for task in TASKS:
        np.testing.assert_array_equal(predicted[task], proba.task(task).argmax(axis=1))


@pytest.mark.parametrize("kind", KINDS)
def test_saved_model_matches_a_retrained_one(kind: str, trained: dict[str, Path],
                                             splits: Any) -> None:
    """Retrain with the same seed in-process and compare with the artifact: this is both the
    determinism check (two runs, identical predictions) and the save → load check."""
    from fintweet import models

    fresh = models.create(kind, **SMALL[kind]).fit(
        *splits.both("train"), validation=splits.both("holdout"))
    loaded = models.load(trained[kind])
    texts = holdout_texts(splits, "topic") + holdout_texts(splits, "sentiment")
    a, b = fresh.predict_proba(texts), loaded.predict_proba(texts)
    for task in TASKS:
        np.testing.assert_array_equal(a.task(task).argmax(1), b.task(task).argmax(1))
        np.testing.assert_allclose(a.task(task), b.task(task), atol=1e-6)


def test_ann_folded_serving_path_matches_the_keras_graph(trained: dict[str, Path],
                                                         splits: Any) -> None:
    from fintweet import models

    ann = models.load(trained["ann"])
    texts = [*holdout_texts(splits, "sentiment"), "never seen tokens zzqx $zzqx @nobody_here",
             "ok"]
    token_lists = [tokenize(t) for t in texts]

    def check() -> None:
        folded = ann.predict_proba(texts)
        graph = ann.predict_keras(token_lists)  # type: ignore[attr-defined]
        for task in TASKS:
            np.testing.assert_allclose(folded.task(task), graph.task(task), atol=1e-5)

    check()
    # the per-token table is bounded: forcing a reset mid-stream changes nothing
    ann._folded.max_tokens = 50  # type: ignore[attr-defined]
    check()



def test_ann_classifies_from_many_threads_at_once(trained: dict[str, Path]) -> None:
    """The web app runs /v1/classify on a thread pool: first-seen tokens from concurrent calls
    grow one shared table, which must give each call what it would get alone."""
    from concurrent.futures import ThreadPoolExecutor

    from fintweet import models

    batches = [[f"zq{thread}x{i} never seen $zq{thread}{i} rallies" for i in range(40)]
               for thread in range(32)]
    alone = models.load(trained["ann"])
    expected = [alone.predict_proba(batch) for batch in batches]
    shared = models.load(trained["ann"])
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show every time
    try:
        with ThreadPoolExecutor(max_workers=32) as pool:
            got = list(pool.map(shared.predict_proba, batches))
    finally:
        sys.setswitchinterval(switch)
    for want, have in zip(expected, got, strict=True):
        for task in TASKS:
            np.testing.assert_allclose(have.task(task), want.task(task), atol=1e-6)

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("task", TASKS)
def test_both_heads_beat_the_majority_class(kind: str, task: str, trained: dict[str, Path],
                                            splits: Any) -> None:
    from fintweet import models

    split = splits.task(task)
    majority = np.bincount(split.train.labels).argmax()
    baseline = float((split.holdout.labels == majority).mean())
    head = models.load(trained[kind]).predict_proba(split.texts("holdout")).task(task)
    accuracy = float((head.argmax(axis=1) == split.holdout.labels).mean())
    margin = 0.15 if task == "topic" else 0.03  # sentiment's majority class is 65% of tweets
    assert accuracy > baseline + margin, f"{kind} {task}: {accuracy:.3f} vs {baseline:.3f}"


def test_artifact_records_metrics_per_task_config_and_data(trained: dict[str, Path]) -> None:
    for kind, path in trained.items():
        metrics = json.loads((path / "metrics.json").read_text())
        for task in TASKS:
            assert {"accuracy", "macro_f1", "weighted_f1", "per_class"} <= set(metrics[task])
            names = [row["name"] for row in metrics[task]["per_class"]]
            assert len(names) == (NUM_TOPICS if task == "topic" else NUM_SENTIMENTS)
        assert metrics["sentiment"]["per_class"][1]["name"] == "Bullish"
        assert metrics["holdout_scored_before_refit"] is False
        config = json.loads((path / "config.json").read_text())
        assert config["kind"] == kind and "verbose" not in config
        manifest = json.loads((path / "artifact.json").read_text())
        assert manifest["kind"] == kind and manifest["format_version"] == 2
        assert set(manifest["data"]) == set(TASKS)


def test_each_ann_branch_is_kept_from_its_own_best_epoch(trained: dict[str, Path]) -> None:
    """The two heads share no layer, so each keeps the weights of the epoch where its own
    holdout score, (accuracy + macro-F1) / 2, was best, and the recorded figures are those."""
    metrics = json.loads((trained["ann"] / "metrics.json").read_text())
    history = metrics["history"]
    assert len(history) >= 2
    for task in TASKS:
        scores = [(e[task]["accuracy"] + e[task]["macro_f1"]) / 2 for e in history]
        best = int(np.argmax(scores))
        assert metrics[task]["accuracy"] == pytest.approx(history[best][task]["accuracy"])
        assert metrics[task]["macro_f1"] == pytest.approx(history[best][task]["macro_f1"])
        # and says which epoch that was (config.json has it only when the model was refit)
        assert metrics["selected_epochs"][f"{task}_epochs"] == best + 1


def hand_edited_copy(version_dir: Path, tmp_path: Path, name: str,
                     edit: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of a trained version whose JSON file ``name`` was edited and re-hashed into the
    manifest: files that each pass the hash check, but may not agree with each other."""
    import shutil

    from fintweet.core.artifacts import sha256_file

    copy = tmp_path / version_dir.parent.name / version_dir.name
    shutil.copytree(version_dir, copy)
    document = json.loads((copy / name).read_text())
    edit(document)
    (copy / name).write_text(json.dumps(document))
    manifest = json.loads((copy / "artifact.json").read_text())
    manifest["files"][name] = sha256_file(copy / name)
    (copy / "artifact.json").write_text(json.dumps(manifest))
    return copy


def test_artifact_from_an_incompatible_config_is_an_artifact_error(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    """A hash-valid artifact whose config this code cannot build (e.g. written by another
    version) fails as ArtifactError naming the path, not as a TypeError traceback."""
    from fintweet import models
    from fintweet.core.artifacts import ArtifactError

    copy = hand_edited_copy(trained["ann"], tmp_path, "config.json",
                            lambda config: config.update(hidden=[1028, 512, 256]))
    with pytest.raises(ArtifactError, match=rf"{copy.name}: cannot rebuild the ann model .*"
                                            r"`fintweet train --models ann`"):
        models.load(copy)


def test_a_cnn_whose_vocabulary_outgrows_its_embedding_table_is_refused_at_load(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    """Hash-valid files that disagree (a tokens.json from another run): loaded, it failed only on
    a tweet holding one of the extra words, in the worker's batch, as a TensorFlow error."""
    from fintweet import models
    from fintweet.core.artifacts import ArtifactError

    copy = hand_edited_copy(trained["cnn"], tmp_path, "tokens.json",
                            lambda tokens: tokens["terms"].extend(f"extra{i}" for i in range(5)))
    with pytest.raises(ArtifactError, match=rf"{copy.name}: cannot rebuild the cnn model "
                                            rf"\(tokens.json gives \d+ token ids, model.keras's "
                                            r"embedding has \d+ rows: files of two runs\); "
                                            r"retrain it with `fintweet train --models cnn`"):
        models.load(copy)


def test_ensemble_is_the_average_of_its_members_stored_inside_it(
    trained: dict[str, Path], splits: Any
) -> None:
    from fintweet import models
    from fintweet.core.artifacts import ArtifactError

    ensemble = models.load(trained["ensemble"])
    members = [models.load(trained[kind]) for kind in ("linear", "ann", "cnn")]
    texts = holdout_texts(splits, "sentiment")
    got = ensemble.predict_proba(texts)
    for task in TASKS:
        expected = sum(m.predict_proba(texts).task(task) for m in members) / 3
        np.testing.assert_allclose(got.task(task), expected, atol=1e-6)

    files = json.loads((trained["ensemble"] / "artifact.json").read_text())["files"]
    assert {"linear/linear.npz", "ann/model.keras", "cnn/model.keras"} <= set(files)
    # scored through the average itself (no refit here, so the saved members are the ones
    # that were scored), not copied from a member's metrics
    metrics = json.loads((trained["ensemble"] / "metrics.json").read_text())
    assert metrics["sentiment"]["accuracy"] == pytest.approx(
        float((got.sentiment.argmax(axis=1) == splits.sentiment.holdout.labels).mean())
    )
    assert "tuned_on_holdout" not in metrics  # equal weights: nothing chosen on the holdout

    tampered = trained["ensemble"] / "cnn" / "model.keras"
    original = tampered.read_bytes()
    try:
        tampered.write_bytes(original[:-10])
        with pytest.raises(ArtifactError, match=r"cnn/model\.keras: contents do not match"):
            models.load(trained["ensemble"])
    finally:
        tampered.write_bytes(original)


@pytest.mark.parametrize(("kind", "options"), [
    ("ann", {"subwords": False}),
    ("cnn", {"wide": False}),
])
def test_simpler_variants_round_trip(kind: str, options: dict[str, Any], splits: Any,
                                     tmp_path: Path) -> None:
    """The switches that drop a model's extra path (ann without the subword tower, the pure
    CNN without the wide path) still train, save and load to the same probabilities."""
    from fintweet import models
    from fintweet.core.artifacts import write_artifact

    model = models.create(kind, **{**SMALL[kind], **options, "epochs": 2}).fit(
        *splits.both("train"))
    path = write_artifact(tmp_path, kind, model.save, metrics={}, config=model.get_config(),
                          data_fingerprint="0" * 64)
    texts = holdout_texts(splits, "topic")
    a, b = models.load(path).predict_proba(texts), model.predict_proba(texts)
    for task in TASKS:
        np.testing.assert_allclose(a.task(task), b.task(task), atol=1e-6)


@pytest.mark.parametrize(("kind", "options"), [
    ("linear", {"topic_c_values": (0.5, 10.0), "sentiment_c_values": (0.5, 10.0)}),
    ("ann", {}),
])
def test_refit_ships_train_plus_holdout_with_the_settings_the_holdout_chose(
    kind: str, options: dict[str, Any], splits: Any, tmp_path: Path
) -> None:
    """The shipped model is exactly a fit on train + holdout with the selected epochs / C, and
    the holdout figures recorded are those of the selection run (which never saw the holdout)."""
    from fintweet import models
    from fintweet.trainer.train import train_models

    settings = {**SMALL[kind], **options}
    path = train_models(splits, [kind], tmp_path, {kind: settings}, refit=True)[kind]
    metrics = json.loads((path / "metrics.json").read_text())
    manifest = json.loads((path / "artifact.json").read_text())
    assert manifest["refit_on_holdout"] is True and metrics["holdout_scored_before_refit"]
    for task in TASKS:
        split = splits.task(task)
        assert metrics["refit"]["n_train"][task] == len(split.train) + len(split.holdout)

    selection = models.create(kind, **settings).fit(
        *splits.both("train"), validation=splits.both("holdout"))
    assert metrics["refit"]["selected"] == json.loads(json.dumps(selection.selected_))
    assert selection.selected_, "selection chose nothing to carry into the refit"
    for task in TASKS:
        predicted = selection.predict_proba(holdout_texts(splits, task)).task(task).argmax(1)
        assert metrics[task]["accuracy"] == pytest.approx(
            float((predicted == splits.task(task).holdout.labels).mean()))

    expected = models.create(kind, **{**settings, **selection.selected_}).fit(*splits.both("all"))
    shipped = models.load(path)
    assert shipped.info is not None and shipped.info.refit_on_holdout
    texts = holdout_texts(splits, "sentiment")
    a, b = shipped.predict_proba(texts), expected.predict_proba(texts)
    for task in TASKS:
        np.testing.assert_allclose(a.task(task), b.task(task), atol=1e-6)


# ---- the command ----

def test_cli_train_writes_current_prints_a_table_and_no_tensorflow_log(tmp_path: Path) -> None:
    """In a fresh process, as a user runs it: both heads in the table, and not one line of
    TensorFlow's C++ logging (oneDNN notices, ``E0000 … node_def_util.cc``) without -v."""
    from fintweet import models

    folder = data_dir()
    command = [sys.executable, "-m", "fintweet.cli.main", "train", "--data-dir", str(folder),
               "--models", "ann", "--max-rows", "300", "--epochs", "1", "--out", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    header = done.stdout.splitlines()[0].split()
    assert header[:5] == ["model", "topic", "acc", "topic", "F1"]
    assert done.stdout.splitlines()[1].startswith("ann ")
    assert "before each model was refit on train + holdout" in done.stdout
    noise = [line for line in done.stderr.splitlines()
             if any(mark in line for mark in ("oneDNN", "tensorflow", "E0000", "I0000", "W0000",
                                              "cpu_feature_guard", "absl"))]
    assert noise == [], noise
    assert models.available(tmp_path) == ["ann"]
    shipped = models.load(tmp_path / "ann")
    assert shipped.info is not None and shipped.info.refit_on_holdout


def test_cli_train_no_refit_keeps_the_holdout_unseen(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Also the progress lines of a run whose parts print nothing else: each linear fit, the
    holdout scoring (a bar once the holdout spans batches) and the timing pass."""
    from fintweet import models
    from fintweet.cli.main import main
    from fintweet.trainer import train

    monkeypatch.setattr(train, "SCORING_BATCH", 16)
    code = main(["train", "--data-dir", str(data_dir()), "--models", "linear", "--max-rows",
                 "300", "--out", str(tmp_path), "--no-refit"])
    out, err = capsys.readouterr()
    assert code == 0 and "refit" not in out
    for task in TASKS:
        assert f"linear {task} head, C 5 (1/3): fitting " in err
        assert f"linear {task} head, C 20 (3/3): done in " in err
        assert re.search(rf"scoring the {task} holdout: 100%.*\b4[0-9]/4[0-9] ", err), err
    assert err.count("holdout (acc + macro-F1) / 2 ") == 6
    assert "timing linear on one batch of 2,048 tweets" in err
    shipped = models.load(tmp_path / "linear")
    assert shipped.info is not None and not shipped.info.refit_on_holdout
    for task in TASKS:
        data = shipped.info.data(task)
        # at most 300 per task, the class mix kept (per-class rounding may give a few fewer)
        assert 290 <= data["n_train"] + data["n_holdout"] <= 300


def test_a_ctrl_c_while_training_says_which_kinds_were_published(tmp_path: Path) -> None:
    """It exited 130 without a word, and the user could not tell what `current` pointed at;
    started in the background, where SIGINT comes ignored, it did not stop at all."""
    import signal
    import time

    command = [sys.executable, "-m", "fintweet.cli.main", "train", "--data-dir", str(data_dir()),
               "--models", "linear,ann", "--max-rows", "300", "--no-refit", "--out",
               str(tmp_path)]
    training = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        # as a process started in the background without job control inherits it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        assert training.stderr is not None
        lines = []
        for line in training.stderr:  # linear first; then the ANN, TensorFlow's import first
            lines.append(line)
            if line.startswith("linear: holdout"):
                break
        time.sleep(0.5)
        training.send_signal(signal.SIGINT)
        rest = training.stderr.read()
        assert training.wait(timeout=120) == 130, "".join(lines) + rest
    finally:
        if training.poll() is None:
            training.kill()
            training.wait()
    from fintweet import models

    version = os.readlink(tmp_path / "linear" / "current")
    assert rest.strip().splitlines()[-1] == (
        f"fintweet train: interrupted; published linear {version}, nothing else was published "
        f"in {tmp_path}")
    assert models.available(tmp_path) == ["linear"]


def test_a_ctrl_c_credits_only_what_this_run_published(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The message read `current` off the disk: a kind another run (or a `models use`) switched
    meanwhile was reported as published by the interrupted one."""
    from fintweet.cli.main import main
    from fintweet.trainer import train
    from tests.test_artifacts import make

    def published_linear_then_interrupted(*args: Any, published: dict[str, Path] | None = None,
                                          **kwargs: Any) -> dict[str, Path]:
        linear = make(tmp_path, "linear", version="20990101T000000Z-aaaaaa")
        if published is not None:
            published["linear"] = linear
        make(tmp_path, "ann", version="20990101T000001Z-bbbbbb")  # another run's
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "train_models", published_linear_then_interrupted)
    assert main(["train", "--data-dir", str(data_dir()), "--models", "linear,ann",
                 "--max-rows", "300", "--no-refit", "--teacher", "none",
                 "--out", str(tmp_path)]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "fintweet train: interrupted; published linear 20990101T000000Z-aaaaaa, nothing else "
        f"was published in {tmp_path}")


def interrupted_inside_tensorflow(*args: Any, **kwargs: Any) -> dict[str, Path]:
    """A real SIGINT, whose KeyboardInterrupt some cleanup on its way out turns into another
    error: a Ctrl-C that landed in TensorFlow's tracing ended train with a KeyError traceback."""
    import signal
    import time

    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the handler raises here
    except KeyboardInterrupt:
        raise KeyError("adam_topic_word_tower_bias_velocity_cond_false_1627")  # noqa: B904
    raise AssertionError("no KeyboardInterrupt")


def test_a_ctrl_c_that_comes_out_of_tensorflow_as_another_error_is_still_a_ctrl_c(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from fintweet.cli import eda
    from fintweet.cli.main import main
    from fintweet.core.errors import UserError
    from fintweet.trainer import train

    monkeypatch.setattr(train, "train_models", interrupted_inside_tensorflow)
    assert main(["train", "--data-dir", str(data_dir()), "--models", "linear",
                 "--max-rows", "300", "--no-refit", "--out", str(tmp_path)]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"fintweet train: interrupted; nothing was published in {tmp_path}")
    # every other command too, where its KeyboardInterrupt is in the error's context
    monkeypatch.setattr(eda, "run", interrupted_inside_tensorflow)
    assert main(["eda", "--data", "x.csv", "--out", str(tmp_path / "eda")]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "fintweet eda: interrupted"

    def said_on_purpose(*args: Any, **kwargs: Any) -> int:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise UserError("what to do instead") from None

    monkeypatch.setattr(eda, "run", said_on_purpose)  # an error raised from None keeps its word
    assert main(["eda", "--data", "x.csv", "--out", str(tmp_path / "eda")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "fintweet eda: error: what to do instead")


def test_cli_train_rejects_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fintweet.cli.main import main

    assert main(["train", "--models", "ann,gpt", "--out", str(tmp_path)]) == 2
    assert "unknown kind(s) gpt" in capsys.readouterr().err
    missing = tmp_path / "missing.csv"
    assert main(["train", "--topic-data", str(missing), "--out", str(tmp_path)]) == 2
    assert "missing.csv: no such file" in capsys.readouterr().err
    topic = data_dir() / "topic_train.csv"
    assert main(["train", "--sentiment-data", str(topic), "--out", str(tmp_path)]) == 2
    assert "is outside 0..2; the topic CSV's ids go to 19: is this the topic CSV" in (
        capsys.readouterr().err)
    assert main(["train", "--topic-data", str(topic), "--sentiment-data", str(topic),
                 "--out", str(tmp_path)]) == 2
    assert "is given for both tasks" in capsys.readouterr().err
    sentiment = data_dir() / "sentiment_train.csv"  # the other way round: said first
    assert main(["train", "--topic-data", str(sentiment), "--models", "linear", "--max-rows",
                 "300", "--no-refit", "--out", str(tmp_path / "mixed")]) == 0
    assert capsys.readouterr().err.splitlines()[0] == (
        f"warning: {sentiment}: its labels are 0, 1 and 2 and no other, as in the sentiment CSV, "
        "but they are read as topics; if it is the sentiment CSV, put the topic CSV in its place")
    (tmp_path / "linear" / "current").mkdir(parents=True)  # a folder copied without its links
    assert main(["train", "--models", "linear", "--max-rows", "300", "--out", str(tmp_path)]) == 2
    assert f"{tmp_path / 'linear' / 'current'}: a directory, not the link" in \
        capsys.readouterr().err


def test_an_ensemble_that_trains_its_own_members_writes_its_artifact(
        splits: Any, tmp_path: Path) -> None:
    """With no member to assemble from (an empty models folder), the ensemble trains its
    own; its artifact said which member artifacts went in and looked up ones that did not
    exist (a KeyError after the training, nothing written)."""
    from fintweet import models
    from fintweet.trainer.train import train_models

    path = train_models(splits, ["ensemble"], tmp_path, {"ensemble": {
        "members": ("linear",), "member_configs": {"linear": SMALL["linear"]}}})["ensemble"]
    manifest = json.loads((path / "artifact.json").read_text())
    assert manifest["members"] == {"linear": "trained with the ensemble"}
    assert models.load(path).predict_proba(["$AAPL beats estimates"]).topic.shape == (1, 20)


def test_a_head_trained_on_two_classes_tells_them_apart() -> None:
    """scikit-learn fits one row of coefficients for two classes; copied to both columns it made
    every tweet 0.5 / 0.5 and the lower class the answer (a sentiment CSV of Bearish and Bullish
    only, as StockTwits data is)."""
    from sklearn.linear_model import LogisticRegression

    from fintweet.models.base import LabelledTexts
    from fintweet.models.linear import LinearConfig, LinearModel

    bearish = [f"$x{i} stock falls hard, sell now" for i in range(8)]
    bullish = [f"$x{i} stock rises big, buy now" for i in range(8)]
    topic = LabelledTexts([f"earnings beat {i}" for i in range(8)] + [f"fed hikes {i}" for i in
                                                                      range(8)],
                          np.array([3] * 8 + [9] * 8))
    sentiment = LabelledTexts(bearish + bullish, np.array([0] * 8 + [1] * 8))
    model = LinearModel(LinearConfig(topic_c_values=(10.0,), sentiment_c_values=(10.0,),
                                     min_df=1, verbose=False)).fit(topic, sentiment)
    proba = model.predict_proba(["$y stock falls hard, sell now", "$y stock rises big, buy now"])
    assert proba.sentiment.argmax(axis=1).tolist() == [0, 1]
    assert proba.topic[:, [3, 9]].sum(axis=1).min() > 0.99  # the only two topics it saw
    assert np.allclose(proba.sentiment[:, 2], 0, atol=1e-6)
    # The two columns' softmax is scikit-learn's own sigmoid.
    features = model._features([tokenize(t) for t in sentiment.texts])
    reference = LogisticRegression(C=10.0, max_iter=300, random_state=0).fit(
        features, sentiment.labels, sample_weight=np.ones(16))
    ours = model.predict_proba(list(sentiment.texts)).sentiment[:, :2]
    np.testing.assert_allclose(ours, reference.predict_proba(features), atol=1e-4)


def test_train_refuses_a_csv_of_one_class_in_one_line(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from fintweet.cli.main import main

    one_class = tmp_path / "bullish.csv"
    one_class.write_text("text,label\n" + "".join(f"$x{i} up,1\n" for i in range(50)))
    assert main(["train", "--models", "linear", "--sentiment-data", str(one_class),
                 "--out", str(tmp_path / "models")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith(f"{one_class}: every row is labelled 1; a sentiment head needs rows "
                            "of at least two classes to learn from"), err
    assert "Traceback" not in "\n".join(err)


def test_train_refuses_a_models_folder_it_cannot_publish_to_before_reading_the_data(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each was found only when the first model was written, after its training: a folder that
    cannot be made, FINTWEET_MODELS_DIR naming a file, ``<out>/<kind>`` a file (a traceback).
    The missing CSV shows the check comes first: the data is read after it."""
    from fintweet.cli.main import main

    data = ["--models", "linear", "--topic-data", str(tmp_path / "missing.csv")]
    assert main(["train", *data, "--out", "/sys/fintweet-nowhere"]) == 2
    # what the system says varies (not permitted as root, read-only in a container, ...)
    assert re.search(r"--out \(or FINTWEET_MODELS_DIR\) /sys/fintweet-nowhere: cannot write "
                     r"there \(.+\); choose another folder$", capsys.readouterr().err.strip())
    a_file = tmp_path / "models.txt"
    a_file.write_text("")
    monkeypatch.setenv("FINTWEET_MODELS_DIR", str(a_file))
    assert main(["train", *data]) == 2
    assert capsys.readouterr().err.strip().endswith(
        f"--out (or FINTWEET_MODELS_DIR) {a_file}: a file, not a folder; choose another folder")
    monkeypatch.delenv("FINTWEET_MODELS_DIR")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "linear").write_text("")
    assert main(["train", *data, "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip().endswith(
        f"{tmp_path / 'out' / 'linear'}: a file, not the folder of linear's versions; move it "
        "aside, then train again")


@pytest.mark.parametrize("value", ["-1", "4294967296", "4294967198"])
def test_train_refuses_a_seed_out_of_range_when_the_flag_is_parsed(
        value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """NumPy and scikit-learn take 0..2**32-1, less what an ensemble's transformer-99 adds
    (98): beyond, a traceback once the data had loaded (here it would have: a real CSV)."""
    from fintweet.cli.main import main

    with pytest.raises(SystemExit) as refused:
        main(["train", "--models", "linear", "--max-rows", "300", "--data-dir", str(data_dir()),
              "--seed", value, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert refused.value.code == 2 and "argument --seed:" in err and "Traceback" not in err
    assert not (tmp_path / "linear").exists()

    from fintweet.core.config import MAX_SEED, MAX_SEED_OFFSET
    from fintweet.models.ensemble import member_kind, member_seed_offset

    assert member_seed_offset("transformer-99") == MAX_SEED_OFFSET == 2**32 - 1 - MAX_SEED
    assert member_kind("transformer-100") != "transformer"  # no larger offset
