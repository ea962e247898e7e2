"""Every WeChat errcode batchmove knows, in one table: what it means and what a batch must do.

The client turns an errcode into the exception class listed here; the sandbox answers with the
errmsg listed here; reports show both. An errcode missing from the table is still reported with
its code and message (as `ApiError`, treated like a row failure that `--retry-failed` retries).
"""

from __future__ import annotations

from dataclasses import dataclass

from batchmove.errors import (
    ApiError,
    DailyQuotaError,
    FatalApiError,
    MinuteQuotaError,
    RowError,
    TokenError,
    TransientError,
)


@dataclass(frozen=True, slots=True)
class Errcode:
    code: int
    errmsg: str
    kind: type[ApiError]
    meaning: str


_TABLE = [
    Errcode(-1, "system error", TransientError, "WeChat is busy: back off and retry"),
    Errcode(40001, "invalid credential, access_token is invalid or not latest", TokenError,
            "token invalid or not the latest: refresh once; if it persists, the secret is wrong"),
    Errcode(40014, "invalid access_token", TokenError, "token invalid: refresh once"),
    Errcode(42001, "access_token expired", TokenError, "token expired: refresh once"),
    Errcode(40013, "invalid appid", FatalApiError, "the appid is wrong"),
    Errcode(40125, "invalid appsecret", FatalApiError, "the appsecret is wrong"),
    Errcode(40164, "invalid ip, not in whitelist", FatalApiError,
            "this machine's IP is not on the account's whitelist"),
    Errcode(41001, "access_token missing", FatalApiError, "no token was sent: a bug or config"),
    Errcode(41002, "appid missing", FatalApiError, "no appid was sent"),
    Errcode(41004, "appsecret missing", FatalApiError, "no secret was sent"),
    Errcode(48001, "api unauthorized", FatalApiError, "the account lacks this API permission"),
    Errcode(50002, "user limited", FatalApiError, "the account is frozen"),
    Errcode(45009, "reach max api daily quota limit", DailyQuotaError,
            "daily quota used up: resume after it resets"),
    Errcode(45011, "api minute-quota reach limit, must slower, retry next minute",
            MinuteQuotaError, "minute quota used up: wait for the next minute"),
    Errcode(40003, "invalid openid", RowError, "the openid is not a follower of this account"),
    Errcode(46004, "不存在的用户", RowError, "the user does not exist"),
    Errcode(40032, "invalid openid list size", RowError, "more than 50 openids in one call"),
    Errcode(40050, "invalid group id", RowError, "the target group does not exist"),
    Errcode(40051, "invalid group name", RowError, "the group name was rejected"),
    Errcode(45016, "系统分组，不允许修改", RowError, "reserved groups cannot be changed"),
    Errcode(45017, "分组名字过长", RowError, "group name over 30 characters"),
    Errcode(45018, "分组数量超过上限", RowError, "the account has reached its group limit"),
    Errcode(45056, "too many tags", RowError, "the account has reached its tag limit (100)"),
    Errcode(45057, "can't delete the tag that has too many fans", RowError,
            "a tag with more than 100,000 followers cannot be deleted"),
    Errcode(45058, "can't modify sys tag", RowError,
            "reserved tags (0, 1, 2) cannot be renamed or deleted, 0 and 1 not given"),
    Errcode(45059, "user has too many tags", RowError,
            "one user of the batch already carries 20 tags: the whole call failed"),
    Errcode(45157, "invalid tag name", RowError,
            "the tag name is blank or already used by another tag"),
    Errcode(45158, "tag name too long", RowError, "tag name over 30 bytes of UTF-8"),
    Errcode(45159, "invalid tag id", RowError, "the tag does not exist"),
    Errcode(44002, "empty post data", RowError, "the request had no body"),
    Errcode(47001, "data format error", RowError, "the request body is not the expected JSON"),
    Errcode(43004, "require subscribe", RowError, "the user has unfollowed the account"),
    Errcode(40002, "invalid grant_type", FatalApiError,
            "the token request's grant_type is not client_credential: a bug"),
    Errcode(43002, "require POST method", FatalApiError,
            "the endpoint was called with GET instead of POST: a bug"),
    Errcode(76021, "cgi_path not found, please check", FatalApiError,
            "quota/get was asked about an unknown API path"),
    # third-party platforms (component): each one stops this account's run (exit 3)
    Errcode(61003, "component is not authorized by this account", FatalApiError,
            "the account has not authorised this third-party platform (or revoked it)"),
    Errcode(61004, "access clientip is not registered", FatalApiError,
            "this machine's IP is not on the third-party platform's whitelist"),
    Errcode(61005, "component ticket is expired", FatalApiError,
            "the component_verify_ticket is over 12 hours old: wait for WeChat's next push"),
    Errcode(61006, "component ticket is invalid", FatalApiError,
            "the component_verify_ticket is not one WeChat pushed to this platform"),
    Errcode(61023, "refresh_token is invalid", FatalApiError,
            "the authorizer_refresh_token is no longer valid: the account must authorise again"),
]

ERRCODES: dict[int, Errcode] = {entry.code: entry for entry in _TABLE}


def errmsg_for(code: int) -> str:
    """The errmsg WeChat sends with `code` (the sandbox answers with it)."""
    entry = ERRCODES.get(code)
    return entry.errmsg if entry else "unknown error"


def error_for(errcode: int, errmsg: str, endpoint: str = "") -> ApiError:
    """The exception a batch runner acts on for this errcode; unknown codes stay `ApiError`."""
    entry = ERRCODES.get(errcode)
    kind = entry.kind if entry else ApiError
    return kind(errcode, errmsg, endpoint)
