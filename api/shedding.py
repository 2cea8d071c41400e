"""A bound on the requests one API process works on at once: past it, 503 with Retry-After at once.

Without it an overloaded process accepts everything and every answer waits behind all the
others (seconds, then client timeouts); with it the excess is refused in microseconds, the
requests it keeps are answered at their normal speed, and a client or load balancer sees plainly
when to back off or go to another process. Watch streams are long-lived and have their own
limits (api/sessions.py), so they are not counted.
"""

from __future__ import annotations

from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPResponseBodyEvent, HTTPResponseStartEvent, Receive, Scope, Send

from api.metrics import UNTIMED

RETRY_AFTER_S = 1
_BODY = b'{"status":"fail","message":"overloaded: too many requests in progress, retry later","code":"503","data":null}'
_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(_BODY)).encode()),
    (b"retry-after", str(RETRY_AFTER_S).encode()),
]
_START: HTTPResponseStartEvent = {"type": "http.response.start", "status": 503, "headers": _HEADERS}
_END: HTTPResponseBodyEvent = {"type": "http.response.body", "body": _BODY, "more_body": False}


class InFlight:
    """Counts requests in progress in this process; ``shed`` counts the ones refused."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.current = 0
        self.shed = 0

    def middleware(self, app: ASGIApp) -> ASGIApp:
        async def bounded(scope: Scope, receive: Receive, send: Send) -> None:
            if self.limit <= 0 or scope["type"] != ScopeType.HTTP or scope.get("path_template") in UNTIMED:
                await app(scope, receive, send)
                return
            if self.current >= self.limit:
                self.shed += 1
                await send(_START)
                await send(_END)
                return
            self.current += 1
            try:
                await app(scope, receive, send)
            finally:
                self.current -= 1

        return bounded
