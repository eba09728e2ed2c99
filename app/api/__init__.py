"""REST routes, one module per resource, all under /api."""
