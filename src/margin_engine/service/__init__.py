"""The HTTP service: ``margin-engine serve``. FastAPI app factory (``app.create_app``), routes
(``routes_*``), API keys (``keys``) and request authentication (``auth``), the per-key rate
limit (``ratelimit``), RFC 9457 problem responses (``problems``), the store and market the
routes read (``state``, ``follower``, ``book``), the WebSocket event stream (``stream``) and
the dashboard page (``dashboard``)."""
