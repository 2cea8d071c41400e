"""Runs the API under uvicorn; what `jobreg api` calls."""

from __future__ import annotations

import uvicorn

from api.app import create_app
from registry.auth.tokens import serving_verifier
from registry.settings import Settings


def run_api(settings: Settings, host: str, port: int, *, no_auth: bool = False) -> None:
    """Serve; raises AuthConfigError when auth is not configured and ``no_auth`` was not asked for."""
    serving_verifier(settings, no_auth)
    uvicorn.run(create_app(settings), host=host, port=port, log_level=settings.log_level.lower())
