"""The web page of `siglip serve`: `GET /` (index.html) and `GET /static/...` (app.js, style.css).

The assets live in `siglip/serve/static/` and ship as package data, so an installed wheel serves them with no
build step and no network (no CDN: the page works offline). They hold no data of the server: every query the page
makes goes through the same /v1 routes, with the same API key, as any other client.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

STATIC_DIR = Path(__file__).parent / "static"


def static_routes() -> list[Any]:
    """Starlette routes for the page: `/` and the `/static` mount (add them to the app's routes)."""
    from starlette.responses import FileResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    index = STATIC_DIR / "index.html"

    async def page(request: Any) -> FileResponse:
        # no-cache: the browser revalidates (cheap, ETag) so an upgraded package shows its new page at once.
        return FileResponse(index, media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-cache"})

    return [
        Route("/", page, methods=["GET", "HEAD"], name="web_page"),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
    ]
