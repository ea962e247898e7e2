"""What checking every WeChat answer costs per call: before (orjson into dicts, fields read with
defaults) and now (`batchmove.wechat.answers`: msgspec decodes into the endpoint's Struct and
checks every field in one pass).

    .venv/bin/python bench/answers.py [--repeat 5] [--calls 2000]

Two answers make up a run's calls: `user/info/batchget` for 100 users (as the sandbox sends
it: 16 fields a user, ~30 kB; a 100,000-user run reads 1,000 of them) and the
`{"errcode": 0, "errmsg": "ok"}` of `groups/members/batchupdate` (2,000 of them). Each way is
timed over `--calls` decodes, `--repeat` times, interleaved; the table gives the median and
min-max microseconds per call, and what a 100,000-user run's 3,000 calls cost in all.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from batchmove.wechat import answers

USERS = 100


def batchget_body() -> bytes:
    users = [{"subscribe": 1, "openid": f"o{i:027d}", "nickname": f"用户{i}", "sex": 0,
              "language": "zh_CN", "city": "", "province": "", "country": "",
              "headimgurl": "", "subscribe_time": 1_600_000_000 + i, "remark": "",
              "groupid": i % 8, "tagid_list": [101, 102], "subscribe_scene": "ADD_SCENE_OTHERS",
              "qr_scene": 0, "qr_scene_str": ""} for i in range(USERS)]
    return orjson.dumps({"user_info_list": users})


ACK = b'{"errcode":0,"errmsg":"ok"}'


def before_batchget(raw: bytes) -> Any:
    """The client before issue 19: dicts, the list read with a default."""
    data = orjson.loads(raw)
    if data.get("errcode", 0) not in (0, None):
        raise AssertionError
    users = data.get("user_info_list") or []
    return [u for u in users if isinstance(u, dict)]


def before_ack(raw: bytes) -> Any:
    data = orjson.loads(raw)
    if data.get("errcode", 0) not in (0, None):
        raise AssertionError
    return data


def now_batchget(raw: bytes) -> Any:
    return answers.decode(raw, answers.UserInfoList, "user/info/batchget").user_info_list


def now_ack(raw: bytes) -> Any:
    return answers.decode(raw, answers.Ack, "groups/members/batchupdate")


def per_call_us(decode: Callable[[bytes], Any], raw: bytes, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        decode(raw)
    return (time.perf_counter() - started) / calls * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--calls", type=int, default=2_000)
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.calls < 1:
        parser.error("--repeat and --calls must be at least 1")
    body = batchget_body()
    ways = [("user/info/batchget, 100 users", "before: orjson, dicts", before_batchget, body),
            ("user/info/batchget, 100 users", "now: checked Structs", now_batchget, body),
            ("batchupdate ack", "before: orjson, dicts", before_ack, ACK),
            ("batchupdate ack", "now: checked Struct", now_ack, ACK)]
    times: dict[int, list[float]] = {i: [] for i in range(len(ways))}
    for _ in range(args.repeat):
        for i, (_, _, decode, raw) in enumerate(ways):
            times[i].append(per_call_us(decode, raw, args.calls))
    print(f"Machine: Python {platform.python_version()}, {platform.machine()}, "
          f"{args.repeat} runs of {args.calls} decodes each, interleaved")
    print()
    print("| Answer | Way | µs a call, median | Min–max | 100,000-user run |")
    print("|---|---|---|---|---|")
    run_calls = {"user/info/batchget, 100 users": 1_000, "batchupdate ack": 2_000}
    for i, (answer, way, _, raw) in enumerate(ways):
        median = statistics.median(times[i])
        total_ms = median * run_calls[answer] / 1000
        print(f"| {answer} ({len(raw):,} B) | {way} | {median:.1f} | "
              f"{min(times[i]):.1f}–{max(times[i]):.1f} | {total_ms:.0f} ms |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
