"""The HTTP API and the page: FastAPI over the results the workers keep in Redis (read through
:class:`fintweet.core.reader.ResultReader`) and a local model for ad-hoc classification (through
:mod:`fintweet.web.classify`, the code path ``fintweet classify`` shares).

Handlers that touch Redis are plain ``def``: FastAPI runs them in its thread pool, so a slow
read never stalls the event loop that serves the live stream. ``/v1/classify`` parses its body
(up to ~31 MB) and runs the model in threads too, but of a small pool of its own (``MAX_CLASSIFY``
at once, then 503), so slow batches never take the threads the read routes wait for; and it reads
the body only once the API key has been checked: a body FastAPI parses for a handler is parsed
on the loop, before the route's dependencies run.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import anyio
import orjson
import redis
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field, ValidationError
from starlette.types import Receive, Scope, Send

from fintweet.core.reader import MAX_LIMIT, FilterError, ResultReader, shown
from fintweet.core.store import ResultStore
from fintweet.core.text import text_problem
from fintweet.models.base import Classifier, model_tag
from fintweet.web.classify import MAX_CHARS, MAX_TEXTS, classify_texts
from fintweet.web.metrics import STATIC, MetricsMiddleware, WebMetrics

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")
API_VERSION = "v1"
# The largest body a valid request can need: 256 texts of 10,000 characters, each at most 12
# bytes once JSON-escaped (an emoji outside the BMP is two \\uXXXX escapes, as Python's and
# JavaScript's encoders write it), plus room for the rest. A declared length over it is refused
# before the body is read, and a chunked body once it has passed it.
MAX_BODY_BYTES = MAX_TEXTS * MAX_CHARS * 12 + 64 * 1024
STREAM_RESULTS_PER_EVENT = 50  # a 2,048-tweet batch is announced whole, but sends its newest 50
STREAM_KEEPALIVE_S = 15.0
# A client resuming further behind than this many batches (a laptop back from sleep) starts again
# at the newest with a "reset" event and reloads its feed: catching up batch by batch would send
# it up to the whole events stream (10,000 batches) to show 60 rows.
MAX_RESUME_BATCHES = 100
# Open /v1/stream connections per process. Each waits on Redis in a thread of a pool of its own
# (so streams never take the threads the other routes run in); one more is answered 503.
MAX_STREAMS = 64
# /v1/classify requests classified at once per process, each in a thread of a pool of its own;
# one more is answered 503 with Retry-After. A batch keeps a core busy for up to seconds (2 cores
# measured), so more at once would only queue them, and in FastAPI's shared pool of 40 threads
# they would also hold the threads every read route waits for.
MAX_CLASSIFY = 2
# Bodies being received for /v1/classify at once: each may be MAX_BODY_BYTES (~31 MB), so the
# memory they hold is bounded by this, not by how many clients upload together.
MAX_CLASSIFY_UPLOADS = 4
# ...and each gets this long to arrive (uvicorn sets no limit on reading a body): four clients
# that send headers and then nothing would otherwise hold every upload slot for good.
CLASSIFY_UPLOAD_TIMEOUT_S = 30.0
CLASSIFY_RETRY_AFTER_S = 1
_STREAM_ID = re.compile(r"^\d{1,20}(-\d{1,20})?$", re.ASCII)
_STREAM_ID_PART_MAX = 2**64 - 1  # Redis refuses a larger part at the first XREAD

# ASCII digits, a few of them: ``\d`` alone takes other scripts' digits, which ``int`` refuses.
_DURATION = re.compile(r"^\s*(\d{1,6})\s*([mhd]?)\s*$", re.IGNORECASE | re.ASCII)


class RevalidatedStaticFiles(StaticFiles):
    """The page's script and styles, revalidated on every load as the page itself is (their
    ETag makes that a 304): without a Cache-Control a browser may keep an app.js older than the
    API it reads, as when a field was renamed."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["Cache-Control"] = "no-cache"
        return response


