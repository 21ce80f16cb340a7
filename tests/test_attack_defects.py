"""Defects an attack on real 0.169.0 homes found: live writers, interrupted runs, tampered
backups, odd files and odd values. One test (or family) per defect; each failed before its fix.

Every subprocess runs under a timeout, and every home is hashed where a run must not write.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

import codex_session_recovery as csr
from homes import HomeBuilder, db_dump, hash_tree, run_captured, run_script, switched_home

POSIX = os.name == "posix"
LINUX = sys.platform.startswith("linux")


run = run_captured  # the tool in this process (fast): (exit code, stdout, stderr)


def provider_home(root: Path, threads: int = 2, turns: int = 2) -> List[Any]:
    return switched_home(root, turns=(turns,) * threads)[1]


# ---------------------------------------------------------------------------------------------
# 1. A session that opens the rollout during the replace loses nothing
# ---------------------------------------------------------------------------------------------

LATE_SESSION = r"""
import json, sys, time
path, count = sys.argv[1], int(sys.argv[2])
with open(path, "ab") as handle:          # opened while the tool is replacing the file
    for n in range(count):
        handle.write((json.dumps({"timestamp": "2026-09-21T00:00:00.000Z", "type": "event_msg",
                                  "payload": {"type": "agent_message", "message": "late %d" % n}},
                                 separators=(",", ":")) + "\n").encode())
        handle.flush()
        time.sleep(0.8 if n == 0 else 0.01)  # most lines land after the replace
