"""``fintweet evaluate`` and the scoring behind it: numbers checked by hand and against the
trainer's metrics, batching, figures, and the CLI end to end on a real (tiny, linear) artifact."""

from __future__ import annotations

import csv
import json
import random
import re
from pathlib import Path

import numpy as np
import pytest

from fintweet.cli.main import main
from fintweet.core.data import load_labelled_csv, split_train_holdout
from fintweet.core.labels import NUM_SENTIMENTS, NUM_TOPICS, SENTIMENT_NAMES, TOPIC_NAMES
from fintweet.core.text import prepare_model_texts
from fintweet.models.base import Proba
from fintweet.models.scoring import Evaluation, bootstrap_intervals, macro_f1, paired_difference
from fintweet.models.scoring import score as score_task
from fintweet.trainer.evaluate import format_report, predict_in_batches, write_report_figures


def score(labels: np.ndarray, probabilities: np.ndarray) -> Evaluation:
    return score_task("topic", labels, probabilities)


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# --- score ---------------------------------------------------------------------------------------


def one_hot_rows(predicted: list[int], runner_up: list[int] | None = None) -> np.ndarray:
    """Probabilities whose argmax is ``predicted`` (and second choice ``runner_up``)."""
    probabilities = np.full((len(predicted), NUM_TOPICS), 0.01, dtype=np.float32)
    for row, topic in enumerate(predicted):
        probabilities[row, topic] = 0.6
        if runner_up is not None:
            probabilities[row, runner_up[row]] = 0.2
    return probabilities


def test_score_matches_hand_computed_numbers() -> None:
    labels = np.array([0, 0, 1, 1, 2])
    probabilities = one_hot_rows([0, 1, 1, 1, 0], runner_up=[1, 0, 0, 0, 2])
    result = score(labels, probabilities)

    assert result.n == 5
    assert result.accuracy == pytest.approx(3 / 5)
    assert result.top_k_accuracy == pytest.approx(1.0)  # the miss on row 5 is its second choice
    by_id = {c.class_id: c for c in result.per_class}
    assert (by_id[0].precision, by_id[0].recall, by_id[0].f1) == pytest.approx((0.5, 0.5, 0.5))
    assert (by_id[1].precision, by_id[1].recall, by_id[1].f1) == pytest.approx((2 / 3, 1, 0.8))
    assert (by_id[2].precision, by_id[2].recall, by_id[2].f1) == (0.0, 0.0, 0.0)
    assert [by_id[t].support for t in (0, 1, 2, 3)] == [2, 2, 1, 0]
    assert [by_id[t].predicted for t in (0, 1, 2, 3)] == [2, 3, 0, 0]
    # Macro over the three topics present; the 17 absent ones are not charged.
    assert result.macro_f1 == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert result.weighted_f1 == pytest.approx((2 * 0.5 + 2 * 0.8 + 1 * 0.0) / 5)
    assert result.confusion.shape == (NUM_TOPICS, NUM_TOPICS)
    assert result.confusion[0].tolist()[:3] == [1, 1, 0]
    assert result.confusion[2].tolist()[:3] == [1, 0, 0]
    assert result.confusion.sum() == 5


def test_intervals_match_a_bootstrap_of_the_rows_and_narrow_with_more_rows() -> None:
    """The multinomial draw over the confusion cells stands in for resampling rows: both give the
    same interval to within the resampling noise, for accuracy and for macro-F1 with a rare
    class that some resamples lack."""
    rng = np.random.default_rng(3)
    n = 600
    labels = rng.choice(3, size=n, p=[0.05, 0.25, 0.7])
    predicted = np.where(rng.random(n) < 0.8, labels, rng.integers(0, 3, n))
    result = score_task("sentiment", labels, np.eye(3)[predicted])
    accs, f1s = [], []
    for _ in range(2000):
        rows = rng.integers(0, n, n)
        accs.append(np.mean(labels[rows] == predicted[rows]))
        f1s.append(macro_f1(labels[rows], predicted[rows]))
    for got, samples, point in ((result.accuracy_interval, accs, result.accuracy),
                                (result.macro_f1_interval, f1s, result.macro_f1)):
        assert got[0] < point < got[1]
        np.testing.assert_allclose(got, np.percentile(samples, [2.5, 97.5]), atol=0.01)
    assert result.as_dict()["accuracy_interval"] == list(result.accuracy_interval)
    assert bootstrap_intervals(result.confusion) == (result.accuracy_interval,
                                                     result.macro_f1_interval)  # seeded
    ten_times = bootstrap_intervals(result.confusion * 10)
    assert np.ptp(ten_times[0]) < 0.5 * np.ptp(result.accuracy_interval)


