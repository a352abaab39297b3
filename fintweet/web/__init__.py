"""``fintweet serve``: the ``/v1`` HTTP API and the live page over the results the workers keep
in Redis. ``classify`` is the framework-free code path the CLI shares; ``app`` builds the FastAPI
app; ``server`` runs it."""
