"""/docs (Swagger UI) and /redoc served from this machine, never from a CDN.

FastAPI's own pages load their JavaScript and CSS from a CDN (and ReDoc its fonts from
Google), so a classroom without internet would see blank pages. The assets come from the
PyPI package `fastapi-offline` (Swagger UI and ReDoc bundles, MIT); only its files are used,
the pages are FastAPI's own HTML pointed at them. Their Content-Security-Policy allows this
origin only, so nothing on them can reach out (ReDoc's sidebar logo, hard-wired to a CDN, is
refused by the browser before any request and ReDoc hides it).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_URL = "/static-apidocs"
FAVICON_URL = "/static/img/favicon.svg"
# The pages' inline init script and the bundles' injected styles need 'unsafe-inline'; ReDoc's
# search runs in a worker made from a blob.
CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
       "frame-ancestors 'self'; base-uri 'self'; form-action 'self'")


def assets_dir() -> Path:
    import fastapi_offline

    return Path(fastapi_offline.__file__).resolve().parent / "static"


def install(app: FastAPI) -> None:
    """Add /docs, /redoc and their assets; the app must be made with docs_url=None, redoc_url=None."""
    assert app.docs_url is None and app.redoc_url is None, "FastAPI's CDN pages would shadow the local ones"
    app.mount(ASSETS_URL, StaticFiles(directory=assets_dir()), name="apidocs-assets")
    openapi_url = app.openapi_url or "/openapi.json"
    redirect_url = "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return _local_only(get_swagger_ui_html(
            openapi_url=openapi_url, title=f"{app.title} API",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js", swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=FAVICON_URL, oauth2_redirect_url=redirect_url,
            # no "validate at swagger.io" badge: it would be a request to the internet
            swagger_ui_parameters={"validatorUrl": None},
        ))

    @app.get(redirect_url, include_in_schema=False)
    def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return _local_only(get_redoc_html(
            openapi_url=openapi_url, title=f"{app.title} API (ReDoc)", redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=FAVICON_URL, with_google_fonts=False))


def _local_only(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = CSP
    return page
