#!/usr/bin/env python3
"""What `--verify` costs on a large home: bytes copied into the scratch folder, wall time and
peak memory, against the same dry run without it.

    python3 benchmarks/verify_cost.py --codex-bin PATH [--threads 2000] [--home DIR]

Builds a home with `benchmarks/make_home.py` (unless `--home` names one), then runs
`repair-provider --from openai` as a subprocess, once plain and once with `--verify`, and prints
the figures. The home is never written (the dry run is checked to leave every rollout's size
and mtime as they were). Standard library only.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "codex_session_recovery.py"


def timed(argv: List[str]) -> Tuple[float, float, Dict[str, Any]]:
    """(seconds, the largest peak RSS of any process run so far in MB, the JSON document)."""
    start = time.monotonic()
    out = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout
    seconds = time.monotonic() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    return seconds, peak, json.loads(out)


def stats(home: Path) -> Dict[str, Tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in home.rglob("rollout-*.jsonl")}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="What --verify costs on a large home.")
    parser.add_argument("--codex-bin", required=True, help="the codex binary --verify runs")
    parser.add_argument("--threads", type=int, default=2000, help="threads in the generated home (default 2000)")
    parser.add_argument("--home", help="an existing home to measure instead of a generated one")
    args = parser.parse_args(argv)
    work = None
    if args.home:
        home = Path(args.home)
    else:
        work = Path(tempfile.mkdtemp(prefix="csr-verify-bench-"))
        home = work / "home"
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "make_home.py"), "--threads", str(args.threads),
                        "--seed", "1", "--giant-mb", "0", "--out", str(home)], check=True,
                       stdout=subprocess.DEVNULL)
    try:
        before = stats(home)
        base = [sys.executable, str(SCRIPT), "--codex-home", str(home), "repair-provider", "--from", "openai",
                "--json"]
        plain_s, _plain_mb, plain = timed(base)
        verify_s, verify_mb, doc = timed(base + ["--verify", "--codex-bin", args.codex_bin])
        assert stats(home) == before, "the dry run changed a rollout"
        check = doc["verification"]
        print("home: %s" % home)
        print("verification: %s %s" % (check["status"], check.get("message") or ""))
        if check["status"] == "verified":
            cost = check["cost"]
            print("codex %s: lists %d of %d now, %d of %d after the plan; %d disagreements" % (
                check["codex_version"], len(check["listed_before"]), check["conversations_before"],
                len(check["listed_after"] or []), check["conversations_after"] or 0, len(check["disagreements"])))
            print("copied: %.1f MB in %d files = %.1f%% of the home's %.1f MB (per scratch copy)" % (
                cost["bytes_copied"] / 1e6, cost["files_copied"], 100.0 * cost["bytes_copied"] / cost["home_bytes"],
                cost["home_bytes"] / 1e6))
        print("dry run: %.1f s plain, %.1f s with --verify (peak RSS of the runs %.0f MB)" % (
            plain_s, verify_s, verify_mb))
        return 0
    finally:
        if work is not None:
            shutil.rmtree(str(work), ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
