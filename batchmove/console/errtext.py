"""What a WeChat errcode means, as the page says it: the meaning from the one errcode table
(`batchmove.api.errcode_meaning`, English) or its Chinese wording below, by errcode.

WeChat's own errmsg ("invalid ip, not in whitelist", "不存在的用户") is in neither language
reliably and says little to a person, so the page shows the meaning and keeps the errmsg for
the downloads (report.csv, failed.csv) and the tooltip of the message.
tests/console/test_messages.py checks every errcode of the table has its Chinese here.
"""

from __future__ import annotations

from batchmove import api

MEANING_ZH: dict[int, str] = {
    -1: "微信系统繁忙：稍后重试",
    40001: "访问令牌无效或不是最新的：刷新一次后仍出现，说明开发者密码（AppSecret）有误",
    40014: "访问令牌无效：刷新一次",
    42001: "访问令牌已过期：刷新一次",
    40013: "开发者 ID（AppID）有误",
    40125: "开发者密码（AppSecret）有误",
    40164: "本机的 IP 地址不在公众号的 IP 白名单中",
    41001: "请求没有带访问令牌：程序错误或配置有误",
    41002: "请求没有带开发者 ID（AppID）",
    41004: "请求没有带开发者密码（AppSecret）",
    48001: "公众号没有此接口的权限",
    50002: "公众号已被限制使用",
    45009: "今日接口调用配额已用完：配额重置后继续",
    45011: "每分钟的调用配额已用完：等到下一分钟",
    40003: "该 openid 不是此公众号的关注者",
    46004: "用户不存在",
    40032: "一次调用中的 openid 超过 50 个",
    40050: "目标分组不存在",
    40051: "分组名称不被接受",
    45016: "系统分组不能修改",
    45017: "分组名称超过 30 个字符",
    45018: "公众号的分组数量已达上限",
    45056: "公众号的标签数量已达上限（100 个）",
    45057: "关注者超过 10 万的标签不能删除",
    45058: "系统标签（0、1、2）不能改名或删除",
    45059: "这批用户中有人已有 20 个标签：整次调用失败",
    45157: "标签名称为空，或已被其他标签使用",
    45158: "标签名称超过 30 个字节",
    45159: "标签不存在",
    44002: "请求没有内容",
    47001: "请求内容不是所需的格式",
    43004: "该用户已取消关注公众号",
    40002: "获取访问令牌的请求类型有误：程序错误",
    43002: "接口应以 POST 调用：程序错误",
    76021: "查询配额时用了未知的接口路径",
    61003: "此公众号没有授权该第三方平台，或已取消授权",
    61004: "本机的 IP 地址不在第三方平台的白名单中",
    61005: "第三方平台的验证票据已超过 12 小时：等待微信下一次推送",
    61006: "第三方平台的验证票据不是微信推送给此平台的",
    61023: "公众号给第三方平台的授权已失效：公众号须重新授权",
}
_UNKNOWN = ("a code batchmove does not know", "本工具不认识此错误码")


def meaning(code: str | int, lang: str) -> str:
    """The errcode's meaning in `lang` (a code outside the table says so, in `lang`)."""
    try:
        errcode = int(code)
    except ValueError:
        return _UNKNOWN[1] if lang == "zh" else _UNKNOWN[0]
    if lang == "zh":
        return MEANING_ZH.get(errcode, _UNKNOWN[1])
    return api.errcode_meaning(errcode) or _UNKNOWN[0]
