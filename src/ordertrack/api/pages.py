"""The customer's pages: the tracking page, the home page, the icon and the static files."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response

STATIC_DIR = Path(__file__).resolve().parent / "static"

PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; connect-src 'self' ws: wss:; "
    "img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'",
}


def html_page(body: bytes) -> Response:
    return Response(body, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


def register(app: FastAPI) -> None:
    page_html = (STATIC_DIR / "tracking.html").read_bytes()
    home_html = (STATIC_DIR / "home.html").read_bytes()
    favicon_ico = (STATIC_DIR / "favicon.ico").read_bytes()

    @app.get("/orders/{order_id}", include_in_schema=False)
    async def tracking_page(order_id: str) -> Response:
        return html_page(page_html)

    @app.get("/", include_in_schema=False)
    @app.get("/orders/", include_in_schema=False)
    async def home_page() -> Response:
        # no order in the address: tell a customer where the tracking link is
        return html_page(home_html)

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(favicon_ico, media_type="image/x-icon",
                        headers={"Cache-Control": "public, max-age=86400"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
