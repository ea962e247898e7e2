"""The library's messages as the page shows them: in the page's language, without command-line
wording, without server paths.

batchmove's messages are English sentences written for a terminal (row reasons, plan warnings,
why a plan cannot run, a run's verdict, WeChat's errors). The page never shows them raw: each
goes through `say`, which matches it against the catalogue below (one pattern per message the
library writes, with its values captured) and answers with the English and Chinese wording
for a person at a web page ("press Resume", not "run the same command again";
"Create missing groups", not `--create-groups`). Server paths are cut to file names first.
A message the catalogue does not know is shown in English, and in Chinese as a general
sentence (tests/console/test_messages.py checks the catalogue covers the library's messages).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from batchmove.console import errtext
from batchmove.models import RowStatus

LOG = logging.getLogger("batchmove.console")
_PATH = re.compile(r"(?<![\w.])/(?:[^\s/:;,'\"()]+/)+([^\s/:;,'\"()]+)")
_BATCHMOVE = re.compile(r"^batchmove: ")
_UNKNOWN = ("{text}", "操作未能完成（详细原因请切换到英文页面查看）。")

# (pattern, English, Chinese): the first match wins; `{name}` are the pattern's groups
CATALOGUE: list[tuple[str, str, str]] = [
    # row reasons (intake/rowcheck.py, intake/tolerant.py)
    (r"missing openid", "missing openid", "缺少 openid"),
    (r"openid looks like a formula", "openid looks like a formula", "openid 看起来像公式"),
    (r"openid looks like a URL", "openid looks like a URL", "openid 看起来像网址"),
    (r"openid is longer than (?P<n>\d+) characters", "openid is longer than {n} characters",
     "openid 超过 {n} 个字符"),
    (r"openid is shorter than (?P<n>\d+) characters", "openid is shorter than {n} characters",
     "openid 少于 {n} 个字符"),
    (r"openid may contain only letters, digits, '_' and '-'",
     "openid may contain only letters, digits, '_' and '-'",
     "openid 只能包含字母、数字、“_”和“-”"),
    (r"missing group id", "missing group id", "缺少分组 ID"),
    (r"group id must be a whole number >= 0", "group id must be a whole number >= 0",
     "分组 ID 必须是不小于 0 的整数"),
    (r"group id is too large", "group id is too large", "分组 ID 过大"),
    (r"missing group name", "missing group name", "缺少分组名称"),
    (r"group name looks like a formula", "group name looks like a formula",
     "分组名称看起来像公式"),
    (r"group name is longer than (?P<n>\d+) characters",
     "group name is longer than {n} characters", "分组名称超过 {n} 个字符"),
    (r"group name contains control characters", "group name contains control characters",
     "分组名称包含控制字符"),
    (r"tag ids must be whole numbers >= 0 separated by ';'",
     "tag ids must be whole numbers >= 0 separated by ';'",
     "标签 ID 必须是以“;”分隔的非负整数"),
    (r"same as row (?P<row>\d+)", "same as row {row}", "与第 {row} 行相同"),
    (r"conflict: row (?P<row>\d+) asks for group (?P<group>.+)",
     "conflict: row {row} asks for group {group}", "冲突：第 {row} 行要求移到分组 {group}"),
    (r"conflict", "conflict: the same openid asks for two targets",
     "冲突：同一 openid 要求移到两个不同目标"),
    (r"row has (?P<cells>\d+) cells, the header has (?P<width>\d+)",
     "the row has {cells} cells, the header has {width}",
     "该行有 {cells} 个单元格，表头只有 {width} 个"),
    (r"a quoted cell is not closed on its line", "a quoted cell is not closed on its line",
     "带引号的单元格在本行没有结束"),
    # unusable targets (engine/resolver.py)
    (r"group id (?P<id>\d+) does not exist on this account",
     "group id {id} does not exist on this account", "公众号没有 ID 为 {id} 的分组"),
    (r"ambiguous group name (?P<name>.+): held by groups (?P<ids>.+)",
     "ambiguous group name {name}: held by groups {ids}",
     "分组名称 {name} 不唯一：分组 {ids} 都用这个名称"),
    (r"tag ids (?P<ids>.+) do not exist on this account",
     "tag ids {ids} do not exist on this account", "公众号没有这些标签 ID：{ids}"),
    (r"group (?P<name>.+) does not exist; allow creating it with --create-groups",
     "group {name} does not exist; tick “Create missing groups” to create it",
     "分组 {name} 不存在；勾选“创建不存在的分组”即可创建"),
    (r"cannot create group (?P<name>.+?): (?P<why>.+)", "cannot create group {name}: {why}",
     "无法创建分组 {name}：{why}"),
    # plan warnings (engine/planner.py)
    (r"untagging adds calls that depend on the users' current tags.*",
     "untagging adds calls that depend on the users' current tags",
     "移除标签所需的调用次数取决于用户当前的标签"),
    (r"some rows target group 1 \(黑名单, the blacklist\)",
     "some rows target group 1 (黑名单, the blacklist)", "有些行的目标是分组 1（黑名单）"),
    (r"(?P<n>\d+) new groups would be created", "{n} new groups would be created",
     "将创建 {n} 个新分组"),
    (r"(?P<n>\d+) rows have a target group that cannot be used",
     "{n} rows have a target group that cannot be used", "{n} 行的目标分组无法使用"),
    (r"the account would have (?P<n>\d+) groups, close to the limit",
     "the account would have {n} groups, close to the limit", "公众号将有 {n} 个分组，接近上限"),
    # why a plan cannot run
    (r"no target of this plan can be used", "no target of this plan can be used: nothing "
     "would move", "此计划没有可用的目标：不会移动任何用户"),
    (r"(?P<n>\d+) rows target group 1 \(黑名单, the blacklist\) via (?P<t>.+); nothing was "
     r"sent\..*", "{n} rows target group 1 (黑名单, the blacklist) via {t}; nothing was sent. "
     "Moving users into the blacklist must be allowed in the job's settings",
     "{n} 行经由 {t} 指向分组 1（黑名单）；未发送任何请求。移入黑名单须在任务设置中允许"),
    (r"no plan", "no plan", "没有计划"),
    (r"the plan cannot run", "the plan cannot run", "此计划无法运行"),
    # rows WeChat's answers settled (engine/moves.py, engine/settle.py, wechat/answers.py)
    (r"(?:errcode 43004: )?not a follower of this account \(user/info/batchget answered "
     r"subscribe 0\); not moved", "not a follower of this account: not moved",
     "不是此公众号的关注者：未移动"),
    (r"(?:errcode (?P<code>-?\d+): )?not moved: the snapshot could not read this user "
     r"\((?P<why>.*)\)", "not moved: the user's group or tags before the run could not be "
     "read ({why})", "未移动：无法读取该用户移动前的分组或标签"),
    (r"(?:errcode (?P<code>-?\d+): )?sent (?P<n>\d+) times, never answered as WeChat "
     r"documents \((?P<why>.*?)\); read back: (?P<now>.*)",
     "sent {n} times, never answered ({why}); read back: {now}",
     "已发送 {n} 次，均未获应答；回读结果：'{now}'"),
    (r"(?:errcode (?P<code>-?\d+): )?sent (?P<n>\d+) times, never answered as WeChat "
     r"documents \((?P<why>.*)\)", "sent {n} times, never answered ({why}): to be read back",
     "已发送 {n} 次，均未获应答：待回读确认"),
    (r"(?:stopped: )?unexpected answer from (?P<where>\S+): `(?P<field>[^`]+)` (?P<what>.*?)"
     r"(?: \((?P<tally>[^)]*)\))?", "WeChat's answer from {where} is not what it must be: "
     "`{field}` {what}", "微信接口 {where} 的应答不符合约定：字段 '{field}' 缺失或类型不符"),
    (r"(?:stopped: )?unexpected answer from (?P<where>\S+): (?P<what>.*?)"
     r"(?: \((?P<tally>[^)]*)\))?", "WeChat's answer from {where} is not what it must be: "
     "{what}", "微信接口 {where} 的应答不符合约定"),
    (r"stopped: WeChat never answered the moves of (?P<n>\d+) rows and reading them back "
     r"failed.*", "WeChat never answered the moves of {n} rows and reading them back failed: "
     "press Resume to read them back",
     "微信未应答 {n} 行的移动请求，回读也失败：请按“继续”回读确认"),
    # WeChat and the network (errors.ApiError)
    # ({meaning}: the errcode's, from the one errcode table, in the page's language; WeChat's
    # own errmsg stays in the downloads and the message's tooltip)
    (r"(?:stopped: )?WeChat errcode (?P<code>-?\d+)(?: from (?P<where>\S+))?: (?P<msg>.*?)"
     r"(?: \((?P<tally>[^)]*)\))?",
     "WeChat answered errcode {code}: {meaning}", "微信返回错误码 {code}：{meaning}"),
    (r"(?:stopped: )?WeChat no errcode(?: from (?P<where>\S+))?: (?P<msg>.*?)"
     r"(?: \((?P<tally>[^)]*)\))?",
     "WeChat did not answer: {msg}", "微信没有应答（网络或微信服务器出了问题）"),
    (r"errcode (?P<code>-?\d+): (?P<msg>.*)", "errcode {code}: {meaning}",
     "错误码 {code}：{meaning}"),
    # the console's own refusals
    (r"overlap", "other runs on this account move some of these users: acknowledge it to "
     "approve", "此公众号上的其他任务也在移动其中部分用户：确认知悉后才能批准"),
    (r"overlap acknowledged: (?P<what>.+)", "overlap acknowledged: {what}",
     "已确认与其他任务重叠：{what}"),
    (r"stale", "the input or settings changed since the plan was shown",
     "自显示计划以来，输入或设置已更改"),
    (r"four eyes: .*", "four eyes: a plan is approved by someone other than the person who "
     "submitted it", "四眼原则：计划须由提交人以外的人批准"),
    (r"the run is (?P<state>\w+), not awaiting approval",
     "the run is {state}, not awaiting approval", "任务状态为“{state}”，不在待批准状态"),
    (r"the run was approved by someone else meanwhile",
     "someone else approved this run meanwhile", "其他人已先批准了此任务"),
    (r"the run was approved meanwhile", "the run was approved meanwhile",
     "此任务已被批准"),
    (r"another process is running this run", "another process is running this run",
     "另一个进程正在运行此任务"),
    (r"this plan cannot run: (?P<why>.+)", "this plan cannot run: {why}",
     "此计划无法运行：{why}"),
    (r"the run is (?P<state>\w+): only a plan can be discarded",
     "the run is {state}: only a plan can be discarded", "任务状态为“{state}”：只能放弃计划"),
    (r"the run is (?P<state>\w+): wait for it to end", "the run is {state}: wait for it to end",
     "任务状态为“{state}”：请等待其结束"),
    (r"only its submitter or an approver can discard a plan",
     "only its submitter or an approver can discard a plan", "只有提交人或批准人可以放弃计划"),
    (r"(?P<who>.+) \((?P<role>\w+)\) may not (?P<what>\w+): .*",
     "{who} ({role}) may not do this", "{who}（{role}）无权执行此操作"),
    (r"the run is not running here", "the run is not running here", "此任务不在本控制台运行"),
    (r"only a stopped run started from this console can be resumed here",
     "only a stopped run started from this console can be resumed here",
     "只有从本控制台启动并已停止的任务可以在此继续"),
    (r"only a run that moved users can be verified", "only a run that moved users can be "
     "verified", "只有移动过用户的任务可以核对"),
    (r"only a finished export's file can be planned",
     "only a finished export's file can be planned", "只有已完成导出的文件可以生成计划"),
    (r"choose a spreadsheet: .*", "choose a spreadsheet: .csv .tsv .txt .xlsx or .xlsm",
     "请选择表格文件：.csv .tsv .txt .xlsx 或 .xlsm"),
    (r"the file is larger than the console accepts.*",
     "the file is larger than this console accepts ({limit} MB)",
     "文件超过了本控制台允许的大小（{limit} MB）"),
    (r"no file: .*", "no file was sent", "没有收到文件"),
    (r"the form field (?P<field>\w+) is too long", "the form field {field} is too long",
     "表单字段 {field} 太长"),
    (r"backend must be .*", "choose user groups or user tags", "请选择用户分组或用户标签"),
    (r"target must be .*", "choose what the target column holds", "请选择目标列的内容"),
    (r"rate must be a number.*", "calls per second must be a number", "每秒调用次数必须是数字"),
    (r"format must be .*", "choose CSV or XLSX", "请选择 CSV 或 XLSX"),
    (r"no group named (?P<name>.+)", "no group named {name}", "没有名为 {name} 的分组"),
    (r"no tag named (?P<name>.+)", "no tag named {name}", "没有名为 {name} 的标签"),
    (r"sign in first.*", "sign in first", "请先登录"),
    (r"cross-origin request refused", "this request came from another site and was refused",
     "来自其他网站的请求已被拒绝"),
]
_COMPILED = [(re.compile(p, re.DOTALL), en, zh) for p, en, zh in CATALOGUE]


def strip_paths(text: str) -> str:
    """Server paths -> their file names (`/srv/runs/2026.../input.xlsx` -> `input.xlsx`)."""
    return _PATH.sub(lambda m: m.group(1), text)


def say(text: str | None, lang: str, **context: Any) -> str:
    """A message of the library (or of the console) as the page shows it in `lang`."""
    if not text:
        return ""
    clean = original(text)
    for pattern, en, zh in _COMPILED:
        found = pattern.fullmatch(clean)
        if found:
            groups = {k: v for k, v in found.groupdict().items() if v}
            if "why" in groups:  # a message inside a message: said in the language too
                groups["why"] = say(groups["why"], lang)
            if "code" in groups:
                groups["meaning"] = errtext.meaning(groups["code"], lang)
            values = _Values({**context, **groups})
            return (zh if lang == "zh" else en).format_map(values)
    LOG.info("no catalogue entry for a message: %s", clean[:200])
    return clean if lang != "zh" else _UNKNOWN[1]


def original(text: str | None) -> str:
    """A message as the library wrote it (WeChat's errmsg included), without server paths:
    for a tooltip beside what `say` shows."""
    return _BATCHMOVE.sub("", strip_paths(str(text or "")).strip())


def known(text: str) -> bool:
    """Does the catalogue have this message?"""
    clean = _BATCHMOVE.sub("", strip_paths(text).strip())
    return any(p.fullmatch(clean) for p, _, _ in _COMPILED)


class _Values(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "?"


def said(data: Mapping[str, Any], lang: str) -> dict[str, Any]:
    """A JSON error body with `text`: its `error` as the page shows it."""
    return {**data, "text": say(str(data.get("error", "")), lang)}


_RESULTS = {  # a run's verdict, from its state and stop reason (never its terminal wording)
    "done": ("Finished.", "已完成。"),
    "failures": ("Finished; some rows failed: see failed.csv.",
                 "已完成；部分行失败：请查看 failed.csv。"),
    "daily_quota": ("Stopped: the daily API quota is used up. Press Resume after it resets.",
                    "已停止：今日 API 配额已用完。配额重置后点击“继续”。"),
    "failure_threshold": ("Stopped: too many rows failed (see failed.csv). Fix the cause and "
                          "press Resume.",
                          "已停止：失败的行太多（见 failed.csv）。排除原因后点击“继续”。"),
    "sigint": ("Stopped. Press Resume to continue.", "已停止。点击“继续”可接着运行。"),
    "sigterm": ("Stopped. Press Resume to continue.", "已停止。点击“继续”可接着运行。"),
    "pending": ("Stopped with rows still pending. Press Resume to continue.",
                "已停止，仍有待处理的行。点击“继续”可接着运行。"),
    "refused": ("Another process is running this run.", "另一个进程正在运行此任务。"),
}


def result(run: Mapping[str, Any], lang: str) -> str:
    """A run's (or an export's) result as a sentence, or "" while it runs or is planned."""
    state, reason = run.get("state"), run.get("stop_reason")
    index = 1 if lang == "zh" else 0
    if state in ("running", "planned") or (run.get("kind") == "export" and state != "failed"):
        return ""
    if state == "failed" or reason == "fatal":
        return say(run.get("message"), lang)
    counts = run.get("counts") or {}
    if state == "stopped":
        key = reason if reason in _RESULTS else "pending"
        return _RESULTS[key][index]
    failures = counts.get(RowStatus.FAILED) or counts.get(RowStatus.INVALID)
    return _RESULTS["failures" if failures else "done"][index]


def detail(run: Mapping[str, Any]) -> str:
    """The tooltip of a run's result: the run's own message as it was written (WeChat's
    errmsg in it), "" when there is no result to explain."""
    return original(run.get("message")) if result(run, "en") else ""
