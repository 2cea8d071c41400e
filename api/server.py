"""Runs the API under uvicorn (what `jobreg api` calls): jobreg's log format, a bounded graceful shutdown."""

from __future__ import annotations

import uvicorn

from api.app import create_app
from registry.auth.tokens import serving_verifier
from registry.ops import logs
from registry.settings import Settings

# On SIGTERM uvicorn waits for open connections; a watch stream (SSE) never ends by itself, so past
# this it cancels them. Under `jobreg up`'s own grace period, so a stop is never a kill.
GRACEFUL_SHUTDOWN_S = 3


def run_api(settings: Settings, host: str, port: int, *, no_auth: bool = False, embedded: bool = False) -> None:
    """Serve; raises AuthConfigError when auth is not configured and ``no_auth`` was not asked for.

    ``embedded``: run by `jobreg up`, which announces the API (auth off included) itself.
    """
    serving_verifier(settings, no_auth)
    app = create_app(settings, announce_open=not embedded)
    # Litestar's default logging config takes over the root logger when the app is built: take it back,
    # so the whole process logs in one format.
    logs.configure(settings.log_level, quiet_lifecycle=embedded)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_config=None,  # uvicorn's loggers propagate to ours
        access_log=not embedded or settings.log_level == "DEBUG",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
