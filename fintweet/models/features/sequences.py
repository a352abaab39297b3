"""Token ids for the CNN: a fixed length keeps the compiled graph to one shape and makes padding
identical in training and serving."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat

import numpy as np

from fintweet.models.features.vocabulary import TermVocabulary, Tokens

OOV_ID = 1  # 0 is padding (the zeros the id matrix starts as)


@dataclass(frozen=True)
class SequenceConfig:
    min_df: int = 2
    max_len: int = 64


class TokenIndexer(TermVocabulary):
    """Tokens → int ids padded/truncated to ``max_len`` (0 padding, 1 unknown)."""

    config_class = SequenceConfig
    config: SequenceConfig
    first_column = 2

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary_) + self.first_column

    def terms(self, tokens: Tokens) -> Tokens:
        return tokens

    def transform(self, token_lists: Sequence[Tokens]) -> np.ndarray:
        max_len = self.config.max_len
        out = np.zeros((len(token_lists), max_len), dtype=np.int32)
        get = self.vocabulary_.get
        for row, tokens in enumerate(token_lists):
            ids = list(map(get, tokens[:max_len], repeat(OOV_ID)))
            out[row, : len(ids)] = ids
        return out
