"""Where access tokens come from, and the one place that decides when to fetch another.

A bulk tool must not fight the account's other services over the token: each classic fetch
rotates it, and wechatpy was seen refreshing 138 times in a row on a persistent 40001. So:

- sources: `SecretTokenSource` (appid + secret, `stable_token` by default, which does not
  rotate a valid token), `EnvTokenSource` and `CommandTokenSource` (a token server owns the
  token; we only re-read it, never fetch from WeChat);
- `TokenManager` caches the token, fetches it single-flight (one lock: fifty workers that see an
  expired token cause one fetch), refreshes at most once per rejected token, and gives up with
  `FatalApiError` instead of looping. With a `TokenStore` (`batchmove.registry`), the token is
  shared by every run of the account on the machine: a run adopts the stored token when it is
  still good, and fetches only inside the store's cross-process flight, after reading again.

Secrets and tokens never appear in a repr or a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import shlex
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

from batchmove.errors import ApiError, FatalApiError, TokenError, UsageError, redact
from batchmove.models import Credentials
from batchmove.wechat.answers import Ack, Answer, TokenAnswer
from batchmove.wechat.gate import StoredToken, TokenStore

A = TypeVar("A", bound=Answer | Ack)

TokenKind = Literal["stable", "classic"]
TOKEN_EXPIRED = 42001  # the errcode of a token past its lifetime
REFRESH_MARGIN = 300.0  # seconds before expiry at which a secret source's token is renewed


class HttpFetch(Protocol):
    """The client's raw request: limited, counted, errors translated; no access token added."""

    async def __call__(
        self,
        method: str,
        endpoint: str,
        *,
        answer: type[A],
        params: Mapping[str, str] | None = None,
        json: Mapping[str, Any] | None = None,
    ) -> A: ...


@dataclass(frozen=True, slots=True)
class Token:
    """An access token; `expires_in` is None when the source cannot tell (external tokens)."""

    value: str = field(repr=False)
    expires_in: float | None = None


class TokenSource(ABC):
    """Gives access tokens; `external` sources are only re-read, never fetched from WeChat."""

    external: bool = True

    @property
    @abstractmethod
    def describe(self) -> str:
        """Where the token comes from, for error messages (never the token itself)."""

    @abstractmethod
    async def fetch(self, http: HttpFetch, *, force: bool = False) -> Token:
        """A token; `force` means the server rejected the current one."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe})"


class SecretTokenSource(TokenSource):
    """Fetches from WeChat with appid + secret; the secret goes only to the token endpoints."""

    external = False

    def __init__(self, appid: str, secret: str, kind: TokenKind = "stable") -> None:
        if kind not in ("stable", "classic"):
            raise UsageError(f"token kind must be 'stable' or 'classic', not {kind!r}")
        self.appid = appid
        self.kind: TokenKind = kind
        self.__secret = secret

    @property
    def describe(self) -> str:
        return f"appid={self.appid!r}, kind={self.kind!r}"

    @property
    def fingerprint(self) -> str:
        """Tells this secret from another without holding it: a job with a wrong secret must
        not be handed the token fetched with the right one."""
        return hashlib.blake2b(f"{self.kind}:{self.__secret}".encode(), digest_size=8,
                               person=b"bm-secret").hexdigest()

    async def fetch(self, http: HttpFetch, *, force: bool = False) -> Token:
        try:
            if self.kind == "stable":
                body = {
                    "grant_type": "client_credential",
                    "appid": self.appid,
                    "secret": self.__secret,
                    "force_refresh": force,
                }
                found = await http("POST", "stable_token", answer=TokenAnswer, json=body)
            else:
                query = {
                    "grant_type": "client_credential",
                    "appid": self.appid,
                    "secret": self.__secret,
                }
                found = await http("GET", "token", answer=TokenAnswer, params=query)
        except TokenError as exc:
            # The token endpoint answers 40001 to a wrong secret: refreshing cannot help.
            raise FatalApiError(
                exc.errcode,
                f"WeChat refused the appid/secret ({exc.errmsg}): check the app secret",
                exc.endpoint,
            ) from None
        return Token(found.access_token, float(found.expires_in))


class EnvTokenSource(TokenSource):
    """A token put in an environment variable by the account's token server; re-read each time."""

    def __init__(self, var: str = "WECHAT_ACCESS_TOKEN",
                 environ: Mapping[str, str] | None = None) -> None:
        self.var = var
        self._environ = environ

    @property
    def describe(self) -> str:
        return f"${self.var}"

    async def fetch(self, http: HttpFetch, *, force: bool = False) -> Token:
        environ = os.environ if self._environ is None else self._environ
        value = environ.get(self.var, "").strip()
        if not value:
            raise FatalApiError(None, f"the environment variable {self.var} is empty or unset",
                                "token")
        return Token(value)