"""


def _late_lines(data: bytes) -> List[int]:
    return [int(json.loads(raw)["payload"]["message"].split()[1]) for raw in data.splitlines() if b'"late ' in raw]


@pytest.mark.skipif(not POSIX, reason="a second process holding a file across a rename is a POSIX case")
@pytest.mark.parametrize("leases", [True, False], ids=["kernel-lease", "proc-scan-only"])
def test_session_opening_the_rollout_during_the_replace_loses_nothing(tmp_path, monkeypatch, leases):
    """CODEX-COMPAT 0.169.0: a resumed session opens its rollout for append and keeps it open.
    One that opens it after the tool's first check and writes while the file is replaced must
    find every line in the rollout the user is left with (the thread is then left as it was)."""
    root = tmp_path / "home"
    threads = provider_home(root, threads=2)
    target = threads[0]
    original = target.path.read_bytes()
    real_replace = os.replace
    sessions: List[subprocess.Popen] = []

    def replace_while_a_session_opens(src, dst, *args, **kwargs):
        if os.fspath(dst) == str(target.path) and csr.TEMP_MARKER in os.fspath(src) and not sessions:
            sessions.append(subprocess.Popen([sys.executable, "-c", LATE_SESSION, str(target.path), "30"]))
            time.sleep(0.4)  # the session's open() is under way (or done) when the file is replaced
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(csr.os, "replace", replace_while_a_session_opens)
    if not leases:
        monkeypatch.setattr(csr, "take_read_lease", lambda fd: None)
    code, out, err = run(*["repair-provider", "--codex-home", str(root), "--from", "openai", "--apply", "--json"])
    monkeypatch.setattr(csr.os, "replace", real_replace)
    assert sessions, "the replace of the rollout was never reached"
    sessions[0].wait(timeout=60)
    assert code == csr.EXIT_OK, err
    final = target.path.read_bytes()
    assert _late_lines(final) == list(range(30)), "lines the session wrote were lost"
    assert final.startswith(original) or final.splitlines()[0] != original.splitlines()[0]
    doc = json.loads(out)
    assert target.id in {s["thread_id"] for s in doc["skipped"]}, doc["skipped"]
    other = threads[1].path.read_bytes().splitlines()[0]
    assert json.loads(other)["payload"]["model_provider"] == "proxy"


@pytest.mark.skipif(not POSIX, reason="flock")
def test_codex_thread_writer_lock_is_honoured(tmp_path):
    """CODEX-COMPAT 0.169.0 and 0.171.0 hold an exclusive flock on
    thread-writer-locks/<thread id>.lock while a thread is loaded (measured with /proc/locks).
    A thread whose lock is held is left alone, even with --force; the others are repaired, and
    the lock is taken (so a resuming Codex waits) while its rollout is replaced."""
    import fcntl
    root = tmp_path / "home"
    threads = provider_home(root, threads=2)
    locks = root / "thread-writer-locks"
    locks.mkdir()
    (locks / ".coordination.lock").touch()
    for thread in threads:  # Codex leaves one per thread it has loaded
        (locks / ("%s.lock" % thread.id)).touch()
    held = open(str(locks / ("%s.lock" % threads[0].id)), "a+b")
    fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    before = threads[0].path.read_bytes()
    try:
        code, out, err = run(*["repair-provider", "--codex-home", str(root), "--from", "openai", "--apply",
                              "--force", "--json"])
    finally:
        held.close()
    assert code == csr.EXIT_OK, err
    assert threads[0].path.read_bytes() == before
    skipped = {s["thread_id"]: s["reason"] for s in json.loads(out)["skipped"]}
    assert "writer lock" in skipped[threads[0].id]
    assert json.loads(threads[1].path.read_bytes().splitlines()[0])["payload"]["model_provider"] == "proxy"
    # Nothing of the tool's is left holding or littering Codex's lock folder.
    probe = open(str(locks / ("%s.lock" % threads[1].id)), "a+b")
    try:
        fcntl.flock(probe.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        probe.close()


# ---------------------------------------------------------------------------------------------
# 2. History offsets after a kill: checked against real line starts, repaired by the rerun
# ---------------------------------------------------------------------------------------------


def line_starts(path: Path) -> set:
    starts, offset = {0}, 0
    for raw in path.read_bytes().splitlines(keepends=True):
        offset += len(raw)
        starts.add(offset)
    return starts


def projection_offsets(root: Path) -> Dict[str, List[int]]:
    conn = sqlite3.connect(str(root / "thread_history_1.sqlite"))
    try:
        found: Dict[str, List[int]] = {}
        for tid, start, end in conn.execute("SELECT thread_id, rollout_byte_offset, rollout_end_byte_offset FROM thread_turns"):
            found.setdefault(tid, []).extend([start, end])
        for tid, nxt in conn.execute("SELECT thread_id, next_rollout_byte_offset FROM thread_history_projection_state"):
            found.setdefault(tid, []).append(nxt)
        return found
    finally:
        conn.close()


def misaligned(root: Path, threads: List[Any]) -> List[str]:
    offsets = projection_offsets(root)
    return sorted(t.id for t in threads if not set(offsets.get(t.id, [])) <= line_starts(t.path))


@pytest.mark.parametrize("point", ["after_rollout_replace:1", "after_rollout_replace:2", "after_commit:1"])
def test_offsets_left_stale_by_a_kill_are_found_and_realigned(tmp_path, point):
    """CODEX-COMPAT 0.169.0: thread_turns and thread_history_projection_state hold byte offsets
    of line starts (rollout_byte_offset is the start of the line whose `ordinal` is
    rollout_ordinal; measured on a real home). A kill after a rollout was replaced leaves them
    pointing at old positions: diagnose reports it, trace shows it, and the rerun of the same
    command realigns them, then has nothing left to do."""
    root = tmp_path / "home"
    threads = provider_home(root, threads=3, turns=3)
    argv = ["repair-provider", "--codex-home", str(root), "--from", "openai"]
    killed = run_script(*argv + ["--apply"], env={csr.FAULT_ENV: point + ":kill"})
    assert killed.returncode < 0, killed.stderr.decode()[-500:]
    bad = misaligned(root, threads)
    assert bad, "the kill left every offset right: nothing to prove"

    code, out, _err = run(*["diagnose", "--codex-home", str(root), "--json"])
    finding = next((f for f in json.loads(out)["findings"] if f["code"] == "history_offsets_misaligned"), None)
    assert finding is not None and sorted(finding["evidence"]["thread_ids"]) == bad
    code, out, _err = run(*["trace", bad[0], "--codex-home", str(root), "--json"])
    projection = json.loads(out)["trace"]["projection"]
    assert projection["offsets_on_line_starts"] is False

    code, out, err = run(*argv + ["--json"])
    doc = json.loads(out)
    assert code == csr.EXIT_FINDINGS, err
    realign = [a for a in doc["actions"] if a["kind"] == "sql" and a["thread_id"] in bad
               and a["table"] in ("thread_turns", "thread_history_projection_state")]
    assert realign, doc["actions"]
    code, out, err = run(*argv + ["--apply", "--json"])
    assert code == csr.EXIT_OK, err
    assert misaligned(root, threads) == []
    code, out, err = run(*argv + ["--json"])
    assert (code, json.loads(out)["changes"]) == (csr.EXIT_OK, 0), out
    code, out, _err = run(*["diagnose", "--codex-home", str(root), "--json"])
    assert "history_offsets_misaligned" not in {f["code"] for f in json.loads(out)["findings"]}


def test_next_after_a_kill_names_the_command_that_realigns_the_offsets(tmp_path):
    """The guided path ends after a kill too: Next names reindex (the projection is an index of
    the rollouts), and running that line as printed puts every offset back on a line start."""
    root = tmp_path / "home"
    threads = provider_home(root, threads=3, turns=3)
    killed = run_script(*["repair-provider", "--codex-home", str(root), "--from", "openai", "--apply"],
                        env={csr.FAULT_ENV: "after_commit:1:kill"})
    assert killed.returncode < 0, killed.stderr.decode()[-500:]
    code, out, _err = run(*["diagnose", "--codex-home", str(root), "--json"])
    doc = json.loads(out)
    assert "history_offsets_misaligned" in {f["code"] for f in doc["findings"]}
    lines = [argv for argv in doc["next_argv"] if "reindex" in argv]
    assert len(lines) == 1, doc["next_argv"]
    tail = lines[0][lines[0].index("reindex"):]
    code, out, err = run(*tail + ["--codex-home", str(root), "--json"])
    plan_id = json.loads(out)["plan_id"]
    code, out, err = run(*tail + ["--codex-home", str(root), "--apply", "--expect-plan", plan_id, "--json"])
    assert code == csr.EXIT_OK, err
    assert misaligned(root, threads) == []
    code, out, _err = run(*["diagnose", "--codex-home", str(root), "--json"])
    assert "history_offsets_misaligned" not in {f["code"] for f in json.loads(out)["findings"]}


@pytest.mark.parametrize("torn", [False, True])
def test_offsets_are_judged_byte_for_byte_across_pages(tmp_path, torn):
    """The check reads the byte before each offset with its page, once: every offset of a file
    whose lines straddle page boundaries (and -2, -1, its size and past it) is judged exactly as
    one read of that byte would judge it, with the torn fragment's offsets left out."""
    data = b"".join(b"x" * n + b"\n" for n in (10, 4084, 0, 4095, 4096, 1, 9000, 3)) + (b"cut" if torn else b"")
    path = tmp_path / "rollout.jsonl"
    path.write_bytes(data)
    fragment = data.rfind(b"\n") + 1
    offsets = list(range(-2, len(data) + 3))
    expected = [o for o in offsets if not (torn and o > fragment)
                and (o < 0 or o > len(data) or (o > 0 and data[o - 1:o] != b"\n"))]
    fd = os.open(str(path), os.O_RDONLY)
    try:
        assert csr.offsets_off_line_starts(fd, len(data), offsets, torn) == expected
    finally:
        os.close(fd)


