"""A sandbox started from an export file (`batchmove sandbox --from`): time and peak memory.

    .venv/bin/python -m bench.sandbox_from                 # 10,000,000 followers, groups
    .venv/bin/python -m bench.sandbox_from --users 1000000 --backend tags

Writes an export file as `batchmove export` would (`openid, current_groupid,
current_group_name, to_group_name`, or the tags columns) into a temporary folder (never the
repository): 28-character openids, followers spread over 30 groups (tags: 0 to 3 of 20 tags).
Then a fresh process reads it into a `SandboxState` (what `--from`, `[sandbox] from` and
`rehearse` do before serving) and reports its wall time and peak RSS. The targets (issue 24):
10,000,000 followers in under 60 s and under 2 GB.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GROUPS = 30
TAGS = 20
LIMIT_S = 60.0
LIMIT_MB = 2048.0


def write_export(path: Path, users: int, backend: str) -> None:
    """`users` rows in the export's format, deterministic."""
    with path.open("w", encoding="utf-8", newline="") as out:
        if backend == "groups":
            out.write("openid,current_groupid,current_group_name,to_group_name\r\n")
            lines = [f",{g},分组{g},分组{g}\r\n" for g in range(100, 100 + GROUPS)]
            for i in range(users):
                out.write(f"o{i:027d}{lines[i % GROUPS]}")
            return
        out.write("openid,current_tag_names,tagid_list\r\n")
        for i in range(users):
            tids = sorted({100 + (i * (k + 3)) % TAGS for k in range(i % 4)})
            names = ";".join(f"标签{t}" for t in tids)
            out.write(f"o{i:027d},{names},{';'.join(map(str, tids))}\r\n")


def load(path: Path) -> dict[str, float]:
    """In this (fresh) process: the file into a sandbox account; seconds and peak RSS."""
    from batchmove.sandbox import SandboxConfig, SandboxState

    started = time.perf_counter()
    state = SandboxState(SandboxConfig(from_file=str(path), max_tags=TAGS))
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    return {"followers": len(state.followers), "seconds": seconds, "peak_mb": peak_mb}


def measure(users: int, backend: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="batchmove-bench-") as folder:
        path = Path(folder) / f"export-{backend}.csv"
        written = time.perf_counter()
        write_export(path, users, backend)
        print(f"wrote {users:,} rows ({path.stat().st_size / 2**20:,.0f} MB) in "
              f"{time.perf_counter() - written:.1f} s", flush=True)
        child = subprocess.run([sys.executable, "-m", "bench.sandbox_from", "--load",
                                str(path)], capture_output=True, text=True, check=True)
        found: dict[str, float] = json.loads(child.stdout)
        return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000_000)
    parser.add_argument("--backend", choices=("groups", "tags"), default="groups")
    parser.add_argument("--load", type=Path, help=argparse.SUPPRESS)  # the child's part
    args = parser.parse_args()
    if args.load is not None:
        print(json.dumps(load(args.load)))
        return
    found = measure(args.users, args.backend)
    ok = found["seconds"] < LIMIT_S and found["peak_mb"] < LIMIT_MB
    print(f"{args.backend}: {found['followers']:,.0f} followers loaded in "
          f"{found['seconds']:.1f} s, peak RSS {found['peak_mb']:,.0f} MB (targets < {LIMIT_S:.0f}"
          f" s, < {LIMIT_MB:,.0f} MB): {'met' if ok else 'MISSED'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
