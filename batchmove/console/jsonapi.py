"""The JSON API under /api/, which the pages themselves use (documented in docs/console.md).

Errors are `{"error": "..."}` with 400 (bad input), 404, 409 (the run's state does not allow
it; a stale approval also carries the plan as it is now), 413 (upload too large).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from typing import Any

from aiohttp import BodyPartReader, web

from batchmove.console.exports import EXPORT_FIELDS, read_export_settings
from batchmove.console.i18n import language
from batchmove.console.login import AUDIT, audit
from batchmove.console.messages import say
from batchmove.console.people import Person
from batchmove.console.planning import UPLOAD_SETTINGS, read_settings
from batchmove.console.runfiles import display_name, job_name, safe_suffix
from batchmove.console.security import PERSON
from batchmove.console.service import Console, Forbidden, NotFound, Refused, upload_path
from batchmove.errors import BatchmoveError

#: a page gets an event this often: under a second with the scheduler's jitter (a 1.0 s
#: schedule measured gaps up to 1.02 s); the figures themselves are counted at most once a
#: second, and each event says how old they are
EVENT_EVERY_S = 0.9

CONSOLE: web.AppKey[Console] = web.AppKey("console", Console)
CLOSING: web.AppKey[asyncio.Event] = web.AppKey("closing", asyncio.Event)
_CHUNK = 1 << 20
_FIELD_LIMIT = 200


class TooLarge(Exception):
    pass


def _error(status: int, message: str, **more: Any) -> web.Response:
    return web.json_response({"error": message, **more}, status=status,
                             dumps=lambda d: json.dumps(d, ensure_ascii=False))


def _ok(data: dict[str, Any] | list[Any]) -> web.Response:
    return web.json_response(data, dumps=lambda d: json.dumps(d, ensure_ascii=False))


@web.middleware
async def api_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """The console's own exceptions -> their status codes, with one readable line (`error`,
    English, for scripts) and the same in the page's language (`text`, for people)."""
    lang = language(request.headers.get("Accept-Language", ""))
    try:
        return await handler(request)  # type: ignore[no-any-return]
    except NotFound as exc:
        return _error(404, str(exc), text=say(str(exc), lang))
    except Forbidden as exc:
        return _error(403, str(exc), text=say(str(exc), lang))
    except Refused as exc:
        info = exc.info or {}
        return _error(409, exc.message, text=say(exc.message, lang), run=info,
                      digest=info.get("digest"), plan=info.get("plan"),
                      overlaps=info.get("overlaps", []))
    except TooLarge:
        limit = request.config_dict[CONSOLE].config.max_upload >> 20
        message = "the file is larger than the console accepts"
        return _error(413, f"{message} ({limit} MB)", text=say(message, lang, limit=limit))
    except BatchmoveError as exc:
        return _error(400, exc.message, text=say(exc.message, lang))


def allow(request: web.Request, action: str) -> Person:
    """The request's person, if their role allows `action` (Forbidden, 403, otherwise)."""
    person = request[PERSON]
    if not person.may(action):
        raise Forbidden(f"{person.name} ({person.role}) may not {action}: it needs an "
                        f"{'admin' if action == 'settings' else 'approver'}")
    return person


def _planned(request: web.Request, action: str, info: dict[str, Any]) -> web.Response:
    """A new planned run: audited, then {"id", "plan", "digest", "run"}."""
    audit(request, action, run=info["id"], digest=info["digest"],
          counts=(info["plan"] or {}).get("rows"))
    return _ok({"id": info["id"], "plan": info["plan"], "digest": info["digest"], "run": info})


async def upload(request: web.Request) -> web.Response:
    """Multipart `file` plus settings -> a planned run: {"id", "plan", "digest", "run"}."""
    person = allow(request, "upload")
    console = request.config_dict[CONSOLE]
    limit = console.config.max_upload
    if request.content_length is not None and request.content_length > limit + _CHUNK:
        raise TooLarge
    reader = await request.multipart()
    fields: dict[str, str] = {}
    run_dir = None
    try:
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "file" and run_dir is None:
                run_dir = await _store(console, part, limit, person)
            elif part.name in UPLOAD_SETTINGS:
                fields[part.name] = await _field(part)
            else:
                await part.release()
        if run_dir is None:
            return _error(400, "no file: send the spreadsheet as the multipart field `file`")
        info = await console.plan_upload(run_dir, read_settings(fields))
    except (TooLarge, BatchmoveError):
        if run_dir is not None:
            console.remove(run_dir)
        raise
    return _planned(request, "upload", info)


