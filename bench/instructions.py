"""Instructions per request, ours against the baseline, counted by valgrind's callgrind.

    python -m bench.instructions [--formats thunderbird,outlook,apple,apple-rsa2048,apple-p256]
                                 [--requests 200] [--accounts 3000]
    python -m bench.instructions --cprofile FORMAT [--requests 2000]   # where ours spends them, by function

Why this exists next to ``bench.run`` and ``bench.coldcache``: both time
the CPU, and on this shared machine every timing moves with the other
tenants.  An instruction count does not: run twice, it agrees to a few
parts in a thousand, so a change of a few microseconds shows.  It ignores
cache misses and the cost of each instruction (``bench.coldcache`` shows
those), and, like ``coldcache``, leaves out gunicorn's own work, so its
ratios are larger than ``bench.run``'s.

Each figure is (instructions of a process that makes the apps, warms them
and answers N requests of one format with one app) minus (the same process
answering none), divided by N.  The apps and the baseline per format are
``bench.coldcache``'s.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.coldcache import call, load_pairs, prepare, requests_for
from bench.run import DEFAULT_FORMATS, TARGETS, make_accounts

WARM_UP = 20  # requests per format and app before counting: lazy imports and first-use caches stay out


def inner(work: Path, formats: list[str], fmt: str, side: int, count: int, accounts: int) -> None:
    """The measured process: make every app, warm every pair, then ``count`` requests of ``fmt`` by ``side``.

    ``side`` -1 builds the same requests and answers none: the process to subtract.
    """
    pairs = load_pairs(work, formats)
    for name, apps in pairs.items():
        for app in apps:
            for environ, body in requests_for(name, WARM_UP, accounts, seed=2):
                call(app, environ, body)
    requests = requests_for(fmt, count, accounts)
    if side < 0:
        return
    app = pairs[fmt][side]
    for environ, body in requests:
        status = call(app, environ, body)[0]
        if status != 200:
            raise SystemExit(f"{fmt}: answered {status}")


def count_instructions(work: Path, args: argparse.Namespace, fmt: str, side: int) -> int:
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        "-m",
        "bench.instructions",
        "--inner",
        str(work),
        "--formats",
        ",".join(args.formats),
        "--accounts",
        str(args.accounts),
        "--requests",
        str(args.requests),
        "--format",
        fmt,
        "--side",
        str(side),
    ]
    # A fixed hash seed: with a random one, the same run's counts moved by several per cent (dict and set layouts).
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], env=env)
    match = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or match is None:
        raise RuntimeError(f"callgrind run failed:\n{done.stderr[-3000:]}")
    return int(match.group(1))


def profile(work: Path, args: argparse.Namespace, fmt: str) -> None:
    """cProfile of ``args.requests`` requests of ``fmt`` by our app, top functions by own time."""
    pairs = load_pairs(work, args.formats)
    app = pairs[fmt][0]
    requests = requests_for(fmt, args.requests, args.accounts)
    for environ, body in requests[:WARM_UP]:
        call(app, environ, body)
    profiler = cProfile.Profile()
    profiler.enable()
    for environ, body in requests:
        call(app, environ, body)
    profiler.disable()
    stats = pstats.Stats(profiler, stream=sys.stdout)
    stats.sort_stats(args.sort).print_stats(args.top)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--formats", default=DEFAULT_FORMATS, help=f"any of {', '.join(TARGETS)}")
    parser.add_argument("--accounts", type=int, default=3000)
    parser.add_argument("--requests", type=int, default=200, help="requests counted per format and app")
    parser.add_argument("--cprofile", metavar="FORMAT", help="profile our app on this format instead of counting")
    parser.add_argument("--sort", default="tottime", help="cProfile's sort key (tottime, cumulative, ...)")
    parser.add_argument("--top", type=int, default=30, help="functions cProfile lists")
    parser.add_argument("--inner", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--format", help=argparse.SUPPRESS)
    parser.add_argument("--side", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.formats = [f for f in args.formats.split(",") if f]
    if unknown := [f for f in args.formats if f not in TARGETS]:
        parser.error(f"unknown formats: {', '.join(unknown)}")
    if args.inner is not None:
        inner(args.inner, args.formats, args.format, args.side, args.requests, args.accounts)
        return 0
    if args.cprofile is not None:
        if args.cprofile not in TARGETS:
            parser.error(f"unknown format {args.cprofile}")
        args.formats = sorted({*args.formats, args.cprofile})
    elif shutil.which("valgrind") is None:
        parser.error("valgrind is not installed (Debian package valgrind)")

    with tempfile.TemporaryDirectory(prefix="autoconfig-instructions-") as tmp:
        work = Path(tmp)
        store_url = f"sqlite:///{work}/accounts.sqlite3"
        make_accounts(store_url, args.accounts)
        prepare(work, store_url, args.formats)
        if args.cprofile is not None:
            profile(work, args, args.cprofile)
            return 0
        print(f"# python -m bench.instructions {' '.join(sys.argv[1:])}")
        print(f"{'format':<14} {'against':<9} {'base instr':>11} {'ours instr':>11} {'ratio':>6}")
        for fmt in args.formats:
            setup = count_instructions(work, args, fmt, -1)
            ours, base = ((count_instructions(work, args, fmt, side) - setup) / args.requests for side in (0, 1))
            print(f"{fmt:<14} {TARGETS[fmt].baseline:<9} {base:>11,.0f} {ours:>11,.0f} {ours / base:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
