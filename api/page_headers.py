"""What the dashboard's page and assets are served with: security headers, and a 404 for paths no file can have."""

from __future__ import annotations

from litestar.exceptions import NotFoundException
from litestar.types import ASGIApp, Message, Receive, Scope, Send

# The page is static HTML, one script and one stylesheet, all from this origin; everything it
# shows comes from this origin's API. So: nothing inline, nothing external, no framing
# (clickjacking), no plugin content, and the URL (which holds the filters) never leaves as a referrer.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),  # frame-ancestors for browsers that predate CSP 2
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
)


def page_headers(app: ASGIApp) -> ASGIApp:
    """Route middleware: adds SECURITY_HEADERS to every response; a path with a NUL is a 404.

    A NUL reached the static files handler's filesystem call, which raised ("embedded null
    byte") and answered 500; no file has such a name, so it is simply not found.
    """

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if "\x00" in scope.get("path", ""):
            raise NotFoundException("not found")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *SECURITY_HEADERS]
            await send(message)

        await app(scope, receive, send_with_headers)

    return middleware