class CommandTokenSource(TokenSource):
    """Runs a shell command whose stdout is the token; its stdout never enters a message.

    Its stderr is read, never passed on: a helper that writes a secret (or anything) there
    would otherwise land in batchmove's own stderr, in the middle of `--log-format json`, or
    in a `--parallel` job's result line. A failing command is told by its exit status and its
    last stderr line, redacted (`last_words`)."""

    def __init__(self, command: str, timeout: float = 30.0) -> None:
        self.command = command
        self.timeout = timeout

    @property
    def name(self) -> str:
        """The program's name only: the rest of the command line may carry credentials."""
        try:
            words = shlex.split(self.command)
        except ValueError:
            words = self.command.split()
        return os.path.basename(words[0]) if words else "<empty>"

    @property
    def describe(self) -> str:
        return f"the token command {self.name!r}"

    async def fetch(self, http: HttpFetch, *, force: bool = False) -> Token:
        try:
            # Its own process group, so a timeout kills the whole pipeline, not just the shell.
            proc = await asyncio.create_subprocess_shell(
                self.command, stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE, process_group=0)
        except OSError as exc:
            raise FatalApiError(None, f"{self.describe} could not start ({exc.strerror})",
                                "token") from None
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(), self.timeout)
        except TimeoutError:
            _kill_group(proc.pid)
            await proc.wait()
            raise FatalApiError(None, f"{self.describe} did not finish within {self.timeout:g}s",
                                "token") from None
        except asyncio.CancelledError:
            _kill_group(proc.pid)
            raise
        if proc.returncode != 0:
            said = last_words(stderr)
            raise FatalApiError(None, f"{self.describe} exited with status {proc.returncode}"
                                + (f": {said}" if said else ""), "token")
        value = stdout.decode("utf-8", errors="replace").strip()
        if not value:
            raise FatalApiError(None, f"{self.describe} printed no token (exit status 0)",
                                "token")
        return Token(value)


#: what a secret looks like in a line of text: 16+ characters of a token's alphabet, with a
#: letter and a digit (so long words and paths stay readable)
_SECRET_LIKE = re.compile(r"(?=[\w+/-]*\d)(?=[\w+/-]*[A-Za-z])[\w+/-]{16,}={0,2}")


def last_words(stderr: bytes, limit: int = 160) -> str:
    """A failing helper's last stderr line, fit for a message: query-string secrets
    redacted, anything shaped like a secret or a token masked, cut to `limit` characters."""
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines()]
    last = next((line for line in reversed(lines) if line), "")
    return _SECRET_LIKE.sub("***", redact(last))[:limit]


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def token_source_from(creds: Credentials,
                      environ: Mapping[str, str] = os.environ) -> TokenSource:
    """The source the job asks for: a command, else a token variable, else appid + secret."""
    if creds.token_command:
        return CommandTokenSource(creds.token_command)
    if environ.get(creds.token_env, "").strip():
        return EnvTokenSource(creds.token_env, None if environ is os.environ else environ)
    appid = environ.get(creds.appid_env, "").strip()
    secret = environ.get(creds.secret_env, "").strip()
    if not appid or not secret:
        missing = [v for v, x in ((creds.appid_env, appid), (creds.secret_env, secret)) if not x]
        raise UsageError(
            f"no WeChat credentials: set {' and '.join(missing)} "
            f"(or {creds.token_env}, or a token command in the job file)")
    return SecretTokenSource(appid, secret, creds.token_kind)


