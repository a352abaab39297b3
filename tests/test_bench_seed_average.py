"""bench/seed_average.py: the averages it reports are of the probabilities, on the same rows."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest


def _module(repo_root: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("seed_average",
                                                  repo_root / "bench" / "seed_average.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(path: Path, topic: list[list[float]], labels: list[int]) -> Path:
    # sentiment rows are the topic rows' first three columns: enough to exercise both tasks
    proba = np.array(topic, dtype=np.float32)
    np.savez(path, topic_proba=proba, topic_labels=np.array(labels),
             sentiment_proba=proba[:, :3], sentiment_labels=np.array(labels))
    return path


def test_average_of_two_fixes_what_each_gets_wrong_alone(tmp_path: Path,
                                                         repo_root: Path) -> None:
    seed_average = _module(repo_root)
    labels = [0, 1, 2, 0]
    # Each model is right on three rows, confidently, and narrowly wrong on one; the average
    # is right on all four. Accuracy 0.75 each, 1.0 averaged.
    a = _write(tmp_path / "a.npz", [[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9],
                                    [0.4, 0.6, 0.0]], labels)
    b = _write(tmp_path / "b.npz", [[0.45, 0.55, 0.0], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9],
                                    [0.9, 0.05, 0.05]], labels)
    models = [seed_average.read(a), seed_average.read(b)]
    summary = seed_average.summarise(models, None, "topic")
    assert [acc for acc, _ in summary["single"]] == [0.75, 0.75]
    assert summary["average"][2]["accuracy"] == 1.0
    assert summary["all_minus_first"]["accuracy"] == pytest.approx(0.25)
    # Mixed half and half with a third model that is always wrong on the last row.
    mix = _write(tmp_path / "m.npz", [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 0]], labels)
    mixed = seed_average.summarise(models, seed_average.read(mix), "topic")
    assert mixed["average"][2]["with"][0] == 0.75  # last row: 0.325 for the label, 0.66 against
    text = seed_average.report("topic", summary, ["a", "b"])
    assert "average of 2" in text and "+25.00 points" in text


def test_different_holdouts_are_refused(tmp_path: Path, repo_root: Path) -> None:
    seed_average = _module(repo_root)
    a = _write(tmp_path / "a.npz", [[1, 0, 0], [0, 1, 0]], [0, 1])
    b = _write(tmp_path / "b.npz", [[1, 0, 0], [0, 1, 0]], [1, 0])
    with pytest.raises(SystemExit, match="holdouts differ"):
        seed_average.check_same_holdouts([seed_average.read(a), seed_average.read(b)])
    # the same labels, but written from other CSVs: the data fingerprints tell
    same = [{**seed_average.read(a), "data_fingerprint": np.array(f)} for f in ("x", "y")]
    with pytest.raises(SystemExit, match="holdouts differ"):
        seed_average.check_same_holdouts(same)
    seed_average.check_same_holdouts([same[0], same[0]])


def test_the_trainers_ensemble_is_scored_with_its_own_weight_choice(
        tmp_path: Path, repo_root: Path) -> None:
    seed_average = _module(repo_root)
    labels = [0, 1, 2, 0]
    fine_tune = _write(tmp_path / "t.npz", [[0.9, 0.05, 0.05], [0.05, 0.9, 0.05],
                                            [0.05, 0.05, 0.9], [0.4, 0.6, 0.0]], labels)
    linear = _write(tmp_path / "l.npz", [[0.6, 0.4, 0], [0.4, 0.6, 0], [0.4, 0.35, 0.25],
                                         [0.9, 0.1, 0]], labels)
    got = seed_average.trainer_ensemble([seed_average.read(fine_tune)] * 2,
                                        seed_average.read(linear))
    # Right on all four rows from a fine-tune share of 0.2 (the third row needs over 0.15) to
    # 0.7 (the last row, over 0.8, goes wrong): the grid's lowest best share is taken.
    assert got["topic"]["figures"] == (1.0, 1.0) and got["topic"]["share"] == 0.2
