"""WordPiece ids for model texts, and length-bucketed batches of them.

Why buckets: tweets run from 5 to 64 WordPiece tokens (26 on average, p95 43), and attention and
the dense layers cost per padded position, so a batch padded to its own longest member (after
sorting by length) costs about half of one padded to 64. Lengths are rounded up to a multiple of
``PAD_MULTIPLE`` so a compiled backend (XLA on JAX, tf.function on TensorFlow) sees at most
``max_length / PAD_MULTIPLE`` shapes instead of one per length.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fintweet.core.text import URL_TOKEN

PAD_MULTIPLE = 8
# The model texts carry each URL as ``xxurl``, which WordPiece would split into nonsense pieces;
# "link" is one token in the uncased BERT vocabulary and says what was there.
URL_WORD = "link"


class WordPieceTexts:
    """A ``tokenizers.Tokenizer`` from ``tokenizer.json`` with its own padding switched off
    (batches are padded here, per bucket) and truncation at ``max_length`` tokens including
    [CLS] and [SEP]."""

    def __init__(self, tokenizer_json: str, max_length: int = 64, url_word: str = URL_WORD,
                 ) -> None:
        from tokenizers import Tokenizer

        self.json = tokenizer_json
        self.max_length = max_length
        self.url_word = url_word
        self.tokenizer = Tokenizer.from_str(tokenizer_json)
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=max_length)
        pad = self.tokenizer.token_to_id("[PAD]")
        self.pad_id = 0 if pad is None else int(pad)

    @classmethod
    def from_file(cls, path: Path, max_length: int = 64, url_word: str = URL_WORD,
                  ) -> WordPieceTexts:
        return cls(Path(path).read_text(encoding="utf-8"), max_length, url_word)

    def encode(self, texts: Sequence[str]) -> list[np.ndarray]:
        """One int32 id array per text ([CLS] … [SEP], at most ``max_length``)."""
        if self.url_word != URL_TOKEN:
            texts = [t.replace(URL_TOKEN, self.url_word) for t in texts]
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=True)
        return [np.asarray(e.ids, dtype=np.int32) for e in encodings]

    def pad(self, ids: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(ids, attention mask), both int32 (batch, L) with L the longest rounded up to a
        multiple of ``PAD_MULTIPLE`` (never past ``max_length`` rounded the same way)."""
        longest = max((len(x) for x in ids), default=1)
        length = -(-longest // PAD_MULTIPLE) * PAD_MULTIPLE
        batch = np.full((len(ids), length), self.pad_id, dtype=np.int32)
        mask = np.zeros((len(ids), length), dtype=np.int32)
        for row, sequence in enumerate(ids):
            batch[row, : len(sequence)] = sequence
            mask[row, : len(sequence)] = 1
        return batch, mask


def sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Indices in batches of similar length (for inference; the caller scatters results back).
    A stable sort, so equal lengths keep their input order and the result is reproducible."""
    order = np.argsort(lengths, kind="stable")
    return [order[i: i + batch_size] for i in range(0, len(order), batch_size)]


def shuffled_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator,
                     pool_batches: int = 50) -> list[np.ndarray]:
    """Training batches that are still random: shuffle, sort by length inside pools of
    ``pool_batches`` batches, cut, then shuffle the batch order. Every text appears once; the
    same ``rng`` state gives the same batches."""
    order = rng.permutation(len(lengths))
    batches: list[np.ndarray] = []
    pool = batch_size * pool_batches
    for start in range(0, len(order), pool):
        chunk = order[start: start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i: i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]