class TokenManager:
    """Caches one token; single-flight fetches; bounded refreshes on rejected tokens.

    `refresh(failing)` fetches again only if `failing` is still the current token, so any number
    of workers that saw the same rejection cause one fetch. A token that came from a refresh and
    is rejected before any call succeeded with it means refreshing does not help (wrong secret,
    or a token server handing out bad tokens): that is fatal, never a loop.
    """

    def __init__(self, source: TokenSource, http: HttpFetch, *, max_refreshes: int = 10,
                 clock: Callable[[], float] = time.monotonic, store: TokenStore | None = None,
                 wall: Callable[[], float] = time.time) -> None:
        self.source = source
        self.store = store
        self.adopted = 0  # tokens taken from the store instead of fetched
        self.max_refreshes = max_refreshes
        self.refreshes = 0  # fetches caused by rejected tokens (proactive renewals not counted)
        self.fetches = 0
        self._http = http
        self._clock = clock
        self._wall = wall
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._renew_at: float | None = None
        self._expires_in: float | None = None
        self._from_refresh = False
        self._confirmed = False

    def __repr__(self) -> str:
        state = "cached" if self._token else "empty"
        return f"TokenManager({self.source!r}, {state}, refreshes={self.refreshes})"

    def _valid(self) -> bool:
        return self._token is not None and (
            self._renew_at is None or self._clock() < self._renew_at)

    async def get(self) -> str:
        """The current token, fetched (once, for all callers) when missing or about to expire."""
        if self._valid():
            assert self._token is not None
            return self._token
        async with self._lock:
            if not self._valid():
                await self._obtain(force=False)
            assert self._token is not None
            return self._token

    def confirm(self, token: str) -> None:
        """A call succeeded with `token`: it is good, so a later rejection is worth a refresh."""
        if token == self._token:
            self._confirmed = True

    async def refresh(self, failing_token: str, error: ApiError | None = None) -> str:
        """A token to use after WeChat rejected `failing_token` (at most one fetch per token)."""
        code = error.errcode if error is not None else None
        async with self._lock:
            if self._token is not None and self._token != failing_token:
                return self._token
            if self._adopt(self._shared(failing_token)):
                assert self._token is not None  # another run of the account replaced it
                return self._token
            if code == TOKEN_EXPIRED and self._renew_at is not None \
                    and self._clock() >= self._renew_at - 1.0:
                # it expired when we expected it to: an ordinary renewal, not a refresh
                await self._obtain(force=False, failing=failing_token)
                if self._token != failing_token:
                    assert self._token is not None
                    return self._token
            why = f" ({code})" if code is not None else ""
            if self._from_refresh and not self._confirmed:
                raise FatalApiError(code, (
                    f"a newly obtained token from {self.source.describe} was rejected again{why}"
                    ": the secret is wrong or the token keeps being replaced; not refreshing"
                    " again"), error.endpoint if error else "")
            if self.refreshes >= self.max_refreshes:
                raise FatalApiError(code, (
                    f"the access token was refreshed {self.refreshes} times in this run, the"
                    f" limit (max_refreshes={self.max_refreshes}); stopping instead of looping"),
                    error.endpoint if error else "")
            if await self._obtain(force=True, failing=failing_token):
                self.refreshes += 1
            if self._token == failing_token:
                raise FatalApiError(code, (
                    f"the token from {self.source.describe} was rejected{why} and the source"
                    " has no newer one"), error.endpoint if error else "")
            self._from_refresh = True
            assert self._token is not None
            return self._token

    def _shared(self, failing: str | None) -> StoredToken | None:
        """The store's token when it is one to use now: not `failing`, not due for renewal."""
        shared = self.store.read() if self.store is not None else None
        if shared is None or shared.value == failing:
            return None
        if shared.renew_at is not None and self._wall() >= shared.renew_at:
            return None
        return shared

    def _adopt(self, shared: StoredToken | None) -> bool:
        if shared is None or shared.value == self._token:
            return False
        self.adopted += 1
        self._token = shared.value
        self._renew_at = None if shared.renew_at is None else \
            self._clock() + shared.renew_at - self._wall()
        self._from_refresh = self._confirmed = False
        return True

    async def _obtain(self, *, force: bool, failing: str | None = None) -> bool:
        """A token for the account (caller holds the lock): the store's if another run has a
        good one, else fetched inside the store's flight. True when this run fetched."""
        if self.store is None:
            await self._fetch(force=force)
            return True
        if self._adopt(self._shared(failing)):
            return False
        async with self.store.flight():
            if self._adopt(self._shared(failing)):
                return False
            await self._fetch(force=force)
            assert self._token is not None
            wall = self._wall()
            renew = None if self._renew_at is None else wall + self._renew_at - self._clock()
            expires = None if self._expires_in is None else wall + self._expires_in
            self.store.save(StoredToken(self._token, renew, expires))
        return True

    async def _fetch(self, *, force: bool) -> None:
        """Fetch (caller holds the lock) and schedule a renewal before the server expires it."""
        self.fetches += 1
        token = await self.source.fetch(self._http, force=force)
        now = self._clock()
        self._expires_in = token.expires_in
        if token.expires_in is None:
            self._renew_at = None
        elif token.value == self._token:
            # a stable token handed back unchanged lives until it expires: ask again then,
            # not on every call (its remaining lifetime is whole seconds, so it may say 0)
            self._renew_at = now + max(token.expires_in, 1.0)
        else:
            margin = min(REFRESH_MARGIN, 0.1 * token.expires_in)
            # Relative margin: a sandbox token living 2 s is renewed at 1.8 s, not every call.
            self._renew_at = now + max(token.expires_in - margin, 0.0)
        self._token = token.value
        self._from_refresh = False
        self._confirmed = False
