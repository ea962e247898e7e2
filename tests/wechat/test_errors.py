"""The exception tree, the errcode table and token redaction."""

from __future__ import annotations

import pickle

import pytest

from batchmove.errors import (
    EXIT_STOPPED,
    EXIT_USAGE,
    ApiError,
    BatchmoveError,
    ConfirmationRequired,
    DailyQuotaError,
    FatalApiError,
    InputChangedError,
    InputError,
    JobFileError,
    MinuteQuotaError,
    OutcomeUnknownError,
    ProtocolError,
    RowError,
    RunLockedError,
    RunStateError,
    StoppedEarly,
    TokenError,
    TransientError,
    UsageError,
    redact,
)
from batchmove.wechat.errcodes import ERRCODES, errmsg_for, error_for

TOKEN = "TOK3N-s3cr3t_VALUE.42"

# What a batch tool must do for each code, read from /work/shared/wechat-api.md (an oracle
# independent of the table under test).
DOCUMENTED = {
    -1: TransientError,
    40001: TokenError,
    40014: TokenError,
    42001: TokenError,
    40013: FatalApiError,
    41001: FatalApiError,
    40164: FatalApiError,
    48001: FatalApiError,
    50002: FatalApiError,
    45009: DailyQuotaError,
    45011: MinuteQuotaError,
    40003: RowError,
    46004: RowError,
    40032: RowError,
    40050: RowError,
    40051: RowError,
    45016: RowError,
    45017: RowError,
    45018: RowError,
}


@pytest.mark.parametrize("code", sorted(ERRCODES))
def test_every_table_row_maps_to_its_class(code: int) -> None:
    entry = ERRCODES[code]
    exc = error_for(code, entry.errmsg, "groups/members/batchupdate")
    assert type(exc) is entry.kind
    assert (exc.errcode, exc.errmsg, exc.endpoint) == (
        code, entry.errmsg, "groups/members/batchupdate")
    assert errmsg_for(code) == entry.errmsg
    assert entry.code == code


@pytest.mark.parametrize(("code", "kind"), sorted(DOCUMENTED.items()))
def test_documented_errcodes_are_in_the_table_with_the_documented_action(
        code: int, kind: type[ApiError]) -> None:
    assert code in ERRCODES
    assert ERRCODES[code].kind is kind
    assert type(error_for(code, "x")) is kind


@pytest.mark.parametrize("code", [99999, 0, 12345, -2])
def test_unknown_errcode_is_a_plain_api_error_keeping_code_and_message(code: int) -> None:
    exc = error_for(code, "something new happened", "groups/get")
    assert type(exc) is ApiError
    assert exc.errcode == code
    assert exc.errmsg == "something new happened"
    assert str(exc) == f"WeChat errcode {code} from groups/get: something new happened"
    assert errmsg_for(code) == "unknown error"


def test_api_error_without_errcode_or_endpoint() -> None:
    exc = TransientError(None, "no answer within 15s")
    assert str(exc) == "WeChat no errcode: no answer within 15s"
    assert repr(exc) == "TransientError(errcode=None, endpoint='')"
    assert exc.message == str(exc)


@pytest.mark.parametrize(("text", "expected"), [
    ("https://api.weixin.qq.com/cgi-bin/groups/get?access_token=" + TOKEN,
     "https://api.weixin.qq.com/cgi-bin/groups/get?access_token=***"),
    (f"https://api.weixin.qq.com/cgi-bin/groups/members/batchupdate?access_token={TOKEN}&x=1",
     "https://api.weixin.qq.com/cgi-bin/groups/members/batchupdate?access_token=***&x=1"),
    (f"/cgi-bin/token?grant_type=client_credential&appid=wx123&secret={TOKEN}",
     "/cgi-bin/token?grant_type=client_credential&appid=wx123&secret=***"),
    (f"/cgi-bin/token?appsecret={TOKEN}&appid=wx1", "/cgi-bin/token?appsecret=***&appid=wx1"),
    (f"/cgi-bin/x?ACCESS_TOKEN={TOKEN}#frag", "/cgi-bin/x?ACCESS_TOKEN=***#frag"),
    (f"url='http://127.0.0.1:8080/cgi-bin/groups/get?access_token={TOKEN}'",
     "url='http://127.0.0.1:8080/cgi-bin/groups/get?access_token=***'"),
    (f'"https://h/cgi-bin/a?access_token={TOKEN}" then https://h/b?secret={TOKEN} end',
     '"https://h/cgi-bin/a?access_token=***" then https://h/b?secret=*** end'),
    ("https://api.weixin.qq.com/cgi-bin/groups/get?openid=abc",
     "https://api.weixin.qq.com/cgi-bin/groups/get?openid=abc"),
    ("no url at all", "no url at all"),
])
def test_redact_hides_tokens_and_secrets_in_urls(text: str, expected: str) -> None:
    assert redact(text) == expected
    assert TOKEN not in redact(text)


