"""The web dashboard: a static page inside the package that reads the public API with
the visitor's read key. Charts use plotly.js, served from the installed plotly package;
nothing is built at install time nor fetched from the internet at run time."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"

# The page runs only our own scripts and talks only to this server (WebSockets included).
# Inline styles: plotly.js sets them on the elements it draws.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; connect-src 'self'; font-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def plotly_js() -> Path:
    """plotly.min.js of the installed plotly package, found without importing plotly."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the plotly package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"


def mount_dashboard(app: FastAPI) -> None:
    chart_js = plotly_js()
    app.mount("/dashboard/static", StaticFiles(directory=str(STATIC)), name="dashboard-static")

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=SECURITY_HEADERS)

    @app.get("/dashboard/vendor/plotly.min.js", include_in_schema=False)
    async def charts() -> FileResponse:
        return FileResponse(
            chart_js,
            media_type="text/javascript",
            headers={"Cache-Control": "public, max-age=86400"},
        )
