"""The library's messages, as the page shows them: every one the library writes for a row, a
target, a plan or a run has a catalogue entry, in both languages, with no server path and no
command-line wording."""

from __future__ import annotations

import re

import pytest

from batchmove import api
from batchmove.console import errtext, messages
from batchmove.console.errtext import MEANING_ZH
from batchmove.console.messages import CATALOGUE, detail, known, result, say, strip_paths
from batchmove.intake import rowcheck, tolerant
from batchmove.wechat.errcodes import ERRCODES

ROW_REASONS = [v for k, v in vars(rowcheck).items()
               if k.isupper() and isinstance(v, str) and " " in v and k != "BLANK"]
LIBRARY = [
    *ROW_REASONS, tolerant.UNCLOSED, tolerant.too_many_cells(5, 3)
    if hasattr(tolerant, "too_many_cells") else "row has 5 cells, the header has 3",
    "same as row 12", "conflict: row 7 asks for group 销售",
    "group id 9 does not exist on this account", "ambiguous group name 'A': held by groups [3, 4]",
    "tag ids [7] do not exist on this account",
    "group '新组' does not exist; allow creating it with --create-groups",
    "cannot create group '新组': invalid group name",
    "untagging adds calls that depend on the users' current tags (one tag at a time)",
    "some rows target group 1 (黑名单, the blacklist)", "3 new groups would be created",
    "40 rows have a target group that cannot be used",
    "the account would have 98 groups, close to the limit",
    "5 rows target group 1 (黑名单, the blacklist) via '黑名单'; nothing was sent. Pass "
    "--allow-blacklist (or allow_blacklist = true) if that is really meant",
    "stopped: WeChat errcode 40164 from token: invalid ip 1.2.3.4 (12 moved, 3 pending)",
    "errcode 40003: invalid openid", "no target of this plan can be used",
    "batchmove: no group named 没有这个组",
    "errcode 43004: not a follower of this account (user/info/batchget answered subscribe 0);"
    " not moved",
    "not moved: the snapshot could not read this user (gave up after 6 attempts: system error)",
    "sent 2 times, never answered as WeChat documents (no answer within 1s); read back: now in"
    " group 0",
    "sent 2 times, never answered as WeChat documents (no answer within 1s)",
    "stopped: unexpected answer from groups/get: `groups` is missing (300 pending)",
    "stopped: unexpected answer from groups/get: the body is not a JSON object (HTTP 200, "
    "text/html, 80 bytes) (300 pending)",
    "stopped: WeChat never answered the moves of 300 rows and reading them back failed; run the"
    " same command again to read them back (300 unknown)",
]
_CLI = re.compile(r"--[a-z]|run the same command|batchmove (run|plan|serve)")
_LATIN_WORD = re.compile(r"[A-Za-z]{3,}")
# what the Chinese page may keep in Latin letters: names of things, not sentences
ALLOWED_LATIN = {"openid", "errcode", "failed", "csv", "tsv", "txt", "xlsx", "xlsm", "CSV",
                 "XLSX", "API", "ID", "invalid"}


@pytest.mark.parametrize("text", LIBRARY)
def test_every_library_message_is_in_the_catalogue(text: str) -> None:
    assert known(text), text
    for lang in ("en", "zh"):
        shown = say(text, lang)
        assert not _CLI.search(shown), shown
    zh = say(text, "zh")
    latin = set(_LATIN_WORD.findall(re.sub(r"'[^']*'|\S+/\S+|\[[^]]*\]", "", zh)))
    assert latin <= ALLOWED_LATIN, (text, zh)  # WeChat's own errmsg included: never shown


def test_every_errcode_of_the_table_has_its_meaning_in_both_languages() -> None:
    assert set(MEANING_ZH) == set(ERRCODES)
    for code, entry in ERRCODES.items():
        assert errtext.meaning(code, "en") == entry.meaning == api.errcode_meaning(code)
        zh = errtext.meaning(code, "zh")
        assert re.search(r"[\u4e00-\u9fff]", zh), code
        assert set(_LATIN_WORD.findall(zh)) <= {"openid", "AppID", "AppSecret", "POST"}, zh
    assert api.errcode_meaning(99999) is None
    assert "不认识" in errtext.meaning(99999, "zh")


