"""``fintweet serve``: the HTTP API and the live page over the results in Redis."""

from __future__ import annotations

import argparse

from fintweet.cli.options import add_model_options, add_redis_option, port, shared_overrides


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve", help="HTTP API and live page: browse tagged tweets, classify text",
        description="Serve the /v1 API, /metrics and the live page at / (FastAPI on uvicorn). "
                    "With FINTWEET_API_KEY set every /v1 route needs 'Authorization: Bearer KEY'.",
    )
    parser.add_argument("--host", default=None,
                        help="address to bind (env FINTWEET_WEB_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=port, default=None,
                        help="port (env FINTWEET_WEB_PORT, default 8000)")
    add_model_options(parser, model_help="model kind for /v1/classify; its 'current' version "
                      "is loaded (env FINTWEET_MODEL, default ann)")
    add_redis_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fintweet.core.config import Settings
    from fintweet.web.server import serve

    settings = Settings.from_env(
        web_host=args.host, web_port=args.port, **shared_overrides(args),
    ).check("web_host", "web_port", "redis_url", "redis_prefix", "models_dir", "model",
            "transformer_runtime", "bucket_retention_s")
    serve(settings, settings.models_dir, settings.model)
    return 0
