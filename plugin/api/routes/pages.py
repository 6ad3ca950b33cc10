"""The web UI's HTML pages (login, agent console, admin dashboard, demo site) and the chat widget's <script> loader.

Pages carry no data and no secrets: the browser keeps the API key and fetches everything from the API with it, so
the server checks the role on every call exactly as for any other client.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

WEB_DIR = Path(__file__).resolve().parents[2] / "web"
STATIC_URL = "/ui/static"

# Everything the pages load comes from this service: no CDN, no inline script, nothing framed elsewhere.
PAGE_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

templates = Jinja2Templates(directory=WEB_DIR / "templates")
router = APIRouter(prefix="/ui", include_in_schema=False)


def render_page(request: Request, template: str, title: str, **context: object) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    response = templates.TemplateResponse(
        request,
        template,
        {"title": title, "root": root, "static": f"{root}{STATIC_URL}", **context},
        headers=PAGE_SECURITY_HEADERS,
    )
    return response


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request) -> HTMLResponse:
    return render_page(request, "login.html", "Log in")


@router.get("/console", response_class=HTMLResponse)
def agent_console_page(request: Request) -> HTMLResponse:
    return render_page(request, "console.html", "Agent console")


@router.get("/admin", response_class=HTMLResponse)
def admin_dashboard_page(request: Request) -> HTMLResponse:
    return render_page(request, "admin.html", "Admin dashboard")


@router.get("/demo-site", response_class=HTMLResponse)
def demo_site_page(
    request: Request,
    key: Annotated[str | None, Query(max_length=200, description="A widget key to embed")] = None,
    channel: Annotated[str, Query(max_length=100)] = "web",
    mode: Annotated[str | None, Query(pattern="^(auto|assist)$")] = None,
) -> HTMLResponse:
    """A pretend GadgetCorp shop page embedding the widget snippet, to try the widget (and test it) end to end."""
    return render_page(request, "demo_site.html", "GadgetCorp — SuperWidget", key=key, channel=channel, mode=mode)


@router.get("/widget.js")
def widget_loader() -> FileResponse:
    """The one script a site embeds; it builds the chat bubble and window in a shadow root and talks to this service."""
    return FileResponse(
        WEB_DIR / "static" / "widget.js",
        media_type="text/javascript",
        headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"},
    )


def mount_static_files(app: FastAPI) -> None:
    """CSS and JS of the pages under /ui/static (a Mount, so it is not an API route)."""
    app.mount(STATIC_URL, StaticFiles(directory=WEB_DIR / "static"), name="ui-static")
