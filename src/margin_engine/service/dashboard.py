"""The dashboard page at ``/`` and its scripts: plotly.js is served from the installed plotly
package's own file (nothing from a CDN, nothing downloaded at run time)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse

from .problems import EXPLANATIONS, TITLES, ProblemError, ProblemKind

router = APIRouter(include_in_schema=False)
STATIC = Path(__file__).with_name("static")
_CACHE = {"Cache-Control": "public, max-age=86400"}


def plotly_js() -> Path:
    """The plotly.min.js shipped inside the installed plotly package."""
    path = Path(str(resources.files("plotly") / "package_data" / "plotly.min.js"))
    if not path.is_file():
        raise FileNotFoundError(f"plotly.min.js not found in the plotly package at {path}")
    return path


@router.get("/")
async def dashboard() -> HTMLResponse:
    return HTMLResponse((STATIC / "dashboard.html").read_text(encoding="utf-8"))


@router.get("/static/plotly.min.js")
async def plotly() -> FileResponse:
    return FileResponse(plotly_js(), media_type="text/javascript", headers=_CACHE)


@router.get("/static/dashboard.js")
async def dashboard_js() -> FileResponse:
    return FileResponse(STATIC / "dashboard.js", media_type="text/javascript")


@router.get("/problems/{kind}")
async def problem_type(kind: str) -> PlainTextResponse:
    """What a problem ``type`` means."""
    try:
        known = ProblemKind(kind)
    except ValueError:
        raise ProblemError(ProblemKind.NOT_FOUND, f"no problem type {kind!r}") from None
    return PlainTextResponse(f"{TITLES[known]}\n\n{EXPLANATIONS[known]}\n")