def test_a_file_of_rare_classes_all_right_has_an_interval_at_one() -> None:
    """Each resample's macro-F1 is over the classes it holds, as macro_f1 of those rows would
    be: a resample that lacks a one-row class is not charged a zero for it (that put this
    file's interval at 0.50-0.85 around a macro-F1 of 1.0)."""
    labels = np.array([*range(18), *[18] * 10, *[19] * 10])
    result = score_task("topic", labels, np.eye(NUM_TOPICS)[labels])
    assert result.macro_f1 == 1.0 and result.macro_f1_interval == (1.0, 1.0)
    same = paired_difference(labels, labels, labels)
    assert same.macro_f1_interval == (0.0, 0.0)


def test_paired_difference_matches_a_paired_bootstrap_of_the_rows() -> None:
    """Two models that agree on most rows: the paired interval matches resampling the rows once
    for both, and is much narrower than the difference of two independent resamplings, which is
    what comparing their two intervals side by side amounts to."""
    rng = np.random.default_rng(4)
    n = 800
    labels = rng.choice(3, size=n, p=[0.15, 0.2, 0.65])
    baseline = np.where(rng.random(n) < 0.8, labels, rng.integers(0, 3, n))
    # the model fixes 40% of the baseline's errors and breaks 1% of the rows
    model = np.where(rng.random(n) < 0.4, labels, baseline)
    model = np.where(rng.random(n) < 0.01, (labels + 1) % 3, model)
    diff = paired_difference(labels, model, baseline)

    assert diff.n == n
    assert diff.accuracy == pytest.approx(np.mean(model == labels) - np.mean(baseline == labels))
    assert diff.macro_f1 == pytest.approx(macro_f1(labels, model) - macro_f1(labels, baseline))
    paired: dict[str, list[float]] = {"accuracy": [], "macro_f1": []}
    unpaired = []
    for _ in range(2000):
        rows, other = rng.integers(0, n, n), rng.integers(0, n, n)
        paired["accuracy"].append(np.mean(model[rows] == labels[rows])
                                  - np.mean(baseline[rows] == labels[rows]))
        paired["macro_f1"].append(macro_f1(labels[rows], model[rows])
                                  - macro_f1(labels[rows], baseline[rows]))
        unpaired.append(np.mean(model[rows] == labels[rows])
                        - np.mean(baseline[other] == labels[other]))
    for got, samples, point in ((diff.accuracy_interval, paired["accuracy"], diff.accuracy),
                                (diff.macro_f1_interval, paired["macro_f1"], diff.macro_f1)):
        assert got[0] < point < got[1]
        np.testing.assert_allclose(got, np.percentile(samples, [2.5, 97.5]), atol=0.006)
    assert np.ptp(diff.accuracy_interval) < 0.6 * np.ptp(np.percentile(unpaired, [2.5, 97.5]))
    assert diff.accuracy_interval[0] > 0  # this sample is big enough to tell them apart
    assert paired_difference(labels, model, baseline) == diff  # seeded


def test_paired_difference_of_a_model_with_itself_is_exactly_zero() -> None:
    labels = np.array([0, 1, 2, 2, 1])
    same = paired_difference(labels, np.array([0, 2, 2, 2, 1]), np.array([0, 2, 2, 2, 1]))
    assert (same.accuracy, same.macro_f1) == (0.0, 0.0)
    assert same.accuracy_interval == same.macro_f1_interval == (0.0, 0.0)
    with pytest.raises(ValueError, match="same rows"):
        paired_difference(labels, labels[:4], labels)


def test_top_k_counts_a_class_outside_the_top_three_as_a_miss() -> None:
    probabilities = np.zeros((1, NUM_TOPICS), dtype=np.float32)
    probabilities[0, :4] = [0.4, 0.3, 0.2, 0.1]
    assert score(np.array([2]), probabilities).top_k_accuracy == 1.0
    assert score(np.array([3]), probabilities).top_k_accuracy == 0.0


def test_sentiment_scores_over_three_classes() -> None:
    labels = np.array([0, 1, 2, 2])
    probabilities = np.eye(NUM_SENTIMENTS, dtype=np.float32)[[0, 2, 2, 2]]
    result = score_task("sentiment", labels, probabilities)
    assert result.accuracy == pytest.approx(0.75)
    assert [c.name for c in result.per_class] == list(SENTIMENT_NAMES)
    assert result.per_class[1].recall == 0.0 and result.confusion.shape == (3, 3)
    with pytest.raises(ValueError, match=r"sentiment probabilities must have shape \(4, 3\)"):
        score_task("sentiment", labels, np.zeros((4, NUM_TOPICS)))


