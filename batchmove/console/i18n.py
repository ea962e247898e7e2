"""The console's words in English and Simplified Chinese, chosen by the browser's
Accept-Language (a `zh*` language ranked above every `en*` one gives Chinese)."""

from __future__ import annotations

from collections.abc import Callable

LANGUAGES = ("en", "zh")

_TEXT: dict[str, tuple[str, str]] = {
    "title": ("batchmove console", "batchmove 控制台"),
    "nav.home": ("New run & history", "新任务与历史"),
    "upload.title": ("Upload a spreadsheet", "上传表格"),
    "upload.drop": ("Drop a CSV or XLSX file here, or choose one",
                    "将 CSV 或 XLSX 文件拖到这里，或选择文件"),
    "upload.choose": ("Choose file", "选择文件"),
    "upload.backend": ("Backend", "方式"),
    "upload.backend.groups": ("user groups", "用户分组"),
    "upload.backend.tags": ("user tags", "用户标签"),
    "upload.target": ("Target column holds", "目标列内容"),
    "upload.target.auto": ("detect from the header", "按表头自动识别"),
    "upload.target.id": ("group ids", "分组 ID"),
    "upload.target.name": ("group names", "分组名称"),
    "upload.target.set": ("tag id sets (tags)", "标签 ID 集合（标签）"),
    "upload.create": ("Create missing groups", "创建不存在的分组"),
    "upload.rate": ("Calls per second", "每秒调用次数"),
    "upload.submit": ("Upload and plan", "上传并生成计划"),
    "upload.planning": ("Planning… (large files take a few seconds)",
                        "正在生成计划…（大文件需要几秒钟）"),
    "jobs.title": ("Or plan a job file", "或使用任务文件"),
    "jobs.none": ("No job files in the jobs folder.", "任务文件夹中没有任务文件。"),
    "jobs.plan": ("Plan", "生成计划"),
    "history.title": ("Runs in this workspace", "工作区中的任务"),
    "history.none": ("No runs yet.", "还没有任务。"),
    "col.run": ("Run", "任务"),
    "col.state": ("State", "状态"),
    "col.input": ("Input", "输入文件"),
    "col.counts": ("Counts", "数量"),
    "col.started": ("Started", "开始"),
    "col.finished": ("Finished", "结束"),
    "col.source": ("From", "来源"),
    "state.planned": ("planned, awaiting approval", "已计划，待批准"),
    "state.running": ("running", "运行中"),
    "state.finished": ("finished", "已完成"),
    "state.stopped": ("stopped, resume", "已停止，可继续"),
    "state.failed": ("failed", "失败"),
    "plan.title": ("Plan", "计划"),
    "plan.rows": ("Rows", "行"),
    "plan.valid": ("valid", "有效"),
    "plan.invalid": ("invalid", "无效"),
    "plan.duplicate": ("duplicate", "重复"),
    "plan.invalid_title": ("Invalid and duplicate rows", "无效与重复的行"),
    "plan.failed_title": ("Invalid, duplicate and failed rows", "无效、重复与失败的行"),
    "plan.failed": ("failed", "失败"),
    "plan.existing": ("existing group", "已有分组"),
    "plan.row": ("Row", "行号"),
    "plan.openid": ("openid", "openid"),
    "plan.target": ("Target", "目标"),
    "plan.reason": ("Reason", "原因"),
    "plan.prev": ("Previous", "上一页"),
    "plan.next": ("Next", "下一页"),
    "plan.targets": ("Users per target", "各目标的用户数"),
    "plan.group": ("Group", "分组"),
    "plan.users": ("Users", "用户"),
    "plan.new": ("new: will be created", "新建"),
    "plan.unresolved": ("cannot be used", "无法使用"),
    "plan.calls": ("API calls", "API 调用"),
    "plan.total": ("total", "合计"),
    "plan.snapshot_members": (
        "Snapshot from tag member lists: {calls} user/tag/get calls instead of {other} "
        "user/info/batchget", "快照读取标签成员列表：{calls} 次 user/tag/get，而非 {other} 次 "
        "user/info/batchget"),
    "plan.snapshot_batchget": (
        "Snapshot with user/info/batchget: {calls} calls (tag member lists would take {other} "
        "user/tag/get)", "快照使用 user/info/batchget：{calls} 次（标签成员列表需 {other} 次 "
        "user/tag/get）"),
    "plan.eta": ("Estimated duration", "预计耗时"),
    "plan.quota": ("Daily quota", "每日配额"),
    "plan.fits": ("fits today", "今日可完成"),
    "plan.days": ("needs {n} days", "需要 {n} 天"),
    "plan.needed": ("needed", "需要"),
    "plan.remain": ("left today", "今日剩余"),
    "plan.warnings": ("Warnings", "警告"),
    "plan.blocked": ("This job cannot run", "此任务无法运行"),
    "plan.approve": ("Approve and run", "批准并运行"),
    "plan.stale": ("The input or settings changed since this plan was shown: here is the plan "
                   "again. Check it and approve again.",
                   "自显示计划以来，输入或设置已更改：以下是新的计划。请检查后重新批准。"),
    "plan.users_to_move": ("Users to move", "待移动用户"),
    "run.progress": ("Progress", "进度"),
    "run.phase": ("Phase", "阶段"),
    "run.moved": ("moved", "已移动"),
    "run.failed": ("failed", "失败"),
    "run.pending": ("pending", "待处理"),
    "run.already": ("already there", "已在目标"),
    "run.speed": ("users/s", "用户/秒"),
    "run.eta": ("ETA", "剩余时间"),
    "run.stop": ("Stop", "停止"),
    "run.resume": ("Resume", "继续"),
    "run.verify": ("Verify", "核对"),
    "run.rollback": ("Roll back", "回滚"),
    "run.downloads": ("Downloads", "下载"),
    "run.message": ("Result", "结果"),
    "run.exit": ("exit code", "退出码"),
    "run.verified": ("Verification", "核对结果"),
    "run.stopped_note": ("The run stopped with rows still pending; resuming continues where it "
                         "stopped.", "任务停止时仍有待处理的行；继续运行会从停止处接着执行。"),
    "phase.loading": ("loading the input", "读取输入"),
    "phase.preparing": ("resolving groups", "解析分组"),
    "phase.snapshot": ("recording current groups", "记录当前分组"),
    "phase.moving": ("moving users", "移动用户"),
    "phase.reports": ("writing reports", "生成报告"),
    "phase.verifying": ("verifying", "核对中"),
    "phase.done": ("done", "完成"),
    "phase.stopped": ("stopped", "已停止"),
    "phase.waiting": ("waiting", "等待中"),
    "error.title": ("Something went wrong", "出错了"),
    "unauthorized": ("This console needs its key: open the address printed by "
                     "`batchmove serve` (it ends in ?key=…).",
                     "需要访问密钥：请打开 `batchmove serve` 输出的地址（以 ?key=… 结尾）。"),
    "seconds": ("{n} s", "{n} 秒"),
    "count.moved": ("moved", "已移动"),
    "count.already": ("already there", "已在目标"),
    "count.failed": ("failed", "失败"),
    "count.invalid": ("invalid", "无效"),
    "count.duplicate": ("duplicate", "重复"),
    "count.unknown": ("unknown, to read back", "结果未知，待回读"),
    "count.pending": ("pending", "待处理"),
    "upload.limit": ("CSV, TSV or XLSX, up to {n} MB", "CSV、TSV 或 XLSX，最大 {n} MB"),
    "source.upload": ("upload", "上传"),
    "source.job": ("job file", "任务文件"),
    "source.rollback": ("rollback", "回滚"),
    "source.cli": ("command line", "命令行"),
    "source.export": ("export", "导出"),
    "export.title": ("Export the account's followers", "导出公众号的粉丝"),
    "export.groups": ("Only these groups (names or ids, comma-separated)",
                      "仅这些分组（名称或 ID，逗号分隔）"),
    "export.tags": ("Only these tags (names or ids, comma-separated)",
                    "仅这些标签（名称或 ID，逗号分隔）"),
    "export.format": ("File", "文件格式"),
    "export.hint": ("Empty: every follower. The file is an input as it is.",
                    "留空：全部粉丝。导出的文件可直接作为输入。"),
    "export.submit": ("Start the export", "开始导出"),
    "export.plan": ("Plan a run from this file", "用此文件生成计划"),
}

#: the words the page's script needs (phases, states, labels of live figures)
JS_KEYS = tuple(k for k in _TEXT if k.startswith(("phase.", "state.", "run.", "plan.")))


def language(accept: str) -> str:
    """'zh' when the browser ranks a Chinese language above any English one, else 'en'."""
    best: dict[str, float] = {}
    for part in accept.split(","):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        lang = tag.strip().lower().split("-")[0]
        if lang in LANGUAGES:
            best[lang] = max(best.get(lang, 0.0), quality)
    return "zh" if best.get("zh", 0.0) > best.get("en", 0.0) else "en"


def translator(lang: str) -> Callable[..., str]:
    index = LANGUAGES.index(lang) if lang in LANGUAGES else 0

    def t(key: str, **values: object) -> str:
        text = _TEXT[key][index] if key in _TEXT else key
        return text.format(**values) if values else text

    return t


def js_strings(lang: str) -> dict[str, str]:
    t = translator(lang)
    return {key: t(key) for key in JS_KEYS}
