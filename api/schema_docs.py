"""The OpenAPI page at /schema: Swagger UI served from the swagger-ui-py wheel, so it renders offline."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from litestar import Router
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.static_files import create_static_files_router

# Under /schema, public like the schema itself (api/auth.py): a browser fetching a script sends no token.
ASSETS = "/assets"
PUBLIC = {"exclude_from_auth": True}


def swagger_ui_dir() -> Path:
    """Swagger UI's built files as the swagger-ui-py package ships them (located without importing it)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("swagger-ui-py is not installed (it is a dependency of jobreg)")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


class OfflineSwagger(SwaggerRenderPlugin):
    """Litestar's Swagger UI page with every asset (script, style, icon) from this server, none from a CDN."""

    def __init__(self, base: str = "/schema", **kwargs: Any) -> None:
        assets = f"{base}{ASSETS}"
        super().__init__(
            js_url=f"{assets}/swagger-ui-bundle.js",
            css_url=f"{assets}/swagger-ui.css",
            standalone_preset_js_url=f"{assets}/swagger-ui-standalone-preset.js",
            favicon=f"<link rel='icon' type='image/png' href='{assets}/favicon-32x32.png'>",
            path=["/", "/swagger"],
            **kwargs,
        )

    def receive_router(self, router: Router) -> None:
        super().receive_router(router)  # oauth2-redirect.html
        router.register(
            create_static_files_router(
                path=ASSETS, directories=[swagger_ui_dir()], name="swagger-ui", include_in_schema=False, opt=PUBLIC
            )
        )