class FastJSON(JSONResponse):
    """orjson instead of FastAPI's encoder: the read routes return plain dicts from Redis, and
    encoding a page of 50 results was most of a request's time."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class ClassifyRequest(BaseModel):
    texts: list[str] = Field(description=f"1 to {MAX_TEXTS} raw tweets, each at most "
                                         f"{MAX_CHARS:,} characters")


def parse_minutes(value: str, name: str, most: int) -> int:
    """``90``, ``90m``, ``1h``, ``7d`` → minutes; a bare number is minutes. At most ``most``,
    the per-minute buckets' retention: further back they have expired, and summing them would
    show a quiet stream where there is no data."""
    match = _DURATION.match(value)
    if not match:
        raise FilterError(f"{name}={shown(value)} is not a duration; use minutes (90), 90m, 1h "
                          "or 7d")
    minutes = int(match.group(1)) * {"": 1, "m": 1, "h": 60, "d": 1440}[match.group(2).lower()]
    if not 1 <= minutes <= most:
        raise FilterError(f"{name}={shown(value)} is outside 1 minute..{_duration(most)}, the "
                          "per-minute buckets' retention (FINTWEET_BUCKET_RETENTION_S)")
    return minutes


def _duration(minutes: int) -> str:
    for unit, size in (("d", 1440), ("h", 60)):
        if minutes % size == 0:
            return f"{minutes // size}{unit}"
    return f"{minutes}m"


def _too_large(size: str) -> str:
    return (f"request body is {size} bytes; at most {MAX_BODY_BYTES:,} ({MAX_TEXTS} texts of "
            f"{MAX_CHARS:,} characters)")


class BodyLimit:
    """Refuse a body over ``MAX_BODY_BYTES`` (413), so an oversized upload costs neither memory
    nor parsing: by its declared length before reading it, and a body sent without one
    (chunked) as soon as what arrived passes the limit."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or ()).get(b"content-length", b"0")
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            response = JSONResponse(status_code=413,
                                    content={"detail": _too_large(f"{int(length):,}")})
            await response(scope, receive, send)
            return
        received = 0

        async def counted() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > MAX_BODY_BYTES:
                    # Raised inside the route's body read: FastAPI answers it as it is.
                    raise HTTPException(413, _too_large(f"over {MAX_BODY_BYTES:,}"))
            return message

        await self.app(scope, counted, send)


class _Streams:
    """The open /v1/stream connections and the threads they wait for Redis in. Touched only on
    the event loop, so a plain counter is enough."""

    def __init__(self) -> None:
        self.open = 0
        self.limiter = anyio.CapacityLimiter(MAX_STREAMS)
        # Set when the server begins to stop: each stream ends at its next wait (a second at
        # most) rather than being cancelled at the graceful timeout, which uvicorn logs as an
        # error with a traceback (every `serve` stopped with the live page open did).
        self.closing = threading.Event()


class _Classifying:
    """The /v1/classify requests being classified and the threads they run in. Touched only on
    the event loop, so a plain counter is enough."""

    def __init__(self) -> None:
        self.busy = 0
        self.uploading = 0
        self.limiter = anyio.CapacityLimiter(MAX_CLASSIFY)


class _StreamResponse(StreamingResponse):
    """Gives its stream's slot back however the response ends: finished, failed, or cancelled
    by a client that left before the first byte (when the generator never runs, so a
    ``finally`` inside it would not)."""

    def __init__(self, content: AsyncIterator[str], streams: _Streams) -> None:
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._streams = streams

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._streams.open -= 1


def redis_down(exc: redis.RedisError) -> str:
    return f"Redis is unavailable ({type(exc).__name__}); try again shortly"


def _unprocessable(message: str) -> HTTPException:
    return HTTPException(status_code=422, detail=message)


def _is_stream_id(value: str) -> bool:
    """``MS`` or ``MS-SEQ`` as Redis takes them: 64-bit parts. One it refuses would fail the
    stream at its first read, and the browser would reconnect with it every 2 s for ever."""
    return (_STREAM_ID.match(value) is not None
            and all(int(part) <= _STREAM_ID_PART_MAX for part in value.split("-")))


def _stream_id_key(value: str) -> tuple[int, int]:
    """A stream id as Redis orders it ("5" is "5-0")."""
    ms, _, seq = value.partition("-")
    return int(ms), int(seq or 0)


