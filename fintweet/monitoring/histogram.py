"""A Prometheus histogram fed a whole array per call, and the checks every metrics object
applies to what callers report (class ids in range, counts not negative)."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterable, Sequence

import numpy as np
from prometheus_client import (
    CollectorRegistry,
)
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

log = logging.getLogger(__name__)


def class_ids(values: Sequence[int] | np.ndarray, n_classes: int, what: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{what}: expected a 1-D array of class ids, got shape {array.shape}")
    if array.size == 0:
        return array.astype(np.int64)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{what}: class ids must be integers, got dtype {array.dtype}")
    if array.min() < 0 or array.max() >= n_classes:
        raise ValueError(f"{what}: class ids must lie in 0..{n_classes - 1}")
    return array.astype(np.int64, copy=False)


def check_count(value: int, what: str) -> int:
    if value < 0:
        raise ValueError(f"{what} must not be negative, got {value}")
    return int(value)


class BatchHistogram(Collector):
    """A histogram that takes a whole array of observations at once.

    prometheus_client's ``Histogram.observe`` takes one value under a lock; the worker has one
    latency per tweet, thousands per second, so this one bins an array with ``np.searchsorted``
    and adds the bucket counts in one step. Exposition is the standard ``_bucket``/``_sum``/
    ``_count`` family, indistinguishable from a client-library histogram to Prometheus.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        upper = sorted(float(b) for b in buckets if not math.isinf(b))
        if not upper or len(set(upper)) != len(upper):
            raise ValueError(f"{name}: buckets must be distinct finite bounds, got {buckets!r}")
        self.name = name
        self.documentation = documentation
        self._upper = np.asarray(upper, dtype=np.float64)
        self._counts = np.zeros(len(upper) + 1, dtype=np.int64)  # last slot: above every bound
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: Sequence[float] | np.ndarray) -> None:
        """NaNs are dropped (no timestamp to measure from); everything else counts."""
        array = np.asarray(values, dtype=np.float64).ravel()
        array = array[~np.isnan(array)]
        if array.size == 0:
            return
        # side="left": a value equal to a bound belongs to that bucket, as Prometheus' `le` says.
        slots = np.searchsorted(self._upper, array, side="left")
        added = np.bincount(slots, minlength=self._counts.shape[0])
        total = float(array.sum())
        with self._lock:
            self._counts += added
            self._sum += total

    def describe(self) -> Iterable[HistogramMetricFamily]:
        return [HistogramMetricFamily(self.name, self.documentation)]

    def collect(self) -> Iterable[HistogramMetricFamily]:
        with self._lock:
            cumulative = np.cumsum(self._counts).tolist()
            total = self._sum
        buckets = [
            (floatToGoString(bound), count)
            for bound, count in zip(self._upper.tolist(), cumulative[:-1], strict=True)
        ]
        buckets.append(("+Inf", cumulative[-1]))
        return [HistogramMetricFamily(
            self.name, self.documentation, buckets=buckets, sum_value=total)]
