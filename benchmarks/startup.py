#!/usr/bin/env python3
"""What starting the script costs: in place, from its cached bytecode, and from bytecode alone.

`python3 scripts/codex_session_recovery.py` compiles the whole file on every run (Python caches
bytecode for imported modules, never for the script it is given), and holds the file's parsed
tree while it runs. The script therefore replaces its process with one importing it, which reads
the bytecode cached in __pycache__ beside it (see its Start-up section). This prints, for each
interpreter named (default: this one), in alternating rounds and as medians, on copies of the
script in a temporary folder (nothing is written beside the real one):

* the bare interpreter (`-c pass`), and the script's imports alone;
* `--version`: in place (no cache, PYTHONDONTWRITEBYTECODE: as before the start-up existed);
  the first run, which compiles and writes the cache; from the cache; and a .pyc run directly
  (the least a run from bytecode costs: no compile of the script at all);
* with `--home DIR` (a home `make_home.py` built), `diagnose --json` in place, from the cache,
  and from the .pyc.

Peak RSS and CPU come from the same wrapper as run.py (`os.wait4` of the child).

    python3 benchmarks/startup.py --runs 5 --home /tmp/csr-home
    python3 benchmarks/startup.py --python python3.10 --python python3.13
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (the wrapper that measures a child's peak RSS and CPU)

Command = Tuple[List[str], Dict[str, Optional[str]], Optional[Callable[[], None]]]
IMPORTS = ("import argparse, contextlib, datetime, hashlib, json, json.scanner, os, re, shutil, "
           "sqlite3, subprocess, sys, tempfile, pathlib, stat, typing")


def commands(python: str, copies: Dict[str, Path], home: Optional[Path]) -> Dict[str, Command]:
    """name: (argv, environment changes, what to do before each run)."""
    in_place, cached, first, pyc = (str(copies[k]) for k in ("in place", "cached", "first", "pyc"))
    dont_write = {"PYTHONDONTWRITEBYTECODE": "1"}
    may_write = {"PYTHONDONTWRITEBYTECODE": None}
    forget = lambda: shutil.rmtree(str(copies["first"].parent / "__pycache__"), ignore_errors=True)
    found: Dict[str, Command] = {
        "bare interpreter": ([python, "-c", "pass"], dont_write, None),
        "the script's imports": ([python, "-c", IMPORTS], dont_write, None),
        "--version, in place": ([python, in_place, "--version"], dont_write, None),
        "--version, first run (writes its cache)": ([python, first, "--version"], may_write,
                                                    forget),
        "--version, from its cache": ([python, cached, "--version"], dont_write, None),
        "--version, .pyc alone": ([python, pyc, "--version"], dont_write, None),
    }
    if home is not None:
        args = ["--codex-home", str(home), "diagnose", "--json"]
        found["diagnose --json, in place"] = ([python, in_place] + args, dont_write, None)
        found["diagnose --json, from its cache"] = ([python, cached] + args, dont_write, None)
        found["diagnose --json, .pyc alone"] = ([python, pyc] + args, dont_write, None)
    return found


def measure(command: Command) -> Dict[str, float]:
    argv, env, before = command
    if before is not None:
        before()
    saved = {name: os.environ.get(name) for name in env}
    try:
        set_environment(env)
        return run.measure(argv)
    finally:
        set_environment(saved)


def set_environment(values: Dict[str, Optional[str]]) -> None:
    """Each variable set, or removed where its value is None."""
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def script_copies(python: str, folder: Path) -> Dict[str, Path]:
    """Copies of the script, one folder each: without a cache, with a current one, one whose
    cache is removed before each run, and a .pyc alone."""
    copies = {}
    for name in ("in place", "cached", "first"):
        where = folder / name.replace(" ", "-") / run.SCRIPT.name
        where.parent.mkdir(parents=True)
        shutil.copy2(str(run.SCRIPT), str(where))
        copies[name] = where
    print(run.cache_bytecode(copies["cached"], python))  # as a user's first run writes it
    copies["pyc"] = compile_copy(python, folder)
    return copies


def compile_copy(python: str, folder: Path) -> Path:
    """A .pyc of the script made by `python` itself (bytecode is specific to its version)."""
    pyc = folder / ("codex_session_recovery-%s.pyc" % Path(python).name)
    subprocess.run([python, "-c", "import py_compile, sys; py_compile.compile(sys.argv[1], "
                        "cfile=sys.argv[2], doraise=True)", str(run.SCRIPT), str(pyc)], check=True)
    return pyc


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", action="append", default=[],
                        help="an interpreter to measure (repeatable; default: this one)")
    parser.add_argument("--home", type=Path, help="a home built by make_home.py, for diagnose")
    parser.add_argument("--runs", type=int, default=5, help="rounds; medians are printed")
    args = parser.parse_args(argv)
    pythons = [shutil.which(p) or p for p in args.python] or [sys.executable]
    with tempfile.TemporaryDirectory(prefix="csr-startup-") as tmp:
        for number, python in enumerate(pythons):
            todo = commands(python, script_copies(python, Path(tmp) / str(number)), args.home)
            samples: Dict[str, List[Dict[str, float]]] = {name: [] for name in todo}
            for _ in range(args.runs):
                for name, command in todo.items():
                    samples[name].append(measure(command))
            version = subprocess.run([python, "--version"], stdout=subprocess.PIPE,
                                         universal_newlines=True).stdout.strip()
            print("%s (%s), median of %d" % (version, python, args.runs))
            print("| command | wall s | CPU s | peak RSS MB |")
            print("|---|---:|---:|---:|")
            for name, rows in samples.items():
                print("| %s | %.3f | %.3f | %.1f |" % (
                    name, statistics.median(r["s"] for r in rows),
                    statistics.median(r["cpu"] for r in rows),
                    statistics.median(r["rss"] for r in rows)))
            print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