def test_offsets_of_the_bytes_a_torn_tail_lost_are_not_misaligned(tmp_path):
    """CODEX-COMPAT 0.169.0, 0.171.0: a crash that cut the last line leaves the projection's
    offsets for that line past the file's end; the real Codex reads every complete turn and
    continues the thread, so it is no finding (and a provider repair of it plans no realignment)."""
    root = tmp_path / "home"
    threads = provider_home(root, threads=2, turns=3)
    data = threads[0].path.read_bytes()
    threads[0].path.write_bytes(data[:len(data) - 40])
    code, out, _err = run(*["diagnose", "--codex-home", str(root), "--json"])
    assert "history_offsets_misaligned" not in {f["code"] for f in json.loads(out)["findings"]}, out
    argv = ["repair-provider", "--codex-home", str(root), "--from", "openai"]
    code, out, err = run(*argv + ["--apply", "--json"])
    assert code == csr.EXIT_OK, err
    code, out, _err = run(*["diagnose", "--codex-home", str(root), "--json"])
    assert "history_offsets_misaligned" not in {f["code"] for f in json.loads(out)["findings"]}, out
    untouched = set(projection_offsets(root)[threads[1].id])
    assert untouched <= line_starts(threads[1].path)


# ---------------------------------------------------------------------------------------------
# 3. restore verifies the backup and writes through the one apply engine
# ---------------------------------------------------------------------------------------------


def applied_home(root: Path) -> Tuple[List[Any], Path]:
    threads = provider_home(root, threads=2)
    code, out, err = run(*["repair-provider", "--codex-home", str(root), "--from", "openai", "--apply", "--json"])
    assert code == csr.EXIT_OK, err
    return threads, Path(json.loads(out)["backup_dir"])


def edit_manifest(folder: Path, change) -> None:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def restore_apply(root: Path, folder: Path, *extra: str) -> Tuple[int, str, str]:
    return run(*["restore", "--codex-home", str(root), str(folder), "--apply", *extra])


def test_restore_refuses_a_tampered_payload(tmp_path):
    root = tmp_path / "home"
    _threads, folder = applied_home(root)
    payload = next(p for p in (folder / "files").rglob("rollout-*.jsonl"))
    payload.write_bytes(payload.read_bytes().replace(b"fix the failing", b"rm -rf the whole"))
    before = hash_tree(root)
    code, _out, err = restore_apply(root, folder, "--force")
    assert code == csr.EXIT_REFUSED, err
    assert "does not match" in err and len(err.strip().splitlines()) == 1
    assert hash_tree(root) == before


def test_restore_refuses_a_tampered_database_payload(tmp_path):
    root = tmp_path / "home"
    _threads, folder = applied_home(root)
    payload = folder / "files" / "state_5.sqlite"
    conn = sqlite3.connect(str(payload))
    conn.execute("UPDATE threads SET cwd = '/evil'")
    conn.commit()
    conn.close()
    before = hash_tree(root)
    code, _out, err = restore_apply(root, folder, "--force")
    assert code == csr.EXIT_REFUSED, err
    assert hash_tree(root) == before


@pytest.mark.parametrize("attack", ["dotdot", "absolute-delete", "absolute-write", "through-symlink",
                                    "payload-outside", "not-json", "unknown-kind"])
