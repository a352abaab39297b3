"""The metrics HTTP server's exposure and manners: loopback unless told otherwise, and a probe
that hangs up early is not an error worth a traceback."""

from __future__ import annotations

import socket
import struct
import time

import pytest
from prometheus_client import CollectorRegistry

from fintweet.core.config import Settings
from fintweet.monitoring.server import MetricsServer
from tests.helpers import http_get


def test_the_server_binds_loopback_unless_a_host_is_given(monkeypatch):
    with MetricsServer(0, CollectorRegistry()) as server:
        assert server.host == "127.0.0.1"
        assert http_get(f"http://127.0.0.1:{server.port}/healthz") == (200, "ok\n")
    monkeypatch.delenv("FINTWEET_METRICS_HOST", raising=False)
    assert Settings().metrics_host == "127.0.0.1"
    monkeypatch.setenv("FINTWEET_METRICS_HOST", "0.0.0.0")
    settings = Settings()
    assert settings.metrics_host == "0.0.0.0"
    assert settings.override(metrics_host="::1").metrics_host == "::1"
    with MetricsServer(0, CollectorRegistry(), host=settings.metrics_host) as wide:
        assert wide.host == "0.0.0.0"


def test_an_abandoned_readiness_probe_logs_no_traceback(capfd):
    def slow_ready() -> tuple[bool, str]:
        time.sleep(0.5)  # the prober gives up meanwhile
        return True, "ok " + "x" * 100_000

    with MetricsServer(0, CollectorRegistry(), ready=slow_ready) as server:
        for _ in range(3):
            probe = socket.create_connection(("127.0.0.1", server.port))
            probe.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
            # Hang up with a reset, as a timed-out HTTP client does.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            probe.close()
        time.sleep(1.5)
        assert http_get(f"http://127.0.0.1:{server.port}/healthz") == (200, "ok\n")
    err = capfd.readouterr().err
    assert "Traceback" not in err and "BrokenPipe" not in err and "ConnectionReset" not in err


def test_head_answers_like_get_without_a_body():
    import http.client

    with MetricsServer(0, CollectorRegistry(), ready=lambda: (False, "no model")) as server:
        for path, status in (("/healthz", 200), ("/readyz", 503), ("/metrics", 200),
                             ("/nope", 404)):
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            connection.request("HEAD", path)
            response = connection.getresponse()
            assert response.status == status, path
            assert "Content-Length" in response.headers and response.read() == b"", path
            connection.close()


def test_a_host_this_machine_lacks_is_named_as_the_thing_to_change() -> None:
    from fintweet.monitoring.server import MetricsPortError

    # TEST-NET-1: no machine has it, and no name lookup is needed to find that out
    with pytest.raises(MetricsPortError, match=r"cannot listen on 192\.0\.2\.1:0") as refused:
        MetricsServer(0, CollectorRegistry(), host="192.0.2.1")
    assert "--metrics-host / FINTWEET_METRICS_HOST" in str(refused.value)
