"""Text → numbers for the three models, written here rather than borrowed from scikit-learn so the
fitted state is nothing but term lists and idf arrays (JSON + ``.npz``, no pickle), and so the
worker's hot path is one regex pass per tweet and a C-level dict lookup per feature.

Every vectorizer starts from :func:`tokens_of` (``fintweet.core.text.model_text`` then
``tokenize``), the one place preprocessing is defined, so training and serving cannot disagree.
Vectorizers take token lists as well as texts so a model with two feature blocks tokenizes once.
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
Tokens = list[str]


def tokens_of(text: str) -> Tokens:
    return tokenize(model_text(text))


def word_ngrams(tokens: Tokens, max_n: int) -> list[str]:
    """Tokens plus space-joined n-grams up to ``max_n`` (a token never contains a space)."""
    grams = list(tokens)
    if max_n >= 2:
        grams.extend([a + " " + b for a, b in pairwise(tokens)])
    for n in range(3, max_n + 1):
        grams.extend(" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    return grams


def char_ngrams(tokens: Tokens, min_n: int, max_n: int) -> list[str]:
    """Character n-grams inside each token padded with spaces (scikit-learn's ``char_wb``), so
    "downgrade"/"downgrades"/"downgraded" share most of their features."""
    grams: list[str] = []
    for token in tokens:
        padded = f" {token} "
        length = len(padded)
        for n in range(min_n, min(max_n, length) + 1):
            grams.extend(padded[i : i + n] for i in range(length - n + 1))
    return grams


def smooth_idf(doc_freq: np.ndarray, n_docs: int) -> np.ndarray:
    """scikit-learn's ``smooth_idf``: as if one extra document held every term."""
    return (np.log((1.0 + n_docs) / (1.0 + doc_freq)) + 1.0).astype(np.float32)


def rows_to_csr(
    ids: list[int] | np.ndarray, lengths: list[int], n_cols: int,
    values: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row feature ids (``-1`` = unknown, dropped) → merged (rows, columns, counts-or-summed
    values), sorted by row then column: one NumPy sort per batch instead of one per tweet."""
    rows = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    return merge_entries(rows, np.asarray(ids, dtype=np.int64), n_cols, values)


def merge_entries(
    rows: np.ndarray, columns: np.ndarray, n_cols: int, values: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    known = columns >= 0
    keys = rows[known] * n_cols + columns[known]
    if values is None:
        keys, merged = np.unique(keys, return_counts=True)
    else:
        keys, inverse = np.unique(keys, return_inverse=True)
        merged = np.bincount(inverse, weights=values[known], minlength=len(keys))
    rows, columns = np.divmod(keys, n_cols)
    return rows, columns, merged.astype(np.float32)


def assemble_csr(rows: np.ndarray, columns: np.ndarray, data: np.ndarray, n_rows: int,
                 n_cols: int) -> sp.csr_matrix:
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
    return sp.csr_matrix((data, columns.astype(np.int32), indptr), shape=(n_rows, n_cols))


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
    """TF-IDF (scikit-learn's smooth idf, sublinear tf) or binary bag over word or character
    n-grams, as a float32 CSR matrix with sorted column indices in each row (canonical order,
    which is what ``tf.SparseTensor`` wants)."""

    def __init__(self, config: NgramConfig | None = None) -> None:
        self.config = config or NgramConfig()
        if self.config.analyzer == "word" and self.config.min_n != 1:
            raise ValueError("word n-grams always include unigrams (min_n must be 1)")
        self.vocabulary: dict[str, int] = {}
        self.idf = np.ones(0, dtype=np.float32)
        self._bigram_keys: np.ndarray | None = None
        self._bigram_columns = np.zeros(0, dtype=np.int64)

    @property
    def n_features(self) -> int:
        return len(self.vocabulary)

    def grams(self, tokens: Tokens) -> list[str]:
        cfg = self.config
        if cfg.analyzer == "char":
            return char_ngrams(tokens, cfg.min_n, cfg.max_n)
        return word_ngrams(tokens, cfg.max_n)

    def analyze(self, text: str) -> list[str]:
        return self.grams(tokens_of(text))

    def fit(self, texts: Iterable[str]) -> NgramVectorizer:
        return self.fit_tokens(tokens_of(t) for t in texts)

    def fit_tokens(self, token_lists: Iterable[Tokens]) -> NgramVectorizer:
        doc_freq: Counter[str] = Counter()
        n_docs = 0
        for tokens in token_lists:
            doc_freq.update(set(self.grams(tokens)))
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
        self.idf = smooth_idf(np.array([doc_freq[t] for t in terms], dtype=np.float64), n_docs)
        self._index_bigrams()
        return self

    def _index_bigrams(self) -> None:
        """For word uni+bigrams: each bigram's column keyed by its two unigram columns, sorted,
        so a batch's bigrams are found with one ``np.searchsorted`` instead of building and
        hashing a string per bigram (the worker's hot path; half its dict lookups). Only when
        every bigram's words are themselves in the vocabulary (always, unless ``max_features``
        cut some), so the fast path finds exactly what the string path would."""
        self._bigram_keys: np.ndarray | None = None
        self._bigram_columns = np.zeros(0, dtype=np.int64)
        cfg = self.config
        if cfg.analyzer != "word" or cfg.max_n != 2:
            return
        n_cols = self.n_features
        keys: list[int] = []
        columns: list[int] = []
        for term, column in self.vocabulary.items():
            if " " not in term:
                continue
            left, right = term.split(" ")
            if left not in self.vocabulary or right not in self.vocabulary:
                return
            keys.append(self.vocabulary[left] * n_cols + self.vocabulary[right])
            columns.append(column)
        order = np.argsort(keys)
        self._bigram_keys = np.asarray(keys, dtype=np.int64)[order]
        self._bigram_columns = np.asarray(columns, dtype=np.int64)[order]

    def _word_entries(self, token_lists: Sequence[Tokens]) -> tuple[np.ndarray, np.ndarray]:
        """(rows, columns) of every unigram and bigram occurrence, via :meth:`_index_bigrams`."""
        assert self._bigram_keys is not None
        lookup = self.vocabulary.get
        unigram_columns: list[int] = []
        lengths: list[int] = []
        for tokens in token_lists:
            unigram_columns.extend(map(lookup, tokens, repeat(-1)))
            lengths.append(len(tokens))
        columns = np.array(unigram_columns, dtype=np.int64)
        rows = np.repeat(np.arange(len(token_lists), dtype=np.int64), lengths)
        left, right = columns[:-1], columns[1:]
        pairs = (rows[1:] == rows[:-1]) & (left >= 0) & (right >= 0)
        keys = left[pairs] * self.n_features + right[pairs]
        found_at = np.searchsorted(self._bigram_keys, keys)
        found_at[found_at == len(self._bigram_keys)] = 0
        found = self._bigram_keys[found_at] == keys if len(self._bigram_keys) else keys < 0
        return (
            np.concatenate([rows, rows[:-1][pairs][found]]),
            np.concatenate([columns, self._bigram_columns[found_at[found]]]),
        )

    def transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        return self.transform_tokens([tokens_of(t) for t in texts])

    def transform_tokens(self, token_lists: Sequence[Tokens]) -> sp.csr_matrix:
        """The worker's hot path: a C-level ``dict.get`` per n-gram; counting, weighting and
        normalising happen once per batch in NumPy."""
        n_rows, n_cols = len(token_lists), self.n_features
        if self._bigram_keys is not None:
            rows, columns, data = merge_entries(*self._word_entries(token_lists), n_cols)
        else:
            lookup = self.vocabulary.get
            grams = self.grams
            ids: list[int] = []
            lengths: list[int] = []
            for tokens in token_lists:
                before = len(ids)
                ids.extend(map(lookup, grams(tokens), repeat(-1)))
                lengths.append(len(ids) - before)
            rows, columns, data = rows_to_csr(ids, lengths, n_cols)
        cfg = self.config
        if cfg.binary:
            data[:] = 1.0
        elif cfg.sublinear_tf:
            np.log(data, out=data)
            data += 1.0
        if cfg.use_idf:
            data *= self.idf[columns]
        if cfg.norm:
            norms = np.sqrt(np.bincount(rows, weights=data * data, minlength=n_rows))
            norms[norms == 0] = 1.0
            data /= norms[rows].astype(np.float32)
        return assemble_csr(rows, columns, data, n_rows, n_cols)

    def fit_transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        token_lists = [tokens_of(t) for t in texts]
        return self.fit_tokens(token_lists).transform_tokens(token_lists)

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
        vectorizer._index_bigrams()
        return vectorizer


@dataclass(frozen=True)
class SubwordConfig:
    min_n: int = 2
    max_n: int = 5
    min_df: int = 2  # in this many training tweets


class SubwordVectorizer:
    """Character n-grams composed per token (the fastText idea): token ``t`` is the L2-normalised
    idf-weighted count vector ``c(t)`` of its ``char_wb`` n-grams, and a tweet is
    ``sum(c(t) for t in tokens) / sqrt(len(tokens))``.

    Why per token rather than scikit-learn's per-tweet TF-IDF over character n-grams: the two
    measured the same on the holdout (see ``fintweet.models.ann``), but this one is linear in the
    tokens, so a dense layer over it can be folded into one vector per token
    (``c(t) @ kernel``) and served at the cost of a word lookup instead of ~300 n-grams."""

    def __init__(self, config: SubwordConfig | None = None) -> None:
        self.config = config or SubwordConfig()
        self.vocabulary: dict[str, int] = {}
        self.idf = np.ones(0, dtype=np.float32)
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def n_features(self) -> int:
        return len(self.vocabulary)

    def fit_tokens(self, token_lists: Iterable[Tokens]) -> SubwordVectorizer:
        cfg = self.config
        doc_freq: Counter[str] = Counter()
        n_docs = 0
        for tokens in token_lists:
            doc_freq.update(set(char_ngrams(tokens, cfg.min_n, cfg.max_n)))
            n_docs += 1
        if n_docs == 0:
            raise ValueError("cannot fit a vectorizer on no texts")
        terms = sorted(term for term, df in doc_freq.items() if df >= cfg.min_df)
        if not terms:
            raise ValueError(f"no character n-gram occurs in {cfg.min_df}+ texts")
        self.vocabulary = {term: i for i, term in enumerate(terms)}
        self.idf = smooth_idf(np.array([doc_freq[t] for t in terms], dtype=np.float64), n_docs)
        self._cache = {}
        return self

    def fit(self, texts: Iterable[str]) -> SubwordVectorizer:
        return self.fit_tokens(tokens_of(t) for t in texts)

    def token_vector(self, token: str) -> tuple[np.ndarray, np.ndarray]:
        """``c(token)`` as (column ids, values); empty when no n-gram of it is known."""
        cached = self._cache.get(token)
        if cached is not None:
            return cached
        cfg = self.config
        counts = Counter(
            i for i in map(self.vocabulary.get, char_ngrams([token], cfg.min_n, cfg.max_n))
            if i is not None
        )
        ids = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
        values = np.fromiter(counts.values(), dtype=np.float32, count=len(counts))
        values *= self.idf[ids]
        norm = np.sqrt(np.dot(values, values))
        if norm > 0:
            values /= norm
        if len(self._cache) < 1_000_000:  # bounded: a long-lived process sees endless new tokens
            self._cache[token] = (ids, values)
        return ids, values

    @staticmethod
    def token_weight(n_tokens: int) -> float:
        return 1.0 / float(np.sqrt(max(n_tokens, 1)))

    def transform_tokens(self, token_lists: Sequence[Tokens]) -> sp.csr_matrix:
        ids: list[np.ndarray] = []
        values: list[np.ndarray] = []
        lengths: list[int] = []
        for tokens in token_lists:
            weight = self.token_weight(len(tokens))
            count = 0
            for token in tokens:
                token_ids, token_values = self.token_vector(token)
                ids.append(token_ids)
                values.append(token_values * weight)
                count += len(token_ids)
            lengths.append(count)
        flat_ids = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)
        flat_values = np.concatenate(values) if values else np.zeros(0, dtype=np.float32)
        n_rows = len(token_lists)
        rows, columns, data = rows_to_csr(flat_ids, lengths, self.n_features, flat_values)
        return assemble_csr(rows, columns, data, n_rows, self.n_features)

    def transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        return self.transform_tokens([tokens_of(t) for t in texts])

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        terms = sorted(self.vocabulary, key=self.vocabulary.__getitem__)
        return {"config": asdict(self.config), "terms": terms}, {"idf": self.idf}

    @classmethod
    def from_state(
        cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]
    ) -> SubwordVectorizer:
        vectorizer = cls(SubwordConfig(**meta["config"]))
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
        return self.fit_tokens(tokens_of(t) for t in texts)

    def fit_tokens(self, token_lists: Iterable[Tokens]) -> TokenIndexer:
        doc_freq: Counter[str] = Counter()
        for tokens in token_lists:
            doc_freq.update(set(tokens))
        terms = sorted(t for t, df in doc_freq.items() if df >= self.min_df)
        self.vocabulary = {term: i + 2 for i, term in enumerate(terms)}
        return self

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        return self.transform_tokens([tokens_of(t) for t in texts])

    def transform_tokens(self, token_lists: Sequence[Tokens]) -> np.ndarray:
        out = np.zeros((len(token_lists), self.max_len), dtype=np.int32)
        get = self.vocabulary.get
        for row, tokens in enumerate(token_lists):
            ids = list(map(get, tokens[: self.max_len], repeat(OOV_ID)))
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
    return np.array([len(tokens_of(t)) for t in texts], dtype=np.int32)
