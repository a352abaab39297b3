"""The three estimators trained for real on a small stratified subsample: artifact round trip,
better than the majority class, deterministic, and the ``fintweet train`` command around them.
Small configs keep the whole file to well under two minutes on two cores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fintweet.core.config import Settings
from fintweet.core.data import LabelledData, load_labelled_csv, split_train_holdout
from fintweet.core.labels import NUM_TOPICS
from fintweet.models.base import class_weights
from fintweet.models.features import NgramConfig, NgramVectorizer, TokenIndexer

SAMPLE_ROWS = 1500
# Small but real: enough capacity and epochs to learn, small enough to train in seconds.
SMALL: dict[str, dict[str, Any]] = {
    "linear": {"c_values": (10.0,), "char_max_n": 4},
    "ann": {"word_units": 64, "subword_units": 32, "heads": 2, "epochs": 4, "batch_size": 32,
            "verbose": False},
    "cnn": {"embedding_dim": 32, "filters": 32, "widths": (2, 3), "max_len": 40,
            "epochs": 5, "batch_size": 32, "learning_rate": 3e-3, "verbose": False},
}
SMALL["ensemble"] = {"member_configs": {kind: dict(SMALL[kind]) for kind in ("linear", "ann",
                                                                             "cnn")}}
KINDS = tuple(SMALL)


def _data_csv() -> Path:
    path = Settings().data_dir / "topic_train.csv"
    if not path.is_file():
        pytest.fail(f"{path} not found (set FINTWEET_DATA_DIR to the folder with topic_train.csv)")
    return path


@pytest.fixture(scope="module")
def sample() -> LabelledData:
    from fintweet.trainer.train import stratified_subsample

    return stratified_subsample(load_labelled_csv(_data_csv()), SAMPLE_ROWS)


@pytest.fixture(scope="module")
def split(sample: LabelledData) -> tuple[LabelledData, LabelledData]:
    return split_train_holdout(sample)


@pytest.fixture(scope="module")
def trained(
    split: tuple[LabelledData, LabelledData], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """All four kinds; the ensemble is assembled from the three trained here."""
    from fintweet.trainer.train import train_models

    train, holdout = split
    out = tmp_path_factory.mktemp("models")
    return train_models(train, holdout, KINDS, out, SMALL)


# ---- features and weights (no training) ----

def test_class_weights_are_tempered_and_average_one() -> None:
    labels = np.array([2] * 90 + [11] * 10)
    weights = class_weights(labels)
    assert weights[labels].mean() == pytest.approx(1.0)
    assert weights[11] / weights[2] == pytest.approx(3.0, rel=1e-5)  # sqrt(90/10), not 9
    assert weights[0] == 0.0  # absent class


def test_ngram_vectorizer_rows_are_canonical_and_state_round_trips() -> None:
    texts = ["$TSLA beats on earnings https://t.co/x", "Fed hikes rates", "$tsla misses"]
    vectorizer = NgramVectorizer(NgramConfig("word", 1, 2, min_df=1)).fit(texts)
    assert "$tsla" in vectorizer.vocabulary and "xxurl" in vectorizer.vocabulary
    assert "fed hikes" in vectorizer.vocabulary
    matrix = vectorizer.transform([*texts, "nothing known here", "Fed fed FED"])
    assert matrix.dtype == np.float32 and matrix.has_sorted_indices
    norms = np.sqrt(matrix.multiply(matrix).sum(axis=1).A1)
    np.testing.assert_allclose(norms, [1, 1, 1, 0, 1], atol=1e-6)
    assert matrix[4].nnz == 1  # "fed" three times is one column; "fed fed" was never seen
    meta, arrays = vectorizer.state()
    again = NgramVectorizer.from_state(meta, arrays)
    assert (again.transform(texts) != vectorizer.transform(texts)).nnz == 0


def test_subword_vector_is_a_sum_of_normalised_token_vectors() -> None:
    from fintweet.models.features import SubwordConfig, SubwordVectorizer

    texts = ["downgrade downgrades", "upgrade", "downgraded"]
    vectorizer = SubwordVectorizer(SubwordConfig(2, 4, min_df=1)).fit(texts)
    matrix = vectorizer.transform(["downgrade", "downgrade downgrade", "qqqq"]).toarray()
    np.testing.assert_allclose(np.linalg.norm(matrix[0]), 1.0, rtol=1e-6)
    np.testing.assert_allclose(matrix[1], matrix[0] * 2 / np.sqrt(2), rtol=1e-6)
    assert not matrix[2].any()  # no known n-gram


def test_token_indexer_pads_truncates_and_marks_unknowns() -> None:
    indexer = TokenIndexer(min_df=1, max_len=4).fit(["fed hikes rates", "fed cuts"])
    ids = indexer.transform(["fed hikes", "fed fed fed fed fed", "zzz"])
    assert ids.shape == (3, 4) and ids.dtype == np.int32
    assert ids[0, 2:].tolist() == [0, 0]
    assert ids[1].tolist() == [indexer.vocabulary["fed"]] * 4
    assert ids[2].tolist() == [1, 0, 0, 0]


# ---- trained models ----

@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_gives_identical_probabilities(
    kind: str, trained: dict[str, Path], split: tuple[LabelledData, LabelledData]
) -> None:
    from fintweet import models

    _, holdout = split
    loaded = models.load(trained[kind].parent)  # <out>/<kind> → current
    again = models.load(trained[kind])  # the version dir itself
    assert loaded.name == kind and loaded.version == trained[kind].name
    assert loaded.metadata["kind"] == kind
    assert loaded.metadata["holdout"]["accuracy"] > 0
    proba = loaded.predict_proba(holdout.texts)
    assert proba.dtype == np.float32 and proba.shape == (len(holdout), NUM_TOPICS)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(proba, again.predict_proba(holdout.texts))
    assert loaded.predict(["Fed raises rates by 75bp"]).shape == (1,)
    assert loaded.predict_proba([]).shape == (0, NUM_TOPICS)


@pytest.mark.parametrize("kind", KINDS)
def test_saved_model_matches_the_trained_one(
    kind: str, trained: dict[str, Path], split: tuple[LabelledData, LabelledData]
) -> None:
    """Retrain with the same seed in-process and compare with the artifact: this is both the
    determinism check (two runs, identical predictions) and the save → load check."""
    from fintweet import models

    train, holdout = split
    fresh = models.create(kind, **SMALL[kind]).fit(
        train.texts, train.labels, validation=(holdout.texts, holdout.labels)
    )
    loaded = models.load(trained[kind])
    np.testing.assert_array_equal(fresh.predict(holdout.texts), loaded.predict(holdout.texts))
    np.testing.assert_allclose(
        fresh.predict_proba(holdout.texts), loaded.predict_proba(holdout.texts), atol=1e-6
    )


def test_ann_folded_serving_path_matches_the_keras_graph(
    trained: dict[str, Path], split: tuple[LabelledData, LabelledData]
) -> None:
    from fintweet import models

    _, holdout = split
    ann = models.load(trained["ann"])
    texts = [*holdout.texts, "never seen tokens zzqx $ZZQX @nobody_here", "ok"]
    np.testing.assert_allclose(
        ann.predict_proba(texts), ann.predict_proba_keras(texts), atol=1e-5  # type: ignore[attr-defined]
    )
    # the per-token table is bounded: forcing a reset mid-stream changes nothing
    ann._folded.max_tokens = 50  # type: ignore[attr-defined]
    np.testing.assert_allclose(
        ann.predict_proba(texts), ann.predict_proba_keras(texts), atol=1e-5  # type: ignore[attr-defined]
    )


@pytest.mark.parametrize("kind", KINDS)
def test_beats_the_majority_class(kind: str, trained: dict[str, Path],
                                  split: tuple[LabelledData, LabelledData]) -> None:
    from fintweet import models

    train, holdout = split
    majority = np.bincount(train.labels).argmax()
    baseline = float((holdout.labels == majority).mean())
    accuracy = float((models.load(trained[kind]).predict(holdout.texts) == holdout.labels).mean())
    assert accuracy > baseline + 0.15, f"{kind}: {accuracy:.3f} vs majority {baseline:.3f}"


def test_artifact_records_metrics_config_and_data(trained: dict[str, Path],
                                                  sample: LabelledData) -> None:
    import json

    for kind, path in trained.items():
        metrics = json.loads((path / "metrics.json").read_text())
        assert set(metrics["per_class"]) == {str(i) for i in range(NUM_TOPICS)}
        assert {"accuracy", "macro_f1", "weighted_f1", "train_seconds"} <= set(metrics)
        assert json.loads((path / "config.json").read_text())["kind"] == kind
        manifest = json.loads((path / "artifact.json").read_text())
        assert manifest["kind"] == kind and manifest["n_holdout"] > 0
    assert len(sample) <= SAMPLE_ROWS


def test_artifact_from_an_incompatible_config_is_an_artifact_error(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    """A hash-valid artifact whose config this code cannot build (e.g. written by another
    version) fails as ArtifactError naming the path, not as a TypeError traceback."""
    import json
    import shutil

    from fintweet import models
    from fintweet.core.artifacts import ArtifactError, sha256_file

    copy = tmp_path / "ann" / trained["ann"].name
    shutil.copytree(trained["ann"], copy)
    config = json.loads((copy / "config.json").read_text())
    config["hidden"] = [1028, 512, 256]
    (copy / "config.json").write_text(json.dumps(config))
    manifest = json.loads((copy / "artifact.json").read_text())
    manifest["files"]["config.json"] = sha256_file(copy / "config.json")
    (copy / "artifact.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=rf"{copy.name}: cannot rebuild the ann model"):
        models.load(copy)


def test_ensemble_is_the_average_of_its_members_stored_inside_it(
    trained: dict[str, Path], split: tuple[LabelledData, LabelledData]
) -> None:
    import json

    from fintweet import models
    from fintweet.core.artifacts import ArtifactError

    _, holdout = split
    ensemble = models.load(trained["ensemble"])
    members = [models.load(trained[kind]) for kind in ("linear", "ann", "cnn")]
    expected = sum(m.predict_proba(holdout.texts) for m in members) / 3
    np.testing.assert_allclose(ensemble.predict_proba(holdout.texts), expected, atol=1e-6)

    files = json.loads((trained["ensemble"] / "artifact.json").read_text())["files"]
    assert {"linear/linear.npz", "ann/model.keras", "cnn/model.keras"} <= set(files)
    # scored on the holdout through the average itself (no refit here, so the saved members
    # are the ones that were scored), not copied from a member's metrics
    metrics = json.loads((trained["ensemble"] / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(
        float((expected.argmax(axis=1) == holdout.labels).mean())
    )

    tampered = trained["ensemble"] / "cnn" / "model.keras"
    original = tampered.read_bytes()
    try:
        tampered.write_bytes(original[:-10])
        with pytest.raises(ArtifactError, match=r"cnn/model\.keras: contents do not match"):
            models.load(trained["ensemble"])
    finally:
        tampered.write_bytes(original)


@pytest.mark.parametrize(("kind", "options"), [
    ("ann", {"subwords": False, "heads": 1}),
    ("cnn", {"wide": False}),
])
def test_simpler_variants_round_trip(
    kind: str, options: dict[str, Any], split: tuple[LabelledData, LabelledData], tmp_path: Path
) -> None:
    """The switches that drop a model's extra path (ann without the subword tower, the pure
    CNN without the wide path) still train, save and load to the same probabilities."""
    from fintweet import models
    from fintweet.core.artifacts import write_artifact

    train, holdout = split
    model = models.create(kind, **{**SMALL[kind], **options}).fit(train.texts, train.labels)
    path = write_artifact(tmp_path, kind, model.save, metrics={}, config=model.get_config(),
                          data_fingerprint="0" * 64)
    loaded = models.load(path)
    np.testing.assert_allclose(
        loaded.predict_proba(holdout.texts), model.predict_proba(holdout.texts), atol=1e-6
    )


@pytest.mark.parametrize(("kind", "options"), [
    ("linear", {"c_values": (0.5, 10.0)}),
    ("ann", {}),
])
def test_refit_ships_train_plus_holdout_with_the_settings_the_holdout_chose(
    kind: str, options: dict[str, Any], split: tuple[LabelledData, LabelledData], tmp_path: Path
) -> None:
    """The shipped model is exactly a fit on train + holdout with the selected epochs / C, and
    the holdout figures recorded are those of the selection run (which never saw the holdout)."""
    import json

    from fintweet import models
    from fintweet.trainer.train import combined, train_models

    train, holdout = split
    settings = {**SMALL[kind], **options}
    path = train_models(train, holdout, [kind], tmp_path, {kind: settings}, refit=True)[kind]
    metrics = json.loads((path / "metrics.json").read_text())
    manifest = json.loads((path / "artifact.json").read_text())
    assert manifest["refit_on_holdout"] is True
    assert manifest["n_train"] == metrics["refit"]["n_train"] == len(train) + len(holdout)

    selection = models.create(kind, **settings).fit(
        train.texts, train.labels, validation=(holdout.texts, holdout.labels)
    )
    assert metrics["refit"]["selected"] == json.loads(json.dumps(selection.selected))
    assert selection.selected, "selection chose nothing to carry into the refit"
    selected_accuracy = float((selection.predict(holdout.texts) == holdout.labels).mean())
    assert metrics["accuracy"] == pytest.approx(selected_accuracy)

    everything = combined(train, holdout)
    expected = models.create(kind, **{**settings, **selection.selected}).fit(
        everything.texts, everything.labels
    )
    shipped = models.load(path)
    assert shipped.metadata["refit_on_holdout"] is True
    np.testing.assert_allclose(
        shipped.predict_proba(holdout.texts), expected.predict_proba(holdout.texts), atol=1e-6
    )


# ---- the command ----

def test_cli_train_writes_current_and_prints_a_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fintweet import models
    from fintweet.cli.main import main

    data = _data_csv()
    code = main(["train", "--data", str(data), "--models", "ann", "--max-rows", "400",
                 "--epochs", "1", "--out", str(tmp_path)])
    assert code == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:3] == ["model", "accuracy", "macro-F1"]
    assert table.splitlines()[1].startswith("ann ")
    assert "before each model was refit on train + holdout, 400 tweets" in table
    assert models.available(tmp_path) == ["ann"]
    assert models.load(tmp_path / "ann").metadata["refit_on_holdout"] is True

    code = main(["train", "--data", str(data), "--models", "ann", "--max-rows", "400",
                 "--epochs", "1", "--out", str(tmp_path), "--no-refit"])
    assert code == 0 and "refit" not in capsys.readouterr().out
    shipped = models.load(tmp_path / "ann")
    assert shipped.metadata["refit_on_holdout"] is False
    assert shipped.metadata["n_train"] + shipped.metadata["n_holdout"] == 400


def test_cli_train_rejects_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fintweet.cli.main import main

    assert main(["train", "--models", "ann,gpt", "--out", str(tmp_path)]) == 2
    assert "unknown kind(s) gpt" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "missing.csv"), "--out", str(tmp_path)]) == 2
    assert "missing.csv: no such file" in capsys.readouterr().err
