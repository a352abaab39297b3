"""fintweet: tag every financial tweet with its topic as it streams through Kafka.

The package is split so that a reader knows where to look:

- ``fintweet.core``    message schema, labels, text cleaning, data loading, artifact format, config.
- ``fintweet.models``  the estimators (linear, ann, cnn, ensemble) and the one artifact loader.
- ``fintweet.trainer`` rebuilds models from labelled CSVs.
- ``fintweet.ingest``  publishes tweets to Kafka (CSV replay, the X API).
- ``fintweet.worker``  consumes, classifies in batches, writes to Redis.
- ``fintweet.cli``     the ``fintweet`` command.

Apps import the core; the core imports none of the apps.
"""

__version__ = "0.1.0"
