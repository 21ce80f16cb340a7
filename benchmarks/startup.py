#!/usr/bin/env python3
"""What starting the script costs, and what running it from bytecode would save.

`python3 scripts/codex_session_recovery.py` compiles the whole file on every run: Python caches
bytecode only for imported modules, never for the script it is given. This prints, for each
interpreter named (default: this one), in alternating rounds and as medians:

* the bare interpreter (`-c pass`), and the script's imports alone;
* `--version` run from the source, and from a .pyc of the same source (made in a temporary
  folder with py_compile; nothing is written beside the script);
* with `--home DIR` (a home `make_home.py` built), `diagnose --json` both ways.

Peak RSS and CPU come from the same wrapper as run.py (`os.wait4` of the child).

    python3 benchmarks/startup.py --runs 5 --home /tmp/csr-home
    python3 benchmarks/startup.py --python python3.9 --python python3.13
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
from typing import Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (the wrapper that measures a child's peak RSS and CPU)

IMPORTS = ("import argparse, contextlib, datetime, hashlib, json, json.scanner, os, re, shutil, "
           "sqlite3, subprocess, sys, tempfile, pathlib, stat, typing")


def commands(python: str, pyc: Path, home: Optional[Path]) -> Dict[str, List[str]]:
    script = str(run.SCRIPT)
    found = {
        "bare interpreter": [python, "-c", "pass"],
        "the script's imports": [python, "-c", IMPORTS],
        "--version, source": [python, script, "--version"],
        "--version, bytecode": [python, str(pyc), "--version"],
    }
    if home is not None:
        found["diagnose --json, source"] = [python, script, "--codex-home", str(home), "diagnose",
                                            "--json"]
        found["diagnose --json, bytecode"] = [python, str(pyc), "--codex-home", str(home),
                                              "diagnose", "--json"]
    return found


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
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
    with tempfile.TemporaryDirectory(prefix="csr-startup-") as tmp:
        for python in pythons:
            pyc = compile_copy(python, Path(tmp))
            todo = commands(python, pyc, args.home)
            samples: Dict[str, List[Dict[str, float]]] = {name: [] for name in todo}
            for _ in range(args.runs):
                for name, command in todo.items():
                    samples[name].append(run.measure(command))
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
