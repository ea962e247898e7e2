"""The console a team shares, in a real headless Chromium against `batchmove serve --users`
and a `batchmove sandbox` process: a submitter plans, an approver approves (two at once start
one run), the audit log says who did what, the Chinese pages say it in Chinese, axe-core finds
nothing serious, and console A's cookie neither holds a key nor opens console B. Screenshots
of every page in both languages: tests/.screenshots/team-*.png."""

from __future__ import annotations

import http.server
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import pytest

from batchmove.console import add_person
from batchmove.sandbox import sandbox_openids
from tests.support.console import (
    KEY,
    Stage,
    console_in_thread,
    expect,
    run_axe,
    sheet,
    shot,
    sign_in,
    write_defaults,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]
OPENIDS = sandbox_openids(2000, 0)
RUN_TIMEOUT_MS = 90_000
PEOPLE = {"alice": "submitter", "bob": "approver", "erin": "approver"}
# Latin words a Chinese page may show: names of things (formats, identifiers), never sentences
NAMES = {"openid", "API", "CSV", "TSV", "XLSX", "ID", "batchmove", "errcode", "MB", "TLS",
         "JSON", "Lines", "user", "info", "batchget", "groups", "update", "members", "tag",
         "get", "batchtagging", "min", "s", "h"}
_OPENID = re.compile(r"\bo[A-Za-z0-9_-]{20,}")
_FILE = re.compile(r"[\w.-]+\.(?:csv|xlsx|json|jsonl|tsv)\b")
_ENDPOINT = re.compile(r"\b[a-z]+(?:/[a-z_]+)+\b")
_WORDS = re.compile(r"[A-Za-z]+(?:[ '-][A-Za-z]+)*")
#: the headline's "moved" and the per-target table's "moved" column summed, read at once
ADDS_UP = ("() => [Number(document.getElementById('fig-moved').textContent), "
           "Array.from(document.querySelectorAll('#targets-progress tbody tr'))"
           ".reduce((sum, row) => sum + Number(row.cells[2].textContent), 0)]")


def english_left(text: str, allowed: set[str]) -> list[str]:
    """What of a page's text is English: Latin words outside openids, file names, endpoint
    names and `allowed` (job names, people, ids), and any run of two Latin words or more."""
    rest = _ENDPOINT.sub(" ", _FILE.sub(" ", _OPENID.sub(" ", text)))
    rest = re.sub(r"\d{8}-\d{6}-[0-9a-f]{4}|\b\d+\.\d+\.\d+\S*", " ", rest)  # ids, version
    found = []
    for words in _WORDS.findall(rest):
        known = {n.lower() for n in NAMES | allowed}
        parts = [w for w in re.split(r"[ '-]", words) if w.lower() not in known]
        if parts:
            found.append(words)
    return found


@pytest.fixture
def team(tmp_path: Path) -> Iterator[tuple[Stage, dict[str, str]]]:
    (tmp_path / "jobs").mkdir()
    users = tmp_path / "users.toml"
    secrets = {n: add_person(users, n, r, four_eyes=True) for n, r in PEOPLE.items()}
    stage = Stage(tmp_path, ["--users", "2000", "--group", "销售", "--latency-ms", "20"],
                  extra=["--users", str(users)])
    try:
        stage.start_sandbox()
        stage.start_console()
        yield stage, secrets
    finally:
        stage.close()
        from tests.console.conftest import _stop_children

        _stop_children(tmp_path / "runs")


def person(browser: Any, lang: str) -> Any:
    context = browser.new_context(locale=lang, bypass_csp=True,
                                  viewport={"width": 1280, "height": 900})
    return context.new_page()


def check_page(page: Any, name: str, lang: str, allowed: set[str]) -> None:
    """Screenshot it, axe-core on it, and in Chinese no English left on it."""
    shot(page, f"team-{name}-{lang}")
    violations = run_axe(page)
    assert not violations, violations
    if lang == "zh-CN":
        text = page.inner_text("body")
        for cell in page.locator("td.mono").all_inner_texts():  # openid cells, as typed
            text = text.replace(cell, " ") if cell.strip() else text
        left = english_left(text, allowed)
        assert not left, left