@pytest.mark.parametrize(
    ("labels", "probabilities", "message"),
    [
        ([0, 1], np.zeros((3, NUM_TOPICS)), r"shape \(2, 20\)"),
        ([0, 1], np.zeros((2, 5)), r"shape \(2, 20\)"),
        ([], np.zeros((0, NUM_TOPICS)), "no labelled rows"),
        ([0, 20], np.zeros((2, NUM_TOPICS)), "0..19"),
        ([-1, 0], np.zeros((2, NUM_TOPICS)), "unlabelled"),
        ([0, 1], np.full((2, NUM_TOPICS), np.nan), "NaN"),
    ],
)
def test_score_rejects_bad_input(labels: list[int], probabilities: np.ndarray,
                                 message: str) -> None:
    with pytest.raises(ValueError, match=message):
        score(np.array(labels, dtype=np.int64), probabilities)


# --- batching, text and figures ------------------------------------------------------------------


class KeywordModel:
    """A transparent stand-in model: topic 6 if the tweet mentions oil, else topic 1. It records
    the batch sizes it was called with."""

    name = "keyword"
    version = "v0"

    def __init__(self, width: int = NUM_TOPICS) -> None:
        self.width = width
        self.batches: list[int] = []

    def predict_proba(self, texts: list[str]) -> Proba:
        self.batches.append(len(texts))
        out = np.zeros((len(texts), self.width), dtype=np.float32)
        sentiment = np.zeros((len(texts), NUM_SENTIMENTS), dtype=np.float32)
        for row, text in enumerate(texts):
            out[row, 6 if "oil" in text.lower() else 1] = 1.0
            sentiment[row, 2] = 1.0
        return Proba(out, sentiment)


def test_predict_in_batches_keeps_order_and_batch_size() -> None:
    texts = [f"Oil up {i}" if i % 3 == 0 else f"Fed {i}" for i in range(1000)]
    model = KeywordModel()
    prediction = predict_in_batches(model, texts, batch_size=300, progress=False)
    assert model.batches == [300, 300, 300, 100]
    assert prediction.proba.topic.shape == (1000, NUM_TOPICS)
    assert prediction.proba.topic.dtype == np.float32
    assert prediction.proba.sentiment.shape == (1000, NUM_SENTIMENTS)
    expected = [6 if i % 3 == 0 else 1 for i in range(1000)]
    assert prediction.proba.topic.argmax(axis=1).tolist() == expected
    assert prediction.tweets_per_second > 0


class BrokenModel(KeywordModel):
    """Answers rows that are no probabilities: what a model that made no batch (all zeros) or
    carries a broken weight (NaN) returns."""

    def __init__(self, fill: float) -> None:
        super().__init__()
        self.fill = fill

    def predict_proba(self, texts: list[str]) -> Proba:
        proba = super().predict_proba(texts)
        proba.topic[1:] = self.fill
        return proba


@pytest.mark.parametrize("fill", [0.0, float("nan")])
def test_rows_that_are_no_probabilities_are_refused_not_stored(fill: float) -> None:
    """They were stored as answers, each tweet filed under class 0."""
    with pytest.raises(ValueError, match=r"keyword@v0 returned 2 topic row\(s\) that are no "
                                         r"probabilities \(row 1 sums to (0|nan)\)"):
        predict_in_batches(BrokenModel(fill), ["oil", "fed", "gold"], progress=False)


def test_predict_in_batches_names_a_model_with_the_wrong_output_shape() -> None:
    with pytest.raises(ValueError, match=r"keyword@.* returned topic \(2, 7\)"):
        predict_in_batches(KeywordModel(width=7), ["a", "b"], progress=False)
    with pytest.raises(ValueError, match="batch size"):
        predict_in_batches(KeywordModel(), ["a"], batch_size=0)


def test_format_report_lists_every_topic_by_name() -> None:
    result = score(np.array([1, 6, 6]), one_hot_rows([1, 6, 1]))
    report = format_report(result, header=[("model", "keyword v0")])
    assert "keyword v0" in report
    assert "accuracy     0.6667" in report
    for name in TOPIC_NAMES:
        assert name in report
    energy = next(line for line in report.splitlines() if "Energy | Oil" in line)
    assert energy.split()[-5:] == ["1.000", "0.500", "0.667", "2", "1"]
    assert "top-3 acc    1.0000" in report
    # with three classes the top 3 hold every class: a 1.0 that says nothing is not printed
    sentiment = format_report(score_task("sentiment", np.array([0, 1]),
                                         np.eye(NUM_SENTIMENTS, dtype=np.float32)[[1, 0]]))
    assert "accuracy     0.0000" in sentiment and "top-3" not in sentiment