def test_restore_refuses_paths_that_leave_the_home(tmp_path, attack):
    """A manifest path that is absolute, climbs out with `..`, or goes through a symlink is
    refused (exit 3) before anything is written; so is a manifest that does not verify."""
    root = tmp_path / "home"
    threads, folder = applied_home(root)
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me\n")
    victim_rel = os.path.relpath(str(outside), str(root))

    def first_file(manifest):
        return next(e for e in manifest["entries"] if e["kind"] == "file")

    if attack == "dotdot":
        edit_manifest(folder, lambda m: first_file(m).update(path=victim_rel))
    elif attack == "absolute-delete":
        edit_manifest(folder, lambda m: first_file(m).update(path=str(outside), existed=False, backup=None))
    elif attack == "absolute-write":
        edit_manifest(folder, lambda m: first_file(m).update(path=str(outside)))
    elif attack == "through-symlink":
        link = root / "sessions" / "elsewhere"
        os.symlink(str(tmp_path), str(link))
        edit_manifest(folder, lambda m: first_file(m).update(path="sessions/elsewhere/outside.txt"))
    elif attack == "payload-outside":
        edit_manifest(folder, lambda m: first_file(m).update(backup="../../../outside.txt"))
    elif attack == "not-json":
        (folder / "manifest.json").write_text('{"tool": "codex-session-recovery", "entries": [')
    elif attack == "unknown-kind":
        edit_manifest(folder, lambda m: first_file(m).update(kind="script"))
    before = hash_tree(root)
    code, _out, err = restore_apply(root, folder, "--force", "--discard-changes")
    assert code == csr.EXIT_REFUSED, (code, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert outside.read_text() == "keep me\n"
    assert hash_tree(root) == before


def test_restore_writes_through_the_apply_engine(tmp_path, monkeypatch):
    """One place that writes: restore's writes go through apply_plan (preflight, lock, undo
    backup, verify); a failure at a write point there is undone from the undo backup."""
    root = tmp_path / "home"
    threads, folder = applied_home(root)
    calls = []
    real = csr.apply_plan

    def recording(inv, plan, args, argv):
        calls.append(plan.command)
        return real(inv, plan, args, argv)

    monkeypatch.setattr(csr, "apply_plan", recording)
    repaired = hash_tree(root)
    monkeypatch.setenv(csr.FAULT_ENV, "before_file_write:1:raise")
    code, _out, err = restore_apply(root, folder)
    assert code == csr.EXIT_APPLY_FAILED and "succeeded" in err, err
    assert hash_tree(root) == repaired
    monkeypatch.delenv(csr.FAULT_ENV)
    code, _out, err = restore_apply(root, folder)
    assert code == csr.EXIT_OK, err
    assert calls == ["restore", "restore"]
    assert all(b'"model_provider":"openai"' in t.path.read_bytes() for t in threads)


# ---------------------------------------------------------------------------------------------
# 6. Values that used to end in a traceback
# ---------------------------------------------------------------------------------------------


def _huge_recency(root: Path) -> List[str]:
    home = HomeBuilder(root, "0.169.0").provider_config("proxy")
    home.thread(provider="openai", row_overrides={"recency_at_ms": 9223372036854775807,
                                                  "updated_at_ms": 9223372036854775807})
    return ["diagnose", "--json"]


def _garbage_history(root: Path) -> List[str]:
    provider_home(root, threads=1)
    (root / "thread_history_1.sqlite").write_bytes(b"garbage " * 500)
    return ["repair-provider", "--from", "openai", "--apply", "--json"]


def _directory_history(root: Path) -> List[str]:
    provider_home(root, threads=1)
    (root / "thread_history_1.sqlite").unlink()
    (root / "thread_history_1.sqlite").mkdir()
    return ["repair-provider", "--from", "openai", "--apply", "--json"]


def _impossible_timestamp(root: Path) -> List[str]:
    home = HomeBuilder(root, "0.169.0")
    thread = home.thread(row=False)
    lines = thread.path.read_bytes().splitlines(keepends=True)
    record = json.loads(lines[0])
    record["payload"]["timestamp"] = "2026-13-45T99:99:99.000Z"
    thread.path.write_bytes(json.dumps(record, separators=(",", ":")).encode() + b"\n" + b"".join(lines[1:]))
    return ["reindex", "--apply", "--json"]


def _surrogate_global_state(root: Path) -> List[str]:
    HomeBuilder(root, "0.169.0").thread()
    (root / ".codex-global-state.json").write_text(
        '{"electron-persisted-atom-state": {"thread-sort-key": "created_at", "prompt-history": ["\\ud800 x"]}}')
    return ["repair-ui-state", "--apply", "--json"]


def _surrogate_thread_name(root: Path) -> List[str]:
    home = HomeBuilder(root, "0.169.0")
    thread = home.thread()
    (root / "session_index.jsonl").write_text(
        '{"id": "%s", "thread_name": "caf\\ud800", "updated_at": "2026-10-01T00:00:00Z"}\n'
        '{"id": "019a0000-0000-7000-8000-00000000dead", "thread_name": "gone"}\n' % thread.id)
    return ["rebuild-index", "--apply", "--json"]


# What each odd value's command exits with: only the huge recency is left as a finding.
ODD_VALUE_EXITS = {"_huge_recency": csr.EXIT_FINDINGS, "_garbage_history": csr.EXIT_OK,
                   "_directory_history": csr.EXIT_OK, "_impossible_timestamp": csr.EXIT_OK,
                   "_surrogate_global_state": csr.EXIT_OK, "_surrogate_thread_name": csr.EXIT_OK}


@pytest.mark.parametrize("build", [_huge_recency, _garbage_history, _directory_history, _impossible_timestamp,
                                   _surrogate_global_state, _surrogate_thread_name],
                         ids=lambda f: f.__name__.strip("_"))
def test_odd_values_give_findings_not_tracebacks(tmp_path, build):
    root = tmp_path / "home"
    argv = build(root)
    done = run_script(*[argv[0], "--codex-home", str(root), *argv[1:]], timeout=60)
    err = done.stderr.decode()
    assert "Traceback" not in err, err[-3000:]
    assert done.returncode == ODD_VALUE_EXITS[build.__name__], (done.returncode, err)
    json.loads(done.stdout)  # exactly one JSON document
    for folder, _dirs, files in os.walk(str(root)):
        for name in files:
            if name.endswith(".json") and csr.BACKUP_DIR_NAME not in folder:
                json.loads(Path(folder, name).read_bytes().decode("utf-8"))  # still valid UTF-8 JSON


# ---------------------------------------------------------------------------------------------
# 8. Numbers JSON cannot write back
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("number", ["1e999", "-1e999", "NaN", "Infinity"])
def test_ui_state_with_a_number_json_cannot_write_is_left_alone(tmp_path, number):
    root = tmp_path / "home"
    HomeBuilder(root, "0.169.0").thread()
    path = root / ".codex-global-state.json"
    path.write_text('{"electron-persisted-atom-state": {"thread-sort-key": "created_at", "zoom": %s}}\n' % number)
    before = path.read_bytes()
    code, out, err = run(*["repair-ui-state", "--codex-home", str(root), "--apply", "--json"])
    assert code == csr.EXIT_OK, err
    assert path.read_bytes() == before
    assert any(number in s["reason"] for s in json.loads(out)["skipped"])


# ---------------------------------------------------------------------------------------------
# 9. A BOM on session_index.jsonl; 15. an unparsable config.toml
# ---------------------------------------------------------------------------------------------


def test_bom_on_the_first_index_line_keeps_that_name(tmp_path):
    root = tmp_path / "home"
    home = HomeBuilder(root, "0.169.0")
    thread = home.thread()
    (root / "session_index.jsonl").write_bytes(
        b"\xef\xbb\xbf" + json.dumps({"id": thread.id, "thread_name": "checkout bug",
                                      "updated_at": "2026-10-01T00:00:00Z"}).encode() + b"\n")
    code, out, err = run(*["trace", "checkout bug", "--codex-home", str(root), "--json"])
    assert json.loads(out)["trace"]["id"] == thread.id, err
    code, out, _err = run(*["diagnose", "--codex-home", str(root), "--json"])
    assert "index_bad_lines" not in {f["code"] for f in json.loads(out)["findings"]}


def test_unparsable_config_is_a_refusal_and_an_unknown_provider(tmp_path):
    root = tmp_path / "home"
    provider_home(root, threads=1)
    (root / "config.toml").write_text('model_provider = "proxy\n[[[\n')
    before = hash_tree(root)
    code, _out, err = run(*["repair-provider", "--codex-home", str(root), "--from", "openai", "--apply"])
    assert code == csr.EXIT_REFUSED, err
    assert hash_tree(root) == before
    code, out, _err = run(*["diagnose", "--codex-home", str(root)])
    provider_line = next(l for l in out.splitlines() if l.startswith("Provider:"))
    assert "unknown" in provider_line and "default" not in provider_line, provider_line
    code, out, _err = run(*["diagnose", "--codex-home", str(root), "--json"])
    doc = json.loads(out)
    assert doc["config"]["active_provider"] is None
    assert "config_unparsable" in {f["code"] for f in doc["findings"]}


# ---------------------------------------------------------------------------------------------
# 5. Nothing that is not a regular file is opened; every read is bounded
# ---------------------------------------------------------------------------------------------

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs")


def _fifo_rollout(root: Path) -> List[List[str]]:
    home = HomeBuilder(root, "0.169.0")
    home.thread()
    thread = home.thread(row=False)
    thread.path.unlink()
    os.mkfifo(str(thread.path))
    return [["trace", thread.id], ["reindex", "--apply"], ["diagnose"]]


def _fifo_config(root: Path) -> List[List[str]]:
    thread = HomeBuilder(root, "0.169.0").thread()
    os.mkfifo(str(root / "config.toml"))
    return [["diagnose"], ["trace", thread.id], ["report"], ["repair-provider", "--from", "openai", "--to", "proxy"],
            ["reindex"], ["rebuild-index"], ["repair-ui-state"], ["repair-user-events"], ["rebuild-db"],
            ["restore", "--list"]]


def _zero_config(root: Path) -> List[List[str]]:
    HomeBuilder(root, "0.169.0").thread()
    os.symlink("/dev/zero", str(root / "config.toml"))
    return [["diagnose"], ["report"]]


def _fifo_global_state(root: Path) -> List[List[str]]:
    thread = HomeBuilder(root, "0.169.0").thread()
    os.mkfifo(str(root / ".codex-global-state.json"))
    return [["trace", thread.id], ["diagnose"], ["repair-ui-state", "--apply"]]


def _fifo_restore_target(root: Path) -> List[List[str]]:
    threads, folder = applied_home(root)
    threads[0].path.unlink()
    os.mkfifo(str(threads[0].path))
    return [["restore", str(folder)], ["restore", str(folder), "--apply", "--discard-changes"]]


# The exit code of each command a builder returns, in order: each one is fixed.
NON_REGULAR_EXITS = {
    "_fifo_rollout": [csr.EXIT_FINDINGS, csr.EXIT_OK, csr.EXIT_OK],
    "_fifo_config": [csr.EXIT_FINDINGS, csr.EXIT_OK, csr.EXIT_FINDINGS, csr.EXIT_FINDINGS] + [csr.EXIT_OK] * 6,
    "_zero_config": [csr.EXIT_FINDINGS, csr.EXIT_FINDINGS],
    "_fifo_global_state": [csr.EXIT_OK, csr.EXIT_OK, csr.EXIT_OK],
    "_fifo_restore_target": [csr.EXIT_REFUSED, csr.EXIT_REFUSED],
}


@needs_fifo
@pytest.mark.parametrize("build", [_fifo_rollout, _fifo_config, _zero_config, _fifo_global_state,
                                   _fifo_restore_target], ids=lambda f: f.__name__.strip("_"))
def test_non_regular_files_never_hang_a_command(tmp_path, build):
    root = tmp_path / "home"
    commands = build(root)
    assert len(commands) == len(NON_REGULAR_EXITS[build.__name__])
    for argv, expected in zip(commands, NON_REGULAR_EXITS[build.__name__]):
        done = run_script(*[argv[0], "--codex-home", str(root), *argv[1:]], timeout=30)
        err = done.stderr.decode()
        assert "Traceback" not in err and "MemoryError" not in err, (argv, err[-2000:])
        assert done.returncode == expected, (argv, done.returncode, err)


# ---------------------------------------------------------------------------------------------
# 7. Unreadable is not missing
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def unreadable_folder(folder: Path, monkeypatch):
    """A folder the user cannot read (mode 000). Root reads it anyway, so for root the same
    EACCES is raised by the calls the tool makes under it."""
    if not (POSIX and os.geteuid() == 0):
        folder.chmod(0)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    deny = str(folder)
    real_stat, real_scandir, real_open = os.stat, os.scandir, os.open

    def denied(path) -> bool:
        text = os.fspath(path) if not isinstance(path, int) else ""
        return text.startswith(deny + os.sep)

    def stat(path, *args, **kwargs):
        if denied(path):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_stat(path, *args, **kwargs)

    def scandir(path="."):
        if os.fspath(path) == deny or denied(path):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    def open_(path, *args, **kwargs):
        if denied(path):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "open", open_)
    try:
        yield
    finally:
        monkeypatch.setattr(os, "stat", real_stat)
        monkeypatch.setattr(os, "scandir", real_scandir)
        monkeypatch.setattr(os, "open", real_open)


