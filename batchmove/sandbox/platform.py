"""A WeChat third-party platform (开放平台 component) and the accounts that authorised it.

Pure state, like `state.py`: each authorizer is a whole `SandboxState` (its own followers,
groups, tags, quotas and tokens); the platform adds what agencies meet on WeChat:

- `component/api_component_token` with the latest `component_verify_ticket` (tickets live
  `ticket_ttl`, 12 h: 61005 past it, 61006 for one never pushed), 40013/40125 for a wrong
  appid/secret, 61004 while the caller's IP is "not whitelisted" (`ip_blocked`);
- `component/api_authorizer_token`: an authorizer token, issued into that account's own token
  book (so every account endpoint accepts it), and with `rotate_refresh_tokens` a new
  `authorizer_refresh_token` each time, the previous one answering 61023 from then on;
- `component/api_get_authorizer_list` (500 a page) and `component/api_get_authorizer_info`;
- `push_ticket()`: a new ticket as WeChat pushes it, encrypted with the EncodingAESKey
  (`batchmove.wechat.msgcrypt`), for the server to POST to a receiver.

Component tokens are checked like access tokens (40001 unknown, 42001 expired). Calls of any
other endpoint are routed to the account whose token they carry (`account_for_token`).
"""

from __future__ import annotations

import math
import secrets
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from batchmove.sandbox.config import SandboxConfig, SandboxConfigError
from batchmove.sandbox.state import SandboxState
from batchmove.sandbox.tokens import TokenBook
from batchmove.sandbox.wire import ApiFault, Json, error_body, parse_body
from batchmove.wechat.msgcrypt import MsgCrypt

DEFAULT_COMPONENT_APPID = "wxcomponent000000001"
DEFAULT_COMPONENT_SECRET = "component-secret-not-real"
DEFAULT_MSG_TOKEN = "sandbox-msg-token"
DEFAULT_AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"  # 43 chars, as WeChat gives
TICKET_TTL = 12 * 3600.0
MAX_LIST_PAGE = 500
COMPONENT_ENDPOINTS = ("api_component_token", "api_authorizer_token",
                       "api_get_authorizer_list", "api_get_authorizer_info")


def authorizer_appid(index: int) -> str:
    """The sandbox's n-th authorizer appid (`wxauth` + 13 digits: 19 characters, as real)."""
    return f"wxauth{index + 1:013d}"


@dataclass(frozen=True, slots=True)
class PlatformConfig:
    """A platform with `authorizers` accounts; `account` holds `SandboxConfig` settings every
    account shares (each gets its own appid, secret and seed, so its own followers)."""

    authorizers: int = 2
    account: Mapping[str, Any] = field(default_factory=dict)
    component_appid: str = DEFAULT_COMPONENT_APPID
    component_secret: str = DEFAULT_COMPONENT_SECRET
    msg_token: str = DEFAULT_MSG_TOKEN
    encoding_aes_key: str = DEFAULT_AES_KEY
    ticket_ttl: float = TICKET_TTL
    token_ttl: float = 7200.0
    rotate_refresh_tokens: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.authorizers, bool) or not isinstance(self.authorizers, int) \
                or self.authorizers < 1:
            raise SandboxConfigError(f"authorizers must be an integer >= 1, "
                                     f"got {self.authorizers!r}")
        if {"appid", "secret", "seed"} & set(self.account):
            raise SandboxConfigError("each authorizer has its own appid, secret and seed")
        try:
            MsgCrypt(self.msg_token, self.encoding_aes_key, self.component_appid)
        except ValueError as exc:
            raise SandboxConfigError(str(exc)) from None
        if self.ticket_ttl <= 0 or self.token_ttl <= 0:
            raise SandboxConfigError("ticket_ttl and token_ttl must be > 0")

    def account_config(self, index: int) -> SandboxConfig:
        return SandboxConfig(appid=authorizer_appid(index), secret=f"authorizer-secret-{index}",
                             seed=index, **dict(self.account))


@dataclass(slots=True)
class Authorizer:
    """An account's authorisation of the platform."""

    appid: str
    state: SandboxState
    nick_name: str
    refresh_token: str = field(repr=False)
    auth_time: int
    revoked: bool = False


