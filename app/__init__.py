"""The web layer: FastAPI app, REST API, Server-Sent Events, dashboard pages."""
