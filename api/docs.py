"""Swagger UI (/docs) and ReDoc (/redoc) served from the API itself, with no CDN.

FastAPI's own pages load their JavaScript and CSS from a public CDN: where the machine cannot
reach it (a bank's network, usually) /docs is a blank page. This is FastAPI's self-hosting recipe
with the assets that `fastapi-offline` ships in its package (`fastapi_offline/static`).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

#: Where the Swagger UI and ReDoc assets are mounted.
STATIC_URL = "/static-offline-docs"
#: Swagger UI's validator badge is an image from validator.swagger.io: off.
SWAGGER_UI_PARAMETERS = {"validatorUrl": None}
#: The docs pages may load images only from the API itself: ReDoc's side menu shows a logo from
#: its vendor's CDN, which the browser then never asks for (the menu hides a logo that fails).
DOCS_CSP = "img-src 'self' data: blob:"


def add_offline_docs(app: FastAPI, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Serve /docs, its OAuth2 redirect, /redoc and their assets from `app` itself.

    `app` is made with `docs_url=None, redoc_url=None` so that FastAPI's CDN pages are not there.
    """
    openapi_url = app.openapi_url
    if openapi_url is None:
        raise ValueError("the offline docs need the OpenAPI schema (openapi_url is None)")
    oauth2_redirect_url = app.swagger_ui_oauth2_redirect_url or f"{docs_url}/oauth2-redirect"
    app.mount(
        STATIC_URL,
        StaticFiles(packages=[("fastapi_offline", "static")]),
        name="static-offline-docs",
    )

    def prefix(request: Request) -> str:
        # Behind a proxy that serves the API under a path, every URL of the page carries it.
        return str(request.scope.get("root_path", "")).rstrip("/")

    # Plain Starlette routes, as FastAPI's own docs pages are: GET and HEAD, not in the schema.
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = prefix(request)
        page = get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root}{oauth2_redirect_url}",
            swagger_js_url=f"{root}{STATIC_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{STATIC_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{STATIC_URL}/favicon.png",
            init_oauth=app.swagger_ui_init_oauth,
            swagger_ui_parameters={**SWAGGER_UI_PARAMETERS, **(app.swagger_ui_parameters or {})},
        )
        page.headers["Content-Security-Policy"] = DOCS_CSP
        return page

    async def swagger_ui_redirect(request: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc(request: Request) -> HTMLResponse:
        root = prefix(request)
        page = get_redoc_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{STATIC_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{STATIC_URL}/favicon.png",
            with_google_fonts=False,
        )
        page.headers["Content-Security-Policy"] = DOCS_CSP
        return page

    app.add_route(docs_url, swagger_ui, include_in_schema=False)
    app.add_route(oauth2_redirect_url, swagger_ui_redirect, include_in_schema=False)
    app.add_route(redoc_url, redoc, include_in_schema=False)
