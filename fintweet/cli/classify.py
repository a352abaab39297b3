"""``fintweet classify``: ad-hoc classification with a local model, no Kafka or Redis. Shares
:func:`fintweet.web.classify.classify_texts` with ``POST /v1/classify``."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

from fintweet.cli.options import add_model_options, shared_overrides
from fintweet.cli.terminal import printable
from fintweet.core.errors import UserError


class InputError(UserError, ValueError):
    """A text or CSV that cannot be classified; the message says which."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "classify", help="classify texts with a local model (table or JSON lines)",
        description="Topic and sentiment of each TEXT, or of each row of a CSV with a 'text' "
                    "column (--file CSV, or - for stdin), with the model the worker loads.",
    )
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="texts to classify")
    parser.add_argument("--file", default=None, metavar="CSV",
                        help="CSV with a 'text' column (and optionally 'id'); - reads stdin")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    add_model_options(parser)
    parser.add_argument("--batch-size", type=int, default=256,
                        help="texts per model call (default 256)")
    parser.set_defaults(func=run)


def read_csv_texts(raw: str, source: str) -> tuple[list[str], list[str] | None]:
    """Texts (and ids, when the CSV has an ``id`` column) of a CSV with a ``text`` column."""
    # strict: an unclosed quote is an error, not the rows after it read as one text
    reader = csv.DictReader(io.StringIO(raw), strict=True)
    try:
        return _read_rows(reader, source)
    except csv.Error as exc:  # a field past the csv module's limit (128 KiB), a bad quote
        # line_num counts the lines of the rows read whole: the bad one starts on the next
        raise InputError(f"{source}: line {reader.line_num + 1}: not valid CSV ({exc}); check "
                         "the quoting from there") from None


def _read_rows(reader: csv.DictReader[str], source: str) -> tuple[list[str], list[str] | None]:
    from fintweet.core.data import extra_fields_problem, repeated_columns_problem

    if not reader.fieldnames or "text" not in reader.fieldnames:
        raise InputError(f"{source}: no 'text' column in the header "
                         f"({', '.join(reader.fieldnames or []) or 'empty file'}); "
                         "give a CSV whose header names a 'text' column")
    if problem := repeated_columns_problem(reader.fieldnames):
        raise InputError(f"{source}: {problem}")
    texts: list[str] = []
    ids: list[str] = []
    has_ids = "id" in reader.fieldnames
    for row in reader:
        # Data rows start on line 2; DictReader's line_num is where the row ends (quoted newlines).
        where = f"{source}: row {len(texts) + 1} (line {reader.line_num})"
        problem = extra_fields_problem(row, reader.fieldnames)
        if problem:
            raise InputError(f"{where}: {problem}")
        text = row["text"] or ""
        refuse_unclassifiable(text, where, "fix or remove that row")
        texts.append(text)
        ids.append(row.get("id") or "")
    if not texts:  # printed nothing and exited 0, like a file classified in full
        raise InputError(f"{source}: a header and no data rows; give at least one row of text")
    return texts, (ids if has_ids else None)


def refuse_unclassifiable(text: str, where: str, remedy: str) -> None:
    """What the worker dead-letters (a blank text, a NUL, past a tweet's length) is refused
    here too, so the CLI, the API and the pipeline agree on what a tweet is."""
    from fintweet.core.text import text_problem

    problem = text_problem(text)
    if problem:
        raise InputError(f"{where}: {problem}; {remedy}")


def read_input(name: str) -> str:
    """The text of ``--file NAME`` (``-``: stdin), decoded as UTF-8 by one rule for both: the
    bytes are read and decoded here, so invalid UTF-8 on stdin is the same one-line error as in
    a file, whatever encoding and error handler the locale gave ``sys.stdin``."""
    source = "stdin" if name == "-" else name
    if name == "-":
        stdin = sys.stdin
        buffer = getattr(stdin, "buffer", None)
        if buffer is None:  # replaced by text already decoded (an embedding caller, a test)
            return stdin.read()
        data = buffer.read()
    else:
        try:
            data = Path(name).read_bytes()
        except FileNotFoundError:
            raise InputError(f"{name}: no such file") from None
        except IsADirectoryError:
            raise InputError(f"{name}: is a directory, expected a CSV file") from None
    try:
        text = data.decode("utf-8-sig")  # a spreadsheet's byte-order mark is no part of 'text'
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise InputError(f"{source}: line {line}: bytes are not valid UTF-8 ({exc.reason} at "
                         f"byte {exc.start}); save it as UTF-8") from None
    # Universal newlines, as reading in text mode gave: a quoted CRLF is one newline in a text
    return text.replace("\r\n", "\n").replace("\r", "\n")


def format_table(rows: list[dict[str, Any]], ids: list[str]) -> str:
    """One aligned row per text; ids and texts (the user's input) with their control characters
    escaped, so a pasted ESC or newline neither reaches the terminal nor breaks the table."""
    header = ("#", "topic", "conf", "sentiment", "conf", "text")
    body = []
    for key, row in zip(ids, rows, strict=True):
        text = row["text"] if len(row["text"]) <= 70 else row["text"][:69] + "…"
        body.append((printable(key), row["topic"], f"{row['confidence']:.0%}",
                     row["sentiment"]["label"], f"{row['sentiment']['confidence']:.0%}",
                     printable(text)))
    widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(len(header) - 1)]
    lines = []
    for r in [header, *body]:
        lines.append("  ".join(f"{c!s:<{w}}" for c, w in zip(r[:-1], widths, strict=True))
                     + "  " + r[-1])
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from fintweet.core.config import Settings
    from fintweet.models.base import model_tag
    from fintweet.web.classify import classify_texts, load_classifier

    if args.texts and args.file:
        raise InputError("give texts to classify, or --file CSV (- for stdin), not both")
    if not args.texts and not args.file:
        raise InputError("nothing to classify: give texts, or --file CSV (- for stdin)")
    if args.batch_size < 1:
        raise InputError(f"--batch-size {args.batch_size}: give 1 or more")
    ids: list[str] | None = None
    if args.file:
        source = "stdin" if args.file == "-" else args.file
        texts, ids = read_csv_texts(read_input(args.file), source)
    else:
        texts = list(args.texts)
        for number, text in enumerate(texts, 1):
            refuse_unclassifiable(text, f"text {number}", "fix or leave out that text")
    settings = Settings.from_env(**shared_overrides(args))
    model = load_classifier(settings.models_dir, settings.model, settings.transformer_runtime)
    keys = ids if ids is not None else [str(i + 1) for i in range(len(texts))]
    rows: list[dict[str, Any]] = []
    for start in range(0, len(texts), args.batch_size):
        rows += classify_texts(model, texts[start:start + args.batch_size])
    tag = model_tag(model)
    if args.json:
        for key, row in zip(keys, rows, strict=True):
            extra = {"id": key} if ids is not None else {}
            print(json.dumps({**extra, **row, "model": tag}, ensure_ascii=False))
    elif rows:
        print(format_table(rows, keys))
        # which version answered (`fintweet models use` may have switched it); on stderr, so
        # the table alone goes down a pipe
        print(f"model {tag}", file=sys.stderr)
    return 0