def test_unreadable_folder_blocks_pruning(tmp_path, monkeypatch):
    root = tmp_path / "home"
    home = HomeBuilder(root, "0.169.0")
    threads = [home.thread() for _ in range(4)]
    gone = home.thread()
    gone.path.unlink()
    conn = sqlite3.connect(str(root / "state_5.sqlite"))
    conn.execute("UPDATE threads SET rollout_path = ? WHERE id = ?",
                 (str(root / "sessions" / "2026" / "10" / "01" / gone.path.name), gone.id))
    conn.commit()
    conn.close()
    folder = threads[0].path.parent
    assert all(t.path.parent == folder for t in threads)
    rows_before = db_dump(root / "state_5.sqlite")
    with unreadable_folder(folder, monkeypatch):
        code, out, err = run(*["reindex", "--codex-home", str(root), "--prune-missing", "--apply", "--json"])
        diag_code, diag, _ = run(*["diagnose", "--codex-home", str(root), "--json"])
    assert code == csr.EXIT_OK, err
    assert db_dump(root / "state_5.sqlite") == rows_before, "rows of conversations that exist were deleted"
    doc = json.loads(diag)
    codes = {f["code"] for f in doc["findings"]}
    assert "sessions_folder_unreadable" in codes
    inaccessible = next(f for f in doc["findings"] if f["code"] == "rollout_inaccessible")
    assert sorted(inaccessible["thread_ids"]) == sorted(t.id for t in threads)
    missing = next(f for f in doc["findings"] if f["code"] == "rollout_missing")
    assert missing["thread_ids"] == [gone.id]
    # Readable again, the proven-missing row is pruned and the others are kept.
    code, out, err = run(*["reindex", "--codex-home", str(root), "--prune-missing", "--apply", "--json"])
    assert code == csr.EXIT_OK, err
    conn = sqlite3.connect(str(root / "state_5.sqlite"))
    ids = {r[0] for r in conn.execute("SELECT id FROM threads")}
    conn.close()
    assert ids == {t.id for t in threads}
    assert run(*["reindex", "--codex-home", str(root), "--prune-missing", "--json"])[0] == csr.EXIT_OK