@pytest.mark.parametrize("kind", [ApiError, TransientError, TokenError, MinuteQuotaError,
                                  DailyQuotaError, RowError, FatalApiError,
                                  OutcomeUnknownError, ProtocolError])
def test_api_error_never_shows_a_token_from_its_errmsg(kind: type[ApiError]) -> None:
    errmsg = (f"GET https://api.weixin.qq.com/cgi-bin/groups/get?access_token={TOKEN} failed; "
              f"token url was /cgi-bin/token?appid=wx1&secret={TOKEN}")
    exc = kind(-1, errmsg, "groups/get")
    for shown in (str(exc), repr(exc), exc.errmsg, exc.message, *map(str, exc.args)):
        assert TOKEN not in shown
    assert "access_token=***" in str(exc)
    clone = pickle.loads(pickle.dumps(exc))
    assert type(clone) is kind
    assert (clone.errcode, clone.endpoint, str(clone)) == (-1, "groups/get", str(exc))
    assert TOKEN not in str(clone)


@pytest.mark.parametrize("kind", [BatchmoveError, UsageError, InputError, RunStateError,
                                  StoppedEarly])
def test_plain_errors_redact_their_message(kind: type[BatchmoveError]) -> None:
    exc = kind(f"cannot reach https://h/cgi-bin/x?access_token={TOKEN}")
    assert str(exc) == "cannot reach https://h/cgi-bin/x?access_token=***"
    assert TOKEN not in repr(exc)


def test_api_error_redacts_a_url_given_as_endpoint() -> None:
    exc = TransientError(None, "timeout", f"https://h/cgi-bin/groups/get?access_token={TOKEN}")
    assert TOKEN not in str(exc)  # passes: the message is redacted
    assert TOKEN not in repr(exc)  # fails: repr uses the raw endpoint


@pytest.mark.parametrize(("kind", "code"), [
    (BatchmoveError, EXIT_USAGE),
    (UsageError, EXIT_USAGE),
    (JobFileError, EXIT_USAGE),
    (InputError, EXIT_USAGE),
    (RunStateError, EXIT_USAGE),
    (RunLockedError, EXIT_USAGE),
    (InputChangedError, EXIT_USAGE),
    (ConfirmationRequired, EXIT_USAGE),
    (StoppedEarly, EXIT_STOPPED),
    (ApiError, EXIT_STOPPED),
    (TransientError, EXIT_STOPPED),
    (TokenError, EXIT_STOPPED),
    (MinuteQuotaError, EXIT_STOPPED),
    (DailyQuotaError, EXIT_STOPPED),
    (RowError, EXIT_STOPPED),
    (FatalApiError, EXIT_STOPPED),
    (OutcomeUnknownError, EXIT_STOPPED),
    (ProtocolError, EXIT_STOPPED),
])
def test_exit_codes(kind: type[BatchmoveError], code: int) -> None:
    assert kind.exit_code == code
    assert (EXIT_USAGE, EXIT_STOPPED) == (2, 3)


@pytest.mark.parametrize(("kind", "parent"), [
    (JobFileError, UsageError),
    (RunLockedError, RunStateError),
    (InputChangedError, RunStateError),
    (OutcomeUnknownError, TransientError),  # retried with backoff like any transient failure
    (ProtocolError, OutcomeUnknownError),  # ...and, on a move, its rows are read back
    *[(k, ApiError) for k in (TransientError, TokenError, MinuteQuotaError, DailyQuotaError,
                              RowError, FatalApiError)],
    *[(k, BatchmoveError) for k in (UsageError, InputError, RunStateError,
                                    ConfirmationRequired, StoppedEarly, ApiError)],
])
def test_exception_tree(kind: type[BatchmoveError], parent: type[BatchmoveError]) -> None:
    assert issubclass(kind, parent)
    assert kind.__doc__


def test_protocol_error_names_the_endpoint_and_the_field() -> None:
    exc = ProtocolError(None, "`groups` is missing", "groups/get", "groups")
    assert str(exc) == "unexpected answer from groups/get: `groups` is missing"
    assert (exc.endpoint, exc.field, exc.errcode) == ("groups/get", "groups", None)
    assert repr(exc) == "ProtocolError(errcode=None, endpoint='groups/get')"
    clone = pickle.loads(pickle.dumps(exc))
    assert (type(clone), clone.field, str(clone)) == (ProtocolError, "groups", str(exc))
