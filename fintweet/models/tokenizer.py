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


def padded_length(length: int) -> int:
    """``length`` rounded up to a multiple of ``PAD_MULTIPLE``: the positions a batch whose
    longest text has ``length`` tokens takes."""
    return -(-length // PAD_MULTIPLE) * PAD_MULTIPLE


def check_max_length(max_length: int, positions: int) -> None:
    """ValueError (one line) when a batch of texts truncated to ``max_length`` tokens would be
    padded past the encoder's ``positions`` (``max_position_embeddings``). Why checked up front:
    past the table, the position lookup fails only on a long enough input, deep in serving (a
    broadcast error in ONNX Runtime, InvalidArgumentError on TensorFlow; an out-of-range gather
    on JAX gives no error at all). Padding rounds up, so the limit is ``positions`` rounded
    down to a multiple of ``PAD_MULTIPLE``."""
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2 ([CLS] and [SEP]), got {max_length}")
    if padded_length(max_length) > positions:
        limit = positions // PAD_MULTIPLE * PAD_MULTIPLE
        raise ValueError(f"max_length {max_length} is beyond what the encoder's {positions} "
                         f"positions allow with padding to a multiple of {PAD_MULTIPLE} "
                         f"(at most {limit})")


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
        length = padded_length(max((len(x) for x in ids), default=1))
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
