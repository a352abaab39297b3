"""The fit/state pattern the three vectorizers share: count document frequencies over token
lists, keep the terms seen in ``min_df``+ documents (optionally the ``max_features`` most
frequent), store them in column order as JSON and their idf as an array."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any, ClassVar, Self

import numpy as np

from fintweet.models.features.sparse import smooth_idf

Tokens = list[str]


class TermVocabulary:
    """Base of every vectorizer: ``config`` (a dataclass of hyper-parameters) plus the fitted
    ``vocabulary_`` (term → column) and ``idf_``. Subclasses say which terms a token list holds
    (:meth:`terms`) and build their lookup structures in :meth:`_after_fit`."""

    config_class: ClassVar[type[Any]]
    first_column: ClassVar[int] = 0  # the CNN's ids reserve 0 (padding) and 1 (unknown)

    def __init__(self, config: Any = None) -> None:
        self.config = config if config is not None else self.config_class()
        self.vocabulary_: dict[str, int] = {}
        self.idf_ = np.ones(0, dtype=np.float32)

    @property
    def n_features(self) -> int:
        return len(self.vocabulary_)

    def terms(self, tokens: Tokens) -> Iterable[str]:
        raise NotImplementedError

    def fit(self, token_lists: Iterable[Tokens]) -> Self:
        doc_freq: Counter[str] = Counter()
        n_docs = 0
        for tokens in token_lists:
            doc_freq.update(set(self.terms(tokens)))
            n_docs += 1
        if n_docs == 0:
            raise ValueError("cannot fit a vectorizer on no texts")
        min_df = self.config.min_df
        kept = [(term, df) for term, df in doc_freq.items() if df >= min_df]
        max_features = getattr(self.config, "max_features", None)
        if max_features is not None and len(kept) > max_features:
            kept.sort(key=lambda item: (-item[1], item[0]))  # most frequent; ties by term
            kept = kept[:max_features]
        terms = sorted(term for term, _ in kept)
        if not terms:
            raise ValueError(f"no term occurs in {min_df}+ texts; the vocabulary is empty")
        self._set_terms(terms)
        self.idf_ = smooth_idf(np.array([doc_freq[t] for t in terms], dtype=np.float64), n_docs)
        self._after_fit()
        return self

    def _set_terms(self, terms: list[str]) -> None:
        self.vocabulary_ = {term: i + self.first_column for i, term in enumerate(terms)}

    def _after_fit(self) -> None:
        """Derived lookup structures (not stored; rebuilt by :meth:`from_state`)."""

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """JSON-able part (config and terms in column order) and the arrays (idf)."""
        terms = sorted(self.vocabulary_, key=self.vocabulary_.__getitem__)
        return {"config": asdict(self.config), "terms": terms}, {"idf": self.idf_}

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Self:
        vectorizer = cls(cls.config_class(**_tuples(meta["config"])))
        terms = list(meta["terms"])
        vectorizer._set_terms(terms)
        vectorizer.idf_ = np.asarray(arrays["idf"], dtype=np.float32)
        if len(vectorizer.idf_) != len(terms):
            raise ValueError(f"idf has {len(vectorizer.idf_)} entries for {len(terms)} terms")
        vectorizer._after_fit()
        return vectorizer


def _tuples(config: dict[str, Any]) -> dict[str, Any]:
    """JSON turns tuples into lists; config dataclasses are frozen and hashable with tuples."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}

