"""REST routes, one module per resource, all under /api/v1 (and the legacy alias /api)."""

API_PREFIX = "/api/v1"
LEGACY_PREFIX = "/api"
