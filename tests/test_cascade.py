"""The transformer, the cascade and the transformer ensemble through the trainer: a tiny
transformer (2 encoder blocks, a few hundred tweets per task) and a small ANN trained by
``train_models``, written by the real artifact writer, loaded back by ``fintweet.models.load``;
the cascade assembled from them must route by its threshold, the ensemble reuse them, and
bench/models.py must report them. About three minutes on 2 shared
CPU cores, most of it the fine-tune and the trainer timing both kinds at batch 2048."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fintweet import models
from fintweet.core.artifacts import read_json, write_artifact
from fintweet.core.config import Settings
from fintweet.core.labels import TASKS
from fintweet.core.store import ResultStore
from fintweet.core.text import prepare
from fintweet.models.base import Proba, TaskSets, TokenizedSet
from fintweet.models.cascade import ROUTE_ALL, CascadeModel, choose_threshold
from fintweet.models.ensemble import EnsembleConfig, choose_weights
from fintweet.models.keras_support import union_set
from fintweet.models.transformer import TransformerModel
from fintweet.trainer.teacher import Teacher, TeacherError
from fintweet.trainer.train import (
    TUNED_THRESHOLD,
    TUNED_WEIGHTS,
    Splits,
    load_splits,
    results_table,
    reuse_member,
    train_models,
)
from fintweet.worker.app import Worker
from fintweet.worker.consumer import FAST_GROUP_SETTINGS
from tests.helpers import make_tweets, publish

TINY: dict[str, dict[str, Any]] = {
    # The settings tests/test_transformer.py measured learning on 400 tweets per task.
    "transformer": {"num_layers": 2, "epochs": 2, "learning_rate": 4e-4, "max_length": 32,
                    "train_embeddings": False, "verbose": False},
    "ann": {"word_units": 64, "subword_units": 32, "sentiment_word_units": 32,
            "sentiment_subword_units": 16, "epochs": 4, "batch_size": 32, "verbose": False},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory,
            shared_data_dir: Path) -> tuple[Splits, dict[str, Path]]:
    splits = load_splits(shared_data_dir, max_rows=480)  # 408 train + 72 holdout per task
    out = tmp_path_factory.mktemp("models")
    paths = train_models(splits, ["ann", "transformer", "cascade"], out, TINY)
    return splits, paths


def test_trainer_writes_a_transformer_that_loads_back(trained) -> None:
    splits, paths = trained
    # Keras, as the trainer scored it (a CPU's default, onnx-int8, moves ~1-2% of classes)
    model = models.load(paths["transformer"], transformer_runtime="keras")
    assert isinstance(model, TransformerModel) and model.version == paths["transformer"].name
    assert "transformer" in models.available(paths["transformer"].parent.parent)
    metrics = read_json(paths["transformer"] / "metrics.json")
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]  # the holdout scored each epoch
    for task in TASKS:  # no refit: the loaded weights are those scored on the holdout
        proba = model.predict_proba(splits.task(task).texts("holdout")).task(task)
        accuracy = float((proba.argmax(axis=1) == splits.task(task).holdout.labels).mean())
        assert accuracy == pytest.approx(metrics[task]["accuracy"], abs=1e-9)
    majority = np.bincount(splits.topic.holdout.labels).max() / len(splits.topic.holdout)
    assert metrics["topic"]["accuracy"] > majority  # it learned something in 2 epochs


def test_artifact_round_trip_gives_identical_probabilities(trained, tmp_path: Path) -> None:
    splits, paths = trained
    model = models.load(paths["transformer"])
    again = write_artifact(tmp_path, "transformer", model.save, metrics={},
                           config=model.get_config(), data_fingerprint="test")
    reloaded = models.load(again)
    texts = splits.sentiment.texts("holdout")
    before, after = model.predict_proba(texts), reloaded.predict_proba(texts)
    np.testing.assert_array_equal(after.topic, before.topic)
    np.testing.assert_array_equal(after.sentiment, before.sentiment)


def test_cascade_routes_by_its_threshold_in_one_transformer_call(trained) -> None:
    splits, paths = trained
    # Keras: int8 quantizes activations per batch, so a routed subset would not reproduce the
    # whole batch's probabilities to 1e-6
    cascade = models.load(paths["cascade"], transformer_runtime="keras")
    assert isinstance(cascade, CascadeModel)
    assert isinstance(cascade.accurate_, TransformerModel)
    assert cascade.accurate_.runtime_ == "keras"  # the member got the runtime
    metrics = read_json(paths["cascade"] / "metrics.json")
    assert cascade.threshold_ == metrics["threshold"]
    assert metrics["tuned_on_holdout"] == TUNED_THRESHOLD
    assert f"(cascade: {TUNED_THRESHOLD} was chosen on the holdouts" in results_table(
        {"cascade": paths["cascade"]})
    assert cascade.info is not None and cascade.info.manifest["members"] == {
        "ann": paths["ann"].name, "transformer": paths["transformer"].name}  # trained with it
    ann = models.load(paths["ann"])
    transformer = models.load(paths["transformer"], transformer_runtime="keras")
    texts = splits.topic.texts("holdout") + splits.sentiment.texts("holdout")
    cheap, accurate = ann.predict_proba(texts), transformer.predict_proba(texts)
    calls: list[int] = []
    real = cascade.accurate_.predict_proba  # a spy on the real member, not a double

    def counted(batch: list[str]) -> Any:
        calls.append(len(batch))
        return real(batch)

    cascade.accurate_.predict_proba = counted  # type: ignore[method-assign, union-attr]
    for threshold in (0.0, 0.6, ROUTE_ALL, cascade.threshold_):
        cascade.threshold_, calls[:] = threshold, []
        routed = cheap.topic.max(axis=1) < threshold
        got = cascade.predict_proba(texts)
        assert calls == ([int(routed.sum())] if routed.any() else [])
        np.testing.assert_array_equal(cascade.route(cheap), routed)
        for task in TASKS:  # sentiment follows the topic route
            want = np.where(routed[:, None], accurate.task(task), cheap.task(task))
            np.testing.assert_allclose(got.task(task), want, atol=1e-6)
    assert 0 < (cheap.topic.max(axis=1) < 0.6).mean() < 1  # 0.6 really splits this batch


def test_threshold_is_the_lowest_within_tolerance_of_the_transformer() -> None:
    labels = np.array([0, 0, 1, 1])
    # ANN: sure and right on row 0, unsure (0.55) and wrong on row 2, unsure (0.7) and right on 3.
    cheap = np.array([[0.95, 0.05], [0.4, 0.6], [0.55, 0.45], [0.3, 0.7]], dtype=np.float32)
    accurate = np.eye(2, dtype=np.float32)[[0, 0, 1, 1]]  # always right
    threshold, history = choose_threshold(labels, cheap, accurate, tolerance=0.0)
    assert threshold == 0.61  # routes rows 1 and 2, both ANN mistakes; row 3 stays
    assert history[61]["accuracy"] == 1.0 and history[61]["routed"] == 0.5
    assert history[60]["accuracy"] == 0.75  # 0.6 itself is not below 0.6: row 1 stays
    # 0.3 of slack: routing row 2 alone (0.75) is enough.
    assert choose_threshold(labels, cheap, accurate, tolerance=0.3)[0] == 0.56
    assert choose_threshold(labels, cheap, 1 - accurate, tolerance=0.0)[0] == 0.0
    wrong_when_sure = np.array([[0.0, 1.0]] * 4, dtype=np.float32)
    assert choose_threshold(labels, wrong_when_sure, accurate, 0.0)[0] == ROUTE_ALL


def test_cli_help_says_the_transformer_is_not_a_default() -> None:
    out = subprocess.run([sys.executable, "-m", "fintweet.cli.main", "train", "--help"],
                         capture_output=True, text=True, check=True).stdout
    flat = " ".join(out.split())
    assert "transformer" in flat and "NOT in the default" in flat
    assert "--encoder DIR" in flat and "--encoder-layers N" in flat


def test_transformer_options_are_typed_and_reach_only_the_transformer() -> None:
    from fintweet.cli.train import member_overrides, transformer_options

    got = transformer_options(["pooling=cls", "train-embeddings=true", "learning_rate=5e-5",
                               "batch_size=16"])
    assert got == {"pooling": "cls", "train_embeddings": True, "learning_rate": 5e-5,
                   "batch_size": 16}
    assert member_overrides("transformer", {"epochs": 2}, got) == {"epochs": 2, **got}
    assert member_overrides("ann", {"epochs": 2}, got) == {"epochs": 2}
    assert member_overrides("linear", {"epochs": 2}, got) == {}


@pytest.mark.parametrize(("pair", "says"), [
    ("pooling=max", "pooling must be one of mean, cls"),
    ("epochs=3", "epochs has its own flag, --epochs"),
    ("seed=1", "seed has its own flag, --seed"),
    ("num_layers=2", "--encoder-layers"),
    ("verbose=false", "NAME one of batch_size"),
    ("train_embeddings=maybe", "is not true or false"),
    ("pooling", "expected NAME=VALUE"),
    ("batch_size=many", "invalid literal"),
    # taken as given: -5 made no batch and a model of all-zero rows was published; 0 failed
    # after a whole epoch; a negative learning rate trained away from the labels
    ("predict_batch_size=-5", "predict_batch_size must be at least 1, got -5"),
    ("predict_batch_size=0", "predict_batch_size must be at least 1, got 0"),
    ("batch_size=0", "batch_size must be at least 1, got 0"),
    ("head_dropout=1.5", "head_dropout must be at least 0 and under 1, got 1.5"),
    ("learning_rate=-1", "learning_rate must be above 0, got -1"),
    ("warmup=2", "warmup must be a share of the steps, 0 to 1, got 2"),
    ("weight_decay=-0.1", "weight_decay must be 0 or more, got -0.1"),
])
def test_a_bad_transformer_option_is_refused_with_the_reason(pair: str, says: str) -> None:
    from fintweet.cli.train import transformer_options

    with pytest.raises(ValueError, match=says) as info:
        transformer_options([pair])
    from fintweet.core.errors import UserError

    assert isinstance(info.value, UserError)  # one line from the CLI, not a traceback


def test_the_cli_refuses_a_bad_option_in_one_line_before_reading_data(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "fintweet.cli.main", "train", "--models", "transformer",
         "--data-dir", str(tmp_path / "absent"), "--transformer-option", "pooling=max"],
        capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        "fintweet train: error: --transformer-option: pooling must be one of mean, cls, "
        "got 'max'"]


@pytest.mark.parametrize(("option", "says"), [
    (["--encoder-layers", "99"], "has 6 encoder layers, cannot keep 99 (--encoder-layers must be "
                                 "within 1..6)"),
    (["--transformer-option", "max_length=100000"], "lower --transformer-option max_length"),
])
def test_a_checkpoint_the_options_do_not_fit_is_refused_before_any_kind_trains(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        option: list[str], says: str) -> None:
    """Found when the transformer's turn came, it cost the other kinds' training first."""
    from fintweet.cli.main import main
    from fintweet.trainer import train

    def must_not_train(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model trained before the options were checked")

    monkeypatch.setattr(train, "train_one", must_not_train)
    code = main(["train", "--models", "linear,transformer", "--max-rows", "300",
                 "--out", str(tmp_path), *option])
    err = capsys.readouterr().err
    assert code == 2, err
    assert says in err.strip().splitlines()[-1]


def test_bench_reports_each_kind_with_the_routed_share(trained, repo_root: Path) -> None:
    splits, paths = trained
    spec = importlib.util.spec_from_file_location("bench_models", repo_root / "bench" / "models.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = paths["cascade"].parent.parent
    rows = [bench.bench_kind(models.load(out / kind), splits, 256, runtime)
            for kind, runtime in (("transformer", "keras"), ("cascade", "keras"),
                                  ("transformer", "onnx"))]
    for row in rows:  # the same holdouts the trainer scored, no refit: the same figures
        # (ONNX Runtime in float32 included: the same numbers to ~1e-6)
        assert "warning" not in row and not row["refit_on_holdout"]
        for task in TASKS:
            assert row[f"{task}_accuracy"] == pytest.approx(row[f"{task}_recorded_accuracy"],
                                                            abs=1e-4)
        assert row["tweets_per_s_batch256"] > 0
    cascade = models.load(paths["cascade"])
    ann = models.load(paths["ann"])
    confidence = ann.predict_proba(splits.topic.texts("holdout")).topic.max(axis=1)
    assert rows[1]["topic_routed_share"] == pytest.approx(
        (confidence < cascade.threshold_).mean(), abs=1e-4)
    assert "routed" in bench.table(rows) and "transformer (onnx)" in bench.table(rows)


def test_ensemble_reuses_the_run_artifacts_and_weighs_the_transformer_on_the_holdout(
        trained, tmp_path: Path) -> None:
    """An ensemble asked for alone is assembled from the ann and transformer artifacts already
    in the models folder (same CSVs, no refit): nothing is trained again, the transformer reads
    model texts, and the recorded figures and weights are those of the shipped average."""
    splits, paths = trained
    out = paths["ann"].parent.parent
    got = train_models(splits, ["ensemble"], out,
                       {"ensemble": {"members": ("ann", "transformer")}})
    # Keras: the trainer weighs and scores a reused transformer as one trained in the run
    ensemble = models.load(got["ensemble"], transformer_runtime="keras")
    metrics = read_json(got["ensemble"] / "metrics.json")
    ann = models.load(paths["ann"])
    transformer = models.load(paths["transformer"], transformer_runtime="keras")
    assert ensemble.config.members == ("ann", "transformer")
    assert ensemble.info is not None and ensemble.info.manifest["members"] == {
        "ann": paths["ann"].name, "transformer": paths["transformer"].name}  # the reused ones
    assert metrics["train_seconds"] == pytest.approx(  # reused, not retrained
        read_json(paths["ann"] / "metrics.json")["train_seconds"]
        + read_json(paths["transformer"] / "metrics.json")["train_seconds"], abs=0.02)
    probas, labels = [], {}
    for task in TASKS:
        labels[task] = splits.task(task).holdout.labels
    for member in (ann, transformer):
        probas.append(Proba(*(member.predict_proba(splits.task(t).texts("holdout")).task(t)
                              for t in TASKS)))
    weights, _ = choose_weights(("ann", "transformer"), probas, labels)
    assert ensemble.weights_ is not None
    for task in TASKS:
        assert ensemble.weights_[task] == pytest.approx(weights[task])
    assert set(metrics["weights"]) == set(TASKS)
    for task in TASKS:  # the shipped (normalised) weights
        assert metrics["weights"][task] == pytest.approx(list(weights[task]))
    assert metrics["tuned_on_holdout"] == TUNED_WEIGHTS
    seen: list[list[str]] = []
    real = ensemble.members_[1].predict_proba

    def spy(texts: list[str]) -> Proba:
        seen.append(list(texts))
        return real(texts)

    ensemble.members_[1].predict_proba = spy  # type: ignore[method-assign]
    for task in TASKS:
        texts = splits.task(task).texts("holdout")
        proba = ensemble.predict_proba(texts).task(task)
        share = ensemble.weights_[task][1]
        want = (1 - share) * ann.predict_proba(texts).task(task) \
            + share * transformer.predict_proba(texts).task(task)
        np.testing.assert_allclose(proba, want, atol=1e-5)
        assert seen[-1] == texts  # the model texts, not the word tokens joined
        acc = float((proba.argmax(axis=1) == labels[task]).mean())
        assert metrics[task]["accuracy"] == pytest.approx(acc, abs=1e-9)


def test_a_reused_transformer_is_scored_with_keras_like_one_trained_in_the_run(
        trained) -> None:
    """A reused member's holdout probabilities (what an assembled model's weights, threshold
    and figures come from) are Keras's, as the run that trained it recorded them, not those of
    its configured serving runtime (auto: ONNX int8 on a CPU)."""
    splits, paths = trained
    reused = reuse_member("transformer", paths["transformer"].parent.parent, splits)
    assert reused is not None and isinstance(reused.model, TransformerModel)
    assert reused.model.config.runtime == "auto" and reused.model.runtime_ == "keras"
    keras_model = models.load(paths["transformer"], transformer_runtime="keras")
    recorded = read_json(paths["transformer"] / "metrics.json")
    for task in TASKS:
        holdout = splits.task(task)
        want = keras_model.predict_proba(holdout.texts("holdout")).task(task)
        np.testing.assert_array_equal(reused.holdout_proba[task], want)
        accuracy = float((reused.holdout_proba[task].argmax(axis=1)
                          == holdout.holdout.labels).mean())
        assert accuracy == pytest.approx(recorded[task]["accuracy"], abs=1e-9)


def test_a_cascade_and_ensemble_that_train_their_own_members_record_what_assembled_ones_do(
        trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With no members to reuse, ``--models cascade,ensemble`` fits each with its own members,
    whose weights / threshold are chosen on the holdouts inside ``fit``; metrics.json must
    still say so (the results table's note) and record the threshold and routed share, as an
    assembled cascade's does."""
    splits, paths = trained
    small = {**TINY, "transformer": {**TINY["transformer"], "num_layers": 1, "epochs": 1}}
    got = train_models(splits, ["cascade", "ensemble"], tmp_path / "own", {
        "cascade": {"member_configs": small},
        "ensemble": {"members": ("ann", "transformer"), "member_configs": small}})
    assert "reusing" not in capsys.readouterr().err  # an empty --out: nothing to reuse
    metrics = read_json(got["cascade"] / "metrics.json")
    assert set(metrics) == set(read_json(paths["cascade"] / "metrics.json"))  # assembled's
    assert metrics["tuned_on_holdout"] == TUNED_THRESHOLD
    cascade = models.load(got["cascade"], transformer_runtime="keras")
    assert isinstance(cascade, CascadeModel) and cascade.cheap_ is not None
    assert cascade.info is not None and cascade.info.manifest["members"] == {
        "ann": "trained with the cascade", "transformer": "trained with the cascade"}
    assert metrics["threshold"] == cascade.threshold_
    for task in TASKS:
        confidence = cascade.cheap_.predict_proba(
            splits.task(task).texts("holdout")).topic.max(axis=1)
        assert metrics["routed_share"][task] == pytest.approx(
            (confidence < cascade.threshold_).mean(), abs=1e-4)
    ensemble_metrics = read_json(got["ensemble"] / "metrics.json")
    assert ensemble_metrics["tuned_on_holdout"] == TUNED_WEIGHTS
    ensemble = models.load(got["ensemble"], transformer_runtime="keras")
    assert ensemble.weights_ is not None
    for task in TASKS:
        assert ensemble_metrics["weights"][task] == pytest.approx(list(ensemble.weights_[task]))
    table = results_table(got)
    for kind, what in (("cascade", TUNED_THRESHOLD), ("ensemble", TUNED_WEIGHTS)):
        assert f"({kind}: {what} was chosen on the holdouts" in table