# ---------------------------------------------------------------------------------------------
# 4. A hot rollback journal is rolled back on a private copy, never read as corruption
# ---------------------------------------------------------------------------------------------

CRASH_MID_TRANSACTION = r"""
import os, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA cache_size = 1")      # dirty pages spill into the DB file mid-transaction
conn.execute("BEGIN")
conn.execute("UPDATE threads SET cwd = '/uncommitted', title = hex(randomblob(3000))")
conn.execute("CREATE TABLE spill (x)")
conn.executemany("INSERT INTO spill VALUES (randomblob(4000))", [()] * 400)
os._exit(0)                                 # a crash: no commit, no rollback
"""


def test_hot_journal_is_rolled_back_on_a_copy_not_read_as_corruption(tmp_path):
    root = tmp_path / "home"
    home = HomeBuilder(root, "0.169.0")
    for _ in range(30):
        home.thread()
    db = root / "state_5.sqlite"
    conn = sqlite3.connect(str(db))
    conn.execute("PRAGMA journal_mode=DELETE")  # a DB Codex left in rollback-journal mode
    conn.close()
    crashed = subprocess.run([sys.executable, "-c", CRASH_MID_TRANSACTION, str(db)], timeout=60)
    assert crashed.returncode == 0
    journal = Path(str(db) + "-journal")
    assert journal.exists() and journal.stat().st_size > 0
    before = hash_tree(root)
    code, out, err = run(*["diagnose", "--codex-home", str(root), "--json"])
    doc = json.loads(out)
    codes = {f["code"] for f in doc["findings"]}
    assert not codes & {"state_db_corrupt", "state_db_unreadable"}, doc["findings"]
    assert doc["counts"]["threads"] == 30 if "threads" in doc["counts"] else True
    code, out, err = run(*["rebuild-db", "--codex-home", str(root), "--json"])
    assert json.loads(out)["changes"] == 0, out
    assert hash_tree(root) == before, "a read touched the DB or its journal"
    assert journal.exists()