def test_report_figures_are_pngs(tmp_path: Path) -> None:
    result = score(np.array([1, 6, 6, 9]), one_hot_rows([1, 6, 1, 9]))
    paths = write_report_figures(result, tmp_path / "report", "keyword v0")
    assert [p.name for p in paths] == ["topic_confusion_matrix.png", "topic_per_class_f1.png"]
    for path in paths:
        assert path.read_bytes()[:8] == PNG_MAGIC
        assert path.stat().st_size > 10_000


@pytest.mark.parametrize("task", ["topic", "sentiment"])
def test_every_title_fits_its_figure(task: str) -> None:
    """The 3-class matrix's title ran off the right edge (cut at "n=1")."""
    from fintweet.trainer.evaluate import confusion_figure, per_class_f1_figure

    classes = NUM_TOPICS if task == "topic" else NUM_SENTIMENTS
    labels = np.arange(1431) % classes
    result = score_task(task, labels, np.eye(classes, dtype=np.float32)[labels])
    for make in (confusion_figure, per_class_f1_figure):
        figure = make(result, "ann 20261128T042319Z-437a8e on sentiment_train.csv (holdout)")
        renderer = figure.canvas.get_renderer()
        figure.draw(renderer)
        title = figure.axes[0].title.get_window_extent(renderer)
        box = figure.bbox
        assert box.x0 <= title.x0 and title.x1 <= box.x1 and title.y1 <= box.y1, make.__name__


# --- the CLI on a real artifact ------------------------------------------------------------------

VOCABULARY = {
    1: ["Fed {v} rates by {n} basis points", "Powell says the Fed will fight inflation {n}",
        "FOMC minutes show officials split on rate hikes", "ECB and Fed signal {v} policy"],
    5: ["{co} beats Q{q} earnings estimates, EPS ${e}", "{co} quarterly results: revenue up {n}%",
        "{co} misses earnings, guidance cut", "${t} Q{q} EPS ${e} vs ${e} est"],
    6: ["Oil prices {v} as OPEC cuts output", "Crude oil {v} {n}% on supply fears",
        "Brent crude {v} after pipeline outage", "Natural gas and oil prices {v}"],
    13: ["{co} to acquire {co2} for ${n}B", "{co} agrees to buy a stake in {co2}",
         "{co} completes acquisition of {co2}", "{co2} explores sale, {co} interested"],
    16: ["President signs the {n} bill into law", "Senate votes on spending bill ahead of election",
         "Prime minister faces confidence vote", "Congress debates the {n} budget bill"],
}
SENTIMENT_VOCABULARY = {
    0: ["{co} plunges after {n}% revenue miss", "{co} downgraded to sell, shares sink",
        "Bearish on {co}: guidance slashed", "{co} crashes as losses widen"],
    1: ["{co} soars on record profit", "{co} upgraded to buy, shares rally {n}%",
        "Bullish on {co}: strong growth ahead", "{co} jumps to all-time high"],
    2: ["{co} to hold annual meeting on May {n}", "{co} announces board schedule",
        "{co} files quarterly report", "{co} CEO to speak at conference {n}"],
}
COMPANIES = ["Apple", "Acme", "Tesla", "Widget Inc", "Globex", "Initech", "Umbrella"]


def synthetic_rows(per_topic: int, seed: int, task: str = "topic") -> list[tuple[str, int]]:
    """Templated tweets whose class is learnable from a few words, with t.co links and
    cashtags sprinkled in the way the real data has them."""
    rng = random.Random(seed)
    rows = []
    vocabulary = VOCABULARY if task == "topic" else SENTIMENT_VOCABULARY
    for topic, templates in vocabulary.items():
        for i in range(per_topic):
            text = templates[i % len(templates)].format(
                v=rng.choice(["raises", "holds", "cuts", "jumps", "falls"]),
                n=rng.randint(2, 99), q=rng.randint(1, 4), e=f"{rng.uniform(0.1, 5):.2f}",
                co=rng.choice(COMPANIES), co2=rng.choice(COMPANIES),
                t=rng.choice(["AAPL", "TSLA", "MSFT"]),
            )
            if rng.random() < 0.7:
                text += f" https://t.co/{rng.getrandbits(40):x}"
            rows.append((text, topic))
    rng.shuffle(rows)
    return rows