class PlatformState:
    """The platform and its authorizer accounts, on one clock."""

    def __init__(self, config: PlatformConfig | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config or PlatformConfig()
        self._clock = clock
        self.crypt = MsgCrypt(self.config.msg_token, self.config.encoding_aes_key,
                              self.config.component_appid)
        self.accounts: dict[str, Authorizer] = {}
        for index in range(self.config.authorizers):
            state = SandboxState(self.config.account_config(index), clock)
            self.accounts[state.appid] = Authorizer(
                state.appid, state, f"沙盒公众号{index + 1}", _new_refresh_token(),
                1_700_000_000 + index)
        self.component_tokens = TokenBook(clock, grace=300.0)
        self.tickets: dict[str, float] = {}  # ticket -> when it was pushed
        self.ip_blocked = False
        self.calls: Counter[str] = Counter()
        #: authorizer appid -> authorizer tokens issued (tests: one per account per run)
        self.authorizer_tokens: Counter[str] = Counter()
        self._token_owner: dict[str, str] = {}  # authorizer token -> appid
        self._refresh_history: list[str] = []  # refresh tokens rotated away
        self.push_ticket()

    # --- what tests and the server read -----------------------------------------------------

    @property
    def first(self) -> SandboxState:
        return next(iter(self.accounts.values())).state

    @property
    def secrets(self) -> list[str]:
        """Every secret, token, ticket and refresh token so far (for output audits)."""
        found = [self.config.component_secret, self.config.encoding_aes_key,
                 self.config.msg_token, *self.component_tokens.issued, *self.tickets,
                 *self._refresh_history]
        for account in self.accounts.values():
            found += [account.state.secret, *account.state.issued_tokens]
        return found

    @property
    def latest_ticket(self) -> str:
        return max(self.tickets, key=self.tickets.__getitem__)

    def refresh_token_of(self, appid: str) -> str:
        return self.accounts[appid].refresh_token

    def snapshot(self) -> Json:
        """`GET /sandbox/platform`: counts only, never a token or ticket."""
        return {
            "component_appid": self.config.component_appid,
            "calls": dict(self.calls),
            "authorizer_tokens": dict(self.authorizer_tokens),
            "authorizers": [{"appid": a.appid, "nick_name": a.nick_name, "revoked": a.revoked,
                             "followers": len(a.state.followers)}
                            for a in self.accounts.values()],
            "ticket_age_s": self._clock() - max(self.tickets.values()),
            "ip_blocked": self.ip_blocked,
        }

    def account_for_token(self, token: str | None) -> SandboxState | None:
        owner = self._token_owner.get(token or "")
        return self.accounts[owner].state if owner else None

    def account_for_appid(self, appid: str | None) -> SandboxState | None:
        account = self.accounts.get(appid or "")
        return account.state if account else None

    # --- admin ------------------------------------------------------------------------------

    def push_ticket(self) -> str:
        """A new ticket, as WeChat pushes one every 10 minutes; older ones stay valid 12 h."""
        ticket = "ticket@@@" + secrets.token_urlsafe(60)
        self.tickets[ticket] = self._clock()
        return ticket

    def ticket_push(self, nonce: str = "") -> tuple[str, dict[str, str]]:
        """A new ticket as the encrypted XML body WeChat POSTs, and its query string."""
        ticket = self.push_ticket()
        created = int(time.time())
        message = (f"<xml><AppId><![CDATA[{self.config.component_appid}]]></AppId>"
                   f"<CreateTime>{created}</CreateTime>"
                   "<InfoType><![CDATA[component_verify_ticket]]></InfoType>"
                   f"<ComponentVerifyTicket><![CDATA[{ticket}]]></ComponentVerifyTicket></xml>")
        timestamp, nonce = str(created), nonce or secrets.token_hex(5)
        body, signature = self.crypt.seal_push(message, timestamp, nonce)
        query = {"signature": secrets.token_hex(20), "timestamp": timestamp, "nonce": nonce,
                 "encrypt_type": "aes", "msg_signature": signature}
        return body, query

    def revoke(self, appid: str) -> None:
        """The account cancels the authorisation: its refresh token answers 61023."""
        self.accounts[appid].revoked = True

    def expire_tickets(self) -> None:
        """Every ticket pushed so far is past its 12 hours (61005)."""
        for ticket in self.tickets:
            self.tickets[ticket] = -math.inf

    # --- the component endpoints ------------------------------------------------------------

    def handle(self, endpoint: str, method: str, query: Mapping[str, str], raw: bytes) -> Json:
        """Answer `component/<endpoint>` as WeChat would."""
        self.calls[endpoint] += 1
        try:
            if endpoint not in COMPONENT_ENDPOINTS:
                return {"errcode": 404, "errmsg": "not found"}
            if method != "POST":
                raise ApiFault(43002)
            if self.ip_blocked:
                raise ApiFault(61004)
            body = parse_body(raw)
            if endpoint == "api_component_token":
                return self._component_token(body)
            self._check(self.component_tokens.check(query.get("component_access_token")))
            if body.get("component_appid") != self.config.component_appid:
                raise ApiFault(40013)
            if endpoint == "api_authorizer_token":
                return self._authorizer_token(body)
            if endpoint == "api_get_authorizer_list":
                return self._list(body)
            return self._info(body)
        except ApiFault as fault:
            return error_body(fault.code)

    @staticmethod
    def _check(code: int) -> None:
        if code:
            raise ApiFault(code)

    def _component_token(self, body: Json) -> Json:
        appid, secret = body.get("component_appid"), body.get("component_appsecret")
        ticket = body.get("component_verify_ticket")
        if not appid:
            raise ApiFault(41002)
        if not secret:
            raise ApiFault(41004)
        if appid != self.config.component_appid:
            raise ApiFault(40013)
        if secret != self.config.component_secret:
            raise ApiFault(40125)
        pushed = self.tickets.get(ticket) if isinstance(ticket, str) else None
        if pushed is None:
            raise ApiFault(61006)
        if self._clock() - pushed >= self.config.ticket_ttl:
            raise ApiFault(61005)
        token, expires_in = self.component_tokens.classic(self.config.token_ttl)
        return {"component_access_token": token, "expires_in": expires_in}

    def _authorizer(self, body: Json) -> Authorizer:
        account = self.accounts.get(body.get("authorizer_appid") or "")
        if account is None or account.revoked:
            raise ApiFault(61003)
        return account

    def _authorizer_token(self, body: Json) -> Json:
        account = self._authorizer(body)
        if body.get("authorizer_refresh_token") != account.refresh_token:
            raise ApiFault(61023)
        token, expires_in = account.state.tokens.classic(self.config.token_ttl)
        self._token_owner[token] = account.appid
        self.authorizer_tokens[account.appid] += 1
        if self.config.rotate_refresh_tokens:
            self._refresh_history.append(account.refresh_token)
            account.refresh_token = _new_refresh_token()
        return {"authorizer_access_token": token, "expires_in": expires_in,
                "authorizer_refresh_token": account.refresh_token}

    def _list(self, body: Json) -> Json:
        offset, count = body.get("offset"), body.get("count")
        if not isinstance(offset, int) or not isinstance(count, int) or not _is_int(offset) \
                or not _is_int(count) or offset < 0 or not 1 <= count <= MAX_LIST_PAGE:
            raise ApiFault(47001)
        live = [a for a in self.accounts.values() if not a.revoked]
        page = live[offset:offset + count]
        return {"total_count": len(live),
                "list": [{"authorizer_appid": a.appid, "refresh_token": a.refresh_token,
                          "auth_time": a.auth_time} for a in page]}

    def _info(self, body: Json) -> Json:
        account = self._authorizer(body)
        return {"authorizer_info": {"nick_name": account.nick_name, "service_type_info": {"id": 2},
                                    "verify_type_info": {"id": 0}, "user_name": "gh_sandbox",
                                    "principal_name": "沙盒", "alias": ""},
                "authorization_info": {"authorizer_appid": account.appid,
                                       "func_info": [{"funcscope_category": {"id": 2}}]}}


def _new_refresh_token() -> str:
    return "refreshtoken@@@" + secrets.token_urlsafe(32)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
