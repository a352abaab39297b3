"""Prometheus metrics for the worker and the ingest services, and the small HTTP server that
exposes them next to the health endpoints.

Each app owns one metrics object holding its metrics on a :class:`CollectorRegistry` it is given
(a fresh one by default) — no module-level globals — so tests can build as many as they like and a
process can serve exactly what it registered.

The worker reports once per batch: callers hand over the predicted topic and sentiment ids of the
newly classified tweets and arrays of per-tweet latencies, and the counting and bucketing happen in
numpy, so the metrics cost nothing per tweet in Python. Names follow Prometheus conventions (base
units, ``_total`` counters, ``_seconds`` durations); ``deploy/alerts.yml`` and the Grafana
dashboard use exactly these names and ``tests/test_deploy.py`` checks they exist.

Modules: :mod:`.histogram` (the array histogram and the checks on reported values),
:mod:`.worker` and :mod:`.ingest` (what each app exports), :mod:`.server` (``/metrics``,
``/healthz``, ``/readyz``).
"""