def create_app(
    reader: ResultReader,
    store: ResultStore,
    model: Classifier | None,
    api_key: str = "",
    metrics: WebMetrics | None = None,
) -> FastAPI:
    """The app over one Redis and (optionally) one model; ``model=None`` serves everything but
    ``/v1/classify``, which then answers 503."""
    metrics = metrics or WebMetrics()
    app = FastAPI(
        default_response_class=FastJSON,
        title="fintweet",
        version=API_VERSION,
        description="Topic and sentiment of financial tweets: the live stream the workers tag, "
                    "and ad-hoc classification with the same model.",
        # No Swagger UI or ReDoc: they load their scripts from a CDN (the page loads nothing
        # from elsewhere) and would be open without the API key; /openapi.json stays.
        docs_url=None,
        redoc_url=None,
    )
    app.state.metrics = metrics
    app.state.reader = reader
    retained_minutes = max(1, store.bucket_retention_s // 60)
    streams = _Streams()
    app.state.streams = streams
    classifying = _Classifying()
    app.state.classifying = classifying

    async def require_key(request: Request) -> None:
        """Bearer token on every /v1 route when an API key is configured. EventSource cannot
        set headers, so the stream alone also takes the token as ``access_token`` (RFC 6750).
        ``async``: it only compares strings, and a plain ``def`` dependency would take a trip
        through the thread pool on every request."""
        if not api_key:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            token = ""
        # The route, not the URL's ending: /v1/tweets/stream is a tweet id, not the stream.
        route = getattr(request.scope.get("route"), "path", "")
        if not token and route == f"/{API_VERSION}/stream":
            token = request.query_params.get("access_token", "")
        if not hmac.compare_digest(token.encode(), api_key.encode()):
            raise HTTPException(
                status_code=401,
                detail="missing or wrong API key: send 'Authorization: Bearer <FINTWEET_API_KEY>'",
                headers={"WWW-Authenticate": "Bearer"})

    v1 = APIRouter(prefix=f"/{API_VERSION}", dependencies=[Depends(require_key)])

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # One line naming the field and the problem, like every other error here.
        problems = []
        for error in exc.errors():
            # texts[0], as the other errors name an item, not pydantic's texts.0
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}"
                            for p in error.get("loc", ()) if p != "body").lstrip(".") or "body"
            problems.append(f"{where}: {error.get('msg', 'invalid')}")
        return JSONResponse(status_code=422, content={"detail": "; ".join(problems)})

    @app.exception_handler(FilterError)
    async def filter_error(_request: Request, exc: FilterError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": str(exc)})

    @app.exception_handler(redis.RedisError)
    async def redis_error(_request: Request, exc: redis.RedisError) -> JSONResponse:
        # Redis down or failing is the service's state, not a bug: 503, and a line saying so.
        return JSONResponse(status_code=503, content={"detail": redis_down(exc)})

    @v1.post("/classify", openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": ClassifyRequest.model_json_schema()}}}})
    async def classify(request: Request) -> Response:
        """Topic and sentiment (with confidences, top-3 topics and links) for each text, in
        one batched model call. 503 with Retry-After while the server is classifying as many
        requests as it runs at once."""
        # JSON only: a cross-site page can send text/plain without asking first (no preflight),
        # and would otherwise make a browser on this machine run the model for it.
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "application/json":
            raise HTTPException(415, f"Content-Type {media_type or '(none)'!r}: send the body "
                                     "as application/json")
        if classifying.uploading >= MAX_CLASSIFY_UPLOADS:
            raise busy(f"{MAX_CLASSIFY_UPLOADS} classify requests are uploading")
        classifying.uploading += 1
        try:
            with anyio.fail_after(CLASSIFY_UPLOAD_TIMEOUT_S):
                raw = await request.body()  # on the loop: a slow upload holds no classify slot
        except TimeoutError:
            raise HTTPException(408, f"the body did not arrive within "
                                     f"{CLASSIFY_UPLOAD_TIMEOUT_S:.0f} s") from None
        finally:
            classifying.uploading -= 1
        if classifying.busy >= MAX_CLASSIFY:
            raise busy(f"{MAX_CLASSIFY} classify requests are running")
        # Counted before the first await, like a stream's slot: requests arriving together each
        # see the others', so the limiter below never makes one wait.
        classifying.busy += 1
        try:
            try:
                body = await anyio.to_thread.run_sync(parse_classify_body, raw,
                                                      limiter=classifying.limiter)
            except ValidationError as exc:
                raise RequestValidationError(exc.errors()) from None
            return await anyio.to_thread.run_sync(classify_batch, body.texts,
                                                  limiter=classifying.limiter)
        finally:
            classifying.busy -= 1

    def busy(what: str) -> HTTPException:
        return HTTPException(503, f"{what}, the most this server takes at once; try again in "
                                  f"{CLASSIFY_RETRY_AFTER_S} s",
                             headers={"Retry-After": str(CLASSIFY_RETRY_AFTER_S)})

    def parse_classify_body(raw: bytes) -> ClassifyRequest:
        """The body, its size checked before pydantic reads it item by item: a body of millions
        of bad items made one error each, and the 422 took a minute and gigabytes to build."""
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            data = None  # pydantic's own error names where the JSON breaks
        texts = data.get("texts") if isinstance(data, dict) else None
        if isinstance(texts, list) and len(texts) > MAX_TEXTS:
            raise too_many(len(texts))
        return ClassifyRequest.model_validate_json(raw)

    def too_many(n: int) -> HTTPException:
        return HTTPException(413, f"texts: {n} texts; at most {MAX_TEXTS} per request")

    def classify_batch(texts: list[str]) -> Response:
        if not texts:
            raise _unprocessable("texts: give at least one text")
        if len(texts) > MAX_TEXTS:
            raise too_many(len(texts))
        for i, text in enumerate(texts):
            if len(text) > MAX_CHARS:
                raise HTTPException(
                    413, f"texts[{i}]: {len(text):,} characters; at most {MAX_CHARS:,} per text")
            # What the worker dead-letters (a blank text, a NUL) is no tweet here either.
            problem = text_problem(text)
            if problem:
                raise _unprocessable(f"texts[{i}]: {problem}; fix or leave out that text")
        if model is None:
            raise HTTPException(503, "no model loaded: start `fintweet serve --models DIR`")
        answers = classify_texts(model, texts)
        metrics.classified.inc(len(texts))
        return FastJSON({"model": model_tag(model), "results": answers})

    @v1.get("/tweets")
    def tweets(
        topic: str | None = None,
        sentiment: str | None = None,
        ticker: str | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
        cursor: str | None = None,
    ) -> Response:
        """Latest results newest first; pass ``next_cursor`` back as ``cursor`` for the next
        page. Filters take names (topic 'Earnings', sentiment 'Bullish', ticker 'TSLA') or ids."""
        results, next_cursor = reader.latest(topic, sentiment, ticker, limit, cursor)
        return FastJSON({"results": results, "next_cursor": next_cursor})

    @v1.get("/tweets/{tweet_id}")
    def tweet(tweet_id: str) -> Response:
        result = reader.result(tweet_id)
        if result is None:
            shown = tweet_id if len(tweet_id) <= 80 else tweet_id[:80] + "…"  # not 100 KB back
            raise HTTPException(404, f"no result for tweet id {shown!r}")
        return FastJSON(result)

    @v1.get("/stats")
    def stats() -> Response:
        """The counters ``fintweet stats`` prints."""
        return FastJSON(store.stats())

    @v1.get("/limits")
    def limits() -> Response:
        """What the other routes accept, so a client (the page) offers only what works: the
        longest window is the per-minute buckets' retention, which a deployment may shorten."""
        return FastJSON({"window_minutes_max": retained_minutes, "classify_texts_max": MAX_TEXTS,
                         "text_chars_max": MAX_CHARS, "tweets_limit_max": MAX_LIMIT})

    @v1.get("/tickers")
    def tickers(window: str = "1h", n: Annotated[int, Query(ge=1, le=100)] = 10,
                ) -> Response:
        """The most named tickers of the last ``window`` with their sentiment mix."""
        minutes = parse_minutes(window, "window", retained_minutes)
        tickers = reader.top_tickers_in_window(minutes, n)
        return FastJSON({"window_minutes": minutes, "tickers": tickers})

    @v1.get("/series")
    def series(topic: str | None = None, sentiment: str | None = None,
               ticker: str | None = None, window: str = "1h", step: str = "1m",
               ) -> Response:
        """Counts per step over the window for exactly one of topic, sentiment or ticker."""
        chosen = [(name, value) for name, value in
                  (("topic", topic), ("sentiment", sentiment), ("ticker", ticker)) if value]
        if len(chosen) != 1:
            raise FilterError("give exactly one of topic=, sentiment= or ticker=")
        window_minutes = parse_minutes(window, "window", retained_minutes)
        step_minutes = parse_minutes(step, "step", retained_minutes)
        if window_minutes // step_minutes > 2000:
            raise FilterError(f"window/step gives {window_minutes // step_minutes} points; "
                              "at most 2000: use a longer step")
        name, value = chosen[0]
        return FastJSON(reader.series(name, value, window_minutes, step_minutes))

    @v1.get("/stream", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
    async def stream(request: Request) -> StreamingResponse:
        """Server-sent events, one ``batch`` event per batch the workers write: ``{"count",
        "results"}`` (the newest results of the batch). Resumes after ``Last-Event-ID``; from
        further back than ``MAX_RESUME_BATCHES``, starts at the newest batch with a ``reset``
        event instead (reload the feed)."""
        resume = request.headers.get("last-event-id") or None  # an empty one: start anew
        if resume is not None and not _is_stream_id(resume):
            raise _unprocessable(f"Last-Event-ID {resume[:40]!r} is not a stream id such as "
                                 "1700000000000-0; reconnect without it")
        if streams.open >= MAX_STREAMS:
            raise HTTPException(503, f"{MAX_STREAMS} streams are open, the most this server "
                                     "keeps; try again later")
        # Counted before the first await: connections arriving together each see the others'
        # slots taken, so no more than MAX_STREAMS are ever let through. _StreamResponse gives
        # the slot back.
        streams.open += 1
        def starting_point() -> tuple[str, bool]:
            """Where to follow from, and whether the client must reload (a reset). Redis is
            asked on every path, the resumed one too, so Redis being down is a 503, which
            makes a browser back off, not a stream that opens and ends every 2 s."""
            tail = reader.events_tail()
            if resume is None:
                return tail, False
            # An id past the newest (from before Redis lost its data, say) would wait for ids
            # that the new batches, numbered lower, never reach: start again at the tail.
            if _stream_id_key(resume) > _stream_id_key(tail):
                return tail, True
            if reader.events_after(resume, MAX_RESUME_BATCHES) > MAX_RESUME_BATCHES:
                return tail, True
            return resume, False

        try:
            # Fixed before the response starts: a batch written once the client sees the
            # stream open is always delivered.
            start, reset = await anyio.to_thread.run_sync(starting_point,
                                                          limiter=streams.limiter)
        except BaseException:
            streams.open -= 1
            raise

        def follow(last: str) -> list[Any]:
            return reader.follow(last, 1000, newest=STREAM_RESULTS_PER_EVENT)

        async def events() -> AsyncIterator[str]:
            last = start
            # A new stream also says the id it starts after: a browser whose connection drops
            # before the first batch then reconnects from there (an event without data still
            # sets its last event id), not from the newest batch by then, which would skip
            # those in between. A resumed stream's client already holds its id.
            if reset:
                yield f"retry: 2000\nid: {start}\nevent: reset\ndata: {{}}\n\n"
            else:
                yield "retry: 2000\n\n" if resume else f"retry: 2000\nid: {start}\n\n"
            quiet = 0.0
            while not streams.closing.is_set():
                try:
                    batch = await anyio.to_thread.run_sync(follow, last,
                                                           limiter=streams.limiter)
                except redis.RedisError as exc:
                    # The response has started, so no 503 now: say why and end the stream;
                    # the browser reconnects after the retry above, from the last id it saw.
                    log.warning("/v1/stream: Redis failed (%s); closing the stream", exc)
                    yield f"event: error\ndata: {json.dumps({'detail': redis_down(exc)})}\n\n"
                    return
                if not batch:
                    quiet += 1.0
                    if quiet >= STREAM_KEEPALIVE_S:
                        quiet = 0.0
                        yield ": keepalive\n\n"
                    continue
                quiet = 0.0
                for event in batch:
                    last = event.stream_id
                    data = json.dumps({"count": len(event.ids), "results": event.results})
                    yield f"id: {event.stream_id}\nevent: batch\ndata: {data}\n\n"

        return _StreamResponse(events(), streams)

    app.include_router(v1)

    # GET and HEAD on the probes and the page: load balancers and uptime checkers often probe
    # with HEAD, and a 405 reads as down.
    @app.api_route("/healthz", methods=["GET", "HEAD"], include_in_schema=False)
    async def healthz() -> dict[str, str]:  # touches nothing: no trip through the thread pool
        return {"status": "ok"}

    @app.api_route("/readyz", methods=["GET", "HEAD"], include_in_schema=False)
    def readyz() -> JSONResponse:
        redis_ok = store.ping()
        ready = redis_ok and model is not None
        body = {"ready": ready, "redis": redis_ok,
                "model": model_tag(model) if model is not None else None}
        return JSONResponse(status_code=200 if ready else 503, content=body)

    @app.get("/metrics", include_in_schema=False)
    def metrics_route() -> Response:
        payload, content_type = metrics.render()
        return Response(payload, media_type=content_type)

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount(STATIC, RevalidatedStaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(BodyLimit)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: counts the 413s too
    return app
