"""Benchmark entry point: `python bench/run.py [scenario ...] [--repeat N] [--quick]`.

Prepares seeded data in bench/.data/, starts `batchmove sandbox` processes on 127.0.0.1, runs
every chosen scenario N times, and prints a Markdown table (median and min-max over the runs)
with the machine it ran on. Progress goes to stderr; the table alone to stdout.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.account import CONTENDERS as ACCOUNT
from bench.account import PAIRS
from bench.harness import Row, compile_batchmove, machine_line, markdown_table, use_work_dir
from bench.scenarios import QUICK, SCENARIOS, Context, Sizes

CONTENDERS = (*ACCOUNT, *PAIRS)  # what `--only` may name


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("scenarios", nargs="*", metavar="scenario",
                        help=f"any of {', '.join(SCENARIOS)} (default: all, in that order)")
    parser.add_argument("--repeat", type=int, default=None,
                        help="runs per scenario (default 3; 1 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes (2,000 rows) to check the bench itself works")
    parser.add_argument("--only", default="", metavar="NAME[,NAME...]",
                        help="only these contenders of a scenario (account: "
                             f"{', '.join(CONTENDERS)})")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where data and run directories go (default: bench/.data, .runs)")
    args = parser.parse_args(argv)
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; "
                     f"choose from {', '.join(SCENARIOS)}")
    only = set(filter(None, args.only.split(",")))
    if only - set(CONTENDERS):
        parser.error(f"--only: no contender {', '.join(sorted(only - set(CONTENDERS)))}; "
                     f"choose from {', '.join(CONTENDERS)}")
    if args.repeat is not None and args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    chosen = args.scenarios or list(SCENARIOS)
    repeats = args.repeat or (1 if args.quick else 3)
    if args.work_dir is not None:
        use_work_dir(args.work_dir.resolve())
    ctx = Context(QUICK if args.quick else Sizes(), repeats,
                  only=frozenset(filter(None, args.only.split(","))))
    compile_batchmove()  # measured as installed: with its bytecode
    rows: list[Row] = []
    started = time.monotonic()
    failed = False
    with ctx.stack:
        for name in chosen:
            ctx.log(f"{name}:")
            try:
                rows += SCENARIOS[name](ctx)
            except (RuntimeError, OSError, ValueError, KeyError) as exc:  # the others still run
                ctx.log(f"  {name} failed: {exc}")
                rows.append(Row(name, f"FAILED: {str(exc).splitlines()[0][:160]}", ()))
                failed = True
    if args.quick:  # the targets are for the full sizes: say nothing about them here
        rows = [replace(row, met=None) for row in rows]
    size = "quick sizes, no verdicts" if args.quick else "full sizes"
    command = " ".join(["python bench/run.py", *(argv if argv is not None else sys.argv[1:])])
    print(f"Machine: {machine_line()}")
    print(f"Command: `{command.strip()}` ({size}, {repeats} run(s) each, "
          f"{time.monotonic() - started:.0f} s in all)\n")
    print(markdown_table(rows))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
