"""The transformer and cascade kinds through the trainer: a tiny transformer (2 encoder blocks,
a few hundred tweets per task) and a small ANN trained by ``train_models``, written by the real
artifact writer, loaded back by ``fintweet.models.load``; the cascade assembled from them must
route by its threshold, and bench/models.py must report them. About three minutes on 2 shared
CPU cores, most of it the fine-tune and the trainer timing both kinds at batch 2048."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fintweet import models
from fintweet.core.artifacts import read_json, write_artifact
from fintweet.core.labels import TASKS
from fintweet.models.cascade import ROUTE_ALL, CascadeModel, choose_threshold
from fintweet.models.transformer import TransformerModel
from fintweet.trainer.train import Splits, load_splits, train_models

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
    model = models.load(paths["transformer"])
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
    cascade = models.load(paths["cascade"])
    assert isinstance(cascade, CascadeModel)
    metrics = read_json(paths["cascade"] / "metrics.json")
    assert cascade.threshold_ == metrics["threshold"]
    ann, transformer = models.load(paths["ann"]), models.load(paths["transformer"])
    texts = splits.topic.texts("holdout") + splits.sentiment.texts("holdout")
    cheap, accurate = ann.predict_proba(texts), transformer.predict_proba(texts)
    calls: list[int] = []
    real = cascade.accurate_.predict_proba  # a spy on the real member, not a double

    def counted(batch: list[str]) -> Any:
        calls.append(len(batch))
        return real(batch)

    cascade.accurate_.predict_proba = counted  # type: ignore[method-assign, union-attr]
    for threshold in (0.0, 0.6, ROUTE_ALL, cascade.threshold_):
        cascade.threshold_, cascade.routed_, cascade.seen_, calls[:] = threshold, 0, 0, []
        routed = cheap.topic.max(axis=1) < threshold
        got = cascade.predict_proba(texts)
        assert calls == ([int(routed.sum())] if routed.any() else [])
        assert cascade.routed_share == pytest.approx(routed.mean())
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


def test_bench_reports_each_kind_with_the_routed_share(trained, repo_root: Path) -> None:
    splits, paths = trained
    spec = importlib.util.spec_from_file_location("bench_models", repo_root / "bench" / "models.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = paths["cascade"].parent.parent
    rows = [bench.bench_kind(kind, out, splits, 256) for kind in ("transformer", "cascade")]
    for row in rows:  # the same holdouts the trainer scored, no refit: the same figures
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
    assert "routed" in bench.table(rows)
