"""Signing in and out: the login page and form, `POST /api/login` for API clients, logout.

A login checks the key (key mode) or a person's name and secret (`--users`, scrypt in a
thread), opens a session and sets its cookie; a failure is audited (`login_failed`, with the
name tried and the client's address) and counted against the address (429 once throttled).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from batchmove.api import now
from batchmove.console.audit import AuditLog
from batchmove.console.i18n import language, translator
from batchmove.console.people import Person
from batchmove.console.security import PERSON, Gate
from batchmove.errors import BatchmoveError

GATE: web.AppKey[Gate] = web.AppKey("gate", Gate)
AUDIT: web.AppKey[AuditLog] = web.AppKey("audit", AuditLog)
_FIELD_MAX = 200


def audit(request: web.Request, action: str, person: Person | None = None,
          **fields: Any) -> None:
    """One audit entry for this request's person (or `person`) and client address."""
    who = person or request.get(PERSON)
    request.config_dict[AUDIT].add(action, who=who.name if who else str(fields.pop("who", "?")),
                           role=who.role if who else "", client=request.remote, at=now(),
                           **fields)


def login_page(request: web.Request, *, status: int = 200, error: str = "",
               after: str | None = None) -> web.Response:
    """The login form; `after`: where a login goes next (default: the `next` asked for)."""
    lang = language(request.headers.get("Accept-Language", ""))
    gate = request.config_dict[GATE]
    nxt = after or request.query.get("next", gate.prefix)
    page = aiohttp_jinja2.render_template("login.html", request, {
        "t": translator(lang), "lang": lang, "people": gate.people is not None,
        "base": gate.prefix, "next": nxt if _local(nxt, gate.prefix) else gate.prefix,
        "error": error}, status=status)
    page.headers["Content-Security-Policy"] = ("default-src 'none'; style-src 'unsafe-inline'; "
                                               "form-action 'self'; frame-ancestors 'none'")
    page.headers["Referrer-Policy"] = "same-origin"  # "no-referrer" makes a form's Origin null
    return page


def _local(path: str, prefix: str) -> bool:
    """A page of this console (never another site, never another path of the host)."""
    return (path.startswith(prefix) and "\\" not in path and "/.." not in path
            and "%2e" not in path.lower())


async def unauthorized(request: web.Request) -> web.StreamResponse:
    gate = request.config_dict[GATE]
    if gate.local(request).startswith("/api/"):
        return web.json_response({"error": "sign in first (the console's key or your name "
                                  "and secret)"}, status=401)
    local = gate.local(request)
    page = request.method == "GET" and local != "/login" and not local.startswith("/static/")
    after = request.rel_url.raw_path if page else None
    return login_page(request, status=401, after=after)


async def _check(request: web.Request, fields: dict[str, str]) -> Person | None:
    """The person these credentials are, or None (audited, counted against the address)."""
    gate, client = request.config_dict[GATE], request.remote or "?"
    name = fields.get("name", "")[:_FIELD_MAX]
    secret = fields.get("secret", "")[:_FIELD_MAX] or fields.get("key", "")[:_FIELD_MAX]
    if gate.people is not None:
        people = gate.people
        person = await asyncio.to_thread(people.check, name, secret) if name else None
    else:
        person = gate.with_key(secret)
    if person is None:
        gate.throttle.failed(client)
        audit(request, "login_failed", who=name or "(key)")
    else:
        audit(request, "login", person)
    return person


async def login_form(request: web.Request) -> web.StreamResponse:
    """POST /login (the form): a session cookie and on to `next`, or the form again."""
    t = translator(language(request.headers.get("Accept-Language", "")))
    if request.config_dict[GATE].throttle.blocked(request.remote or "?"):
        return login_page(request, status=429, error=t("login.throttled"))
    form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
    person = await _check(request, form)
    if person is None:
        return login_page(request, status=401, error=t("login.wrong"))
    gate = request.config_dict[GATE]
    nxt = form.get("next", gate.prefix)
    moved = web.Response(status=303, headers={
        "Location": nxt if _local(nxt, gate.prefix) else gate.prefix})
    gate.set_cookie(moved, gate.sessions.open(person))
    return moved


async def api_login(request: web.Request) -> web.Response:
    """POST /api/login {"name", "secret"} (or {"key"}) -> {"token", "name", "role",
    "expires_in"}: the token is the Bearer of the API calls that follow."""
    gate = request.config_dict[GATE]
    if gate.throttle.blocked(request.remote or "?"):
        return web.json_response({"error": "too many failed logins: wait a few minutes"},
                                 status=429)
    try:
        body = await request.json()
    except ValueError:
        raise BatchmoveError("the body must be a JSON object") from None
    fields = {k: v for k, v in body.items() if isinstance(v, str)} if isinstance(body, dict) \
        else {}
    person = await _check(request, fields)
    if person is None:
        return web.json_response({"error": "wrong name, secret or key"}, status=401)
    return web.json_response({"token": gate.sessions.open(person), "name": person.name,
                              "role": person.role, "expires_in": int(gate.sessions.ttl)})


async def logout(request: web.Request) -> web.StreamResponse:
    """POST /logout (the page's button) or /api/logout (a Bearer token): the session ends."""
    gate = request.config_dict[GATE]
    token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip() \
        or request.cookies.get(gate.cookie, "")
    gate.sessions.close(token)
    audit(request, "logout")
    if gate.local(request).startswith("/api/"):
        return web.json_response({"ok": True})
    moved = web.Response(status=303, headers={"Location": gate.prefix + "login"})
    gate.clear_cookie(moved)
    return moved


def add_routes(app: web.Application) -> None:
    app.router.add_get("/login", _page)
    app.router.add_post("/login", login_form)
    app.router.add_post("/logout", logout)
    app.router.add_post("/api/login", api_login)
    app.router.add_post("/api/logout", logout)


async def _page(request: web.Request) -> web.Response:
    return login_page(request)