def test_rebuild_db_moves_a_journal_with_its_db(tmp_path):
    root = tmp_path / "home"
    HomeBuilder(root, "0.169.0").thread()
    db = root / "state_5.sqlite"
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True) if sys.version_info >= (3, 8) else None
    db.write_bytes(b"not a database " * 300)
    Path(str(db) + "-journal").write_bytes(b"\xd9\xd5\x05\xf9\x20\xa1\x63\xd7" + b"\x00" * 500)
    code, out, err = run(*["rebuild-db", "--codex-home", str(root), "--json"])
    moved = [a["path"] for a in json.loads(out)["actions"] if a["kind"] == "move_to_backup"]
    assert "state_5.sqlite" in moved and "state_5.sqlite-journal" in moved, moved


# ---------------------------------------------------------------------------------------------
# 10. recovery-backups and its .lock are never followed through a symlink; 14. messages
# ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(not POSIX, reason="symlinks")
@pytest.mark.parametrize("what", ["folder", "lock"])
def test_symlinked_backup_folder_or_lock_is_refused(tmp_path, what):
    root = tmp_path / "home"
    provider_home(root, threads=1)
    outside = tmp_path / "outside"
    outside.mkdir()
    if what == "folder":
        os.symlink(str(outside), str(root / csr.BACKUP_DIR_NAME))
    else:
        (root / csr.BACKUP_DIR_NAME).mkdir(mode=0o700)
        os.symlink(str(outside / "created-by-the-tool"), str(root / csr.BACKUP_DIR_NAME / ".lock"))
    before = hash_tree(root)
    code, _out, err = run(*["repair-provider", "--codex-home", str(root), "--from", "openai", "--apply"])
    assert code == csr.EXIT_REFUSED, err
    assert "symlink" in err and len(err.strip().splitlines()) == 1
    assert list(outside.iterdir()) == []
    assert hash_tree(root) == before


def test_a_file_where_the_backup_folder_should_be_is_named_as_such(tmp_path):
    root = tmp_path / "home"
    provider_home(root, threads=1)
    (root / csr.BACKUP_DIR_NAME).write_text("not a folder")
    code, _out, err = run(*["repair-provider", "--codex-home", str(root), "--from", "openai", "--apply"])
    assert code == csr.EXIT_REFUSED
    assert "not a folder" in err and "not writable" not in err, err


@pytest.mark.parametrize("linked", [False, True], ids=["db", "symlinked-db"])
def test_lock_failure_messages_name_the_cause(tmp_path, monkeypatch, linked):
    """A full disk is not a permissions problem; a symlinked DB is named with what it links to."""
    root = tmp_path / "home"
    provider_home(root, threads=1)
    if linked:
        real = root / "data" / "state_5.sqlite"
        real.parent.mkdir()
        for suffix in ("", "-wal", "-shm"):
            if Path(str(root / "state_5.sqlite") + suffix).exists():
                os.replace(str(root / "state_5.sqlite") + suffix, str(real) + suffix)
        os.symlink(str(real), str(root / "state_5.sqlite"))
    real_connect = sqlite3.connect

    class FullDisk:
        def __init__(self, conn):
            self.conn = conn

        def execute(self, sql, *args):
            if sql.startswith("BEGIN IMMEDIATE"):
                raise sqlite3.OperationalError("database or disk is full")
            return self.conn.execute(sql, *args)

        def __getattr__(self, name):
            return getattr(self.conn, name)

    def connect(target, *args, **kwargs):
        conn = real_connect(target, *args, **kwargs)
        # Only the write connection that takes the lock (the backup's copy is named alike).
        locking = "isolation_level" in kwargs and kwargs["isolation_level"] is None
        return FullDisk(conn) if locking and str(target).endswith("state_5.sqlite") else conn

    monkeypatch.setattr(csr.sqlite3, "connect", connect)
    code, _out, err = run(*["repair-provider", "--codex-home", str(root), "--from", "openai", "--apply"])
    monkeypatch.setattr(csr.sqlite3, "connect", real_connect)
    assert code == csr.EXIT_REFUSED
    assert "full" in err and "permissions" not in err, err
    assert ("a link to %s" % (root / "data" / "state_5.sqlite") in err) == linked, err


# ---------------------------------------------------------------------------------------------
# 12. Partial backups are listed, reported and cleaned; 13. a read-only DB stops the run early
# ---------------------------------------------------------------------------------------------


def test_partial_backups_are_listed_reported_and_cleaned(tmp_path):
    root = tmp_path / "home"
    provider_home(root, threads=2)
    killed = run_script(*["repair-provider", "--codex-home", str(root), "--from", "openai", "--apply"],
                        env={csr.FAULT_ENV: "mid_backup:1:kill"})
    assert killed.returncode < 0
    partial = [p for p in (root / csr.BACKUP_DIR_NAME).iterdir() if p.is_dir()]
    assert partial and not (partial[0] / "manifest.json").exists()
    code, out, _err = run(*["restore", "--codex-home", str(root), "--list", "--json"])
    listed = json.loads(out)["backups"]
    assert [b["name"] for b in listed] == [partial[0].name] and listed[0]["partial"] is True
    code, out, _err = run(*["diagnose", "--codex-home", str(root), "--json"])
    assert "partial_backups" in {f["code"] for f in json.loads(out)["findings"]}
    assert run(*["restore", "--codex-home", str(root), "--latest"])[0] == csr.EXIT_USAGE
    code, out, err = run(*["repair-provider", "--codex-home", str(root), "--from", "openai", "--apply"])
    assert code == csr.EXIT_OK, err
    left = [p.name for p in (root / csr.BACKUP_DIR_NAME).iterdir() if p.is_dir() and not (p / "manifest.json").exists()]
    assert left == [], "the partial backup of the killed run was not cleaned"


