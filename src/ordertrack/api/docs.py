"""`GET /docs`: Swagger UI served from the assets the package `fastapi-offline` ships (Swagger
UI 5, which reads our OpenAPI 3.1 document), with FastAPI's self-hosting recipe: no CDN, so
the API's documentation works on a machine without internet.

The assets are mounted at `/docs-assets/`; `/docs/oauth2-redirect` is Swagger UI's OAuth
helper page, as FastAPI's default docs have it.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response

ASSETS = "/docs-assets"


def install(app: FastAPI) -> None:
    """Serve `/docs` with the packaged Swagger UI (the app is built with `docs_url=None`)."""
    import fastapi_offline

    assets = Path(fastapi_offline.__file__).resolve().parent / "static"
    app.mount(ASSETS, StaticFiles(directory=assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> Response:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url="/docs/oauth2-redirect",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url="/favicon.ico",
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def swagger_ui_redirect() -> Response:
        return get_swagger_ui_oauth2_redirect_html()
