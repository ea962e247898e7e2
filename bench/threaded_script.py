"""The strong peer: what a demanding engineer writes in twenty lines with wechatpy 1.8.18.

    python bench/threaded_script.py BASE_URL INPUT.csv [THREADS] [keep-going]

Openids grouped by target group in lists of 50, sent by a `ThreadPoolExecutor` of 16 threads
(the same concurrency batchmove gets in the bench), no rate limit, no snapshot of anyone's
previous group, nothing written. The HTTP pool is widened to the thread count (requests keeps
10 connections by default, and the others would reconnect on every call). As in
usual_script.py, the token is fetched from BASE_URL with wechatpy's own `_fetch_access_token`
because wechatpy hard-codes https://api.weixin.qq.com for it.
"""

from __future__ import annotations

import csv
import sys
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from requests.adapters import HTTPAdapter
from wechatpy import WeChatClient
from wechatpy.exceptions import WeChatClientException

APPID = "wxsandbox0000000001"
SECRET = "sandbox-secret-not-real"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def main(base: str, path: str, threads: int = 16, keep_going: bool = False) -> int:
    """Users moved. With `keep_going`, a refused list (45011 at an account's limit) is
    counted lost and the others go on, as a script without retries loses them."""
    if urlsplit(base).hostname not in LOOPBACK:
        raise SystemExit(f"refusing a non-loopback API base: {base}")
    client = WeChatClient(APPID, SECRET, auto_retry=False, timeout=30)
    client.API_BASE_URL = f"{base}/cgi-bin/"
    client._http.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=threads))
    client._fetch_access_token(url=f"{base}/cgi-bin/token", params={
        "grant_type": "client_credential", "appid": APPID, "secret": SECRET})
    ids = {g["name"]: g["id"] for g in client.group.get()}
    by_group: dict[int, list[str]] = defaultdict(list)
    with open(path, encoding="utf-8-sig", newline="") as handle:
        for row in csv.DictReader(handle):
            by_group[ids[row["group_name"]]].append(row["openid"])
    lists = [(members[i:i + 50], gid) for gid, members in by_group.items()
             for i in range(0, len(members), 50)]
    def move(job: tuple[list[str], int]) -> int:
        try:
            result = client.group.move_user(*job)
        except WeChatClientException:
            if not keep_going:
                raise
            return 0
        return len(job[0]) if result.get("errcode", 0) == 0 else 0

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return sum(pool.map(move, lists))


if __name__ == "__main__":
    print(main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if sys.argv[3:] else 16,
               keep_going=sys.argv[4:5] == ["keep-going"]))
