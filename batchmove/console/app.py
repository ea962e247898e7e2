"""The console's aiohttp application: pages, the JSON API, static files, and `serve`.

Pages are rendered on the server (jinja2, autoescaped); the vendored script only uploads,
posts the buttons' actions, pages the invalid rows and shows the live figures, always through
`textContent`, so no name from a spreadsheet is ever parsed as HTML.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from batchmove import __version__
from batchmove.console import jsonapi, planview
from batchmove.console.i18n import js_strings, language, translator
from batchmove.console.jsonapi import CONSOLE
from batchmove.console.security import QuietAccessLogger, allowed_hosts, guard
from batchmove.console.service import DOWNLOADS, Console, ConsoleConfig, NotFound

HERE = Path(__file__).parent
LOG = logging.getLogger("batchmove.console")


def _page_context(request: web.Request, **values: Any) -> dict[str, Any]:
    lang = language(request.headers.get("Accept-Language", ""))
    return {"t": translator(lang), "lang": lang, "js": js_strings(lang),
            "version": __version__, "duration": planview.duration, "when": planview.when,
            **values}


async def home(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    runs = await asyncio.to_thread(console.runs)
    return aiohttp_jinja2.render_template("home.html", request, _page_context(
        request, runs=runs, jobs=console.jobs(), default_rate=console.default_rate(),
        max_upload_mb=console.config.max_upload >> 20))


async def run_page(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    try:
        info = await asyncio.to_thread(console.info, request.match_info["id"])
    except NotFound as exc:
        return aiohttp_jinja2.render_template("error.html", request, _page_context(
            request, message=str(exc)), status=404)
    plan = planview.view(info["plan"]) if info.get("plan") else None
    return aiohttp_jinja2.render_template("run.html", request, _page_context(
        request, run=info, plan=plan, downloads=DOWNLOADS,
        stale=request.query.get("stale") == "1"))


async def _no_content(request: web.Request) -> web.Response:
    return web.Response(status=204)


def unauthorized(request: web.Request) -> web.StreamResponse:
    if request.path.startswith("/api/"):
        return web.json_response({"error": "the console's key is needed"}, status=401)
    t = translator(language(request.headers.get("Accept-Language", "")))
    body = _KEY_PAGE.format(title=t("title"), text=t("unauthorized"))
    return web.Response(status=401, text=body, content_type="text/html", headers={
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"})


# the only page without the stylesheet (static files need the key too): its style inline
_KEY_PAGE = """<!doctype html><meta charset=utf-8><title>401 · {title}</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;background:#f4f6f9;color:#1f2933;margin:0}}
div{{max-width:560px;margin:80px auto;background:#fff;border:1px solid #dde3ea;
border-radius:10px;padding:24px 28px}}h1{{font-size:20px;margin:0 0 8px}}</style>
<div><h1>{title}</h1><p>{text}</p></div>"""


def make_app(config: ConsoleConfig, key: str,
             hosts: Callable[[], frozenset[str]] | None = None,
             planner: Executor | None = None) -> web.Application:
    """The application; `hosts` gives the Host values to accept (by default the configured
    address, so a port chosen by the OS is passed in once known); `planner` runs the plans
    (default: two planning processes of the console's own, started at once)."""
    allowed = hosts or (lambda: allowed_hosts(config.host, config.port))
    app = web.Application(middlewares=[guard(key, allowed, unauthorized), jsonapi.api_errors],
                          client_max_size=config.max_upload + (1 << 20))
    app[CONSOLE] = Console(config, planner=planner)
    aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(HERE / "templates"),
                         autoescape=jinja2.select_autoescape(default=True),
                         undefined=jinja2.StrictUndefined)
    app.router.add_get("/", home)
    app.router.add_get("/runs/{id}", run_page)
    app.router.add_get("/favicon.ico", _no_content)
    app[aiohttp_jinja2.static_root_key] = "/static"
    app.router.add_static("/static/", HERE / "static")
    jsonapi.add_routes(app)

    async def starting(app: web.Application) -> None:
        if planner is None:
            app[CONSOLE].warm_up()

    async def closing(app: web.Application) -> None:
        app[CONSOLE].close()

    app.on_startup.append(starting)
    app.on_cleanup.append(closing)
    return app


async def serve(config: ConsoleConfig, key: str, announce: Callable[[str], None],
                stop: asyncio.Event | None = None) -> None:
    """Listen until SIGINT/SIGTERM (or `stop`); `announce` gets the address with the key."""
    bound: list[int] = []
    app = make_app(config, key, lambda: allowed_hosts(config.host, bound[0] if bound
                                                      else config.port))
    runner = web.AppRunner(app, access_log_class=QuietAccessLogger, access_log=LOG,
                           handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    try:
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        port = sockets[0].getsockname()[1] if sockets else config.port
        bound.append(port)
        shown = f"[{config.host}]" if ":" in config.host else config.host
        announce(f"console on http://{shown}:{port}/?key={key}")
        done = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, done.set)
        await done.wait()
    finally:
        await runner.cleanup()
