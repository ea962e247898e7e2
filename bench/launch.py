"""Run a command in a process of its own and report that process's own rusage.

    python -S bench/launch.py REPORT_FD ARGV...  ->  JSON on REPORT_FD (returncode, started,
                                                     wall, cpu, max_rss)

Linux keeps a process's peak RSS across `execve`, and a child spawned straight from the bench
(vfork + exec) starts with the bench's own high-water mark: after the bench had built a
10,000,000-row CSV in memory, every child reported ~3.3 GB. This launcher is a fresh, small
process; the command runs in a child it forks, whose peak RSS is its own (plus the launcher's
~10 MB at the fork). Start and wall are taken around that fork, on the system-wide monotonic
clock, so they compare with the bench's and the sandbox's.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main() -> int:
    report, argv = int(sys.argv[1]), sys.argv[2:]
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(report)
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    wall = time.monotonic() - started
    code = os.waitstatus_to_exitcode(status)  # -N: killed by signal N
    os.write(report, json.dumps({
        "returncode": code, "started": started, "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime, "max_rss": usage.ru_maxrss * 1024}).encode())
    os.close(report)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