@pytest.mark.parametrize("lang", ["en-US", "zh-CN"])
def test_submitter_plans_approver_approves_in_both_languages(
        browser: Any, team: tuple[Stage, dict[str, str]], lang: str) -> None:
    stage, secrets = team
    alice, bob = person(browser, lang), person(browser, lang)
    try:
        alice.goto(stage.base + "/")
        check_page(alice, "login", lang, set())
        sign_in(alice, stage.base, "alice", secrets["alice"])
        check_page(alice, "home", lang, {"alice"})
        path = stage.root / "名单-analyst.csv"
        path.write_bytes(sheet(OPENIDS[:300], ["销售", "新组"],
                               extra="not an openid,销售\n,新组\n"))
        alice.set_input_files("#file", str(path))
        alice.check("input[name=create_groups]")
        alice.fill("input[name=rate]", "1")  # a run long enough to watch
        alice.click("#upload-submit")
        alice.wait_for_url("**/runs/*", timeout=60_000)
        alice.wait_for_selector("#rows tbody tr")
        assert alice.locator("#approve").count() == 0  # a submitter cannot approve
        expect(alice.locator("#cannot-approve")).to_be_visible()
        allowed = {"alice", "analyst"}
        check_page(alice, "plan", lang, allowed)
        run_url = alice.url

        sign_in(bob, stage.base, "bob", secrets["bob"])
        bob.goto(run_url)
        bob.click("#approve")
        bob.wait_for_selector('#run[data-state="running"]', timeout=RUN_TIMEOUT_MS)
        expect(bob.locator("#fig-moved")).to_have_text(re.compile(r"^[1-9]"),
                                                       timeout=RUN_TIMEOUT_MS)
        for _ in range(4):  # the headline and the table come from one count: they add up
            headline, table = bob.evaluate(ADDS_UP)
            assert headline == table, (headline, table)
            bob.wait_for_timeout(400)
        check_page(bob, "progress", lang, allowed | {"bob"})
        bob.wait_for_selector('#run[data-state="finished"]', timeout=RUN_TIMEOUT_MS)
        assert bob.inner_text("#approved-by") == "bob"
        check_page(bob, "finished", lang, allowed | {"bob"})
        moved = int(bob.inner_text("#fig-moved"))
        cells = bob.locator("#targets-progress tbody td.num").all_inner_texts()
        assert moved == 300
        assert sum(int(c) for c in cells[0::4]) == moved  # the per-target column adds up

        bob.goto(stage.base + "/audit")
        rows = bob.locator("#entries tbody tr")
        actions = {(r.locator("td").nth(1).inner_text().split()[0], r.get_attribute(
            "data-action")) for r in rows.all()}
        assert {("alice", "upload"), ("bob", "approve"), ("alice", "login"),
                ("bob", "login")} <= actions
        check_page(bob, "audit", lang, allowed | {"bob"})
    finally:
        alice.context.close()
        bob.context.close()


