"""`ordertrack ingest`: the carriers' tracking webhooks (FedEx, UPS, DHL) beside polling.

Its own small ASGI process (FastAPI on uvicorn, like the API), so it scales, deploys and fails
apart from the customer-facing REST API, and a burst of carrier callbacks never competes with
customers' requests.
"""
