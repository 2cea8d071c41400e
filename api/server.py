"""Runs the API under uvicorn; what `jobreg api` calls."""

from __future__ import annotations

import uvicorn

from api.app import create_app
from registry.settings import Settings


def run_api(settings: Settings, host: str, port: int) -> None:
    uvicorn.run(create_app(settings), host=host, port=port, log_level=settings.log_level.lower())
