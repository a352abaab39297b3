"""Character n-grams composed per token (the fastText idea), the ANN's second input."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain, repeat

import numpy as np
import scipy.sparse as sp

from fintweet.models.features.ngrams import char_ngrams
from fintweet.models.features.sparse import assemble_csr, rows_to_csr
from fintweet.models.features.vocabulary import TermVocabulary, Tokens


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

    def token_matrix(self, tokens: Sequence[str]) -> sp.csr_matrix:
        """``c(t)`` of each token, one row each. All tokens at once: in a batch of thousands of
        new tokens, per-token NumPy calls cost more than the arithmetic (docs/benchmarks.md), so
        this is one lookup pass, one merge and one normalisation."""
        min_n, max_n = self.config.min_n, self.config.max_n
        grams: list[str] = []
        lengths: list[int] = []
        for token in tokens:
            before = len(grams)
            grams.extend(char_ngrams([token], min_n, max_n))
            lengths.append(len(grams) - before)
        ids = np.fromiter(map(self.vocabulary_.get, grams, repeat(-1)), dtype=np.int64,
                          count=len(grams))
        rows, columns, counts = rows_to_csr(ids, lengths, self.n_features)
        values = counts * self.idf_[columns]
        norms = np.sqrt(np.bincount(rows, weights=values * values, minlength=len(tokens)))
        values = (values / norms[rows]).astype(np.float32)  # a row with entries has a norm > 0
        return assemble_csr(rows, columns, values, len(tokens), self.n_features)

    @staticmethod
    def token_bag(token_lists: Sequence[Tokens], columns: np.ndarray,
                  n_columns: int) -> sp.csr_matrix:
        """Tweets × tokens, ``1/sqrt(n_tokens)`` per token occurrence (a repeat adds up in a
        product); ``columns`` gives each occurrence's column, in order. Times the token rows
        (:meth:`token_matrix`, or the ANN's folded table of them) it makes the tweet rows."""
        lengths = np.fromiter(map(len, token_lists), dtype=np.int64, count=len(token_lists))
        weights = np.repeat((1.0 / np.sqrt(np.maximum(lengths, 1))).astype(np.float32), lengths)
        rows = np.repeat(np.arange(len(token_lists), dtype=np.int64), lengths)
        return assemble_csr(rows, columns, weights, len(token_lists), n_columns)

    def transform(self, token_lists: Sequence[Tokens]) -> sp.csr_matrix:
        index: dict[str, int] = {}
        columns = np.fromiter((index.setdefault(t, len(index))
                               for t in chain.from_iterable(token_lists)), dtype=np.int64)
        matrix = self.token_bag(token_lists, columns, len(index)) @ self.token_matrix(list(index))
        matrix.sort_indices()  # the canonical order tf.SparseTensor wants
        return matrix
