"""Run the service under uvicorn (``margin-engine serve``)."""

from __future__ import annotations

import socket
from typing import Any

from .settings import ServiceSettings


def serve(settings: ServiceSettings, *, host: str = "127.0.0.1", port: int = 8000,
          workers: int = 1, access_log: bool = True, log_level: str = "info") -> None:
    """Serve until interrupted. With ``workers`` > 1 each process has its own rate-limit
    buckets (a key's effective rate is then up to ``workers`` times its own)."""
    import uvicorn

    if workers == 1:
        from .app import create_app

        uvicorn.run(create_app(settings), host=host, port=port, access_log=access_log,
                    log_level=log_level, log_config=log_config())
        return
    from uvicorn.supervisors import Multiprocess

    from .app import settings_to_environment

    settings_to_environment(settings)
    config = uvicorn.Config("margin_engine.service.app:create_app_from_environment",
                            factory=True, host=host, port=port, workers=workers,
                            access_log=access_log, log_level=log_level,
                            log_config=log_config())
    Multiprocess(config, sockets=[no_delay(config.bind_socket())]).run()


def log_config() -> dict[str, Any]:
    """uvicorn's logging, with the service's own lines (``margin_engine.service``: the
    monitor's rebuilding on start, which takes minutes on a million accounts, and failed
    requests) written as its lines are."""
    from copy import deepcopy

    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = deepcopy(LOGGING_CONFIG)
    config["loggers"]["margin_engine.service"] = {"handlers": ["default"], "level": "INFO",
                                                  "propagate": False}
    return config


def no_delay(listener: socket.socket) -> socket.socket:
    """The shared listening socket with TCP_NODELAY, which the connections accepted from it
    inherit: the workers' event loops only set it on sockets created as TCP (protocol 6), and
    this one is created with protocol 0, so without it a response written in two parts waits
    for the client's delayed ACK (about 40 ms per request)."""
    if listener.family in (socket.AF_INET, socket.AF_INET6):
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return listener
