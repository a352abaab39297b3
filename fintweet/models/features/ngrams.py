"""Word and character n-gram bags: TF-IDF (scikit-learn's smooth idf, sublinear tf) for the
linear model, binary bags for the MLP and the CNN's wide path."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise, repeat
from typing import Literal

import numpy as np
import scipy.sparse as sp

from fintweet.models.features.sparse import assemble_csr, merge_entries, rows_to_csr
from fintweet.models.features.vocabulary import TermVocabulary, Tokens

Analyzer = Literal["word", "char"]


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
        grams += [padded[i : i + n] for n in range(min_n, min(max_n, length) + 1)
                  for i in range(length - n + 1)]
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

    def __post_init__(self) -> None:
        if self.analyzer == "word" and self.min_n != 1:
            raise ValueError("word n-grams always include unigrams (min_n must be 1)")


class NgramVectorizer(TermVocabulary):
    """A float32 CSR matrix per batch with sorted column indices in each row."""

    config_class = NgramConfig
    config: NgramConfig

    def terms(self, tokens: Tokens) -> list[str]:
        cfg = self.config
        if cfg.analyzer == "char":
            return char_ngrams(tokens, cfg.min_n, cfg.max_n)
        return word_ngrams(tokens, cfg.max_n)

    def _after_fit(self) -> None:
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
        vocabulary = self.vocabulary_
        for term, column in vocabulary.items():
            if " " not in term:
                continue
            left, right = term.split(" ")
            if left not in vocabulary or right not in vocabulary:
                return
            keys.append(vocabulary[left] * n_cols + vocabulary[right])
            columns.append(column)
        order = np.argsort(keys)
        self._bigram_keys = np.asarray(keys, dtype=np.int64)[order]
        self._bigram_columns = np.asarray(columns, dtype=np.int64)[order]

    def _word_entries(self, token_lists: Sequence[Tokens]) -> tuple[np.ndarray, np.ndarray]:
        """(rows, columns) of every unigram and bigram occurrence, via :meth:`_after_fit`."""
        assert self._bigram_keys is not None
        lookup = self.vocabulary_.get
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

    def transform(self, token_lists: Sequence[Tokens]) -> sp.csr_matrix:
        """The worker's hot path: a C-level ``dict.get`` per n-gram; counting, weighting and
        normalising happen once per batch in NumPy."""
        n_rows, n_cols = len(token_lists), self.n_features
        if self._bigram_keys is not None:
            rows, columns, data = merge_entries(*self._word_entries(token_lists), n_cols)
        else:
            lookup = self.vocabulary_.get
            terms = self.terms
            ids: list[int] = []
            lengths: list[int] = []
            for tokens in token_lists:
                before = len(ids)
                ids.extend(map(lookup, terms(tokens), repeat(-1)))
                lengths.append(len(ids) - before)
            rows, columns, data = rows_to_csr(ids, lengths, n_cols)
        cfg = self.config
        if cfg.binary:
            data[:] = 1.0
        elif cfg.sublinear_tf:
            np.log(data, out=data)
            data += 1.0
        if cfg.use_idf:
            data *= self.idf_[columns]
        if cfg.norm:
            norms = np.sqrt(np.bincount(rows, weights=data * data, minlength=n_rows))
            norms[norms == 0] = 1.0
            data /= norms[rows].astype(np.float32)
        return assemble_csr(rows, columns, data, n_rows, n_cols)
