"""Character n-grams composed per token (the fastText idea), the ANN's second input."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat

import numpy as np
import scipy.sparse as sp

from fintweet.models.features.ngrams import char_ngrams
from fintweet.models.features.sparse import assemble_csr, rows_to_csr
from fintweet.models.features.vocabulary import TermVocabulary, Tokens

TOKEN_CACHE_LIMIT = 1_000_000  # a long-lived process sees endless new tokens


@dataclass(frozen=True)
class SubwordConfig:
    min_n: int = 2
    max_n: int = 5
    min_df: int = 2  # in this many training tweets


class SubwordVectorizer(TermVocabulary):
    """Token ``t`` is the L2-normalised idf-weighted count vector ``c(t)`` of its ``char_wb``
    n-grams, and a tweet is ``sum(c(t) for t in tokens) / sqrt(len(tokens))``.

    Why per token rather than scikit-learn's per-tweet TF-IDF over character n-grams: the two
    measured the same on the holdout (docs/models.md), but this one is linear in the tokens, so
    a dense layer over it can be folded into one vector per token (``c(t) @ kernel``) and served
    at the cost of a word lookup instead of ~300 n-grams."""

    config_class = SubwordConfig
    config: SubwordConfig

    def terms(self, tokens: Tokens) -> list[str]:
        return char_ngrams(tokens, self.config.min_n, self.config.max_n)

    def _after_fit(self) -> None:
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def token_vector(self, token: str) -> tuple[np.ndarray, np.ndarray]:
        """``c(token)`` as (column ids, values); empty when no n-gram of it is known."""
        cached = self._cache.get(token)
        if cached is not None:
            return cached
        counts = Counter(i for i in map(self.vocabulary_.get, self.terms([token])) if i is not None)
        ids = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
        values = np.fromiter(counts.values(), dtype=np.float32, count=len(counts))
        values *= self.idf_[ids]
        norm = np.sqrt(np.dot(values, values))
        if norm > 0:
            values /= norm
        if len(self._cache) < TOKEN_CACHE_LIMIT:
            self._cache[token] = (ids, values)
        return ids, values

    def token_matrix(self, tokens: Sequence[str]) -> sp.csr_matrix:
        """``c(t)`` of many tokens at once, one row each, equal to :meth:`token_vector` row by
        row. The worker meets thousands of first-seen tokens in a batch; per token, NumPy's call
        overhead cost more than the arithmetic (measured in docs/benchmarks.md), so the whole
        batch is one lookup pass, one merge and one normalisation."""
        min_n, max_n = self.config.min_n, self.config.max_n
        grams: list[str] = []
        lengths: list[int] = []
        for token in tokens:
            before = len(grams)
            grams.extend(char_ngrams((token,), min_n, max_n))
            lengths.append(len(grams) - before)
        ids = np.fromiter(map(self.vocabulary_.get, grams, repeat(-1)), dtype=np.int64,
                          count=len(grams))
        rows, columns, counts = rows_to_csr(ids, lengths, self.n_features)
        values = counts * self.idf_[columns]
        norms = np.sqrt(np.bincount(rows, weights=values * values, minlength=len(tokens)))
        values = (values / norms[rows]).astype(np.float32)  # a row with entries has a norm > 0
        return assemble_csr(rows, columns, values, len(tokens), self.n_features)

    @staticmethod
    def token_weights(lengths: np.ndarray) -> np.ndarray:
        """Each token's weight in its tweet's row: ``1/sqrt(n_tokens)``."""
        return (1.0 / np.sqrt(np.maximum(lengths, 1))).astype(np.float32)

    def transform(self, token_lists: Sequence[Tokens]) -> sp.csr_matrix:
        ids: list[np.ndarray] = []
        values: list[np.ndarray] = []
        lengths: list[int] = []
        weights = self.token_weights(np.fromiter(map(len, token_lists), dtype=np.int64,
                                                 count=len(token_lists)))
        for tokens, weight in zip(token_lists, weights.tolist(), strict=True):
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
