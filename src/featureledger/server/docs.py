"""``/docs``: Swagger UI over the server's OpenAPI document, from local files only.

FastAPI's own ``/docs`` page loads Swagger UI from a CDN, which a server without internet
access (or a browser that may not reach one) cannot load. Here the page and its script,
stylesheet and icon are served by the server itself, from the ``swagger-ui-bundle``
package (in the ``server`` extra), under ``/docs/assets/``; nothing is downloaded at run
time. The assets are public (they are Swagger UI's own files); ``/docs`` and
``/openapi.json`` need a token like every other route when tokens are set, unless
``server.public_docs`` is true.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response

from featureledger.errors import MissingDependencyError, NotFoundError

ASSETS = {  # file -> media type
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}
PREFIX = "/docs/assets/"
ASSET_PATHS = frozenset(PREFIX + name for name in ASSETS)


def _asset_dir() -> Path:
    try:
        import swagger_ui_bundle
    except ImportError:
        raise MissingDependencyError("the /docs page", "swagger-ui-bundle", "server") from None
    return Path(swagger_ui_bundle.swagger_ui_path)


def add_routes(app: FastAPI, *, title: str) -> None:
    """``GET /docs`` and ``GET /docs/assets/{name}`` (not in the OpenAPI document)."""
    from fastapi.openapi.docs import get_swagger_ui_html

    cache: dict[str, bytes] = {}

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        _asset_dir()  # says which extra to install before a page that cannot load
        return get_swagger_ui_html(
            openapi_url="/openapi.json", title=f"{title} - API",
            swagger_js_url=PREFIX + "swagger-ui-bundle.js",
            swagger_css_url=PREFIX + "swagger-ui.css",
            swagger_favicon_url=PREFIX + "favicon-32x32.png")

    @app.get(PREFIX + "{name}", include_in_schema=False)
    async def asset(name: str) -> Any:
        media = ASSETS.get(name)
        if media is None:
            raise NotFoundError(f"there is no docs asset {name[:100]!r}; the page is /docs")
        body = cache.get(name)
        if body is None:
            body = cache[name] = (_asset_dir() / name).read_bytes()
        return Response(body, media_type=media,
                        headers={"Cache-Control": "public, max-age=86400"})
