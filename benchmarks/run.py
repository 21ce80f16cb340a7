#!/usr/bin/env python3
"""Scale benchmark for codex-session-recovery: speed, memory and I/O on a large home.

    python3 benchmarks/run.py --threads 10000 --giant-mb 1024 --runs 5

Generates a home with benchmarks/make_home.py, then, with a warm page cache, times every
command as a subprocess (`python3 scripts/codex_session_recovery.py ...`), median of --runs:

* the floor: a tiny reference reader (the first line of every rollout, plus one full
  `SELECT * FROM threads` scan), run the same way, as a subprocess;
* `diagnose --json`, the dry run of every repair, and every repair's `--apply`, each apply on
  a fresh copy of the home;
* the peak RSS of each (each command is started by a tiny wrapper that reports its own
  child's ru_maxrss);
* the bytes the evidence scan reads from rollouts (logical, as `scan_rollout` reports them, and
  physical, counted under Python's buffering) against their total size;
* with a giant rollout: `repair-provider --apply` moving only that thread, and the rewrite
  alone (`rewrite_rollout`) against a plain `shutil.copyfile` of the same file, with peak RSS.

Prints a table of medians with the targets next to them. Standard library only.

Copies of the home for the applies hard-link the rollouts (the tool replaces a rollout through
a temp file and os.replace, never in place) and copy everything else; the copied state DB's
rollout_path values are rewritten to point into the copy. Every master rollout's inode, size
and mtime are checked at the end, so an in-place write would be caught, not hidden.
No apply needs --force: a fresh copy has no -shm, no lock and no process holding it open.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SCRIPT = ROOT / "scripts" / "codex_session_recovery.py"

TARGET_DIAGNOSE_RATIO = 1.5
TARGET_EVIDENCE_SHARE = 0.05
TARGET_RSS_MB = 64
TARGET_DIAGNOSE_RSS_MB = 48  # at 10,000 threads
TARGET_RSS_100K_MB = 128  # at 100,000 threads
TARGET_DRY_RUN_RATIO = 2.0
TARGET_REWRITE_SHARE = 0.70
TARGET_APPLY_COPY_RATIO = 3.0  # the apply (backup included) against a durable copy of its rollouts


# ---------------------------------------------------------------------------------------------
# Modes run as subprocesses by the benchmark itself.
# ---------------------------------------------------------------------------------------------


def floor_reader(home: Path) -> None:
    """The least any diagnosis must do: the first line of every rollout, and every thread row."""
    lines = 0
    for top in ("sessions", "archived_sessions"):
        for folder, _dirs, files in os.walk(str(home / top)):
            for name in files:
                if name.startswith("rollout-") and name.endswith(".jsonl"):
                    with open(os.path.join(folder, name), "rb") as handle:
                        lines += bool(handle.readline())
    conn = sqlite3.connect((home / "state_5.sqlite").as_uri() + "?mode=ro", uri=True)
    rows = sum(1 for _ in conn.execute("SELECT * FROM threads"))
    conn.close()
    print(json.dumps({"first_lines": lines, "rows": rows}))


def load_script() -> Any:
    sys.path.insert(0, str(SCRIPT.parent))
    import codex_session_recovery as csr  # noqa: E402
    return csr


def rewrite_only(path: Path, thread_id: str, old: str, new: str, script: Optional[Path] = None) -> None:
    """Plan and rewrite one rollout with the tool's own functions (of `script`, e.g. main's, if
    given), timing each step: the plan, the backup copy as --apply makes it, the rewrite."""
    csr = load_script_from(script) if script else load_script()
    cpu = [time.process_time()]
    t0 = time.perf_counter()
    edit = csr.plan_rollout_edit(path, thread_id, lambda raw: csr.provider_line_edit(raw, thread_id, old, new))
    t1 = time.perf_counter()
    cpu.append(time.process_time())
    backup_s = None
    if hasattr(csr, "rewrite_batch"):
        # As --apply runs it: the backup copy is made (copied, hashed, synced) first, and the
        # rewrite compares what it reads with that copy; where the script has EditedDigest, the
        # backup's read also hashes the copy's bytes with the edits (what the rewrite writes).
        copy = path.parent / (path.name + ".backup")
        edited: Dict[str, Any] = {}
        if hasattr(csr, "EditedDigest"):
            after = csr.EditedDigest(edit.replacements)
            digest, _stat = csr.copy_hashing(path, copy, after)
            if after.hexdigest() is not None:
                # By name where the script keys it so, by Path where an older one did.
                edited["edited"] = {path: after.hexdigest(), str(path): after.hexdigest()}
        else:
            digest, _stat = csr.copy_hashing(path, copy)
        csr.fsync_path(copy)
        backup_s = time.perf_counter() - t1
        cpu.append(time.process_time())
        t1 = time.perf_counter()
        references: Any = {path: copy} if digest == edit.fingerprint[2] else None
        if hasattr(csr, "BackupCopies") and references:
            # Where the backup's entries carry the copies and the digests with the edits.
            files = csr.CopiedFiles()
            files.add(path.name, copy.name, _stat, digest, after.hexdigest())
            references = csr.BackupCopies(path.parent, path.parent, files)
            references.add(0)
            edited = {}
        ok = csr.rewrite_batch([edit], None, {}, None, references, **edited)[0]
        t2 = time.perf_counter()
        copy.unlink()
    else:
        # Before the batches: shutil.copy2, fsync, then a second read to hash the original.
        copy = path.parent / (path.name + ".backup")
        shutil.copy2(str(path), str(copy))
        csr.fsync_path(copy)
        csr.sha256_file(path)
        backup_s = time.perf_counter() - t1
        cpu.append(time.process_time())
        copy.unlink()
        t1 = time.perf_counter()
        ok = csr.rewrite_rollout(edit)
        t2 = time.perf_counter()
    cpu.append(time.process_time())
    print(json.dumps({"plan_s": t1 - t0 - (backup_s or 0), "rewrite_s": t2 - t1, "backup_s": backup_s,
                      "plan_cpu": cpu[1] - cpu[0], "backup_cpu": cpu[2] - cpu[1], "rewrite_cpu": cpu[3] - cpu[2],
                      "replaced": ok, "changes": len(edit.changes), "bytes": path.stat().st_size}))


def copy_only(src: Path, dst: Path, fsync: bool) -> None:
    t0 = time.perf_counter()
    shutil.copyfile(str(src), str(dst))
    if fsync:
        with open(str(dst), "rb") as handle:
            os.fsync(handle.fileno())
    print(json.dumps({"copy_s": time.perf_counter() - t0}))


def load_script_from(path: Path) -> Any:
    """Another version of the script (e.g. main's, for a before/after), imported by path."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("csr_under_test", str(path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


class CountingHash:
    """hashlib.sha256 with the bytes it is fed counted (class-wide)."""
    fed = 0

    def __init__(self, data: bytes = b"") -> None:
        import hashlib
        self._h = hashlib.sha256()
        self.update(data)

    def update(self, data: Any) -> None:
        CountingHash.fed += len(data)
        self._h.update(data)

    def copy(self) -> Any:
        other = CountingHash.__new__(CountingHash)
        other._h = self._h.copy()
        return other

    def digest(self) -> bytes:
        return self._h.digest()

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def count_apply(script: Path, home: Path, argv: List[str]) -> None:
    """One apply in this process with os.fsync and SHA-256 counted: fsyncs of files and of
    folders, and bytes hashed, against the bytes of the rollouts the run rewrote."""
    import hashlib
    import stat as stat_module
    import types
    csr = load_script_from(script)
    counts = {"fsync_files": 0, "fsync_dirs": 0}
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        kind = "fsync_dirs" if stat_module.S_ISDIR(os.fstat(fd).st_mode) else "fsync_files"
        counts[kind] += 1
        real_fsync(fd)

    shim = types.ModuleType("hashlib")
    shim.__dict__.update(hashlib.__dict__)
    shim.sha256 = CountingHash  # type: ignore[attr-defined]
    csr.hashlib = shim
    os.fsync = counting_fsync
    phases: Dict[str, float] = {}
    phases_cpu: Dict[str, float] = {}
    for name in ("apply_plan", "backup_plan", "write_rollouts", "write_sql", "finish_manifest"):
        if hasattr(csr, name):
            setattr(csr, name, timed(getattr(csr, name), name, phases, phases_cpu))
    out = io.StringIO()
    import contextlib
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stdout(out):
            code = csr.main(["--codex-home", str(home), *argv, "--json"])
    finally:
        os.fsync = real_fsync
    seconds = time.perf_counter() - t0
    doc = json.loads(out.getvalue())
    rollouts = applied_rollouts(doc)
    print(json.dumps({"code": code, "s": seconds, "changes": doc.get("changes"), "rollouts": len(rollouts),
                      "rollout_bytes": sum(os.stat(p).st_size for p in rollouts), "hashed": CountingHash.fed,
                      **counts, "phases": phases, "phases_cpu": phases_cpu}))


def timed(function: Any, name: str, phases: Dict[str, float], phases_cpu: Optional[Dict[str, float]] = None) -> Any:
    """`function` with its wall time (and CPU time of this process) added up in `phases`."""
    def run(*args: Any, **kwargs: Any) -> Any:
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            return function(*args, **kwargs)
        finally:
            phases[name] = phases.get(name, 0.0) + time.perf_counter() - t0
            if phases_cpu is not None:
                phases_cpu[name] = phases_cpu.get(name, 0.0) + time.process_time() - c0
    return run


def applied_rollouts(doc: Dict[str, Any]) -> List[str]:
    """The rollouts an apply's backup holds (the files it rewrote), by their path in the home."""
    manifest = json.loads((Path(doc["backup_dir"]) / "manifest.json").read_text(encoding="utf-8"))
    home = Path(manifest["codex_home"])
    return [str(home / e["path"]) for e in manifest["entries"]
            if e["kind"] == "file" and Path(e["path"]).name.startswith("rollout-")]


def durable_copy(list_file: Path, dst: Path) -> None:
    """What the least durable rewrite of these rollouts costs: each copied, then fsynced."""
    paths = json.loads(list_file.read_text())
    dst.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for n, path in enumerate(paths):
        target = dst / ("%d.jsonl" % n)
        shutil.copyfile(path, str(target))
        with open(str(target), "rb") as handle:
            os.fsync(handle.fileno())
    print(json.dumps({"copy_s": time.perf_counter() - t0, "files": len(paths)}))


# ---------------------------------------------------------------------------------------------
# Measuring a child: wall time and that child's own peak RSS.
# ---------------------------------------------------------------------------------------------


def rss_mb(ru_maxrss: int) -> float:
    return ru_maxrss / (1024 * 1024) if sys.platform == "darwin" else ru_maxrss / 1024


# A child's ru_maxrss on Linux starts at the RSS of the process that exec'ed it (exec records
# the old address space's high-water mark), so each command is started by this tiny wrapper
# (python3 -I -S, no imports beyond os/sys/time): the figure is the command's own peak, or the
# wrapper's few MB if that is larger.
WRAPPER = (
    "import os, sys, time\n"
    "t = time.perf_counter()\n"
    "pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "elapsed = time.perf_counter() - t\n"
    "with open(sys.argv[1], 'w') as f:\n"
    "    f.write('%r %d %d %r' % (elapsed, usage.ru_maxrss, os.waitstatus_to_exitcode(status),\n"
    "                             usage.ru_utime + usage.ru_stime))\n"
)


def measure(argv: List[str], ok_codes: Tuple[int, ...] = (0, 1)) -> Dict[str, Any]:
    """Run argv under the wrapper; return wall seconds, peak RSS (MB), exit code and stdout."""
    os.sync()  # start clean: no dirty pages of an earlier run being written back meanwhile
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile(suffix=".txt") as result:
        subprocess.run([sys.executable, "-I", "-S", "-c", WRAPPER, result.name, *argv],
                       stdout=out, stderr=err, cwd=str(ROOT), check=True)
        elapsed, maxrss, code, cpu = Path(result.name).read_text().split()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace")
    if int(code) not in ok_codes:
        raise SystemExit("%s exited %s:\n%s\n%s" % (" ".join(argv), code, stdout[-2000:], stderr[-2000:]))
    return {"s": float(elapsed), "cpu": float(cpu), "rss": rss_mb(int(maxrss)), "code": int(code), "stdout": stdout}


def cache_bytecode(script: Path, python: str = sys.executable) -> str:
    """Run the script once as a user's first run does (bytecode writing allowed), so every
    measured run is a later one: it starts from the cache that run wrote (see the script's
    Start-up)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run([python, str(script), "--version"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    cache = subprocess.run([python, "-c", "import importlib.util, sys; "
                            "print(importlib.util.cache_from_source(sys.argv[1]))", str(script)],
                           stdout=subprocess.PIPE, universal_newlines=True).stdout.strip()
    # Whether the runs measured start from it (`-v` names where the script's code came from):
    # a run in place would be measured otherwise, and this line says so.
    verbose = subprocess.run([python, "-v", str(script), "--version"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             universal_newlines=True).stderr
    used = "# code object from %r" % cache in verbose.splitlines()
    return "bytecode cache: %s (%s)" % (cache, "the runs start from it" if used else
                                        "NOT USED: the runs run in place")


def tool(home: Path, *args: str, script: Path = SCRIPT) -> List[str]:
    return [sys.executable, str(script), "--codex-home", str(home), *args]


def me(*args: str) -> List[str]:
    return [sys.executable, str(Path(__file__).resolve()), *args]


# ---------------------------------------------------------------------------------------------
# Fresh copies of the home for the applies.
# ---------------------------------------------------------------------------------------------


def copy_home(src: Path, dst: Path) -> None:
    for folder, dirs, files in os.walk(str(src)):
        rel = os.path.relpath(folder, str(src))
        target = dst / rel if rel != "." else dst
        target.mkdir(parents=True, exist_ok=True)
        dirs[:] = [d for d in dirs if d != "recovery-backups"]
        for name in files:
            if name.startswith("rollout-") and name.endswith(".jsonl"):
                os.link(os.path.join(folder, name), str(target / name))
            else:
                shutil.copy2(os.path.join(folder, name), str(target / name))
    conn = sqlite3.connect(str(dst / "state_5.sqlite"), isolation_level=None)
    try:
        prefix = str(src) + os.sep
        conn.execute("UPDATE threads SET rollout_path = ? || substr(rollout_path, ?) WHERE substr(rollout_path, 1, ?) = ?",
                     (str(dst) + os.sep, len(prefix) + 1, len(prefix), prefix))
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def rollout_stats(home: Path) -> Dict[str, Tuple[int, int, int]]:
    stats = {}
    for top in ("sessions", "archived_sessions"):
        for folder, _dirs, files in os.walk(str(home / top)):
            for name in files:
                st = os.stat(os.path.join(folder, name))
                stats[os.path.join(folder, name)] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return stats


# ---------------------------------------------------------------------------------------------
# Evidence-scan I/O, in process, with the tool's own scan_rollout.
# ---------------------------------------------------------------------------------------------


class CountingFile(io.FileIO):
    total = 0

    def readinto(self, buffer: Any) -> Optional[int]:  # type: ignore[override]
        n = super().readinto(buffer)
        CountingFile.total += n or 0
        return n

    def readall(self) -> bytes:
        data = super().readall()
        CountingFile.total += len(data)
        return data


def counting_open(file: Any, mode: str = "r", buffering: int = -1, *args: Any, **kwargs: Any) -> Any:
    if "b" in mode and "r" in mode and "+" not in mode:
        raw = CountingFile(file, "r")
        return raw if buffering == 0 else io.BufferedReader(raw)
    return open(file, mode, buffering, *args, **kwargs)


def evidence_io(home: Path, giant: Optional[str]) -> Dict[str, Any]:
    csr = load_script()
    csr.open = counting_open  # the module's `open` lookup finds this before the builtin
    real_read = os.read

    def counting_read(fd: int, count: int) -> bytes:  # the fast reader reads descriptors
        data = real_read(fd, count)
        CountingFile.total += len(data)
        return data

    os.read = counting_read
    try:
        logical = size = files = whole = 0
        physical_giant = logical_giant = size_giant = 0
        for path in csr.iter_rollout_files(home):
            before = CountingFile.total
            info = csr.scan_rollout(path, home)
            files += 1
            logical += info.bytes_read
            size += info.size
            whole += int(info.bytes_read >= info.size)
            if giant and str(path) == giant:
                physical_giant, logical_giant, size_giant = CountingFile.total - before, info.bytes_read, info.size
        physical = CountingFile.total
    finally:
        del csr.open
        os.read = real_read
    return {"files": files, "size": size, "logical": logical, "physical": physical, "read_whole": whole,
            "size_wo_giant": size - size_giant, "logical_wo_giant": logical - logical_giant,
            "physical_wo_giant": physical - physical_giant}


# ---------------------------------------------------------------------------------------------
# The benchmark.
# ---------------------------------------------------------------------------------------------


def describe_home(home: Path, threads: int) -> Dict[str, Any]:
    """What make_home reports, for a home it made earlier (read-only runs only: no giant)."""
    stats = rollout_stats(home)
    conn = sqlite3.connect((home / "state_5.sqlite").as_uri() + "?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT count(*) FROM threads").fetchone()[0]
    finally:
        conn.close()
    return {"threads": threads, "rollout_files": len(stats), "rollout_bytes": sum(s[1] for s in stats.values()),
            "giant": None, "seconds": 0, "rows": rows}


def median(samples: List[Dict[str, Any]], key: str) -> float:
    return statistics.median(s[key] for s in samples)


def run_benchmark(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(HERE))
    import make_home  # noqa: E402

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="csr-bench-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    home = work / "home"
    if args.home:
        home = Path(args.home).resolve()
        made = describe_home(home, args.threads)
        print("using %s: %d rollout files, %.2f GB" % (home, made["rollout_files"], made["rollout_bytes"] / 1e9),
              flush=True)
    else:
        print("generating %d threads%s in %s ..." % (args.threads, " + a %d MB rollout" % args.giant_mb
                                                     if args.giant_mb else "", home), flush=True)
        made = make_home.make_home(home, args.threads, args.seed, args.giant_mb, args.size_median_kb * 1024)
    print("  %d rollout files, %.2f GB, %d rows, in %.1f s" % (made["rollout_files"], made["rollout_bytes"] / 1e9,
                                                               made["rows"], made["seconds"]), flush=True)
    master = rollout_stats(home)
    results: List[Dict[str, Any]] = []
    runs = args.runs

    def row(name: str, samples: List[Dict[str, Any]], **extra: Any) -> Dict[str, Any]:
        entry = {"name": name, "s": median(samples, "s"), "cpu": median(samples, "cpu"),
                 "rss": max(s["rss"] for s in samples), **extra}
        results.append(entry)
        print("  %-44s %8.3f s  %8.3f s CPU  %7.1f MB" % (name, entry["s"], entry["cpu"], entry["rss"]), flush=True)
        return entry

    # Warm the page cache: one untimed pass of the floor and of diagnose.
    measure(me("--floor", str(home)))
    measure(tool(home, "diagnose", "--json"))

    repairs = [
        ("repair-provider --from openai", ["repair-provider", "--from", "openai", "--to", "auto"]),
        ("repair-user-events", ["repair-user-events"]),
        ("repair-ui-state", ["repair-ui-state"]),
        ("rebuild-index", ["rebuild-index"]),
    ]
    # Read-only commands in alternation (floor, diagnose, ..., floor, diagnose, ...): a machine
    # shared with other work slows every command of one round alike, and the medians compare.
    read_only = [("floor (first lines + SELECT * FROM threads)", me("--floor", str(home))),
                 ("diagnose --json", tool(home, "diagnose", "--json")),
                 ("diagnose --json --deep", tool(home, "diagnose", "--json", "--deep"))]
    read_only += [("%s (dry run)" % label, tool(home, *argv, "--json")) for label, argv in repairs]
    # The provider dry run as a user runs it (text), beside its --json form.
    read_only.insert(4, ("%s (dry run, text)" % repairs[0][0], tool(home, *repairs[0][1])))
    if args.skip_applies:
        read_only = read_only[:5]  # the floor, diagnose both ways, the provider dry run both ways
    print("read-only, alternating (median of %d):" % runs, flush=True)
    samples_by: Dict[str, List[Dict[str, Any]]] = {label: [] for label, _argv in read_only}
    for _ in range(runs):
        for label, argv in read_only:
            samples_by[label].append(measure(argv))
    entries = [row(label, samples_by[label]) for label, _argv in read_only]
    floor, diag = entries[0], entries[1]
    if args.skip_applies:
        print()
        print(render_table(args, made, floor, diag, results, None, {}))
        if not args.keep and not args.home:
            shutil.rmtree(str(work), ignore_errors=True)
        return 0

    print("applies, each on a fresh copy (median of %d):" % runs, flush=True)
    copies: List[Dict[str, Any]] = []
    for label, argv in repairs:
        samples = []
        for n in range(runs):
            copy = work / ("copy-%d" % n)
            copy_home(home, copy)
            sample = measure(tool(copy, *argv, "--apply", "--json"), ok_codes=(0,))
            doc = json.loads(sample["stdout"])
            if not doc.get("applied"):
                raise SystemExit("%s --apply did not apply: %s" % (label, sample["stdout"][-1000:]))
            sample["changes"] = doc["changes"]
            samples.append(sample)
            names = [os.path.relpath(p, str(copy)) for p in applied_rollouts(doc)]
            shutil.rmtree(str(copy))
            if label.startswith("repair-provider") and names:
                # The least any durable rewrite of the same rollouts costs: each copied, then fsynced.
                listing = work / "rollouts.json"
                listing.write_text(json.dumps([str(home / n) for n in names]))
                durable = measure(me("--durable-copy", str(listing), str(work / "durable")), ok_codes=(0,))
                shutil.rmtree(str(work / "durable"))
                copies.append(dict(durable, s=json.loads(durable["stdout"])["copy_s"]))
        entry = row("%s --apply" % label, samples, changes=samples[0]["changes"])
        if copies:
            durable_row = row("durable copy of the same %d rollouts (copy + fsync each)" % len(names), copies)
            durable_row["durable_of"] = entry
            copies = []

    evidence = evidence_io(home, made["giant"]["path"] if made["giant"] else None)

    giant_rows: Dict[str, Any] = {}
    if made["giant"]:
        giant = made["giant"]
        giant_runs = max(1, min(runs, 3))
        print("giant rollout, %d MB (median of %d):" % (giant["bytes"] >> 20, giant_runs), flush=True)
        samples = []
        for n in range(giant_runs):
            copy = work / ("giant-%d" % n)
            copy_home(home, copy)
            sample = measure(tool(copy, "repair-provider", "--from", giant["provider"], "--to", "auto",
                                  "--apply", "--json"), ok_codes=(0,))
            samples.append(sample)
            shutil.rmtree(str(copy))
        giant_rows["apply"] = row("repair-provider --from %s --apply (giant)" % giant["provider"], samples)
        scratch = work / "scratch"
        scratch.mkdir(exist_ok=True)
        rewrites, copies, synced = [], [], []
        for n in range(giant_runs):
            target = scratch / Path(giant["path"]).name
            os.link(giant["path"], str(target))
            sample = measure(me("--rewrite", str(target), giant["thread_id"], giant["provider"], made["active_provider"]),
                             ok_codes=(0,))
            sample.update(json.loads(sample["stdout"]))
            if not sample["replaced"]:
                raise SystemExit("rewrite_rollout refused the giant rollout")
            rewrites.append(sample)
            target.unlink()
            for bucket, flag in ((copies, "0"), (synced, "1")):
                dst = scratch / "copy.jsonl"
                sample = measure(me("--copy", giant["path"], str(dst), flag), ok_codes=(0,))
                sample.update(json.loads(sample["stdout"]))
                bucket.append(sample)
                dst.unlink()
        giant_rows["rewrite"] = rewrite = {
            "plan_s": median(rewrites, "plan_s"), "rewrite_s": median(rewrites, "rewrite_s"),
            "rss": max(s["rss"] for s in rewrites), "changes": rewrites[0]["changes"],
            "copy_s": median(copies, "copy_s"), "copy_fsync_s": median(synced, "copy_s"), "bytes": giant["bytes"],
            "backup_s": (median(rewrites, "backup_s") if rewrites[0].get("backup_s") is not None else None)}
        mb = giant["bytes"] / 1e6
        print("  plan %.2f s, rewrite %.2f s (%.0f MB/s), copyfile %.2f s (%.0f MB/s), copyfile+fsync %.2f s, "
              "peak RSS %.1f MB" % (rewrite["plan_s"], rewrite["rewrite_s"], mb / rewrite["rewrite_s"],
                                    rewrite["copy_s"], mb / rewrite["copy_s"], rewrite["copy_fsync_s"], rewrite["rss"]),
              flush=True)

    changed = [p for p, st in rollout_stats(home).items() if master.get(p) != st]
    if changed:
        raise SystemExit("master rollouts changed during the benchmark (written in place?): %s" % changed[:3])

    print()
    print(render_table(args, made, floor, diag, results, evidence, giant_rows))
    if args.keep:
        print("\nkept: %s" % work)
    else:
        shutil.rmtree(str(work), ignore_errors=True)
    return 0


PROVIDER_APPLY = ["repair-provider", "--from", "openai", "--to", "auto", "--apply"]


def apply_round(script: Path, home: Path, work: Path, label: str) -> Dict[str, Any]:
    """One provider apply by `script` on a fresh copy of `home` (wall, CPU, peak RSS), one more
    in process on another fresh copy (fsyncs, SHA-256 bytes, time per phase), and a durable copy
    (copy + fsync each) of the rollouts that apply rewrote, from the same master files."""
    copy = work / ("apply-%s" % label)
    copy_home(home, copy)
    sample = measure(tool(copy, *PROVIDER_APPLY, "--json", script=script), ok_codes=(0,))
    doc = json.loads(sample["stdout"])
    if not doc.get("applied"):
        raise SystemExit("%s: the apply did not apply: %s" % (script, sample["stdout"][-1000:]))
    names = [os.path.relpath(p, str(copy)) for p in applied_rollouts(doc)]
    shutil.rmtree(str(copy))
    copy_home(home, copy)
    counted = measure(me("--count-apply", str(script), str(copy), *PROVIDER_APPLY), ok_codes=(0,))
    sample.update(json.loads(counted["stdout"].strip().splitlines()[-1]))
    shutil.rmtree(str(copy))
    listing = work / "rollouts.json"
    listing.write_text(json.dumps([str(home / n) for n in names]))
    durable = measure(me("--durable-copy", str(listing), str(work / "durable")), ok_codes=(0,))
    sample["durable_s"] = json.loads(durable["stdout"])["copy_s"]
    sample["durable_cpu"] = durable["cpu"]  # the whole child's: interpreter start included
    shutil.rmtree(str(work / "durable"))
    return sample


def run_apply_comparison(args: argparse.Namespace) -> int:
    """`repair-provider --apply` of another version of the script (--apply-against) and of this
    one, alternating on fresh hard-linked copies of the home, each against a durable copy of the
    same rollouts; with fsyncs and SHA-256 passes per rewritten rollout."""
    home = Path(args.home).resolve()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="csr-apply-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    versions = [("after", SCRIPT)]
    if args.apply_against:
        versions.insert(0, ("before", Path(args.apply_against).resolve()))
    master = rollout_stats(home)
    samples: Dict[str, List[Dict[str, Any]]] = {label: [] for label, _script in versions}
    for n in range(args.runs):
        for label, script in versions:
            sample = apply_round(script, home, work, label)
            samples[label].append(sample)
            print("  %s run %d: apply %.2f s (apply_plan %.2f s), durable copy %.2f s, %.1f MB" % (
                label, n + 1, sample["s"], sample["phases"]["apply_plan"], sample["durable_s"], sample["rss"]),
                flush=True)
    if [p for p, st in rollout_stats(home).items() if master.get(p) != st]:
        raise SystemExit("master rollouts changed during the benchmark (written in place?)")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    first = samples[versions[-1][0]][0]
    lines = ["", "repair-provider --apply: %d changes, %d rollouts rewritten (%.0f MB); median of %d, "
             "alternating; load average %.1f at the end" % (first["changes"], first["rollouts"],
                                                             first["rollout_bytes"] / 1e6, args.runs, load), "",
             "| version | apply s | CPU s | durable copy s | apply / durable copy | apply_plan s | "
             "apply_plan / durable copy | same, median of the rounds' ratios | apply_plan CPU s | "
             "durable copy CPU s | peak RSS MB | file fsyncs / rollout | folder fsyncs | "
             "SHA-256 passes / rollout | target | |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for label, _script in versions:
        runs = samples[label]
        s, copy_s = median(runs, "s"), median(runs, "durable_s")
        phase = statistics.median(r["phases"]["apply_plan"] for r in runs)
        # Each round's apply against that round's copy: a disk that slows down over the rounds
        # moves both, where the ratio of two medians would mix rounds.
        ratio = statistics.median(r["phases"]["apply_plan"] / r["durable_s"] for r in runs)
        phase_cpu = statistics.median(r.get("phases_cpu", {}).get("apply_plan", float("nan")) for r in runs)
        rss = max(r["rss"] for r in runs)
        ok = ratio <= TARGET_APPLY_COPY_RATIO and rss <= TARGET_RSS_MB
        lines.append("| %s | %.2f | %.2f | %.2f | %.1f | %.2f | %.1f | %.1f | %.2f | %.2f | %.1f | %.2f | %d | %.2f | "
                     "apply_plan ≤ %.0f× copy, ≤ %d MB | %s |" % (
                         label, s, median(runs, "cpu"), copy_s, s / copy_s, phase, phase / copy_s, ratio,
                         phase_cpu, median(runs, "durable_cpu"), rss,
                         runs[0]["fsync_files"] / runs[0]["rollouts"], runs[0]["fsync_dirs"],
                         runs[0]["hashed"] / runs[0]["rollout_bytes"], TARGET_APPLY_COPY_RATIO, TARGET_RSS_MB,
                         verdict(ok)))
    lines.append("")
    lines.append("phases (median s): " + "; ".join(
        "%s: %s" % (label, ", ".join("%s %.2f" % (k, statistics.median(r["phases"][k] for r in samples[label]))
                                     for k in samples[label][0]["phases"])) for label, _script in versions))
    print("\n".join(lines))
    if not args.work_dir:
        shutil.rmtree(str(work), ignore_errors=True)
    return 0


def run_comparison(args: argparse.Namespace) -> int:
    """Before/after on one home: `diagnose --json` and the provider dry run of another version
    of the script (--against) and of this one, alternating with the floor, median of --runs;
    and whether each command's JSON documents are byte-identical between the two."""
    home = Path(args.home).resolve()
    made = describe_home(home, args.threads)
    print("using %s: %d rollout files, %.2f GB; before = %s" % (
        home, made["rollout_files"], made["rollout_bytes"] / 1e9, args.against), flush=True)
    # The text form too: it is what a user (and the agent following diagnose's Next block) runs,
    # and it once held every action as a dict where --json streamed them (+24 MB at 100,000).
    commands = [("diagnose", ["diagnose", "--json"]),
                ("provider dry run", ["repair-provider", "--from", "openai", "--to", "auto", "--json"]),
                ("provider dry run, text", ["repair-provider", "--from", "openai", "--to", "auto"])]
    before = Path(args.against).resolve()
    rounds = [("floor", me("--floor", str(home)))]
    for label, argv in commands:
        rounds += [("%s, before" % label, tool(home, *argv, script=before)),
                   ("%s, after" % label, tool(home, *argv))]
    for _label, argv in rounds:  # warm the page cache
        measure(argv)
    samples: Dict[str, List[Dict[str, Any]]] = {label: [] for label, _argv in rounds}
    for _ in range(args.runs):
        for label, argv in rounds:
            samples[label].append(measure(argv))
    floor = {"s": median(samples["floor"], "s"), "cpu": median(samples["floor"], "cpu")}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = ["", "median of %d, load average %.1f at the end" % (args.runs, load), "",
             "| measurement | wall s | × floor | CPU s | CPU × floor | peak RSS MB |", "|---|---:|---:|---:|---:|---:|"]
    for label, _argv in rounds:
        s, cpu = median(samples[label], "s"), median(samples[label], "cpu")
        lines.append("| %s | %.3f | %.2f | %.3f | %.2f | %.1f |" % (
            label, s, s / floor["s"], cpu, cpu / floor["cpu"], max(x["rss"] for x in samples[label])))
    lines.append("")
    for label, _argv in commands:
        # The documents name the script in their next commands: that path is all that may differ.
        documents = {x["stdout"].replace(str(before), str(SCRIPT)) for x in samples["%s, before" % label]}
        documents |= {x["stdout"] for x in samples["%s, after" % label]}
        lines.append("%s: %s" % (label, "every document identical" if len(documents) == 1 else
                                 "%d different documents" % len(documents)))
    print("\n".join(lines))
    return 0


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def render_table(args: argparse.Namespace, made: Dict[str, Any], floor: Dict[str, Any], diag: Dict[str, Any],
                 results: List[Dict[str, Any]], evidence: Dict[str, Any], giant: Dict[str, Any]) -> str:
    lines = ["%d threads, %d rollout files, %.2f GB of rollouts%s; median of %d runs" % (
        made["threads"], made["rollout_files"], made["rollout_bytes"] / 1e9,
        ", incl. one %d MB rollout" % (made["giant"]["bytes"] >> 20) if made["giant"] else "", args.runs), ""]
    rss_target = TARGET_DIAGNOSE_RSS_MB if made["threads"] <= 10000 else TARGET_RSS_100K_MB
    lines.append("| measurement | median s | × floor | CPU s | CPU × floor | peak RSS MB | target | |")
    lines.append("|---|---:|---:|---:|---:|---:|---|---|")
    for entry in results:
        target, ok = "", None
        if entry is diag:
            target = "≤ %.1f× floor, ≤ %d MB" % (TARGET_DIAGNOSE_RATIO, rss_target)
            ok = entry["s"] <= TARGET_DIAGNOSE_RATIO * floor["s"] and entry["rss"] <= rss_target
        elif entry["name"].startswith("repair-provider") and "dry run" in entry["name"]:
            target = "≤ %.0f× floor, ≤ %d MB" % (TARGET_DRY_RUN_RATIO, TARGET_RSS_MB)
            ok = entry["s"] <= TARGET_DRY_RUN_RATIO * floor["s"] and entry["rss"] <= TARGET_RSS_MB
        elif entry is giant.get("apply"):
            target = "≤ %d MB" % TARGET_RSS_MB
            ok = entry["rss"] <= TARGET_RSS_MB
        elif "durable_of" in entry:
            ratio = entry["durable_of"]["s"] / entry["s"]
            target = "apply ≤ %.0f× this (now %.1f×)" % (TARGET_APPLY_COPY_RATIO, ratio)
            ok = ratio <= TARGET_APPLY_COPY_RATIO
        name = entry["name"] + (" (%d changes)" % entry["changes"] if "changes" in entry else "")
        lines.append("| %s | %.3f | %.2f | %.3f | %.2f | %.1f | %s | %s |" % (
            name, entry["s"], entry["s"] / floor["s"], entry["cpu"], entry["cpu"] / floor["cpu"], entry["rss"],
            target, "" if ok is None else verdict(ok)))
    lines.append("")
    if evidence is None:
        return "\n".join(lines)
    share = evidence["logical"] / evidence["size"]
    lines.append("| evidence scan I/O | bytes | share of rollout bytes | target | |")
    lines.append("|---|---:|---:|---|---|")
    lines.append("| read by scan_rollout (logical), all %d files | %d | %.2f %% | ≤ 5 %% | %s |" % (
        evidence["files"], evidence["logical"], 100 * share, verdict(share <= TARGET_EVIDENCE_SHARE)))
    lines.append("| read from disk under Python's buffering (physical) | %d | %.2f %% | | |" % (
        evidence["physical"], 100 * evidence["physical"] / evidence["size"]))
    if made["giant"]:
        wo = evidence["logical_wo_giant"] / evidence["size_wo_giant"]
        lines.append("| logical, without the giant rollout | %d | %.2f %% | ≤ 5 %% | %s |" % (
            evidence["logical_wo_giant"], 100 * wo, verdict(wo <= TARGET_EVIDENCE_SHARE)))
    lines.append("| files read to their last byte | %d of %d | | | |" % (evidence["read_whole"], evidence["files"]))
    if giant:
        rw = giant["rewrite"]
        mb = rw["bytes"] / 1e6
        lines.append("")
        lines.append("| giant rollout (%d MB, %d lines changed) | s | MB/s | share of copyfile | target | |"
                     % (rw["bytes"] >> 20, rw["changes"]))
        lines.append("|---|---:|---:|---:|---|---|")
        share_copy = rw["copy_s"] / rw["rewrite_s"]
        step = ("rewrite (compare with the backup copy, edit, hash, fsync, replace)" if rw.get("backup_s")
                else "rewrite_rollout (stream, edit, fsync, replace)")
        lines.append("| %s | %.2f | %.0f | %.0f %% | ≥ 70 %% | %s |" % (
            step, rw["rewrite_s"], mb / rw["rewrite_s"], 100 * share_copy, verdict(share_copy >= TARGET_REWRITE_SHARE)))
        lines.append("| shutil.copyfile | %.2f | %.0f | 100 %% | | |" % (rw["copy_s"], mb / rw["copy_s"]))
        lines.append("| shutil.copyfile + fsync | %.2f | %.0f | | | |" % (rw["copy_fsync_s"], mb / rw["copy_fsync_s"]))
        lines.append("| plan_rollout_edit (stream, hash) | %.2f | %.0f | | | |" % (rw["plan_s"], mb / rw["plan_s"]))
        if rw.get("backup_s"):
            lines.append("| backup copy before it (copy, hash, fsync) | %.2f | %.0f | %.0f %% | | |" % (
                rw["backup_s"], mb / rw["backup_s"], 100 * rw["copy_s"] / rw["backup_s"]))
            whole = rw["backup_s"] + rw["rewrite_s"]
            lines.append("| backup copy + rewrite, against copyfile + fsync | %.2f | %.0f | %.0f %% of "
                         "copyfile + fsync | | |" % (whole, mb / whole, 100 * rw["copy_fsync_s"] / whole))
        lines.append("| peak RSS, plan + rewrite in one process | %.1f MB | | | ≤ %d MB | %s |" % (
            rw["rss"], TARGET_RSS_MB, verdict(rw["rss"] <= TARGET_RSS_MB)))
    return "\n".join(lines)


def machine() -> str:
    mem = ""
    try:
        with open("/proc/meminfo") as handle:
            mem = "%.0f GB RAM" % (int(handle.readline().split()[1]) / 1024 / 1024)
    except OSError:
        pass
    return "%s, %d CPUs, %s, Python %s" % (platform.platform(), os.cpu_count() or 0, mem, platform.python_version())


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--floor"]:
        floor_reader(Path(argv[1]))
        return 0
    if argv[:1] == ["--rewrite"]:
        rewrite_only(Path(argv[1]), argv[2], argv[3], argv[4], Path(argv[5]) if len(argv) > 5 else None)
        return 0
    if argv[:1] == ["--count-apply"]:
        count_apply(Path(argv[1]), Path(argv[2]), argv[3:])
        return 0
    if argv[:1] == ["--durable-copy"]:
        durable_copy(Path(argv[1]), Path(argv[2]))
        return 0
    if argv[:1] == ["--copy"]:
        copy_only(Path(argv[1]), Path(argv[2]), argv[3] == "1")
        return 0
    parser = argparse.ArgumentParser(description="Scale benchmark for codex-session-recovery.")
    parser.add_argument("--threads", type=int, default=10000, help="threads in the generated home (default 10000)")
    parser.add_argument("--giant-mb", type=int, default=1024, help="size of the one giant rollout, 0 for none "
                        "(default 1024)")
    parser.add_argument("--runs", type=int, default=5, help="runs per measurement; the median is reported (default 5)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated home (default 1)")
    parser.add_argument("--work-dir", help="where to build the home and its copies (default: a new folder in $TMPDIR)")
    parser.add_argument("--keep", action="store_true", help="keep the generated home and work folder")
    parser.add_argument("--size-median-kb", type=int, default=96, metavar="KB",
                        help="median rollout size of the generated home (default 96; 1 gives ~25 KB "
                             "heads-only rollouts, for 100,000 threads)")
    parser.add_argument("--home", metavar="DIR", help="measure a home make_home.py made earlier (read-only: "
                        "implies --skip-applies; --threads names its size)")
    parser.add_argument("--against", metavar="SCRIPT", help="with --home: compare another version of the script "
                        "(e.g. `git show main:scripts/codex_session_recovery.py > /tmp/main.py`) with this one")
    parser.add_argument("--apply-against", metavar="SCRIPT", help="with --home: time the provider --apply of "
                        "another version of the script and of this one, alternating on fresh copies, against "
                        "a durable copy of the same rollouts (needs --apply-only)")
    parser.add_argument("--apply-only", action="store_true", help="with --home: only the provider --apply "
                        "against a durable copy of its rollouts (fsyncs, hash passes, peak RSS)")
    parser.add_argument("--skip-applies", action="store_true",
                        help="measure the read-only commands only (no copies of the home, no applies)")
    args = parser.parse_args(argv)
    args.skip_applies = args.skip_applies or bool(args.home)
    print(machine(), flush=True)
    # Every version compared starts from its own cache: one compiled on every run would be
    # measured with ~0.1-0.2 s and ~12 MB that are not its own.
    for script in [SCRIPT] + [Path(other) for other in (args.against, args.apply_against) if other]:
        print(cache_bytecode(script), flush=True)
    if args.apply_only or args.apply_against:
        if not args.home:
            parser.error("--apply-only needs --home")
        return run_apply_comparison(args)
    if args.against:
        if not args.home:
            parser.error("--against needs --home")
        return run_comparison(args)
    return run_benchmark(args)


if __name__ == "__main__":
    raise SystemExit(main())
