"""Runs the API under uvicorn (what `jobreg api` calls): jobreg's log format, a bounded graceful shutdown."""

from __future__ import annotations

import logging
import socket

import uvicorn

from api.app import create_app
from api.http_limits import bounded_http
from api.sessions import Streams
from registry.auth.tokens import serving_verifier
from registry.ops import logs
from registry.settings import Settings

log = logging.getLogger("jobreg.api")


class _Server(uvicorn.Server):
    """uvicorn's server, ending open watch streams when it shuts down.

    uvicorn waits for every connection to finish before it exits, and a watch stream never
    does: without this, SIGTERM left `jobreg api` running as long as one client watched.
    """

    def __init__(self, config: uvicorn.Config, streams: Streams) -> None:
        super().__init__(config)
        self.streams = streams

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        ended = self.streams.drain()
        if ended:
            log.info("ending %d watch streams (each told to reconnect)", ended)
        await super().shutdown(sockets)


def run_api(settings: Settings, host: str, port: int, *, no_auth: bool = False, embedded: bool = False) -> None:
    """Serve; raises AuthConfigError when auth is not configured and ``no_auth`` was not asked for.

    ``embedded``: run by `jobreg up`, which announces the API (auth off included) itself.
    """
    serving_verifier(settings, no_auth)
    app = create_app(settings, announce_open=not embedded)
    # Litestar's default logging config takes over the root logger when the app is built: take it back,
    # so the whole process logs in one format.
    logs.configure(settings.log_level, quiet_lifecycle=embedded)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,  # uvicorn's loggers propagate to ours
        # Only when its lines would be written: uvicorn builds each line's arguments (the client's
        # address, the quoted path and query) before the logger drops them.
        access_log=(not embedded or settings.log_level == "DEBUG")
        and logging.getLogger("uvicorn.access").isEnabledFor(logging.INFO),
        http=bounded_http(settings.http_max_header_bytes),
        # Streams told to stop end at once; this bounds the wait for clients that do not read
        # (under `jobreg up`'s own grace period, so a stop is never a kill).
        timeout_graceful_shutdown=settings.shutdown_grace_s,
    )
    _Server(config, app.state.streams).run()
