"""fintweet: tag every financial tweet with its topic and sentiment as it streams through Kafka.

The package is split so that a reader knows where to look (docs/architecture.md is the map):

- ``fintweet.core``       message schema, labels, text preparation, data loading, artifact
                          format, settings, Redis keys, the store and its reader.
- ``fintweet.models``     the two-head estimators (linear, ann, cnn, ensemble, transformer,
                          cascade) and the one artifact loader.
- ``fintweet.trainer``    rebuilds models from labelled CSVs.
- ``fintweet.ingest``     publishes tweets to Kafka (CSV replay, the X API); reads dead letters.
- ``fintweet.worker``     consumes, classifies in batches, writes to Redis.
- ``fintweet.web``        the HTTP API and the live page.
- ``fintweet.monitoring`` Prometheus metrics.
- ``fintweet.devstack``   the embedded Kafka and Redis for development, tests and the demo.
- ``fintweet.cli``        the ``fintweet`` command.

Apps import the core; the core imports none of the apps.
"""

__version__ = "0.1.0"
