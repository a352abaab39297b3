"""Text → numbers for the three models, written here rather than borrowed from scikit-learn so the
fitted state is nothing but a term list and an idf array (JSON + ``.npz``, no pickle), and so the
worker's hot path is one regex pass and a dict lookup per feature.

Every vectorizer starts from :func:`fintweet.core.text.model_text` / ``tokenize``; that is the
one place preprocessing is defined, so training and serving cannot disagree.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from itertools import pairwise, repeat
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from fintweet.core.text import model_text, tokenize

Analyzer = Literal["word", "char"]


def word_ngrams(tokens: list[str], max_n: int) -> list[str]:
    """Tokens plus space-joined n-grams up to ``max_n`` (a token never contains a space)."""
    grams = list(tokens)
    if max_n >= 2:
        grams.extend([a + " " + b for a, b in pairwise(tokens)])
    for n in range(3, max_n + 1):
        grams.extend(" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    return grams


def char_ngrams(tokens: list[str], min_n: int, max_n: int) -> list[str]:
    """Character n-grams inside each token padded with spaces (scikit-learn's ``char_wb``), so
    "downgrade"/"downgrades"/"downgraded" share most of their features."""
    grams: list[str] = []
    for token in tokens:
        padded = f" {token} "
        length = len(padded)
        for n in range(min_n, min(max_n, length) + 1):
            grams.extend(padded[i : i + n] for i in range(length - n + 1))
    return grams


@dataclass(frozen=True)
class NgramConfig:
    analyzer: Analyzer = "word"
    min_n: int = 1
    max_n: int = 2
    min_df: int = 2
    max_features: int | None = None
    sublinear_tf: bool = True
    use_idf: bool = True
    binary: bool = False
    norm: bool = True  # L2-normalise each row

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NgramConfig:
        return cls(**data)


class NgramVectorizer:
    """TF-IDF over word or character n-grams (scikit-learn's smooth idf and sublinear tf), as a
    float32 CSR matrix whose column indices are sorted within each row (canonical order, which is
    what ``tf.SparseTensor`` wants)."""

    def __init__(self, config: NgramConfig | None = None) -> None:
        self.config = config or NgramConfig()
        self.vocabulary: dict[str, int] = {}
        self.idf = np.ones(0, dtype=np.float32)

    @property
    def n_features(self) -> int:
        return len(self.vocabulary)

    def analyze(self, text: str) -> list[str]:
        tokens = tokenize(model_text(text))
        cfg = self.config
        if cfg.analyzer == "char":
            return char_ngrams(tokens, cfg.min_n, cfg.max_n)
        if cfg.min_n != 1:
            raise ValueError("word n-grams always include unigrams (min_n must be 1)")
        return word_ngrams(tokens, cfg.max_n)

    def fit(self, texts: Iterable[str]) -> NgramVectorizer:
        doc_freq: Counter[str] = Counter()
        n_docs = 0
        for text in texts:
            doc_freq.update(set(self.analyze(text)))
            n_docs += 1
        if n_docs == 0:
            raise ValueError("cannot fit a vectorizer on no texts")
        kept = [(term, df) for term, df in doc_freq.items() if df >= self.config.min_df]
        if self.config.max_features is not None and len(kept) > self.config.max_features:
            kept.sort(key=lambda item: (-item[1], item[0]))  # most frequent; ties by term
            kept = kept[: self.config.max_features]
        terms = sorted(term for term, _ in kept)
        if not terms:
            raise ValueError(f"no n-gram occurs in {self.config.min_df}+ texts; vocabulary empty")
        self.vocabulary = {term: i for i, term in enumerate(terms)}
        df = np.array([doc_freq[t] for t in terms], dtype=np.float64)
        self.idf = (np.log((1.0 + n_docs) / (1.0 + df)) + 1.0).astype(np.float32)
        return self

    def transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        """The worker's hot path: per tweet one regex pass and a C-level ``dict.get`` per
        n-gram; counting, weighting and normalising happen once per batch in NumPy."""
        lookup = self.vocabulary.get
        analyze = self.analyze
        ids: list[int] = []
        lengths: list[int] = []
        for text in texts:
            before = len(ids)
            ids.extend(map(lookup, analyze(text), repeat(-1)))
            lengths.append(len(ids) - before)
        n_rows, n_cols = len(texts), self.n_features
        columns = np.array(ids, dtype=np.int64)
        rows = np.repeat(np.arange(n_rows, dtype=np.int64), lengths)
        known = columns >= 0
        # One sort of row*n_cols+column gives per-row sorted columns and the counts together.
        keys, counts = np.unique(rows[known] * n_cols + columns[known], return_counts=True)
        rows, columns = np.divmod(keys, n_cols)
        cfg = self.config
        if cfg.binary:
            data = np.ones(len(keys), dtype=np.float32)
        elif cfg.sublinear_tf:
            data = np.log(counts.astype(np.float32)) + np.float32(1.0)
        else:
            data = counts.astype(np.float32)
        if cfg.use_idf:
            data *= self.idf[columns]
        if cfg.norm:
            norms = np.sqrt(np.bincount(rows, weights=data * data, minlength=n_rows))
            norms[norms == 0] = 1.0
            data /= norms[rows].astype(np.float32)
        indptr = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
        return sp.csr_matrix(
            (data, columns.astype(np.int32), indptr), shape=(n_rows, n_cols)
        )

    def fit_transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        return self.fit(texts).transform(texts)

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """JSON-able part (config and terms in column order) and the arrays (idf)."""
        terms = sorted(self.vocabulary, key=self.vocabulary.__getitem__)
        return {"config": asdict(self.config), "terms": terms}, {"idf": self.idf}

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> NgramVectorizer:
        vectorizer = cls(NgramConfig.from_dict(meta["config"]))
        terms = list(meta["terms"])
        vectorizer.vocabulary = {term: i for i, term in enumerate(terms)}
        vectorizer.idf = np.asarray(arrays["idf"], dtype=np.float32)
        if len(vectorizer.idf) != len(terms):
            raise ValueError(f"idf has {len(vectorizer.idf)} entries for {len(terms)} terms")
        return vectorizer


PAD_ID = 0
OOV_ID = 1


class TokenIndexer:
    """Tokens → int ids for the CNN, padded/truncated to ``max_len`` (0 is padding, 1 unknown).
    A fixed length keeps the compiled graph to one shape and makes padding identical in
    training and serving."""

    def __init__(self, min_df: int = 2, max_len: int = 64) -> None:
        self.min_df = min_df
        self.max_len = max_len
        self.vocabulary: dict[str, int] = {}

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary) + 2

    def fit(self, texts: Iterable[str]) -> TokenIndexer:
        doc_freq: Counter[str] = Counter()
        for text in texts:
            doc_freq.update(set(tokenize(model_text(text))))
        terms = sorted(t for t, df in doc_freq.items() if df >= self.min_df)
        self.vocabulary = {term: i + 2 for i, term in enumerate(terms)}
        return self

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.max_len), dtype=np.int32)
        get = self.vocabulary.get
        for row, text in enumerate(texts):
            ids = [get(token, OOV_ID) for token in tokenize(model_text(text))[: self.max_len]]
            out[row, : len(ids)] = ids
        return out

    def state(self) -> dict[str, Any]:
        terms = sorted(self.vocabulary, key=self.vocabulary.__getitem__)
        return {"min_df": self.min_df, "max_len": self.max_len, "terms": terms}

    @classmethod
    def from_state(cls, meta: dict[str, Any]) -> TokenIndexer:
        indexer = cls(min_df=int(meta["min_df"]), max_len=int(meta["max_len"]))
        indexer.vocabulary = {term: i + 2 for i, term in enumerate(meta["terms"])}
        return indexer


def token_lengths(texts: Iterable[str]) -> np.ndarray:
    return np.array([len(tokenize(model_text(t))) for t in texts], dtype=np.int32)
