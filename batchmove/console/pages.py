"""The console's pages, rendered on the server (jinja2, autoescaped): home (upload, job files,
export, the history), a run, the audit log, the settings (admins). Every word comes from the
catalogue (i18n.py) in the browser's language; every message of the library goes through
messages.py, so the Chinese page says it in Chinese too."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from batchmove import __version__
from batchmove.console import history, messages, planview
from batchmove.console.i18n import js_strings, language, translator
from batchmove.console.jsonapi import CONSOLE, allow
from batchmove.console.login import AUDIT, GATE, audit
from batchmove.console.runs import STATES
from batchmove.console.security import PERSON
from batchmove.console.service import DOWNLOADS, NotFound


def context(request: web.Request, **values: Any) -> dict[str, Any]:
    lang = language(request.headers.get("Accept-Language", ""))
    t = translator(lang)
    return {"t": t, "lang": lang, "js": js_strings(lang), "version": __version__,
            "base": request.config_dict[GATE].prefix,
            "duration": planview.duration, "when": planview.when, "me": request.get(PERSON),
            "say": lambda text, **more: messages.say(text, lang, **more),
            "result": lambda run: messages.result(run, lang), "detail": messages.detail,
            "original": messages.original, **values}


async def home(request: web.Request) -> web.Response:
    console = request.config_dict[CONSOLE]
    runs = await asyncio.to_thread(console.runs)
    filters = history.read_filters(request.query)
    shown, page, pages = history.page_of(runs, filters, request.query.get("page", "1"))
    return aiohttp_jinja2.render_template("home.html", request, context(
        request, runs=shown, page=page, pages=pages, filters=filters, states=STATES,
        people=history.people_of(runs), total=len(runs), jobs=console.jobs(),
        default_rate=console.default_rate(), max_upload_mb=console.config.max_upload >> 20))


async def run_page(request: web.Request) -> web.Response:
    console = request.config_dict[CONSOLE]
    try:
        info = await asyncio.to_thread(console.info, request.match_info["id"])
    except NotFound:
        return error_page(request, "error.no_run", 404)
    plan = planview.view(info["plan"]) if info.get("plan") else None
    log = request.config_dict[AUDIT]
    _, entries = await asyncio.to_thread(log.search, run=info["id"], limit=50)
    shared = (await asyncio.to_thread(console.account, info["id"])
              if info["state"] in ("planned", "running") and info["kind"] == "run" else None)
    return aiohttp_jinja2.render_template("run.html", request, context(
        request, run=info, plan=plan, downloads=DOWNLOADS, entries=entries, shared=shared,
        four_eyes=console.config.four_eyes, stale=request.query.get("stale") == "1"))


async def audit_page(request: web.Request) -> web.Response:
    log, query = request.config_dict[AUDIT], request.query
    try:
        offset = max(0, int(query.get("offset", "0")))
    except ValueError:
        offset = 0
    who, action = query.get("who") or None, query.get("action") or None
    total, entries = await asyncio.to_thread(log.search, who=who, action=action,
                                             offset=offset, limit=100)
    broken = await asyncio.to_thread(log.verify_chain)
    return aiohttp_jinja2.render_template("audit.html", request, context(
        request, entries=entries, total=total, offset=offset, broken=broken, who=who or "",
        action=action or ""))


async def settings_page(request: web.Request) -> web.Response:
    if not request[PERSON].may("settings"):
        return error_page(request, "error.forbidden", 403)
    console, gate = request.config_dict[CONSOLE], request.config_dict[GATE]
    config = console.config
    return aiohttp_jinja2.render_template("settings.html", request, context(
        request, config=config, people=gate.people.roles() if gate.people else {},
        sessions=gate.sessions.active(), key_mode=gate.people is None, tls=gate.tls))


async def end_sessions(request: web.Request) -> web.Response:
    """POST /api/sessions/end {"name"}: an admin ends every session of a person."""
    allow(request, "settings")
    body = await request.json()
    name = str(body.get("name", "")) if isinstance(body, dict) else ""
    ended = request.config_dict[GATE].sessions.close_all(name)
    audit(request, "end_sessions", detail=f"{name}: {ended}")
    return web.json_response({"name": name, "ended": ended})


def error_page(request: web.Request, key: str, status: int) -> web.Response:
    return aiohttp_jinja2.render_template("error.html", request, context(
        request, message=translator(language(request.headers.get("Accept-Language", "")))(key)),
        status=status)


async def _no_content(request: web.Request) -> web.Response:
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", home)
    app.router.add_get("/runs/{id}", run_page)
    app.router.add_get("/audit", audit_page)
    app.router.add_get("/settings", settings_page)
    app.router.add_post("/api/sessions/end", end_sessions)
    app.router.add_get("/favicon.ico", _no_content)