def test_a_cascade_assembled_from_a_refit_ann_warns_in_one_line(
        trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The threshold is chosen with the selection-run ANN but ships with the refit one: the
    trainer says so, once; without the refit it has nothing to say."""
    splits, paths = trained
    out = tmp_path / "models"
    shutil.copytree(paths["transformer"].parent, out / "transformer", symlinks=True)  # reused
    got = train_models(splits, ["ann", "cascade"], out, {"ann": TINY["ann"]}, refit=True)
    warnings = [line for line in capsys.readouterr().err.splitlines()
                if line.startswith("warning:")]
    metrics = read_json(got["cascade"] / "metrics.json")
    assert "refit" in metrics and metrics["holdout_scored_before_refit"]
    assert len(warnings) == 1
    assert f"threshold {metrics['threshold']}" in warnings[0] and "--no-refit" in warnings[0]
    train_models(splits, ["ann", "cascade"], out, {"ann": TINY["ann"]}, refit=False)
    assert "warning:" not in capsys.readouterr().err


def test_a_second_fine_tune_joins_the_ensemble_with_its_own_seed_and_half_the_share(
        trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``transformer-2``: a second fine-tune with the seed moved on by one, trained for the
    ensemble (no artifact of its own), saved and loaded under its name, sharing the
    transformer's weight evenly with the first. It trains after the kinds published on their
    own, so a run cut short during it keeps them."""
    splits, paths = trained
    out = tmp_path / "models"
    shutil.copytree(paths["transformer"].parent, out / "transformer", symlinks=True)  # reused
    members = ("ann", "transformer", "transformer-2")
    config = EnsembleConfig(members=members,
                            member_configs={"transformer": TINY["transformer"]})
    assert config.member_configs["transformer-2"] == {**TINY["transformer"], "seed": 1}
    got = train_models(splits, ["ann", "ensemble", "cascade"], out, {
        "ann": TINY["ann"],
        "ensemble": {"members": members, "member_configs": config.member_configs}})
    progress = capsys.readouterr().err.splitlines()
    starts = {line.split()[1]: i for i, line in enumerate(progress)
              if line.startswith("training ")}
    published = {line.split(":")[0]: i for i, line in enumerate(progress)
                 if ": holdout " in line and " → " in line}
    assert published["ann"] < published["cascade"] < starts["transformer-2"] < published["ensemble"]
    assert sorted(p.name for p in got["ensemble"].iterdir() if p.is_dir()) == sorted(members)
    ensemble = models.load(got["ensemble"], transformer_runtime="keras")
    assert ensemble.config.members == members
    assert ensemble.info is not None and ensemble.info.manifest["members"] == {
        "ann": got["ann"].name, "transformer": paths["transformer"].name,
        "transformer-2": "trained with the ensemble (seed 1)"}
    first, second = ensemble.members_[1], ensemble.members_[2]
    assert isinstance(second, TransformerModel) and second.config.seed == 1
    texts = splits.topic.texts("holdout")
    assert not np.allclose(first.predict_proba(texts).topic, second.predict_proba(texts).topic)
    assert ensemble.weights_ is not None
    for task in TASKS:
        ann_w, w1, w2 = ensemble.weights_[task]
        assert w1 == pytest.approx(w2) and ann_w + w1 + w2 == pytest.approx(1.0)
        want = sum(w * m.predict_proba(texts).task(task)
                   for w, m in zip(ensemble.weights_[task], ensemble.members_, strict=True))
        np.testing.assert_allclose(ensemble.predict_proba(texts).task(task), want, atol=1e-5)


def test_a_member_refit_on_the_holdout_or_otherwise_configured_is_not_reused(
        trained, tmp_path: Path) -> None:
    splits, paths = trained
    model = models.load(paths["ann"])
    for refit, fingerprint in ((True, splits.fingerprint()), (False, "other data")):
        out = tmp_path / f"{refit}-{fingerprint[:5]}"
        write_artifact(out, "ann", model.save, metrics={"train_seconds": 1.0},
                       config=model.get_config(), data_fingerprint=fingerprint,
                       extra={"refit_on_holdout": refit})
        assert reuse_member("ann", out, splits) is None
    assert reuse_member("transformer", tmp_path, splits) is None  # none there at all
    assert reuse_member("ann", paths["ann"].parent.parent, splits) is not None
    # what this run was told for the member (--epochs, --seed) must be what it was trained with
    assert reuse_member("ann", paths["ann"].parent.parent, splits, TINY["ann"]) is not None
    for other in ({"epochs": 9}, {"seed": 1}):
        assert reuse_member("ann", paths["ann"].parent.parent, splits,
                            {**TINY["ann"], **other}) is None


def test_nothing_that_holds_a_transformer_is_refit() -> None:
    """The refit would fine-tune the transformer a second time, inside a cascade or an ensemble
    too (one trained without members to reuse); the fast kinds are refit."""
    cascade = CascadeModel.from_members(models.create("ann"), models.create("transformer"),
                                        0.9, 0.003)
    fast = models.create("ensemble")
    fast.members_ = [models.create("linear"), models.create("ann")]
    accurate = models.create("ensemble")
    accurate.members_ = [models.create("linear"), models.create("transformer")]
    assert models.create("ann").refits() and fast.refits()
    assert not models.create("transformer").refits()
    assert not cascade.refits() and not accurate.refits()


def test_ensemble_weights_give_the_transformer_the_share_the_holdout_prefers() -> None:
    labels = {"topic": np.array([0, 1, 1, 0]), "sentiment": np.array([2, 2, 0])}

    def proba(task: str, right: float, wrong: float) -> np.ndarray:
        n = 20 if task == "topic" else 3
        rows = np.zeros((len(labels[task]), n), dtype=np.float32)
        rows[np.arange(len(rows)), labels[task]] = right
        rows[np.arange(len(rows)), (labels[task] + 1) % n] = wrong
        return rows

    # Topic: the transformer leans right (0.7), the linear model wrong (0.75); their mix is
    # right from a transformer share of 0.6 on. Sentiment: the other way round, right up to 0.4.
    transformer = Proba(proba("topic", 0.7, 0.3), proba("sentiment", 0.25, 0.75))
    linear = Proba(proba("topic", 0.25, 0.75), proba("sentiment", 0.7, 0.3))
    weights, history = choose_weights(("linear", "transformer"), [linear, transformer], labels)
    assert weights["topic"] == pytest.approx((0.4, 0.6))  # the lowest share with the best score
    assert weights["sentiment"] == pytest.approx((1.0, 0.0))
    assert len(history) == 2 * 11
    assert [h["score"] for h in history if h["task"] == "topic"][5:7] == [0.0, 1.0]
    equal, none = choose_weights(("linear", "ann"), [linear, transformer], labels)
    assert equal["topic"] == pytest.approx((0.5, 0.5)) and none == []
    # Two fine-tunes share the transformer's share evenly: the same choice, halved.
    twice, _ = choose_weights(("linear", "transformer", "transformer-2"),
                              [linear, transformer, transformer], labels)
    assert twice["topic"] == pytest.approx((0.4, 0.3, 0.3))
    assert twice["sentiment"] == pytest.approx((1.0, 0.0, 0.0))
    alone, none = choose_weights(("transformer", "transformer-2"), [linear, transformer], labels)
    assert alone["topic"] == pytest.approx((0.5, 0.5)) and none == []
    moved = EnsembleConfig(members=("linear", "transformer", "transformer-3"),
                           member_configs={"transformer": {"seed": 4, "epochs": 2}})
    assert moved.member_configs["transformer-3"] == {"seed": 6, "epochs": 2}
    for bad in (("linear", "linear-2"), ("transformer", "transformer-1"),
                ("transformer", "transformer-2", "transformer-2")):
        with pytest.raises(ValueError, match="ensemble members"):
            EnsembleConfig(members=bad)
    with pytest.raises(ValueError, match="ensemble members"):
        EnsembleConfig(members=("ann", "cascade"))


def test_union_set_blends_the_teacher_into_each_heads_targets() -> None:
    topic = TokenizedSet([["a"], ["b"]], np.array([3, 5]),
                         Proba(np.full((2, 20), 0.05, np.float32),
                               np.tile(np.float32([0.2, 0.3, 0.5]), (2, 1))))
    sentiment = TokenizedSet([["c"]], np.array([1]),
                             Proba(np.eye(20, dtype=np.float32)[[7]],
                                   np.float32([[0.1, 0.8, 0.1]])))
    rows = union_set(TaskSets(topic, sentiment), 0.0, {}, distill=0.25)
    assert rows.loss == "categorical_crossentropy"
    # own rows: 0.75 one-hot + 0.25 teacher; the other task's rows: the teacher alone
    np.testing.assert_allclose(rows.targets["topic"][0], 0.75 * np.eye(20)[3] + 0.25 * 0.05)
    np.testing.assert_allclose(rows.targets["topic"][2], np.eye(20)[7])
    np.testing.assert_allclose(rows.targets["sentiment"][0], [0.2, 0.3, 0.5])
    np.testing.assert_allclose(rows.targets["sentiment"][2], [0.025, 0.95, 0.025])
    assert rows.weights["topic"].tolist() == [1.0, 1.0, 1.0]
    plain = union_set(TaskSets(TokenizedSet(topic.tokens, topic.labels),
                               TokenizedSet(sentiment.tokens, sentiment.labels)), 0.0, {}, 0.25)
    assert plain.loss == "sparse_categorical_crossentropy"
    assert plain.weights["sentiment"].tolist() == [0.0, 0.0, 3.0]  # masked on topic rows
    # only the sentiment head distilled: the topic head keeps its labels, masked on the
    # sentiment rows, as one-hot rows so that both heads share one loss
    some = union_set(TaskSets(topic, sentiment), 0.0, {}, 0.25, distill_tasks=("sentiment",))
    assert some.loss == "categorical_crossentropy"
    np.testing.assert_allclose(some.targets["topic"][:2], np.eye(20)[[3, 5]])
    assert some.weights["topic"].tolist() == [1.5, 1.5, 0.0]
    np.testing.assert_allclose(some.targets["sentiment"], rows.targets["sentiment"])
    with pytest.raises(ValueError, match="unknown task"):
        union_set(TaskSets(topic, sentiment), 0.0, {}, 0.25, distill_tasks=("topics",))


def test_the_ann_distils_a_transformer_teacher_from_the_same_run(trained, tmp_path: Path) -> None:
    splits, paths = trained
    teacher = Teacher.of_artifact(models.load(paths["transformer"]), splits.fingerprint(),
                                  verbose=False)
    out = train_models(splits, ["ann"], tmp_path / "taught", TINY, teacher=teacher)
    metrics = read_json(out["ann"] / "metrics.json")
    assert metrics["teacher"]["kind"] == "transformer"
    assert metrics["teacher"]["version"] == paths["transformer"].name
    student, plain = models.load(out["ann"]), models.load(paths["ann"])
    texts = splits.topic.texts("holdout")
    taught, untaught = student.predict_proba(texts), plain.predict_proba(texts)
    assert not np.allclose(taught.sentiment, untaught.sentiment, atol=1e-3)
    # only the sentiment head learns from the teacher (AnnConfig.distill_tasks): the topic
    # branch, which shares no weights with it, trains exactly as without a teacher
    np.testing.assert_allclose(taught.topic, untaught.topic, atol=1e-5)
    majority = np.bincount(splits.topic.holdout.labels).max() / len(splits.topic.holdout)
    assert metrics["topic"]["accuracy"] > majority
    refit = write_artifact(tmp_path / "refit", "transformer", teacher.model.save, metrics={},
                           config=teacher.model.get_config(),
                           data_fingerprint=splits.fingerprint(),
                           extra={"refit_on_holdout": True})
    with pytest.raises(TeacherError, match="refit on their holdouts"):
        Teacher.of_artifact(models.load(refit), splits.fingerprint())
    with pytest.raises(TeacherError, match="other CSVs"):
        Teacher.of_artifact(teacher.model, "another fingerprint")


def test_the_cnn_distils_too(trained, tmp_path: Path) -> None:
    """Its targets are the same blend as the ANN's (union_set); without the teacher, the same
    seed gives other probabilities, so the teacher reached its training."""
    splits, paths = trained
    teacher = Teacher.of_artifact(models.load(paths["transformer"]), splits.fingerprint(),
                                  verbose=False)
    config = {"cnn": {"embedding_dim": 16, "filters": 8, "widths": (2, 3), "epochs": 3,
                      "batch_size": 32, "verbose": False}}
    taught = train_models(splits, ["cnn"], tmp_path / "taught", config, teacher=teacher)
    plain = train_models(splits, ["cnn"], tmp_path / "plain", config)
    assert read_json(taught["cnn"] / "metrics.json")["teacher"]["kind"] == "transformer"
    assert "teacher" not in read_json(plain["cnn"] / "metrics.json")
    texts = splits.sentiment.texts("holdout")
    assert not np.allclose(models.load(taught["cnn"]).predict_proba(texts).sentiment,
                           models.load(plain["cnn"]).predict_proba(texts).sentiment, atol=1e-3)


def test_the_runs_linear_model_teaches_with_its_fit_on_the_train_splits(
        shared_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``teacher_kind``: that kind trains first whatever the order asked, and its selection
    model teaches, never its refit (which has trained on the holdouts the student is chosen
    and scored on)."""
    splits = load_splits(shared_data_dir, max_rows=480)
    handed: list[Any] = []
    of_this_run = Teacher.of_this_run

    def spy(model: Any, kind: str, verbose: bool = True) -> Teacher:
        handed.append(model)
        return of_this_run(model, kind, verbose=False)

    monkeypatch.setattr(Teacher, "of_this_run", staticmethod(spy))
    taught = train_models(splits, ["ann", "linear"], tmp_path / "taught", TINY, refit=True,
                          teacher_kind="linear")
    plain = train_models(splits, ["ann"], tmp_path / "plain", TINY, refit=True)
    assert read_json(taught["ann"] / "metrics.json")["teacher"] == {
        "kind": "linear", "version": "this run's, fitted on the train splits"}
    assert "teacher" not in read_json(taught["linear"] / "metrics.json")
    assert len(handed) == 1
    texts = splits.sentiment.texts("holdout")
    shipped = models.load(taught["linear"]).predict_proba(texts).sentiment  # refit
    assert not np.allclose(handed[0].predict_proba(texts).sentiment, shipped, atol=1e-3)
    assert not np.allclose(models.load(taught["ann"]).predict_proba(texts).sentiment,
                           models.load(plain["ann"]).predict_proba(texts).sentiment, atol=1e-3)
    # Not among the kinds: trained to teach only, never written.
    alone = train_models(splits, ["ann"], tmp_path / "alone", TINY, teacher_kind="linear")
    assert sorted(p.name for p in (tmp_path / "alone").iterdir()) == ["ann"]
    assert read_json(alone["ann"] / "metrics.json")["teacher"]["kind"] == "linear"
    assert len(handed) == 2
    for bad in (["linear"], ["linear", "ann", "ensemble"]):  # no student; not a teacher
        kind = "ensemble" if "ensemble" in bad else "linear"
        with pytest.raises(ValueError, match="teacher_kind"):
            train_models(splits, bad, tmp_path / "bad", TINY, teacher_kind=kind)


def test_cli_teacher_auto_takes_the_runs_linear_model_without_a_transformer(
        tmp_path: Path, shared_data_dir: Path) -> None:
    command = [sys.executable, "-m", "fintweet.cli.main", "train", "--models", "ann,linear",
               "--data-dir", str(shared_data_dir), "--max-rows", "480", "--no-refit",
               "--out", str(tmp_path), "--epochs", "1"]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    assert "teacher: the linear model of this run, trained first" in result.stderr
    assert read_json(tmp_path / "ann" / "current" / "metrics.json")["teacher"]["kind"] == "linear"
    plain = subprocess.run([*command, "--teacher", "none"], capture_output=True, text=True,
                           check=True)
    assert "teacher:" not in plain.stderr
    assert "teacher" not in read_json(tmp_path / "ann" / "current" / "metrics.json")


def test_teacher_auto_without_a_transformer_trains_the_linear_teacher_even_when_not_asked(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`fintweet train --models ann` and the demo's first model get the taught ANN too, not a
    weaker one than the default run's."""
    from fintweet.cli.train import choose_teacher

    assert choose_teacher("auto", ["ann"], tmp_path, "any") == (None, "linear")
    assert "the linear model of this run, trained first to teach only (not saved)" in (
        capsys.readouterr().err)
    assert choose_teacher("auto", ["ann", "linear"], tmp_path, "any") == (None, "linear")
    assert "to teach only" not in capsys.readouterr().err
    assert choose_teacher("auto", ["linear"], tmp_path, "any") == (None, None)
    assert choose_teacher("none", ["ann"], tmp_path, "any") == (None, None)


def test_the_demos_first_model_is_taught_by_the_runs_linear_model(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fintweet.trainer import train

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(train, "load_splits", lambda data_dir: "splits")
    monkeypatch.setattr(train, "train_models", lambda *args, **kwargs: calls.append(kwargs) or {})
    train.train_default(["ann"], tmp_path, refit=False)
    train.train_default(["linear"], tmp_path, refit=False)
    assert [call["teacher_kind"] for call in calls] == ["linear", None]


def test_cli_teacher_needs_a_student() -> None:
    result = subprocess.run([sys.executable, "-m", "fintweet.cli.main", "train", "--models",
                             "linear", "--teacher", "nowhere", "--max-rows", "40"],
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert ("--teacher: none of linear learns from a teacher; add ann or cnn to --models"
            in result.stderr)


def test_cli_teacher_auto_takes_the_transformer_of_the_models_folder(
        trained, tmp_path: Path, shared_data_dir: Path) -> None:
    _, paths = trained
    shutil.copytree(paths["transformer"].parent, tmp_path / "transformer", symlinks=True)
    command = [sys.executable, "-m", "fintweet.cli.main", "train", "--models", "ann",
               "--data-dir", str(shared_data_dir), "--max-rows", "480", "--no-refit",
               "--out", str(tmp_path), "--epochs", "1"]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    line = next(x for x in result.stderr.splitlines() if x.startswith("teacher: "))
    assert line.split()[1].endswith(paths["transformer"].name)
    metrics = read_json(tmp_path / "ann" / "current" / "metrics.json")
    assert metrics["teacher"]["version"] == paths["transformer"].name
    plain = subprocess.run([*command, "--teacher", "none"], capture_output=True, text=True,
                           check=True)
    assert "teacher:" not in plain.stderr
    assert "teacher" not in read_json(tmp_path / "ann" / "current" / "metrics.json")
    # A transformer of other rows cannot teach: said in one line, and the run's linear model
    # teaches instead.
    other = subprocess.run(["440" if arg == "480" else arg for arg in command],
                           capture_output=True, text=True, check=True)
    said = [x for x in other.stderr.splitlines() if x.startswith("teacher: ")]
    assert len(said) == 1 and "to teach only (not saved), not the transformer (" in said[0], said
    assert read_json(tmp_path / "ann" / "current" / "metrics.json")["teacher"]["kind"] == "linear"
    assert not (tmp_path / "linear").exists()


@pytest.mark.parametrize(("kind", "runtime"), [("transformer", "keras"), ("cascade", "keras"),
                                               ("transformer", "onnx-int8")])
def test_the_worker_stores_transformer_results_end_to_end(trained, stack, topic, redis_client,
                                                          kind: str, runtime: str) -> None:
    """Real broker, real Redis: the worker serves the transformer (and the cascade holding it)
    like any kind, on Keras and on ONNX Runtime; each stored result carries both heads and the
    model's tag."""
    _, paths = trained
    model = models.load(paths[kind], transformer_runtime=runtime)
    publish(stack.kafka_bootstrap, topic, make_tweets(60))
    settings = Settings().override(kafka_bootstrap=stack.kafka_bootstrap,
                                   redis_url=stack.redis_url, topic=topic, group=f"{topic}-g")
    worker = Worker(settings, model, consumer_options=FAST_GROUP_SETTINGS, until_idle=30,
                    on_batch=lambda stats: worker.stopping.set() if stats.consumed >= 60
                    else None)
    stats = worker.run()
    assert stats.classified == 60 and stats.duplicates == 0
    store = ResultStore.from_url(stack.redis_url)
    counts = store.stats()
    assert counts["processed"] == 60 and sum(counts["sentiments"].values()) == 60
    result = store.result("t1")
    assert result is not None and result["model"] == f"{kind}@{paths[kind].name}"
    assert result["links"]["cashtags"] == ["AAPL"]
    texts = [prepare(t.text).model_text for t in make_tweets(60)]
    want = model.predict_proba(texts)
    stored = [store.result(f"t{i}") for i in range(60)]
    for task, key in (("topic", "topic_id"), ("sentiment", None)):
        got = np.array([r[key] if key else r["sentiment"]["id"] for r in stored if r])
        expected = want.task(task).argmax(axis=1)
        if runtime == "keras":  # exact whatever the batches
            assert got.tolist() == expected.tolist()
        else:  # int8 activations are scaled per batch, and the worker's batches are its own
            assert (got == expected).mean() >= 0.9
