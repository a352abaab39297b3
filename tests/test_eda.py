"""``fintweet eda``: the profile's numbers on a CSV whose answers are known by construction, the
term ranking, and the CLI writing a complete report (or failing clearly)."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from fintweet.cli.main import main
from fintweet.core.data import LabelledData, load_labelled_csv
from fintweet.trainer.eda import FIGURES, profile, rank_terms

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Per topic: 8 tweets. URL on every other tweet (50% overall), a cashtag on every Earnings and
# Stock Movement tweet, a mention only in Fed tweets, a hashtag only in Energy tweets.
TOPIC_ROWS = {
    1: ["Fed holds rates, @federalreserve says inflation cooling", "Powell: Fed ready to hike "
        "rates again via @Reuters"],
    5: ["$AAPL earnings beat, quarterly revenue up 8%", "$MSFT earnings miss on cloud revenue"],
    6: ["Oil prices jump as OPEC trims output #OOTT", "Crude oil slides on demand fears #oil"],
    19: ["$TSLA shares up 5% premarket", "$tsla shares down 3% after hours"],
}
PER_TOPIC = 8


def eda_rows() -> list[tuple[str, int]]:
    rows = []
    for topic, texts in TOPIC_ROWS.items():
        for i in range(PER_TOPIC):
            text = f"{texts[i % 2]} (update {i})"
            if i % 2 == 0:
                text += f" https://t.co/a{topic}x{i}"
            rows.append((text, topic))
    rows.append(rows[0])  # one exact duplicate, same label
    rows.append((rows[1][0], 6))  # one duplicate text with a conflicting label
    return rows


def write_csv(path: Path, rows: list[tuple[str, int | str]], header: tuple[str, ...] = (
        "text", "label")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# --- the profile ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def eda_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_csv(tmp_path_factory.mktemp("eda-data") / "tweets.csv", eda_rows())


def test_repeated_texts_are_counted_as_the_model_reads_them(tmp_path: Path) -> None:
    """Two tweets that differ only in a t.co path and in case are one text to every model (and
    the dataset has 1,622 such rows): counted on the raw text they were all distinct."""
    rows = [("Fed holds rates https://t.co/aaa", 1), ("FED holds rates https://t.co/bbb", 1),
            ("fed holds rates https://t.co/ccc", 2), ("Oil slides", 6)]
    p = profile(load_labelled_csv(write_csv(tmp_path / "r.csv", rows)), progress=False)
    assert (p.duplicate_texts, p.duplicate_rows, p.conflicting_texts) == (1, 2, 1)


def test_profile_counts_labels_links_and_duplicates(eda_csv: Path) -> None:
    data = load_labelled_csv(eda_csv)
    p = profile(data, progress=False)
    assert p.task == "topic"
    counts = p.label_counts()
    assert counts[[1, 5, 6, 19]].tolist() == [PER_TOPIC + 1, PER_TOPIC, PER_TOPIC + 1, PER_TOPIC]
    assert counts.sum() == p.n == 34
    assert p.present_classes() == [1, 5, 6, 19]
    assert p.imbalance_ratio() == pytest.approx(9 / 8)

    by_topic = dict(zip(("urls", "cashtags", "mentions", "hashtags"),
                        p.link_shares_by_class().T, strict=True))
    assert by_topic["cashtags"][[5, 19]].tolist() == [1.0, 1.0]
    assert by_topic["cashtags"][[1, 6]].tolist() == [0.0, 0.0]
    assert by_topic["mentions"][1] == 1.0 and by_topic["mentions"][5] == 0.0
    assert by_topic["hashtags"][6] == pytest.approx(8 / 9)  # the conflicting duplicate has none
    assert np.isnan(by_topic["urls"][0])  # absent topic: unknown, not 0%
    # 16 of the 32 generated tweets carry a URL, and so does the first duplicate.
    assert p.link_shares()[0] == pytest.approx(17 / 34)
    assert dict(p.top_entities["cashtags"]) == {"$AAPL": 4, "$MSFT": 4, "$TSLA": 8}

    assert (p.duplicate_texts, p.duplicate_rows, p.conflicting_texts) == (2, 2, 1)
    first = data.texts[0]
    assert p.char_lengths[0] == len(first)
    assert p.token_lengths.min() > 3


def test_top_terms_find_each_topics_own_words(eda_csv: Path) -> None:
    p = profile(load_labelled_csv(eda_csv), progress=False)
    top = {topic: [t.term for t in terms[:4]] for topic, terms in p.top_terms.items()}
    assert "earnings" in top[5] and "revenue" in top[5]
    assert "oil" in top[6]
    assert "shares" in top[19] and "$tsla" in top[19]
    assert "rates" in top[1] or "fed" in top[1]
    for terms in p.top_terms.values():
        # Stopwords and URLs are never terms; "update" is in every tweet, so not distinctive.
        assert all(t.term not in {"the", "on", "xxurl", "update", "says"} for t in terms)
        assert all(t.share > t.corpus_share for t in terms)
        assert [t.score for t in terms] == sorted((t.score for t in terms), reverse=True)


def test_rank_terms_weighs_frequency_and_distinctiveness() -> None:
    corpus = Counter({"common": 80, "rare": 3, "distinct": 20, "both": 40, "everywhere": 60,
                      "once": 1})
    topic = Counter({"common": 9, "rare": 3, "distinct": 8, "both": 9, "everywhere": 5, "once": 1})
    ranked = rank_terms(topic, class_size=10, corpus_df=corpus, corpus_size=100, min_count=2)
    # "distinct" (80% of the topic vs 20% overall) beats "both" (90% vs 40%), which beats "rare"
    # (30% vs 3%: rarer in the topic), which beats "common" (90% vs 80%: barely distinctive).
    # "once" is below min_count and "everywhere" is less common in the topic than overall.
    assert [t.term for t in ranked] == ["distinct", "both", "rare", "common"]
    assert ranked[0].share == pytest.approx(0.8) and ranked[0].corpus_share == pytest.approx(0.2)
    assert ranked[0].score == pytest.approx(0.8 * np.log(4))
    assert len(rank_terms(topic, 10, corpus, 100, limit=2, min_count=2)) == 2


SENTIMENT_ROWS = [
    ("$TSLA plunges as deliveries miss, says analyst", 0), ("$AAPL crashes on weak guidance", 0),
    ("$TSLA soars to a record high", 1), ("$NVDA jumps after earnings beat", 1),
    ("$NVDA rallies, shares up 5%", 1), ("Fed minutes due at 2pm https://t.co/x", 2),
    ("Company will hold its annual meeting https://t.co/y", 2), ("Markets closed Monday", 2),
]


def test_sentiment_csv_is_profiled_as_sentiment(tmp_path: Path) -> None:
    data = load_labelled_csv(write_csv(tmp_path / "sentiment.csv", SENTIMENT_ROWS))
    p = profile(data, progress=False, min_count=1)  # the task guessed from labels 0-2
    assert p.task == "sentiment" and p.names == ("Bearish", "Bullish", "Neutral")
    assert p.label_counts().tolist() == [2, 3, 3]
    summary = p.summary()
    assert [row["name"] for row in summary["labels"]] == ["Bearish", "Bullish", "Neutral"]
    # scikit-learn's stop words and newswire filler go; cashtags and direction words stay
    assert "says" not in p.term_counts and "will" not in p.term_counts
    assert p.term_counts["$tsla"] == 2 and p.term_counts["up"] == 1
    assert profile(data, task="topic", progress=False).task == "topic"


def test_figures_sort_bars_show_scales_titles_and_zeros(eda_csv: Path) -> None:
    from fintweet.trainer.eda.figures import link_stats_figure, top_terms_figure, wordcloud_figure

    p = profile(load_labelled_csv(eda_csv), progress=False, min_count=2)
    barred = [ax for ax in top_terms_figure(p).axes if ax.patches]
    assert barred  # else the checks below check nothing
    for ax in barred:
        widths = [bar.get_width() for bar in ax.patches]
        assert widths == sorted(widths, reverse=True)  # the longest bar first (on top)
        assert [t.get_text() for t in ax.get_xticklabels() if t.get_text()]  # an x scale
    cloud = wordcloud_figure(p)
    assert "Most frequent terms" in cloud.axes[0].get_title()
    heatmap = link_stats_figure(p).axes[1]
    cells = [t.get_text() for t in heatmap.texts]
    assert len(cells) == 4 * 4 and "0%" in cells  # every cell written, zeros included


def test_profile_refuses_unlabelled_rows() -> None:
    data = LabelledData(["a tweet"], np.array([-1]), "replay.csv")
    with pytest.raises(ValueError, match=r"replay\.csv"):
        profile(data, progress=False)


# --- the CLI -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report_dir(eda_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eda") / "report"
    assert main(["eda", "--data", str(eda_csv), "--out", str(out), "--min-count", "2"]) == 0
    return out


def test_cli_writes_every_figure_as_a_png(report_dir: Path) -> None:
    for name in FIGURES:
        content = (report_dir / name).read_bytes()
        assert content[:8] == PNG_MAGIC, name
        assert len(content) > 5_000, name


def test_index_html_shows_every_figure_with_a_caption(report_dir: Path) -> None:
    page = (report_dir / "index.html").read_text(encoding="utf-8")
    shown = re.findall(r"<img src='([^']+)'", page)
    assert shown == list(FIGURES)
    assert page.count("<figcaption>") == len(FIGURES)
    assert "Earnings" in page and "Stock Movement" in page
    assert "$tsla" in page  # the top-terms table
    assert "summary.json" in page


def test_summary_json_matches_the_csv(report_dir: Path, eda_csv: Path) -> None:
    summary = json.loads((report_dir / "summary.json").read_text(encoding="utf-8"))
    assert summary["n"] == 34
    assert summary["source"] == str(eda_csv)
    assert summary["fingerprint"] == load_labelled_csv(eda_csv).fingerprint()
    labels = {row["id"]: row for row in summary["labels"]}
    assert len(labels) == 20
    assert labels[19]["name"] == "Stock Movement" and labels[19]["count"] == PER_TOPIC
    assert labels[0]["count"] == 0
    assert sum(row["share"] for row in summary["labels"]) == pytest.approx(1.0)
    assert summary["links"]["overall"]["urls"] == pytest.approx(17 / 34)
    assert [row["id"] for row in summary["links"]["per_class"]] == [1, 5, 6, 19]
    assert summary["task"] == "topic" and summary["classes_present"] == 4
    chars = summary["lengths"]["chars"]
    assert chars["min"] <= chars["median"] <= chars["p95"] <= chars["max"]
    assert summary["duplicates"]["texts_with_conflicting_labels"] == 1
    assert {row["id"] for row in summary["top_terms"]} == {1, 5, 6, 19}


def test_cli_bad_csv_exits_2_naming_the_file(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    bad = write_csv(tmp_path / "no_label.csv", [("Fed hikes",)], header=("text",))
    code = main(["eda", "--data", str(bad), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{bad}: no 'label' column" in err
    assert not (tmp_path / "out").exists()


def test_cli_out_that_is_a_file_exits_2(eda_csv: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    taken = tmp_path / "taken"
    taken.write_text("not a directory")
    with pytest.raises(SystemExit) as exit_info:  # refused as the flag is parsed
        main(["eda", "--data", str(eda_csv), "--out", str(taken), "--quiet"])
    assert exit_info.value.code == 2
    assert f"--out: {taken} exists and is not a directory" in capsys.readouterr().err
    # under a file: found only after the profiling before, and the report lost
    def profiled(*args: object, **kwargs: object) -> None:
        raise AssertionError("profiled before the output folder was checked")

    monkeypatch.setattr("fintweet.trainer.eda.profile", profiled)
    code = main(["eda", "--data", str(eda_csv), "--out", str(taken / "report"), "--quiet"])
    assert code == 2
    assert f"--out {taken / 'report'}: cannot write there" in capsys.readouterr().err


def test_the_sentiment_csv_read_as_topics_is_warned_of(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """As evaluate and replay warn: its 0, 1 and 2 became Analyst Update, Fed and Company
    News in a topic report, silently."""
    data = write_csv(tmp_path / "sentiment.csv", SENTIMENT_ROWS * 7)  # past the 50-row floor
    out = tmp_path / "report"
    assert main(["eda", "--data", str(data), "--task", "topic", "--out", str(out),
                 "--quiet", "--min-count", "1"]) == 0
    assert capsys.readouterr().err.splitlines()[0] == (
        f"warning: {data}: its labels are 0, 1 and 2 and no other, as in the sentiment CSV, but "
        "they are read as topics; if it is the sentiment CSV, leave --task out or give --task "
        "sentiment")
