"""The console's own address, `/c/<id>/`: the host's other paths only lead there (the API's old
paths say where the API is), a login never leaves it, the session cookie's Path is it, and the
id is the workspace's, kept across restarts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from yarl import URL

from batchmove.console.runfiles import INSTANCE_FILE, instance_id
from batchmove.errors import UsageError
from tests.support.console import KEY, ConsoleUnderTest


async def location(c: ConsoleUnderTest, raw_path: str) -> str:
    """The Location answered to a request line with this path, sent as is (a client library
    would read `//host/x` as another host)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", c.client.server.port)
    host = c.base_url.removeprefix("http://")
    writer.write(f"GET {raw_path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                 .encode())
    head = (await reader.read()).decode("latin-1").split("\r\n\r\n")[0]
    writer.close()
    return next(line.split(": ", 1)[1] for line in head.split("\r\n")
                if line.lower().startswith("location: "))


async def test_the_hosts_root_leads_to_the_console(console_app: ConsoleUnderTest) -> None:
    c, prefix = console_app, console_app.client.prefix
    r = await c.client.raw.get("/", allow_redirects=False)
    assert (r.status, r.headers["Location"]) == (307, prefix)
    r = await c.client.raw.get(f"/?key={KEY}", allow_redirects=False)  # the old printed address
    assert r.headers["Location"] == f"{prefix}?key={KEY}"
    r = await c.client.raw.get(prefix.rstrip("/"), allow_redirects=False)
    assert (r.status, r.headers["Location"]) == (307, prefix)
    r = await c.client.raw.get("/runs/20261201-104512-3f9a", allow_redirects=False)  # bookmark
    assert r.headers["Location"] == f"{prefix}runs/20261201-104512-3f9a"
    assert await location(c, "//evil.test/x") == f"{prefix}evil.test/x"  # never another site
    r = await c.client.raw.get("/c/0123456789abcdef/", allow_redirects=False)
    assert r.status == 404
    assert prefix in await r.text()


async def test_the_apis_old_paths_say_where_it_is(console_app: ConsoleUnderTest) -> None:
    c, prefix = console_app, console_app.client.prefix
    r = await c.client.raw.get("/api/runs?x=1", headers=c.auth(), allow_redirects=False)
    assert (r.status, r.headers["Location"]) == (307, f"{prefix}api/runs?x=1")
    body = await r.json()
    assert body["api"] == f"{prefix}api/"
    assert prefix in body["error"]
    r = await c.client.raw.post("/api/runs/x/stop", headers=c.auth(), allow_redirects=False)
    assert (r.status, r.headers["Location"]) == (307, f"{prefix}api/runs/x/stop")  # method kept
    r = await c.client.raw.get("/api/runs", headers=c.auth())  # a client that follows it
    assert r.status == 200
    assert "runs" in await r.json()


async def test_a_login_stays_inside_the_console(console_app: ConsoleUnderTest) -> None:
    c, prefix = console_app, console_app.client.prefix
    for elsewhere in ("//evil.test/", "https://evil.test/", "/elsewhere", f"{prefix}../x",
                      f"{prefix}%2E%2E/x"):
        r = await c.client.post("/login", data={"key": KEY, "next": elsewhere},
                                headers={"Origin": c.base_url}, allow_redirects=False)
        assert (r.status, r.headers["Location"]) == (303, prefix), elsewhere
    jar = c.client.session.cookie_jar
    origin = URL(c.base_url)
    assert jar.filter_cookies(origin.with_path(f"{prefix}api/runs"))
    assert not jar.filter_cookies(origin.with_path("/"))  # the cookie's Path is the prefix
    assert not jar.filter_cookies(origin.with_path("/c/0123456789abcdef/"))


async def test_a_signed_out_page_logs_in_back_to_itself(console_app: ConsoleUnderTest) -> None:
    c, prefix = console_app, console_app.client.prefix
    page = await (await c.client.get("/audit?who=x")).text()
    assert f'name="next" value="{prefix}audit"' in page
    assert f'action="{prefix}login"' in page


async def test_an_older_consoles_cookie_is_not_this_ones(console_app: ConsoleUnderTest) -> None:
    """Before the console had its own address its cookie was `batchmove_<port>`, Path=/: a
    browser still holding one (12 h) sends it with this console's; it is not mistaken for it."""
    c = console_app
    c.client.session.cookie_jar.update_cookies({f"batchmove_{c.client.server.port}": "stale"})
    r = await c.client.get(f"/?key={KEY}")
    assert r.status == 200
    assert 'id="upload-form"' in await r.text()
    assert (await c.client.get("/api/me")).status == 200


def test_the_id_is_the_workspaces_and_survives_a_restart(tmp_path: Path) -> None:
    first = instance_id(tmp_path)
    assert first == instance_id(tmp_path)  # a console started again keeps its address
    assert (tmp_path / INSTANCE_FILE).stat().st_mode & 0o077 == 0
    other = tmp_path / "other"
    other.mkdir()
    assert instance_id(other) != first
    (other / INSTANCE_FILE).write_text("../../etc\n")
    with pytest.raises(UsageError, match="does not hold a console id"):
        instance_id(other)
