"""The usual script: a loop over the rows calling wechatpy 1.8.18, as an analyst would write it.

    python bench/usual_script.py BASE_URL INPUT.csv single|list50

`single` moves one user per call (`client.group.move_user(openid, group_id)`); `list50` sends
lists of 50 users of one group, still one call after the other. wechatpy hard-codes
https://api.weixin.qq.com for its token, so the token is fetched from BASE_URL with wechatpy's own
`_fetch_access_token`, and `auto_retry=False` keeps a token error from refreshing elsewhere.
"""

from __future__ import annotations

import csv
import sys
from itertools import groupby
from urllib.parse import urlsplit

from wechatpy import WeChatClient

APPID = "wxsandbox0000000001"
SECRET = "sandbox-secret-not-real"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def main(base: str, path: str, mode: str) -> int:
    if urlsplit(base).hostname not in LOOPBACK:
        raise SystemExit(f"refusing a non-loopback API base: {base}")
    client = WeChatClient(APPID, SECRET, auto_retry=False, timeout=30)
    client.API_BASE_URL = f"{base}/cgi-bin/"
    client._fetch_access_token(url=f"{base}/cgi-bin/token", params={
        "grant_type": "client_credential", "appid": APPID, "secret": SECRET})
    ids = {g["name"]: g["id"] for g in client.group.get()}
    with open(path, encoding="utf-8-sig", newline="") as handle:
        rows = [(r["openid"], ids[r["group_name"]]) for r in csv.DictReader(handle)]
    if mode == "single":
        for openid, group_id in rows:
            client.group.move_user(openid, group_id)
        return len(rows)
    for group_id, members in groupby(sorted(rows, key=lambda r: r[1]), key=lambda r: r[1]):
        openids = [openid for openid, _ in members]
        for start in range(0, len(openids), 50):
            client.group.move_user(openids[start:start + 50], group_id)
    return len(rows)


if __name__ == "__main__":
    moved = main(sys.argv[1], sys.argv[2], sys.argv[3])
    print(moved)
