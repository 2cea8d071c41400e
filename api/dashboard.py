"""The operators' live dashboard: one static page (HTML, JS, CSS shipped in the package), served at /."""

from __future__ import annotations

from pathlib import Path

from litestar import Response, Router, get
from litestar.handlers import HTTPRouteHandler
from litestar.static_files import create_static_files_router

from api.page_headers import page_headers

STATIC_DIR = Path(__file__).parent / "static"


# The page and its assets hold no data, and a browser navigating to them cannot send a bearer
# token: they are public. Everything the page shows comes from the API with the user's token.
PUBLIC = {"exclude_from_auth": True}


@get(
    "/",
    summary="Live dashboard",
    include_in_schema=False,
    media_type="text/html",
    opt=PUBLIC,
    middleware=[page_headers],
)
async def dashboard() -> Response[bytes]:
    # Read on each request (a few KB) so the page never goes stale behind a restart-less upgrade.
    # Litestar adds the charset to text/* itself (naming it here too sent it twice).
    return Response((STATIC_DIR / "index.html").read_bytes(), media_type="text/html")


# The tab icon: a status-coloured dot on the page's background. Built here rather than shipped as
# a file in static/, whose files must not name any URL (not even SVG's namespace URI).
FAVICON = (
    b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">'
    b'<rect width="32" height="32" rx="7" fill="#0f1419"/>'
    b'<circle cx="11" cy="16" r="5" fill="#4ea1ff"/><circle cx="22" cy="16" r="5" fill="#4cc38a"/></svg>'
)


@get(["/favicon.svg", "/favicon.ico"], include_in_schema=False, media_type="image/svg+xml", opt=PUBLIC, cache=86400)
async def favicon() -> Response[bytes]:
    # /favicon.ico too: tools and browsers ask for it without reading the page's <link rel="icon">.
    return Response(FAVICON, media_type="image/svg+xml")


def dashboard_routes() -> list[Router | HTTPRouteHandler]:
    return [
        dashboard,
        favicon,
        create_static_files_router(
            path="/static",
            directories=[STATIC_DIR],
            name="static",
            include_in_schema=False,
            opt=PUBLIC,
            middleware=[page_headers],
        ),
    ]
