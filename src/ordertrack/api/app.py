"""The REST fallback API and the tracking page: `create_app(settings) -> FastAPI`.

Routes:
- `GET /api/v2/orders/{order_id}/tracking`: the order's tracking answer (JWT required;
  `tracking_route.py`).
- `GET /orders/{order_id}`: the tracking page (HTML + CSS + JS module, token in `#token=`).
- `GET /` and `GET /orders/`: a page telling a customer to open the link they were sent.
- `GET /favicon.ico`, `GET /static/...`: the page's files (`pages.py`).
- `GET /healthz`, `GET /metrics`, `GET /openapi.json` (`openapi.py`), `GET /docs` (`docs.py`).
- The rollout's page views and stays, and their figures (`rollout.py`).

`create_app` only composes: each job is its own module, registering its routes. The edge
(`ordertrack.http_edge`) gives every answer its `X-Request-ID` and every error the body
`{"error": CODE, "message": text}` with `Content-Type: application/json; charset=utf-8`.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from fastapi import FastAPI
from starlette.responses import Response

from ordertrack import auth
from ordertrack.api import docs, openapi, pages, rollout, tracking_route
from ordertrack.api.metrics import Metrics
from ordertrack.api.runtime import Runtime, lifespan
from ordertrack.http_edge import asgi
from ordertrack.http_edge.asgi import JSONBody
from ordertrack.telemetry import metrics_page


def register_probes(app: FastAPI, metrics: Metrics) -> None:
    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return JSONBody({"status": "ok"})

    @app.get("/metrics", include_in_schema=False)
    async def metrics_route() -> Response:
        body, content_type = metrics_page(metrics.registry)
        return Response(body, media_type=content_type)


def create_app(settings: SimpleNamespace, store: Any = None) -> FastAPI:
    """The ASGI app. `settings` as loaded by `ordertrack.api.main.load_settings`.

    Redis, and the store unless an open one is given (`ordertrack api` opens it first, so an
    unreachable store stops start-up with one line), are opened by the lifespan (uvicorn
    runs it); both are closed on shutdown.
    """
    verifier = auth.verifier_from_settings(settings)
    metrics = Metrics()
    runtime = Runtime()
    app = FastAPI(
        title="ordertrack REST fallback",
        version="2",
        description="Order tracking over REST: the fallback for clients whose WebSocket "
        "dropped, and the tracking page.",
        lifespan=lifespan(settings, verifier, metrics, runtime, store),
        default_response_class=JSONBody,
        docs_url=None,  # docs.install: Swagger UI from a package, no CDN
        redoc_url=None,
    )
    app.state.metrics = metrics
    asgi.install(app)
    tracking_route.register(app, settings, verifier, metrics, runtime)
    pages.register(app)
    rollout.install(app, settings, tracking_route.ClaimsCache(verifier).check, runtime,
                    metrics.registry)
    docs.install(app)
    register_probes(app, metrics)
    openapi.install(app)
    return app
