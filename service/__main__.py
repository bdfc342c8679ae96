"""``python -m service``: serve a model repository over HTTP and gRPC (defaults: the repo's models/, ports 8000, 8001).

Flags override the ``CNNSERVE_*`` environment variables; see ``python -m service --help``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import uvicorn

from service.cpus import cpu_budget
from service.http_drain import protocol_factory
from service.http_limits import HttpLimits
from service.http_server import run_server
from service.logs import configure_logging
from service.runtime import resolved_workers
from service.settings import Settings
from service.supervisor import Supervisor

logger = logging.getLogger("service")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m service",
        description="Serve CNN image classifiers from a model repository: REST classification, KServe v2 "
        "(tritonclient-compatible), Prometheus metrics. Every setting can also be given as a CNNSERVE_* "
        "environment variable; flags win.",
    )
    parser.add_argument("--repository", type=Path, help="model repository folder (default: the repo's models/)")
    parser.add_argument("--models", help="comma-separated models to load (default: all in the repository)")
    parser.add_argument("--host", help="interface to listen on (default 127.0.0.1; 0.0.0.0 in containers)")
    parser.add_argument("--port", type=int, help="TCP port (default 8000)")
    parser.add_argument("--grpc-port", type=int, help="KServe v2 gRPC port (default 8001; 0 turns gRPC off)")
    parser.add_argument("--workers", help="server processes, or auto: one per usable CPU (the default)")
    parser.add_argument("--log-format", choices=["text", "json"], help="log lines as text (default) or JSON")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="default INFO")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Parse flags, configure logging, run uvicorn until SIGTERM/SIGINT, exit 0 after draining."""
    args = _parser().parse_args(argv)
    flags = {
        "repository_path": args.repository,
        "models": args.models,
        "host": args.host,
        "port": args.port,
        "grpc_port": args.grpc_port,
        "workers": args.workers,
        "log_format": args.log_format,
        "log_level": args.log_level,
    }
    overrides = {key: value for key, value in flags.items() if value is not None}
    settings = Settings(**overrides)
    configure_logging(settings.log_format, settings.log_level)
    common = {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        # uvicorn's httptools protocol, bounded per connection (service/http_protocol.py), draining without resets
        # (service/http_drain.py)
        "http": protocol_factory(HttpLimits.from_settings(settings)),
        "ws": "none",
        "log_config": None,
        "access_log": False,  # the middleware logs requests when CNNSERVE_ACCESS_LOG is set
        "timeout_graceful_shutdown": settings.graceful_shutdown_s,
        "server_header": False,
        "proxy_headers": False,  # nothing reads the client's address; the rewrite cost every request a layer
    }
    workers = resolved_workers(settings.workers)
    logger.info("CPUs: %s; %d worker process(es) (CNNSERVE_WORKERS=%s)", cpu_budget().source, workers, settings.workers)
    if workers > 1:
        # Each worker process builds its own app from the environment, so hand the flags over through it.
        for key, value in {**overrides, "workers": workers}.items():
            os.environ[f"CNNSERVE_{key.upper()}"] = str(value)
        config = uvicorn.Config("service.main:create_worker_app", factory=True, **common)  # type: ignore[arg-type]
        supervisor = Supervisor(config, workers, settings.graceful_shutdown_s, settings.worker_timeout_s)
        sys.exit(supervisor.run(settings.grpc_port))
    from service.main import create_app

    run_server(uvicorn.Config(create_app(settings), **common))  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