async def _store(console: Console, part: BodyPartReader, limit: int, person: Person) -> Any:
    """Stream the file to the run directory under a generated name, mode 600."""
    filename = part.filename or ""
    suffix = safe_suffix(filename)
    if suffix is None:
        raise BatchmoveError("choose a spreadsheet: .csv .tsv .txt .xlsx or .xlsm")
    run_dir = console.new_run(person, source="upload", input_name=display_name(filename),
                              name=job_name(filename), input_file=f"input{suffix}")
    fd = os.open(upload_path(run_dir, suffix), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    size = 0
    try:
        with os.fdopen(fd, "wb") as f:
            while chunk := await part.read_chunk(_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise TooLarge
                f.write(chunk)
    except BaseException:
        console.remove(run_dir)
        raise
    return run_dir


async def _field(part: BodyPartReader) -> str:
    data = b""
    while chunk := await part.read_chunk(_FIELD_LIMIT + 1):
        data += chunk
        if len(data) > _FIELD_LIMIT:
            raise BatchmoveError(f"the form field {part.name} is too long")
    return data.decode("utf-8", "replace").strip()


async def plan_job_file(request: web.Request) -> web.Response:
    person = allow(request, "plan")
    info = await request.config_dict[CONSOLE].plan_jobfile(request.match_info["name"], person)
    return _planned(request, "plan", info)


async def start_export(request: web.Request) -> web.Response:
    """Form or JSON fields (backend, groups, tags, format) -> an export running: {"id", "run"}."""
    if request.content_type == "application/json":
        fields: dict[str, Any] = await _body(request)
    else:
        fields = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
    person = allow(request, "export")
    settings = read_export_settings({k: fields.get(k) for k in EXPORT_FIELDS})
    info = await asyncio.to_thread(request.config_dict[CONSOLE].start_export, settings, person)
    audit(request, "export", run=info["id"], detail=json.dumps(settings, ensure_ascii=False))
    return _ok({"id": info["id"], "run": info})


async def list_runs(request: web.Request) -> web.Response:
    runs = await asyncio.to_thread(request.config_dict[CONSOLE].runs)
    return _ok({"runs": runs})


async def get_run(request: web.Request) -> web.Response:
    return _ok(await asyncio.to_thread(request.config_dict[CONSOLE].info, request.match_info["id"]))


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError:
        raise BatchmoveError("the body must be a JSON object") from None
    if not isinstance(data, dict):
        raise BatchmoveError("the body must be a JSON object")
    return data


async def approve(request: web.Request) -> web.Response:
    """The one approval of a plan (four eyes, digest, overlaps: service.approve), audited
    when it starts the run and when it is refused."""
    body = await _body(request)
    digest, acknowledge = str(body.get("digest", "")), body.get("acknowledge") is True
    run_id = request.match_info["id"]
    try:
        info = await request.config_dict[CONSOLE].approve(run_id, digest, allow(request, "approve"),
                                                  acknowledge)
    except (Refused, Forbidden) as exc:
        audit(request, "approve_refused", run=run_id, digest=digest or None,
              detail=getattr(exc, "message", str(exc)))
        raise
    overlaps = "; ".join(f"{o['users']} users also moved by {o['job']} ({o['state']})"
                         for o in info["overlaps"])
    audit(request, "approve", run=run_id, digest=digest, counts=(info["plan"] or {}).get("rows"),
          detail=f"overlap acknowledged: {overlaps}" if overlaps else None)
    return _ok(info)


async def action(request: web.Request) -> web.Response:
    console, run_id = request.config_dict[CONSOLE], request.match_info["id"]
    verb = request.match_info["action"]
    if verb in ("rollback", "plan"):
        person = allow(request, "rollback" if verb == "rollback" else "plan")
        info = await (console.rollback(run_id, person) if verb == "rollback"
                      else console.plan_export(run_id, person))
        return _planned(request, verb, info)
    if verb == "discard":
        info = await console.discard(run_id, allow(request, "discard"))
        audit(request, "discard", run=run_id, digest=info["digest"])
        return _ok({"id": run_id, "discarded": True})
    handlers = {"stop": console.stop, "resume": console.resume, "verify": console.verify}
    if verb not in handlers:
        raise NotFound(f"no action {verb!r}")
    allow(request, verb)
    info = await asyncio.to_thread(handlers[verb], run_id)
    audit(request, verb, run=run_id, counts=info["counts"] or None)
    return _ok(info)


async def rows(request: web.Request) -> web.Response:
    """A page of the run's invalid/duplicate (or failed) rows, by spreadsheet row number."""
    statuses = tuple(request.query.get("status", "invalid,duplicate").split(","))
    try:
        offset = int(request.query.get("offset", "0"))
        limit = int(request.query.get("limit", "50"))
    except ValueError:
        raise BatchmoveError("offset and limit must be integers") from None
    console = request.config_dict[CONSOLE]
    page = await asyncio.to_thread(console.listed_rows, request.match_info["id"], statuses,
                                   offset, limit)
    lang = language(request.headers.get("Accept-Language", ""))
    for row in page["rows"]:
        row["reason_text"] = say(row["reason"], lang)
    return _ok(page)


async def download(request: web.Request) -> web.FileResponse:
    allow(request, "download")
    path = request.config_dict[CONSOLE].file(request.match_info["id"], request.match_info["name"])
    audit(request, "download", run=request.match_info["id"], detail=path.name)
    return web.FileResponse(path, headers={
        "Content-Disposition": f'attachment; filename="{path.name}"',
        "Cache-Control": "no-store"})


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: the run's figures once a second (from one shared ledger poll),
    until the run is no longer running (then one last event and the stream ends)."""
    console = request.config_dict[CONSOLE]
    run_dir = console.run_dir(request.match_info["id"])
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-store"})
    await response.prepare(request)
    ticks = [time.monotonic()]
    try:
        while True:
            live = console.supervisor.live_pid(run_dir) is not None
            hint = "verifying" if live and console.verifying(run_dir) else ""
            figures = await console.watcher.poll(run_dir, live=live, phase_hint=hint)
            if not live:
                info = await asyncio.to_thread(console.record, run_dir)
                figures |= {k: info[k] for k in ("state", "exit_code", "message")}
            else:
                figures["state"] = "running"
            text = json.dumps(figures, ensure_ascii=False)
            await response.write(f"data: {text}\n\n".encode())
            if not live or await _closing(request, _until_next(ticks, EVENT_EVERY_S)):
                break
    except ConnectionResetError:  # the page went away
        pass
    return response


def _until_next(ticks: list[float], interval: float) -> float:
    """Seconds to the next tick of a fixed one-per-interval schedule (no drift)."""
    ticks[0] = max(ticks[0] + interval, time.monotonic())
    return ticks[0] - time.monotonic()


async def _closing(request: web.Request, wait: float) -> bool:
    """Sleep `wait` seconds, or less when the console shuts down (then True)."""
    closing = request.config_dict[CLOSING]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(closing.wait(), wait)
    return closing.is_set()


def add_routes(app: web.Application) -> None:
    app[CLOSING] = asyncio.Event()

    async def shutting_down(app: web.Application) -> None:
        app[CLOSING].set()

    app.on_shutdown.append(shutting_down)
    app.router.add_post("/api/uploads", upload)
    app.router.add_post("/api/jobs/{name}/plan", plan_job_file)
    app.router.add_post("/api/exports", start_export)
    app.router.add_get("/api/runs", list_runs)
    app.router.add_get("/api/runs/{id}", get_run)
    app.router.add_post("/api/runs/{id}/approve", approve)
    app.router.add_post("/api/runs/{id}/{action}", action)
    app.router.add_get("/api/runs/{id}/events", events)
    app.router.add_get("/api/runs/{id}/rows", rows)
    app.router.add_get("/api/runs/{id}/files/{name}", download)
    app.router.add_get("/api/audit", audit_entries)
    app.router.add_get("/api/audit/download", audit_file)
    app.router.add_get("/api/me", me)


async def audit_entries(request: web.Request) -> web.Response:
    """GET /api/audit?run=&who=&action=&offset=&limit= -> {"total", "entries", "intact"}."""
    query = request.query
    try:
        offset, limit = int(query.get("offset", "0")), int(query.get("limit", "100"))
    except ValueError:
        raise BatchmoveError("offset and limit must be integers") from None
    log = request.config_dict[AUDIT]
    total, entries = await asyncio.to_thread(
        log.search, run=query.get("run") or None, who=query.get("who") or None,
        action=query.get("action") or None, offset=offset, limit=limit)
    broken = await asyncio.to_thread(log.verify_chain)
    return _ok({"total": total, "offset": offset, "entries": entries,
                "intact": broken is None, "broken_at": broken})


async def audit_file(request: web.Request) -> web.StreamResponse:
    """The whole audit log as a download (audit.jsonl)."""
    path = request.config_dict[AUDIT].path
    if not path.exists():
        raise NotFound("the audit log is empty")
    return web.FileResponse(path, headers={
        "Content-Disposition": 'attachment; filename="audit.jsonl"', "Cache-Control": "no-store"})


async def me(request: web.Request) -> web.Response:
    person = request[PERSON]
    return _ok({"name": person.name, "role": person.role})