def test_read_only_db_stops_the_run_before_the_first_write(tmp_path, monkeypatch):
    """SQLite opens a DB it cannot write read-only without saying so, and BEGIN IMMEDIATE
    succeeds on it: the lock step must prove it can write before any rollout is touched."""
    root = tmp_path / "home"
    threads = provider_home(root, threads=2)
    originals = [t.path.read_bytes() for t in threads]
    real_connect = sqlite3.connect

    def read_only(target, *args, **kwargs):
        if str(target).endswith("state_5.sqlite") and "isolation_level" in kwargs and kwargs["isolation_level"] is None:
            return real_connect(Path(target).resolve().as_uri() + "?mode=ro", *args, uri=True, **kwargs)
        return real_connect(target, *args, **kwargs)

    monkeypatch.setattr(csr.sqlite3, "connect", read_only)
    code, _out, err = run(*["repair-provider", "--codex-home", str(root), "--from", "openai", "--apply"])
    monkeypatch.setattr(csr.sqlite3, "connect", real_connect)
    assert code == csr.EXIT_REFUSED, err
    assert "read-only" in err
    assert [t.path.read_bytes() for t in threads] == originals


# ---------------------------------------------------------------------------------------------
# 11. After a kill, restore needs no override; its two overrides are separate
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("point", ["after_rollout_replace:2", "after_commit:1", "before_manifest_finish:1"])
def test_restore_after_a_kill_needs_no_override(tmp_path, point):
    root = tmp_path / "home"
    provider_home(root, threads=3, turns=2)
    before = hash_tree(root)
    dumps = {n: db_dump(root / n) for n in ("state_5.sqlite", "thread_history_1.sqlite")}
    killed = run_script(*["repair-provider", "--codex-home", str(root), "--from", "openai", "--apply"],
                        env={csr.FAULT_ENV: point + ":kill"})
    assert killed.returncode < 0
    code, out, err = run(*["restore", "--codex-home", str(root), "--latest", "--json"])
    assert json.loads(out)["changed_since_run"] == [], out
    code, _out, err = run(*["restore", "--codex-home", str(root), "--latest", "--apply"])
    assert code == csr.EXIT_OK, err
    after = hash_tree(root)
    # DBs compare by content (a kill mid-transaction may leave SQLite's own -journal, which it
    # rolls back at the next open); every other file by its bytes.
    db_files = (".sqlite", "-wal", "-journal")
    assert {k: v for k, v in after.items() if not k.endswith(db_files)} == \
        {k: v for k, v in before.items() if not k.endswith(db_files)}
    assert {n: db_dump(root / n) for n in dumps} == dumps


@pytest.mark.skipif(not LINUX, reason="the running-Codex probe reads /proc here")
def test_discard_changes_does_not_drop_the_running_codex_check(tmp_path):
    root = tmp_path / "home"
    threads, folder = applied_home(root)
    with open(str(threads[0].path), "ab") as handle:
        handle.write(b'{"timestamp":"x","type":"event_msg","payload":{"type":"task_started"}}\n')
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; f = open(sys.argv[1], 'ab'); time.sleep(60)",
                               str(threads[1].path)])
    try:
        time.sleep(0.5)
        code, _out, err = restore_apply(root, folder, "--discard-changes")
        assert code == csr.EXIT_REFUSED and "Codex is using this home" in err, err
        code, _out, err = restore_apply(root, folder, "--force")
        assert code == csr.EXIT_REFUSED and "changed after that run" in err, err
    finally:
        holder.kill()
        holder.wait(timeout=10)


def test_a_backup_whose_manifest_does_not_verify_is_listed_and_never_removed(tmp_path):
    root = tmp_path / "home"
    _threads, folder = applied_home(root)
    (folder / "manifest.json").write_text("{ damaged")
    code, out, _err = run(*["restore", "--codex-home", str(root), "--list", "--json"])
    entry = json.loads(out)["backups"][0]
    assert entry["unverifiable"] is True and entry["partial"] is False
    code, _out, err = run(*["repair-provider", "--codex-home", str(root), "--from", "proxy", "--to", "openai", "--apply"])
    assert code == csr.EXIT_OK, err
    assert (folder / "files").is_dir(), "a backup that does not verify was removed"


def test_unreadable_index_is_a_finding_and_is_never_rewritten(tmp_path, monkeypatch):
    """Permission denied on session_index.jsonl: a finding, and rebuild-index does not replace
    the names it cannot read with the few the DB holds."""
    root = tmp_path / "home"
    home = HomeBuilder(root, "0.169.0")
    thread = home.thread(row_overrides={"name": "from the db"})
    home.index([{"id": thread.id, "thread_name": "kept", "updated_at": "2026-10-01T00:00:00Z"}])
    index = root / "session_index.jsonl"
    before = index.read_bytes()
    real_open = os.open

    def denied(path, *args, **kwargs):
        if os.fspath(path) == str(index):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", denied)
    code, out, err = run(*["diagnose", "--codex-home", str(root), "--json"])
    assert "index_unreadable" in {f["code"] for f in json.loads(out)["findings"]}, err
    code, out, err = run(*["rebuild-index", "--codex-home", str(root), "--apply", "--json"])
    monkeypatch.setattr(os, "open", real_open)
    assert code == csr.EXIT_OK, err
    assert json.loads(out)["changes"] == 0
    assert index.read_bytes() == before
