"""Batch assembly of sparse rows: every vectorizer collects a batch's feature ids in flat lists
and turns them into one CSR matrix with a NumPy sort per batch instead of one per tweet."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def smooth_idf(doc_freq: np.ndarray, n_docs: int) -> np.ndarray:
    """scikit-learn's ``smooth_idf``: as if one extra document held every term."""
    return (np.log((1.0 + n_docs) / (1.0 + doc_freq)) + 1.0).astype(np.float32)


def rows_to_csr(
    ids: list[int] | np.ndarray, lengths: list[int], n_cols: int,
    values: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row feature ids (``-1`` = unknown, dropped) → merged (rows, columns, counts-or-summed
    values), sorted by row then column."""
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
    """Sorted (row, column) entries → CSR with sorted column indices in each row, the canonical
    order ``tf.SparseTensor`` wants."""
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
    return sp.csr_matrix((data, columns.astype(np.int32), indptr), shape=(n_rows, n_cols))
