"""Live ingest from the X API v2 onto Kafka: the filtered stream, or recent-search polling.

tweepy does the talking (requests, status → exception mapping, the stream's line loop, tweet
parsing); this package decides what happens between attempts. One module per concern:

==================  ============================================================================
``errors.py``       what can end a run (each a one-line :class:`~fintweet.core.errors.UserError`)
``token.py``        the bearer token, never printed, masked in tweepy's debug log
``transport.py``    rerouting tweepy's host; rate-limit headers and error bodies tweepy drops
``policy.py``       the status → action rules (wait for reset, back off, give up), the waits
``ingester.py``     what both modes share: map, dedupe, publish, count, and the REST retry loop
``search.py``       recent-search polling with its ``since_id`` in Redis
``stream.py``       the filtered stream, one tweepy connection per attempt
``rules.py``        the default rules and query, and reconciling the account's rule set
``mapping.py``      API payload → :class:`~fintweet.core.schema.Tweet` (full text, real links)
==================  ============================================================================
"""
