"""Bearer authentication for the app: the middleware that verifies tokens and the `principal` dependency."""

from __future__ import annotations

import logging
import re
from typing import Any

from litestar.connection import ASGIConnection
from litestar.di import NamedDependency, Provide
from litestar.middleware import DefineMiddleware
from litestar.middleware.authentication import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.types import ASGIApp, Scope

from api.services import ServicesDep
from api.token_cache import VerifiedTokens
from registry.auth.principal import UNAUTHENTICATED, Principal
from registry.auth.tokens import Verifier
from registry.errors import Unauthorized
from registry.ops.text import printable

log = logging.getLogger("jobreg.api.auth")

REALM = "jobreg"
# Routes any caller may reach: liveness, and the OpenAPI schema (the public contract, and where
# the Swagger UI's "Authorize" button takes a token).
PUBLIC_PATHS = ["^/healthz$", "^/schema"]
# RFC 6750 b64token; anything else after "Bearer " is malformed.
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def bearer_token(header: str | None, max_bytes: int = 65536) -> str:
    """The token of an ``Authorization: Bearer <token>`` header; Unauthorized otherwise.

    A header past ``max_bytes`` is refused before anything parses it: the pattern match and the
    JWT decoding are linear, and a 16 MiB token took the event loop for seconds.
    """
    if header is None or not header.strip():
        raise Unauthorized("missing bearer token", presented=False)
    if len(header) > max_bytes:
        raise Unauthorized("authorization header too large")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise Unauthorized("authorization scheme must be Bearer", presented=False)
    token = token.strip()
    if not _TOKEN_RE.fullmatch(token):
        raise Unauthorized("malformed token")
    return token


def challenge(exc: Unauthorized) -> str:
    """The WWW-Authenticate value for a rejection (RFC 6750 section 3)."""
    if not exc.presented:
        return f'Bearer realm="{REALM}"'
    return f'Bearer realm="{REALM}", error="invalid_token", error_description="{exc.reason}"'


class BearerAuthMiddleware(AbstractAuthenticationMiddleware):
    """Verifies the bearer token of every request except PUBLIC_PATHS and routes opting out.

    A route opts out with ``opt={"exclude_from_auth": True}``; new routes are protected by default.
    """

    def __init__(self, app: ASGIApp, tokens: VerifiedTokens, max_header_bytes: int = 65536, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.tokens = tokens  # shared by every route's instance of this middleware
        self.max_header_bytes = max_header_bytes

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        try:
            header = connection.headers.get("authorization")
            principal = await self.tokens.principal(bearer_token(header, self.max_header_bytes))
        except Unauthorized as exc:
            # The reason is fixed text: the token never reaches the logs.
            # The path is the client's (decoded: %0a is a newline): escaped, it cannot forge a log line.
            method, path = connection.scope.get("method", "WS"), printable(connection.url.path)
            log.info("rejected %s %s: %s", printable(str(method)), path, exc.reason)
            raise
        return AuthenticationResult(user=principal, auth=None)


# How a handler asks for the caller: ``principal: CurrentPrincipal`` (provided app-wide).
CurrentPrincipal = NamedDependency[Principal]


def auth_middleware(verifier: Verifier, max_header_bytes: int = 65536) -> DefineMiddleware:
    tokens = VerifiedTokens(verifier)
    return DefineMiddleware(
        BearerAuthMiddleware, tokens=tokens, max_header_bytes=max_header_bytes, exclude=PUBLIC_PATHS
    )


def principal_dependency(enabled: bool) -> Provide:
    """Provides ``principal: Principal`` to handlers: the verified caller, or everyone-is-operator when auth is off.

    The provider names ``services`` without using it, so that Litestar resolves the two one after
    the other: dependencies with no order between them are resolved concurrently, in an anyio task
    group of one task each, and for two dependencies as cheap as these that was ~0.1 ms of CPU per
    request, a quarter of the whole request's Python for a query that matches nothing.
    """

    def provide(scope: Scope, services: ServicesDep) -> Principal:
        del services  # only orders the resolution (see above)
        user = scope.get("user")
        if isinstance(user, Principal):
            return user
        if enabled:
            # A public route asked who the caller is: never fall back to the all-seeing principal.
            raise Unauthorized("missing bearer token", presented=False)
        return UNAUTHENTICATED

    return Provide(provide, sync_to_thread=False)