def test_two_approvals_at_once_start_one_run(browser: Any,
                                             team: tuple[Stage, dict[str, str]]) -> None:
    stage, secrets = team
    alice, bob, erin = (person(browser, "en-US") for _ in range(3))
    try:
        sign_in(alice, stage.base, "alice", secrets["alice"])
        path = stage.root / "twice.csv"
        path.write_bytes(sheet(OPENIDS[:200], ["销售"]))
        alice.set_input_files("#file", str(path))
        alice.click("#upload-submit")
        alice.wait_for_url("**/runs/*", timeout=60_000)
        alice.wait_for_selector("#cannot-approve")
        for page, name in ((bob, "bob"), (erin, "erin")):
            sign_in(page, stage.base, name, secrets[name])
            page.goto(alice.url)
            page.wait_for_selector("#approve")
        bob.evaluate("document.getElementById('approve').click()")
        erin.evaluate("document.getElementById('approve').click()")
        bob.wait_for_selector('#run[data-state="finished"]', timeout=RUN_TIMEOUT_MS)
        erin.wait_for_selector('#run[data-state="finished"], #action-error:not([hidden])',
                               timeout=RUN_TIMEOUT_MS)
        run_dir = stage.root / "runs" / alice.url.rsplit("/", 1)[-1]
        log = (run_dir / "console.log").read_text()
        assert log.count("loaded 200 rows") == 1  # one run
        assert bob.inner_text("#run-state") == "finished"
    finally:
        for page in (alice, bob, erin):
            page.context.close()


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Another server of the host: the Cookie header of each path it was asked for."""

    cookies: ClassVar[dict[str, str]] = {}

    def do_GET(self) -> None:
        _Recorder.cookies[self.path] = self.headers.get("Cookie", "")
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"recorded")

    def log_message(self, *args: Any) -> None:
        pass


def test_the_cookie_of_console_a_is_not_sent_to_console_b_and_holds_no_key(
        browser: Any, stage: Stage) -> None:
    stage.start_sandbox()
    stage.start_console()
    assert stage.sandbox is not None
    assert stage.console is not None
    a = urlsplit(stage.console.url)
    recorder = http.server.HTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=recorder.serve_forever, daemon=True).start()
    elsewhere = f"http://127.0.0.1:{recorder.server_address[1]}"
    received_by_b: list[str] = []
    context = browser.new_context(locale="en-US")
    page = context.new_page()
    try:
        with console_in_thread(stage.root / "runs-b", write_defaults(
                stage.root, stage.sandbox.url), received_by_b) as url_b:
            b = urlsplit(url_b)
            assert b.port != a.port
            assert b.path != a.path
            page.goto(stage.console.url)  # console A, with its key
            [cookie] = context.cookies()
            name = f"batchmove_{a.port}_{a.path.strip('/').removeprefix('c/')}"
            assert (cookie["name"], cookie["path"]) == (name, a.path)
            assert cookie["value"] != KEY  # a session token, never the key
            assert cookie["httpOnly"]
            assert cookie["sameSite"] == "Strict"
            assert page.goto(f"http://127.0.0.1:{b.port}{b.path}").status == 401
            page.goto(f"http://127.0.0.1:{b.port}/")  # B's root, then B's own address
            assert received_by_b
            assert not [c for c in received_by_b if cookie["value"] in c or KEY in c]
            page.goto(f"{elsewhere}/")  # any other server of the host, at its own paths
            assert _Recorder.cookies["/"] == ""
            page.goto(url_b)  # logging into B...
            assert page.goto(f"http://127.0.0.1:{a.port}{a.path}").status == 200  # ...leaves A
            assert page.goto(f"http://127.0.0.1:{b.port}{b.path}").status == 200  # signed in
            assert not [c for c in received_by_b if cookie["value"] in c]
            page.goto(f"{elsewhere}{a.path}x")  # the limit (docs/console.md): a server
            assert cookie["value"] in _Recorder.cookies[f"{a.path}x"]  # that knows A's path
    finally:
        context.close()
        recorder.shutdown()


@pytest.mark.parametrize("lang", ["en-US", "zh-CN"])
def test_a_narrow_screen_and_a_long_file_name_stay_inside_the_page(
        browser: Any, team: tuple[Stage, dict[str, str]], lang: str) -> None:
    stage, secrets = team
    context = browser.new_context(locale=lang, viewport={"width": 400, "height": 800},
                                  bypass_csp=True)
    page = context.new_page()
    try:
        sign_in(page, stage.base, "alice", secrets["alice"])
        path = stage.root / ("很长的文件名-" + "x" * 160 + ".csv")
        path.write_bytes(sheet(OPENIDS[:20], ["销售"], extra="bad,销售\n"))
        page.set_input_files("#file", str(path))
        page.click("#upload-submit")
        page.wait_for_url("**/runs/*", timeout=60_000)
        page.wait_for_selector("#rows tbody tr")
        widths = "[document.documentElement.scrollWidth, window.innerWidth]"
        scroll, inner = page.evaluate(widths)
        assert scroll <= inner, (scroll, inner)  # the rows table scrolls inside its card
        shot(page, f"team-plan-400px-{lang}")
        page.goto(stage.base + "/")
        scroll, inner = page.evaluate(widths)
        assert scroll <= inner, (scroll, inner)  # the long name wraps in the history
        shot(page, f"team-home-400px-{lang}")
        page.keyboard.press("Tab")  # the skip link, then on to the file picker's button
        for _ in range(12):
            if page.evaluate("document.activeElement.id") == "file":
                break
            page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.id") == "file"
        outline = page.evaluate("getComputedStyle(document.getElementById('dropzone'))"
                                ".outlineStyle")
        assert outline != "none"  # the focus shows on the drop zone around it
        assert not run_axe(page)
    finally:
        context.close()
