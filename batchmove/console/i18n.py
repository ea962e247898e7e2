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
    "plan.up_to": ("up to", "最多"),
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
    "seconds": ("{n} s", "{n} 秒"),
    "count.moved": ("moved", "已移动"),
    "count.already": ("already there", "已在目标"),
    "count.failed": ("failed", "失败"),
    "count.invalid": ("invalid", "无效"),
    "count.duplicate": ("duplicate", "重复"),
    "count.unknown": ("unknown, to read back", "结果未知，待回读"),
    "count.pending": ("pending", "待处理"),
    "upload.limit": ("CSV, TSV or XLSX, up to {n} MB", "CSV、TSV 或 XLSX，最大 {n} MB"),
    "upload.file": ("Spreadsheet", "表格文件"),
    "upload.rate_auto": ("automatic: as fast as the account allows",
                         "自动：按公众号允许的最快速度"),
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
    "login.title": ("Sign in", "登录"),
    "login.people": ("Sign in with your name and the secret you were given.",
                     "请输入你的用户名和分配给你的密钥。"),
    "login.key": ("Enter the console's key (printed when the console started).",
                  "请输入控制台的访问密钥（控制台启动时显示）。"),
    "login.name": ("Name", "用户名"),
    "login.secret": ("Secret", "密钥"),
    "login.keyfield": ("Key", "访问密钥"),
    "login.submit": ("Sign in", "登录"),
    "login.wrong": ("Wrong name, secret or key.", "用户名、密钥或访问密钥不正确。"),
    "login.throttled": ("Too many failed attempts from this address: wait a few minutes.",
                        "此地址登录失败次数过多：请几分钟后再试。"),
    "nav.audit": ("Audit log", "审计日志"),
    "nav.settings": ("Settings", "设置"),
    "nav.logout": ("Sign out", "退出登录"),
    "nav.main": ("Main", "主导航"),
    "role.submitter": ("submitter", "提交人"),
    "role.approver": ("approver", "批准人"),
    "role.admin": ("admin", "管理员"),
    "run.discard": ("Discard this plan", "放弃此计划"),
    "run.submitted_by": ("Submitted by", "提交人"),
    "run.approved_by": ("Approved by", "批准人"),
    "run.four_eyes": ("Four eyes: someone other than its submitter approves this plan.",
                      "四眼原则：此计划须由提交人以外的人批准。"),
    "run.cannot_approve": ("Your role cannot approve plans: an approver approves it.",
                           "你的角色不能批准计划：请由批准人批准。"),
    "run.activity": ("Activity", "操作记录"),
    "run.progress_label": ("Users answered of all valid rows", "已处理用户占全部有效行的比例"),
    "conn.lost": ("Connection to the console lost: retrying…", "与控制台的连接已断开：正在重试…"),
    "conn.back": ("Connected again.", "已重新连接。"),
    "plan.chart_label": ("Users per target, biggest first", "各目标的用户数，从多到少"),
    "plan.already": ("already there", "已在目标"),
    "plan.no_target": ("No target of this plan can be used: there is nothing to approve.",
                       "此计划没有可用的目标：没有可批准的内容。"),
    "history.filter": ("Filter", "筛选"),
    "history.all": ("all", "全部"),
    "history.person": ("Person", "人员"),
    "history.since": ("From", "起始日期"),
    "history.until": ("To", "结束日期"),
    "history.apply": ("Apply", "应用"),
    "history.page": ("Page {n} of {pages}", "第 {n} 页，共 {pages} 页"),
    "history.shown": ("{n} of {total} runs", "{total} 个任务中的 {n} 个"),
    "history.none_match": ("No run matches these filters.", "没有符合筛选条件的任务。"),
    "audit.title": ("Audit log", "审计日志"),
    "audit.intact": ("The log is whole: no line was changed or removed.",
                     "日志完整：没有行被修改或删除。"),
    "audit.broken": ("The log was changed on disk at line {n}.", "日志在第 {n} 行被修改过。"),
    "audit.download": ("Download the log (JSON lines)", "下载日志（JSON Lines）"),
    "audit.none": ("Nothing recorded yet.", "尚无记录。"),
    "audit.at": ("Time", "时间"),
    "audit.who": ("Person", "人员"),
    "audit.role": ("Role", "角色"),
    "audit.action": ("Action", "操作"),
    "audit.run": ("Run", "任务"),
    "audit.client": ("Address", "地址"),
    "audit.detail": ("Detail", "详情"),
    "audit.more": ("Older entries", "更早的记录"),
    "action.login": ("signed in", "登录"),
    "action.login_failed": ("failed sign-in", "登录失败"),
    "action.logout": ("signed out", "退出登录"),
    "action.upload": ("uploaded and planned", "上传并生成计划"),
    "action.plan": ("planned", "生成计划"),
    "action.export": ("started an export", "开始导出"),
    "action.approve": ("approved", "批准"),
    "action.approve_refused": ("approval refused", "批准被拒绝"),
    "action.stop": ("stopped", "停止"),
    "action.resume": ("resumed", "继续"),
    "action.verify": ("verified", "核对"),
    "action.rollback": ("rolled back (planned)", "回滚（已生成计划）"),
    "action.discard": ("discarded", "放弃"),
    "action.download": ("downloaded", "下载"),
    "action.end_sessions": ("ended sessions", "结束会话"),
    "settings.title": ("Settings", "设置"),
    "settings.people": ("People", "人员"),
    "settings.sessions": ("open sessions", "活动会话"),
    "settings.end": ("End sessions", "结束会话"),
    "settings.key_mode": ("One access key, one admin. For people with their own names and "
                          "roles, whoever runs the console lists them in a people file and "
                          "starts it again with that file.",
                          "单一访问密钥，仅一名管理员。如需让每个人用自己的名字和角色登录，"
                          "请由运行控制台的人把他们写进人员名单文件，再用该文件重新启动控制台。"),
    "settings.four_eyes": ("Four eyes", "四眼原则"),
    "settings.tls": ("TLS", "TLS 加密"),
    "settings.on": ("on", "开启"),
    "settings.off": ("off", "关闭"),
    "settings.workspace": ("Workspace", "工作区"),
    "settings.addresses": ("Addresses", "访问地址"),
    "settings.upload_limit": ("Upload limit", "上传上限"),
    "error.no_run": ("There is no such run in this workspace.", "工作区中没有这个任务。"),
    "error.forbidden": ("Your role does not allow this page.", "你的角色无权访问此页面。"),
    "col.people": ("People", "人员"),
    "skip": ("Skip to the content", "跳到正文"),
    "overlap.title": ("Other runs on this account move some of the same users",
                      "此公众号上的其他任务也在移动部分相同的用户"),
    "overlap.line": ("{users} users also moved by", "{users} 个用户也由以下任务移动："),
    "overlap.ack": ("I know: approve all the same (recorded in the audit log)",
                    "我已知悉：仍然批准（记录在审计日志中）"),
    "overlap.state.pending": ("awaiting approval", "待批准"),
    "overlap.state.approved": ("approved", "已批准"),
    "overlap.state.running": ("running", "运行中"),
    "account.sharing": ("Sharing the account's rate with {n} other runs.",
                        "与另外 {n} 个任务共享此公众号的调用速率。"),
    "account.queued": ("Queued behind", "排在这些任务之后："),
    "verify.result": ("{checked} checked, {mismatches} no longer where the run put them",
                      "已核对 {checked} 个，其中 {mismatches} 个已不在任务移动到的位置"),
}

#: the words the page's script needs (phases, states, labels of live figures, the banner)
JS_KEYS = tuple(k for k in _TEXT if k.startswith(("phase.", "state.", "run.", "plan.",
                                                   "conn.", "count.", "overlap.")))


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
