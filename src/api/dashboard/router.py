"""GET /dashboard and /dashboard/{site_id}: the page, rendered from templates/dashboard.html with
the little it needs to start (the site, whether keys are needed, where its files are); the
numbers come from the stats API, fetched by static/dashboard.js. The static files (and the
vendored uPlot) are served under /dashboard/static/<version> (`mount_static`)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from src.api.auth.service import KeyService, environment_keys
from src.api.config import get_settings
from src.api.sites.service import SiteRegistry

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
STATIC_PATH = "/dashboard/static"
templates = Jinja2Templates(directory=HERE / "templates")
# The files' version, in their URLs: a deploy with new files is never served stale from a cache.
VERSION = hashlib.sha256(
    b"".join(p.read_bytes() for p in sorted(STATIC_DIR.rglob("*")) if p.is_file())
).hexdigest()[:12]

router = APIRouter(tags=["dashboard"])
SiteId = Annotated[str, PathParam(min_length=1, max_length=128, pattern=r"^[^\x00/]+$")]


class VersionedStaticFiles(StaticFiles):
    """The files under a versioned path: cacheable for a year, as the URL changes with them."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        return response


def mount_static(app: FastAPI) -> None:
    app.mount(f"{STATIC_PATH}/{VERSION}", VersionedStaticFiles(directory=STATIC_DIR), name="dashboard-static")


async def _page(request: Request, site_id: str | None) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    keys: KeyService = request.app.state.keys
    registry: SiteRegistry = request.app.state.site_registry
    site = (await registry.sites()).get(site_id) if site_id else None
    config = {
        "site_id": site_id or "",
        "root": root,
        "default_tz": site.timezone if site is not None else "UTC",  # a registered site's zone
        "keys_required": await keys.required(environment_keys(get_settings())),
    }
    return templates.TemplateResponse(
        request,
        "dashboard.html",
        {
            "title": site_id or "Every site",
            "root": root,
            "static": f"{root}{STATIC_PATH}/{VERSION}",
            "config": config,
        },
        headers={"Cache-Control": "no-cache"},
    )


@router.get("/dashboard", response_class=HTMLResponse)
async def dashboard(request: Request) -> HTMLResponse:
    return await _page(request, None)


@router.get("/dashboard/{site_id}", response_class=HTMLResponse)
async def site_dashboard(request: Request, site_id: SiteId) -> HTMLResponse:
    return await _page(request, site_id)
