"""The HTTP edge every process shares: the push pod, `ordertrack api` and `ordertrack ingest`.

One home for what an HTTP client meets before any route's own logic:

- `refusals`: every refusal and error code (`{"error": CODE, "message": text}`) with its status
  and default message, the body, the JSON content type and `WWW-Authenticate` (beside the
  close codes of `ordertrack.protocol`);
- `request_id`: which client `X-Request-ID` is echoed, and fresh ones;
- `limits`: the uvicorn HTTP/1.1 protocol that bounds every request's head and body, in size
  and in time (the API and ingest run on it);
- `asgi`: the FastAPI pieces (JSON answers, X-Request-ID on every answer, JSON 404/405/500).

Shared: imports nothing from `push/`, `api/`, `gateway/` or `ingest/`; the pod imports only
the pure `refusals` and `request_id` (no uvicorn, no FastAPI).
"""
