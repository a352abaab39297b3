"""The EDA report on disk: the figures as PNGs, ``summary.json`` (the numbers behind them) and
``index.html`` showing both."""

from __future__ import annotations

import html
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fintweet.trainer.eda.figures import (
    FIGURES,
    label_distribution_figure,
    link_stats_figure,
    text_length_figure,
    top_terms_figure,
    wordcloud_figure,
)
from fintweet.trainer.eda.profile import Profile

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DRAWERS: dict[str, Callable[[Profile], Figure]] = {
    "label_distribution.png": label_distribution_figure,
    "text_length.png": text_length_figure,
    "wordcloud.png": wordcloud_figure,
    "top_terms.png": top_terms_figure,
    "link_stats.png": link_stats_figure,
}


def _html_report(p: Profile, summary: dict[str, Any]) -> str:
    esc = html.escape
    lengths = summary["lengths"]
    facts = [
        ("source", esc(p.source)),
        ("task", esc(p.task)),
        ("tweets", f"{p.n:,}"),
        ("classes present", f"{summary['classes_present']} of {len(p.names)}"),
        ("largest / smallest class", f"{summary['imbalance_ratio']:.1f}×"),
        ("median length", f"{lengths['chars']['median']:.0f} characters, "
                          f"{lengths['tokens']['median']:.0f} tokens"),
        ("tweets with a URL", f"{summary['links']['overall']['urls']:.1%}"),
        ("repeated texts", f"{p.duplicate_texts:,} distinct texts (as the model reads them: "
                           "lower case, each URL one token) occur more than once "
                           f"({p.duplicate_rows:,} extra rows); {p.conflicting_texts:,} of them "
                           "with conflicting labels"),
        ("data fingerprint", f"<code>{p.fingerprint[:16]}</code>"),
    ]
    parts = [
        "<!doctype html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        f"<title>fintweet EDA: {esc(Path(p.source).name)}</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;"
        "padding:0 1em;color:#222}img{max-width:100%;border:1px solid #ddd}"
        "figure{margin:2em 0}figcaption{color:#555;margin-top:.4em}"
        "table{border-collapse:collapse;font-size:14px}td,th{padding:3px 10px;"
        "border-bottom:1px solid #eee;text-align:left;vertical-align:top}</style>",
        "</head><body>",
        f"<h1>Exploratory analysis of {esc(Path(p.source).name)}</h1>",
        "<table>",
        *(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in facts),
        "</table>",
    ]
    for name, caption in FIGURES.items():
        parts.append(f"<figure><img src='{name}' alt='{esc(name)}'>"
                     f"<figcaption>{esc(caption)}</figcaption></figure>")
    parts += [f"<h2>Top terms per {esc(p.task)}</h2>", f"<table><tr><th>{esc(p.task)}</th>"
              "<th>tweets</th><th>terms (share of the class's tweets)</th></tr>"]
    counts = p.label_counts()
    for cls, terms in sorted(p.top_terms.items()):
        listed = ", ".join(f"{esc(t.term)} ({t.share:.0%})" for t in terms) or "–"
        parts.append(f"<tr><td>{esc(p.names[cls])}</td><td>{counts[cls]:,}</td>"
                     f"<td>{listed}</td></tr>")
    parts += ["</table>", "<h2>Most tweeted entities</h2>", "<table>"]
    for kind, items in p.top_entities.items():
        listed = ", ".join(f"{esc(v)} ({c:,})" for v, c in items) or "–"
        parts.append(f"<tr><th>{esc(kind)}</th><td>{listed}</td></tr>")
    parts += ["</table>", "<p>Numbers behind every figure: <a href='summary.json'>summary.json"
              "</a>.</p>", "</body></html>"]
    return "\n".join(parts) + "\n"


def write_report(p: Profile, out_dir: Path, progress: bool = True) -> list[Path]:
    """All figures, ``summary.json`` and ``index.html`` into ``out_dir``; returns their paths."""
    from fintweet.trainer import plots

    say: Callable[[str], None] = (
        (lambda message: print(f"eda: {message}", file=sys.stderr, flush=True))
        if progress else (lambda message: None)
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in DRAWERS.items():
        say(f"drawing {name}")
        written.append(plots.save(draw(p), out_dir / name))
    summary = p.summary()
    summary_path = out_dir / "summary.json"
    summary_path.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n",
                            encoding="utf-8")
    index_path = out_dir / "index.html"
    index_path.write_text(_html_report(p, summary), encoding="utf-8")
    written += [summary_path, index_path]
    say(f"wrote {len(written)} files to {out_dir}")
    return written
