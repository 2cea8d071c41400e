"""Logging for every `jobreg` process: one format on stderr, and the libraries' routine chatter kept out."""

from __future__ import annotations

import asyncio
import logging
import sys

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# INFO from these is routine (arq: each cron run, every few seconds; httpx: each request `up` makes):
# shown at DEBUG only. Their warnings and errors always show.
CHATTY = ("arq", "httpx")
# uvicorn's start-up lines and access log: kept for `jobreg api`, shown at DEBUG only under `jobreg up`
# (which prints its own summary).
LIFECYCLE = ("uvicorn", "uvicorn.error", "uvicorn.access")
# Loggers that frameworks give handlers of their own (another format): routed to ours instead.
OWN_HANDLERS = ("litestar", *LIFECYCLE)


class ShutdownCancellation(logging.Filter):
    """uvicorn reports a connection it cancels at its graceful-shutdown timeout (an open watch stream) as an
    application error with a traceback; it is the expected end of that connection: one INFO line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, asyncio.CancelledError):
            record.msg, record.args, record.exc_info, record.exc_text = (
                "a connection still open at shutdown was closed",
                (),
                None,
                None,
            )
            record.levelno, record.levelname = logging.INFO, "INFO"
            return logging.getLogger(record.name).isEnabledFor(logging.INFO)
        return True


def parse_level(name: str) -> str:
    """The canonical level name; ValueError naming the choices otherwise."""
    level = name.strip().upper()
    if level not in LEVELS:
        raise ValueError(f"JOBREG_LOG_LEVEL must be one of {', '.join(LEVELS)} (got {name!r})")
    return level


def configure(level: str, *, quiet_lifecycle: bool = False) -> None:
    """Route every logger (ours, arq's, uvicorn's) to one stderr handler in one format."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(handler)
    root.setLevel(level)
    debug = level == "DEBUG"
    for name in CHATTY:
        logging.getLogger(name).setLevel(level if debug else max(logging.WARNING, logging.getLevelName(level)))
    for name in OWN_HANDLERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    uvicorn_errors = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, ShutdownCancellation) for f in uvicorn_errors.filters):
        uvicorn_errors.addFilter(ShutdownCancellation())
    if quiet_lifecycle and not debug:
        for name in LIFECYCLE:
            logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))