@pytest.mark.parametrize(("text", "en", "zh"), [
    ("stopped: WeChat errcode 40164 from token: invalid ip 1.2.3.4, not in whitelist "
     "(12 moved, 3 pending)", "errcode 40164: this machine's IP is not on the account's "
     "whitelist", "微信返回错误码 40164：本机的 IP 地址不在公众号的 IP 白名单中"),
    ("errcode 46004: 不存在的用户", "errcode 46004: the user does not exist",
     "错误码 46004：用户不存在"),
    ("errcode 88888: something new", "errcode 88888: a code batchmove does not know",
     "错误码 88888：本工具不认识此错误码"),
    ("WeChat no errcode from groups/get: HTTP 502 Bad Gateway", "HTTP 502 Bad Gateway",
     "微信没有应答")])
def test_wechats_errors_say_what_the_code_means_not_its_errmsg(text: str, en: str,
                                                               zh: str) -> None:
    assert en in say(text, "en")
    assert say(text, "zh").startswith(zh)
    assert not re.search(r"invalid|whitelist|Bad Gateway|something", say(text, "zh"))


def test_the_tooltip_keeps_what_wechat_said_without_server_paths() -> None:
    run = {"state": "failed", "message": "batchmove: WeChat errcode 40164 from token: invalid "
           "ip (see /srv/runs/20261201-104512-3f9a/console.log)"}
    assert "本机的 IP 地址" in result(run, "zh")
    assert detail(run) == "WeChat errcode 40164 from token: invalid ip (see console.log)"
    assert detail({"state": "running", "message": "x"}) == ""


def test_the_catalogue_has_both_languages_and_places() -> None:
    for pattern, en, zh in CATALOGUE:
        names = set(re.findall(r"\?P<(\w+)>", pattern))
        given = names | {"limit"} | ({"meaning"} if "code" in names else set())
        assert set(re.findall(r"{(\w+)}", en)) <= given, pattern
        assert set(re.findall(r"{(\w+)}", zh)) <= given, pattern
        assert re.search(r"[\u4e00-\u9fff]", zh), pattern


def test_server_paths_become_file_names() -> None:
    text = "cannot read /srv/batchmove/runs/20261201-104512-3f9a/input.xlsx: bad zip"
    assert strip_paths(text) == "cannot read input.xlsx: bad zip"
    assert "/srv" not in say(text, "en")


def test_an_unknown_message_is_english_or_a_chinese_sentence() -> None:
    assert say("something nobody wrote down", "en") == "something nobody wrote down"
    assert re.search(r"[\u4e00-\u9fff]", say("something nobody wrote down", "zh"))


@pytest.mark.parametrize(("run", "en", "zh"), [
    ({"state": "finished", "counts": {"moved": 3}}, "Finished.", "已完成。"),
    ({"state": "finished", "counts": {"failed": 1}}, "some rows failed", "部分行失败"),
    ({"state": "stopped", "stop_reason": "daily_quota"}, "Press Resume", "继续"),
    ({"state": "stopped", "stop_reason": "sigterm"}, "Press Resume", "继续"),
    ({"state": "running"}, "", "")])
def test_a_runs_result_is_a_sentence_for_a_person(run: dict[str, object], en: str,
                                                   zh: str) -> None:
    assert en in result(run, "en")
    assert zh in result(run, "zh")
    assert not _CLI.search(result(run, "en"))


def test_the_module_names_no_command_line_option_in_what_it_shows() -> None:
    shown = [en for _, en, _ in CATALOGUE] + [zh for _, _, zh in CATALOGUE]
    assert not [s for s in shown if _CLI.search(s)]
    assert messages.LOG.name == "batchmove.console"
