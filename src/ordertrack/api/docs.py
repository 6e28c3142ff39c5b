"""`GET /docs`: Swagger UI served from the package `swagger-ui-bundle`, no CDN (FastAPI's
self-hosting recipe), so the API's documentation works on a machine without internet.

The assets are mounted at `/docs-assets/`; `/docs/oauth2-redirect` is Swagger UI's OAuth
helper page, as FastAPI's default docs have it.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response

ASSETS = "/docs-assets"


def install(app: FastAPI) -> None:
    """Serve `/docs` with the packaged Swagger UI (the app is built with `docs_url=None`)."""
    from swagger_ui_bundle import swagger_ui_path

    app.mount(ASSETS, StaticFiles(directory=swagger_ui_path), name="docs-assets")

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
