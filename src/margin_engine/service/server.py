"""Run the service under uvicorn (``margin-engine serve``)."""

from __future__ import annotations

from .settings import ServiceSettings


def serve(settings: ServiceSettings, *, host: str = "127.0.0.1", port: int = 8000,
          workers: int = 1, access_log: bool = True, log_level: str = "info") -> None:
    """Serve until interrupted. With ``workers`` > 1 each process has its own rate-limit
    buckets (a key's effective rate is then up to ``workers`` times its own)."""
    import uvicorn

    if workers == 1:
        from .app import create_app

        uvicorn.run(create_app(settings), host=host, port=port, access_log=access_log,
                    log_level=log_level)
        return
    from .app import settings_to_environment

    settings_to_environment(settings)
    uvicorn.run("margin_engine.service.app:create_app_from_environment", factory=True,
                host=host, port=port, workers=workers, access_log=access_log,
                log_level=log_level)