def write_csv(path: Path, rows: list[tuple[str, int | str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


def train_linear(root: Path, refit: bool = False, per_class: int = 30) -> Path:
    """A real linear model trained in seconds through the trainer's own API, on templated
    topic and sentiment CSVs of ``per_class`` tweets per class written under ``root``."""
    from fintweet.trainer.train import Splits, TaskSplit, train_models

    root.mkdir(parents=True, exist_ok=True)
    splits = Splits(**{
        task: TaskSplit.of(task, load_labelled_csv(
            write_csv(root / f"{task}_train.csv", synthetic_rows(per_class, seed=1, task=task)),
            task=task))
        for task in ("topic", "sentiment")
    })
    return train_models(splits, kinds=["linear"], out_dir=root / "models", refit=refit)["linear"]


@pytest.fixture(scope="module")
def linear_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_linear(tmp_path_factory.mktemp("evaluate"))


@pytest.fixture(scope="module")
def eval_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_csv(tmp_path_factory.mktemp("eval-data") / "eval.csv",
                     synthetic_rows(12, seed=2))


def test_cli_json_reports_plausible_numbers(
    linear_artifact: Path, eval_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fintweet.models import load

    code = main(["evaluate", "--model", str(linear_artifact.parent), "--data", str(eval_csv),
                 "--json", "--batch-size", "16"])
    out = capsys.readouterr().out
    assert code == 0
    assert len(out.strip().splitlines()) == 1  # one JSON object, nothing else on stdout
    result = json.loads(out)

    data = load_labelled_csv(eval_csv)
    model = load(linear_artifact)
    topic = model.predict_proba(prepare_model_texts(data.texts)).topic
    direct_accuracy = float(np.mean(topic.argmax(axis=1) == data.labels))
    assert result["seen_by_model"] is False and result["task"] == "topic"
    assert result["n"] == len(data) == 60
    assert result["accuracy"] == pytest.approx(direct_accuracy)
    assert result["accuracy"] > 0.8  # the templates are easy; a broken pipeline is not
    assert result["accuracy"] <= result["top3_accuracy"] <= 1.0
    assert 0.0 < result["macro_f1"] <= 1.0 and 0.0 < result["weighted_f1"] <= 1.0
    assert result["model"]["name"] == "linear"
    assert result["model"]["version"] == linear_artifact.name
    assert result["data"]["fingerprint"] == data.fingerprint()
    per_class = result["per_class"]
    assert [c["id"] for c in per_class] == list(range(NUM_TOPICS))
    assert per_class[6]["name"] == "Energy | Oil" and per_class[6]["key"] == "LABEL_6"
    assert sum(c["support"] for c in per_class) == 60
    assert {c["id"] for c in per_class if c["support"]} == set(VOCABULARY)
    assert sum(map(sum, result["confusion_matrix"])) == 60


def test_cli_table_and_report_dir(
    linear_artifact: Path, eval_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report_dir = tmp_path / "report"
    code = main(["evaluate", "--model", str(linear_artifact), "--data", str(eval_csv),
                 "--report-dir", str(report_dir)])
    out = capsys.readouterr().out
    assert code == 0
    for needle in ("accuracy", "macro-F1", "weighted-F1", "Fed | Central Banks",
                   "M&A | Investments", f"linear {linear_artifact.name}"):
        assert needle in out
    assert not out.startswith("warning")
    for name in ("topic_confusion_matrix.png", "topic_per_class_f1.png"):
        assert (report_dir / name).read_bytes()[:8] == PNG_MAGIC
        assert (report_dir / name).stat().st_size > 10_000


def test_cli_baseline_adds_the_paired_difference(
    linear_artifact: Path, eval_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fintweet.models import load

    weaker = train_linear(tmp_path, per_class=4)  # a few tweets per class: a worse model
    assert main(["evaluate", "--model", str(linear_artifact), "--baseline", str(weaker),
                 "--data", str(eval_csv), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    data = load_labelled_csv(eval_csv)
    texts = prepare_model_texts(data.texts)
    accuracy = {path: float(np.mean(load(path).predict_proba(texts).topic.argmax(axis=1)
                                     == data.labels)) for path in (linear_artifact, weaker)}
    assert accuracy[linear_artifact] > accuracy[weaker]
    baseline = result["baseline"]
    assert baseline["model"]["version"] == weaker.name and baseline["seen_by_model"] is False
    assert baseline["accuracy"] == pytest.approx(accuracy[weaker])
    difference = baseline["difference"]
    assert difference["n"] == result["n"] == 60
    assert difference["accuracy"] == pytest.approx(accuracy[linear_artifact] - accuracy[weaker])
    low, high = difference["accuracy_interval"]
    assert low <= difference["accuracy"] <= high
    assert difference["macro_f1"] == pytest.approx(result["macro_f1"] - baseline["macro_f1"])

    # against itself, in the table: a difference of exactly zero
    assert main(["evaluate", "--model", str(linear_artifact), "--baseline", str(linear_artifact),
                 "--data", str(eval_csv)]) == 0
    out = capsys.readouterr().out
    assert f"baseline     linear {linear_artifact.name}" in out
    assert "model - baseline, on the same rows:" in out
    assert "+0.0000  (95% paired bootstrap interval +0.0000 to +0.0000)" in out


def test_cli_holdout_scores_only_the_holdout(
    linear_artifact: Path, eval_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", "--model", str(linear_artifact), "--data", str(eval_csv),
                 "--holdout", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    _, holdout = split_train_holdout(load_labelled_csv(eval_csv))
    assert result["n"] == len(holdout) == 10  # round(15% of 12) = 2 rows from each of 5 topics
    assert result["data"]["holdout"] is True


def test_cli_holdout_scores_apart_the_rows_repeating_a_training_text(
    linear_artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Templated tweets that differ only in their link are one text to a model: holdout rows
    repeating a training row's text are counted, and the figures of the rest given beside."""
    rows: list[tuple[str, int | str]] = list(synthetic_rows(12, seed=2))
    twins = [(text.split(" https://")[0] + " https://t.co/other", label)
             for text, label in rows]  # every row twice, the second with another link
    path = write_csv(tmp_path / "twins.csv", rows + twins)
    assert main(["evaluate", "--model", str(linear_artifact), "--data", str(path),
                 "--holdout", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    data = load_labelled_csv(path)
    train, holdout = split_train_holdout(data)
    from fintweet.core.data import text_hashes
    from fintweet.models import load

    model = load(linear_artifact)
    assert model.info is not None
    model_texts = model.info.trained_texts()  # its own training texts, both tasks'
    assert model_texts is not None and len(model_texts) > 0
    seen = set(prepare_model_texts(train.texts))
    repeats = [text in seen or bool(np.isin(text_hashes([text]), model_texts)[0])
               for text in prepare_model_texts(holdout.texts)]
    assert 0 < sum(repeats) < len(repeats)
    unseen = result["unseen_text"]
    assert (unseen["repeats"], unseen["n"]) == (sum(repeats), len(repeats) - sum(repeats))
    fresh = [i for i, repeat in enumerate(repeats) if not repeat]
    texts = prepare_model_texts([holdout.texts[i] for i in fresh])
    predicted = model.predict_proba(texts).topic.argmax(axis=1)
    labels = np.asarray(holdout.labels)[fresh]
    assert unseen["accuracy"] == pytest.approx(float((predicted == labels).mean()))
    assert unseen["macro_f1"] == pytest.approx(macro_f1(labels, predicted))

    assert main(["evaluate", "--model", str(linear_artifact), "--data", str(path),
                 "--holdout"]) == 0
    assert (f"unseen text  {unseen['n']:,} of {len(repeats):,} rows (the other "
            f"{unseen['repeats']:,} repeat a training row's text)") in capsys.readouterr().out


def test_rows_repeating_a_text_the_model_trained_on_are_scored_apart_in_any_file(
    linear_artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --holdout too (the official validation split, say): the texts the model trained
    on, of either task, are known from its artifact."""
    from fintweet.core.data import stratified_holdout

    training = load_labelled_csv(linear_artifact.parent.parent.parent / "sentiment_train.csv",
                                 task="sentiment")  # its other task's CSV
    train_rows, _ = stratified_holdout(training.labels)
    again = [(training.texts[i], 0) for i in train_rows[:5]]  # labelled as topics now
    new = list(synthetic_rows(3, seed=7))
    path = write_csv(tmp_path / "mixed.csv", again + new)
    assert main(["evaluate", "--model", str(linear_artifact), "--data", str(path),
                 "--json"]) == 0
    unseen = json.loads(capsys.readouterr().out)["unseen_text"]
    assert unseen["repeats"] >= 5 and unseen["n"] + unseen["repeats"] == len(again) + len(new)


def test_cli_sentiment_task_scores_the_sentiment_head(
    linear_artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_csv(tmp_path / "sentiment.csv", synthetic_rows(10, seed=5, task="sentiment"))
    report_dir = tmp_path / "report"
    assert main(["evaluate", "--model", str(linear_artifact), "--data", str(data), "--task",
                 "sentiment", "--json", "--report-dir", str(report_dir)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["task"] == "sentiment" and result["n"] == 30
    assert [c["name"] for c in result["per_class"]] == list(SENTIMENT_NAMES)
    assert result["accuracy"] > 0.8
    assert len(result["confusion_matrix"]) == NUM_SENTIMENTS
    for name in ("sentiment_confusion_matrix.png", "sentiment_per_class_f1.png"):
        assert (report_dir / name).read_bytes()[:8] == PNG_MAGIC
    # topic labels 0-19 are not sentiment labels: named as the CSV's problem
    topic_csv = write_csv(tmp_path / "topic.csv", [("Oil jumps", 6)])
    assert main(["evaluate", "--model", str(linear_artifact), "--data", str(topic_csv),
                 "--task", "sentiment"]) == 2
    assert "label 6 is outside 0..2" in capsys.readouterr().err


def test_cli_says_first_when_the_model_has_seen_these_tweets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    refit = train_linear(tmp_path, refit=True)
    no_refit = train_linear(tmp_path / "unseen", refit=False)
    training_csv = tmp_path / "sentiment_train.csv"

    # its own training CSV: the warning is the first line of the table output
    assert main(["evaluate", "--model", str(no_refit), "--data",
                 str(tmp_path / "unseen" / "sentiment_train.csv"), "--task", "sentiment"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("warning: linear@") and "has seen these tweets" in first

    # the holdout of a model refit on it: seen; in --json, a field (and the warning on stderr)
    assert main(["evaluate", "--model", str(refit), "--data", str(training_csv), "--task",
                 "sentiment", "--holdout", "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["seen_by_model"] is True and result["model"]["refit_on_holdout"] is True
    assert captured.err.startswith("warning:") and "refit on train + holdout" in captured.err

    # the holdout of a model not refit on it, and other data: unseen, no warning
    assert main(["evaluate", "--model", str(no_refit), "--data",
                 str(tmp_path / "unseen" / "sentiment_train.csv"), "--task", "sentiment",
                 "--holdout", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["seen_by_model"] is False and "warning" not in captured.err


def test_a_reordered_cut_copy_of_the_training_csv_is_seen_row_by_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CSV fingerprint matched only an exact copy: the same rows shuffled, or a part of
    them, read as unseen data and their figures as a measurement."""
    from fintweet.core.data import stratified_holdout

    model = train_linear(tmp_path, refit=False)
    data = load_labelled_csv(tmp_path / "sentiment_train.csv", task="sentiment")
    train_rows, holdout_rows = stratified_holdout(data.labels)
    rows = [(data.texts[i], int(data.labels[i])) for i in train_rows]
    random.Random(0).shuffle(rows)
    n = len(rows) * 2 // 3
    copy = write_csv(tmp_path / "copy.csv", rows[:n])
    assert main(["evaluate", "--model", str(model), "--data", str(copy), "--task", "sentiment",
                 "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["seen_by_model"] is True
    assert f"{n:,} of {n:,} rows are rows it trained on, with the same text and label" \
        in captured.err
    # Its holdout rows, copied out the same way: unseen (it was not refit on them).
    unseen = write_csv(tmp_path / "unseen.csv",
                       [(data.texts[i], int(data.labels[i])) for i in holdout_rows])
    assert main(["evaluate", "--model", str(model), "--data", str(unseen), "--task", "sentiment",
                 "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["seen_by_model"] is False and "warning" not in captured.err


def test_a_model_trained_on_a_subsample_has_seen_some_of_the_whole_csvs_holdout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``train --max-rows`` split the subsample, whose holdout is not the whole CSV's: the
    whole CSV's fingerprint did not match the one recorded, so nothing was said while about a
    tenth of the "holdout" rows were training rows."""
    from fintweet.trainer.train import load_splits, train_models

    for task in ("topic", "sentiment"):
        write_csv(tmp_path / f"{task}_train.csv", synthetic_rows(30, seed=1, task=task))
    model = train_models(load_splits(tmp_path, max_rows=100), kinds=["linear"],
                         out_dir=tmp_path / "models")["linear"]
    assert main(["evaluate", "--model", str(model), "--data", str(tmp_path / "topic_train.csv"),
                 "--holdout", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["seen_by_model"] is True
    assert "trained on a subsample of this CSV (train --max-rows)" in captured.err


def test_cli_bad_csv_exits_2_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CSV is checked before any model loads, so the model path need not even exist."""
    bad = write_csv(tmp_path / "bad.csv", [("Fed hikes", 1), ("Oil jumps", "oil")])
    code = main(["evaluate", "--model", str(tmp_path / "no-model"), "--data", str(bad), "--json"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert f"{bad}: row 2 (line 3): label 'oil' is not an integer" in captured.err
    assert captured.err.startswith("fintweet evaluate: error:")


def test_cli_missing_model_exits_2_naming_the_path(
    eval_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "models" / "ann"
    code = main(["evaluate", "--model", str(missing), "--data", str(eval_csv)])
    assert code == 2
    assert str(missing) in capsys.readouterr().err


def test_cli_warns_first_when_a_topic_evaluation_reads_the_sentiment_csv(
    linear_artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Topic is the default task: the sentiment CSV without --task sentiment was scored as
    topics (accuracy 0.13) without a word."""
    data = write_csv(tmp_path / "sentiment.csv", synthetic_rows(20, seed=5, task="sentiment"))
    assert main(["evaluate", "--model", str(linear_artifact), "--data", str(data),
                 "--json"]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines()[0] == (
        f"warning: {data}: its labels are 0, 1 and 2 and no other, as in the sentiment CSV, but "
        "they are read as topics; if it is the sentiment CSV, evaluate it with --task sentiment")
    assert json.loads(captured.out)["task"] == "topic"
    assert main(["evaluate", "--model", str(linear_artifact), "--data", str(data), "--task",
                 "sentiment", "--json"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_a_trained_artifact_records_what_built_it(tmp_path: Path) -> None:
    """One code and one CSV trained the ANN's sentiment head to 0.8323 on one install and 0.8358
    on another whose library releases differed: nothing in either artifact said so."""
    from importlib import metadata

    from fintweet.core.artifacts import read_artifact
    from fintweet.trainer.train import load_splits, train_models

    for task in ("topic", "sentiment"):
        write_csv(tmp_path / f"{task}_train.csv", synthetic_rows(30, seed=1, task=task))
    model = train_models(load_splits(tmp_path), kinds=["linear"], refit=False,
                         out_dir=tmp_path / "models")["linear"]
    built = read_artifact(model).manifest["built_with"]
    assert built["packages"]["scikit-learn"] == metadata.version("scikit-learn")
    assert built["packages"]["numpy"] == metadata.version("numpy")
    assert built["python_version"].count(".") == 2 and built["fintweet"]


def test_the_commit_is_read_from_a_checkout_without_git_installed(tmp_path: Path) -> None:
    from fintweet.trainer.provenance import git_commit

    package = tmp_path / "repo" / "fintweet" / "__init__.py"
    package.parent.mkdir(parents=True)
    package.touch()
    git = tmp_path / "repo" / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    assert git_commit(package) is None  # no HEAD: not a checkout it can read
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    (git / "packed-refs").write_text(f"# pack-refs\n{'a' * 40} refs/heads/main\n")
    assert git_commit(package) == "a" * 40
    (git / "refs" / "heads" / "main").write_text("b" * 40 + "\n")  # a loose ref wins
    assert git_commit(package) == "b" * 40
    (git / "HEAD").write_text("c" * 40 + "\n")  # detached
    assert git_commit(package) == "c" * 40
    assert git_commit(tmp_path / "elsewhere" / "x.py") is None


def test_a_macro_f1_over_fewer_than_every_class_says_over_how_many(
        linear_artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The average is over the classes present (scoring's notes); the report said only the
    figure, beside a per-class table with other classes at F1 0 (predicted but absent). A
    holdout with every class reads as before."""
    few = write_csv(tmp_path / "three.csv",
                    [row for row in synthetic_rows(12, seed=3) if row[1] in (1, 6, 13)])
    assert main(["evaluate", "--model", str(linear_artifact.parent), "--data", str(few)]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines()
                if line.startswith("macro-F1"))
    assert re.fullmatch(r"macro-F1     \d\.\d{4} \(over the 3 classes present of 20\)  \(95% "
                        r"bootstrap interval .*\)", line), line
    assert main(["evaluate", "--model", str(linear_artifact.parent), "--data", str(few),
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["macro_f1_classes"] == 3
    full = score(np.arange(NUM_TOPICS), one_hot_rows(list(range(NUM_TOPICS))))
    assert full.macro_scope() == "" and full.as_dict()["macro_f1_classes"] == NUM_TOPICS
    assert "macro-F1     1.0000  (95% bootstrap" in format_report(full)
