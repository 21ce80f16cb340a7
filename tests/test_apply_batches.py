"""The apply engine's batches: what each rewritten rollout costs (fsyncs, hash passes), and that
batching weakens nothing: a kill between the temp files and the renames leaves every original
byte in place and restores; a rollout changed after its backup copy is left alone; a session
opening a rollout of a batch while later ones are being written loses no line.

Counts are taken in process by wrapping `os.fsync` and `hashlib.sha256` as the script sees them.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

import codex_session_recovery as csr
from homes import HomeBuilder, hash_tree, run_script

SCRIPT = Path(csr.__file__).resolve()
POSIX = os.name == "posix"
PADDING = 200_000  # bytes of tool output per rollout: the rollouts dominate what is hashed


def padded_home(root: Path, threads: int) -> List[Any]:
    home = HomeBuilder(root, "0.169.0").provider_config("proxy")
    filler = [{"timestamp": "2026-09-21T00:00:01.000Z", "type": "response_item",
               "payload": {"type": "function_call_output", "call_id": "c1", "output": "z" * PADDING}}]
    return [home.thread(provider="openai", turns=2, extra_lines=filler) for _ in range(threads)]


def provider_apply(root: Path) -> List[str]:
    return ["repair-provider", "--codex-home", str(root), "--from", "openai", "--apply"]


def fd_path(fd: int) -> str:
    try:
        return os.readlink("/proc/self/fd/%d" % fd)
    except OSError:
        return "?"


class Counted:
    """os.fsync calls by the path they synced, and bytes fed to SHA-256."""

    def __init__(self, monkeypatch: Any) -> None:
        self.synced: List[str] = []
        self.folders: List[str] = []
        self.hashed = 0
        real_fsync, real_sha256 = os.fsync, hashlib.sha256
        counter = self

        def fsync(fd: int) -> None:
            (counter.folders if stat.S_ISDIR(os.fstat(fd).st_mode) else counter.synced).append(fd_path(fd))
            real_fsync(fd)

        class Sha256:
            def __init__(self, data: bytes = b"") -> None:
                self.inner = real_sha256()
                self.update(data)

            def update(self, data: Any) -> None:
                counter.hashed += len(data)
                self.inner.update(data)

            def hexdigest(self) -> str:
                return self.inner.hexdigest()

            def digest(self) -> bytes:
                return self.inner.digest()

        monkeypatch.setattr(csr.os, "fsync", fsync)
        monkeypatch.setattr(csr.hashlib, "sha256", Sha256)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fsync targets are read from /proc/self/fd")
def test_each_rollout_is_hashed_once_and_synced_once_with_one_folder_sync(tmp_path, monkeypatch, cli):
    root = tmp_path / "home"
    threads = padded_home(root, 5)
    sizes = sum(t.path.stat().st_size for t in threads)
    counted = Counted(monkeypatch)
    code, doc = cli(*provider_apply(root))
    assert code == csr.EXIT_OK and doc["applied"], doc
    assert not doc["skipped"], doc["skipped"]
    backup = Path(doc["backup_dir"])

    # SHA-256 over the rollouts' bytes: the plan's read, the backup copy, the new bytes. No
    # more: the rewrite compares with the backup copy, the manifest reuses the written digest.
    passes = counted.hashed / sizes
    assert 2.9 <= passes < 3.1, passes

    for thread in threads:
        name = thread.path.name
        temps = [p for p in counted.synced if os.path.basename(p).startswith("." + name + csr.TEMP_MARKER)]
        copies = [p for p in counted.synced if p.startswith(str(backup)) and p.endswith(name)]
        assert len(temps) == 1 and len(copies) == 1, (name, temps, copies)
    manifest = json.loads((backup / "manifest.json").read_text())
    committed = [e for e in manifest["entries"] if e["kind"] == "sqlite" and e["digest_after"] != e["digest_before"]]
    journal = [p for p in counted.synced if p.endswith(csr.JOURNAL_NAME)]
    # One batch: the rollouts' intents appended with one sync; then one per DB committed.
    assert len(journal) == 1 + len(committed), (journal, committed)
    folders = {str(t.path.parent) for t in threads}
    assert sorted(p for p in counted.folders if p in folders) == sorted(folders), counted.folders
    for entry in manifest["entries"]:
        if entry["kind"] == "file":
            path = root / entry["path"]
            assert entry["sha256_after"] == hashlib.sha256(path.read_bytes()).hexdigest()
            assert entry["sha256_before"] == hashlib.sha256((backup / entry["backup"]).read_bytes()).hexdigest()


def test_batches_are_bounded_and_each_syncs_its_journal_once(tmp_path, monkeypatch, cli):
    root = tmp_path / "home"
    threads = padded_home(root, 5)
    monkeypatch.setattr(csr, "ROLLOUT_BATCH_FILES", 2)
    visits: Dict[str, int] = {}
    monkeypatch.setattr(csr, "_fault_point", lambda name: visits.__setitem__(name, visits.get(name, 0) + 1))
    journal_syncs = []
    real_intend_many = csr.Journal.intend_many
    monkeypatch.setattr(csr.Journal, "intend_many",
                        lambda self, records: (journal_syncs.append(len(records)), real_intend_many(self, records)))
    code, doc = cli(*provider_apply(root))
    assert code == csr.EXIT_OK and not doc["skipped"], doc
    assert visits["after_rollout_temps"] == 3 and visits["before_rollout_replace"] == 5, visits
    assert journal_syncs[:3] == [2, 2, 1], journal_syncs  # then one intent per DB committed
    for thread in threads:
        assert json.loads(thread.path.read_bytes().splitlines()[0])["payload"]["model_provider"] == "proxy"


def temp_files(root: Path) -> List[str]:
    return sorted(str(p) for p in root.rglob("*") if csr.TEMP_MARKER in p.name and csr.BACKUP_DIR_NAME not in p.parts)


def test_a_failure_between_temp_files_and_renames_restores_and_leaves_no_temp(tmp_path, monkeypatch, cli):
    root = tmp_path / "home"
    threads = padded_home(root, 3)
    before = hash_tree(root)
    monkeypatch.setenv(csr.FAULT_ENV, "after_rollout_temps:1:raise")
    code, doc = cli(*provider_apply(root))
    assert code == csr.EXIT_APPLY_FAILED, doc
    monkeypatch.delenv(csr.FAULT_ENV)
    after = {k: v for k, v in hash_tree(root).items() if not k.startswith(csr.BACKUP_DIR_NAME)}
    assert after == {k: v for k, v in before.items() if not k.startswith(csr.BACKUP_DIR_NAME)}
    assert temp_files(root) == []
    assert all(t.path.exists() for t in threads)


@pytest.mark.skipif(not POSIX, reason="SIGKILL")
def test_a_kill_between_temp_files_and_renames_keeps_every_original_byte(tmp_path):
    root = tmp_path / "home"
    threads = padded_home(root, 3)
    originals = {t.path: t.path.read_bytes() for t in threads}
    done = run_script(*provider_apply(root), fault="after_rollout_temps:1:kill", timeout=120)
    assert done.returncode == -9, done.stderr.decode()[-1000:]
    assert {path: path.read_bytes() for path in originals} == originals
    # Every temp file was written and synced before the kill: the next run finds them.
    assert len(temp_files(root)) == len(threads), temp_files(root)
    restored = run_script("restore", "--codex-home", str(root), "--latest", "--apply", timeout=120)
    assert restored.returncode == csr.EXIT_OK, restored.stderr.decode()[-1000:]
    assert {path: path.read_bytes() for path in originals} == originals
    again = run_script(*provider_apply(root), timeout=120)
    assert again.returncode == csr.EXIT_OK, again.stderr.decode()[-1000:]
    assert temp_files(root) == []
    for path in originals:
        assert json.loads(path.read_bytes().splitlines()[0])["payload"]["model_provider"] == "proxy"


def test_a_rollout_changed_in_place_after_its_backup_copy_is_left_alone(tmp_path, monkeypatch, cli):
    """Same size, same mtime, other bytes (what no stat can see): the rewrite's comparison with
    the backup copy finds it, and the changed file is kept as it is."""
    root = tmp_path / "home"
    threads = padded_home(root, 2)
    victim = threads[0]
    real_backup_copies = csr.backup_copies

    def change_after_backup(*args: Any) -> Dict[Path, Path]:
        found = real_backup_copies(*args)
        assert victim.path in found  # the rewrite will compare with the copy, not hash
        st = victim.path.stat()
        data = bytearray(victim.path.read_bytes())
        at = data.index(b"z" * 10)
        data[at:at + 4] = b"ZZZZ"
        with open(str(victim.path), "r+b") as handle:
            handle.write(bytes(data))
        os.utime(str(victim.path), ns=(st.st_atime_ns, st.st_mtime_ns))
        return found

    monkeypatch.setattr(csr, "backup_copies", change_after_backup)
    code, doc = cli(*provider_apply(root))
    assert code == csr.EXIT_OK, doc
    assert [s["thread_id"] for s in doc["skipped"]] == [victim.id], doc["skipped"]
    assert b"ZZZZ" in victim.path.read_bytes()
    assert json.loads(threads[1].path.read_bytes().splitlines()[0])["payload"]["model_provider"] == "proxy"


def test_a_damaged_backup_copy_stops_that_rollout_not_the_run(tmp_path, monkeypatch, cli):
    root = tmp_path / "home"
    threads = padded_home(root, 2)
    victim = threads[0]
    original = victim.path.read_bytes()
    real_backup_copies = csr.backup_copies

    def damage_copy(*args: Any) -> Dict[Path, Path]:
        found = real_backup_copies(*args)
        copy = found[victim.path]
        os.chmod(str(copy), 0o600)
        with open(str(copy), "ab") as handle:
            handle.write(b"\n")
        return found

    monkeypatch.setattr(csr, "backup_copies", damage_copy)
    code, doc = cli(*provider_apply(root))
    assert code == csr.EXIT_OK, doc
    assert [s["thread_id"] for s in doc["skipped"]] == [victim.id], doc["skipped"]
    assert victim.path.read_bytes() == original


SESSION = r"""
import json, sys, time
path, ready, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
open(ready, "w").close()
with open(path, "ab") as handle:          # waits while the tool holds its lease on the file
    for n in range(count):
        handle.write((json.dumps({"timestamp": "2026-09-21T00:00:00.000Z", "type": "event_msg",
                                  "payload": {"type": "agent_message", "message": "late %d" % n}},
                                 separators=(",", ":")) + "\n").encode())
        handle.flush()
        time.sleep(0.01)
"""


@pytest.mark.skipif(not POSIX, reason="a second process holding a file across a rename is a POSIX case")
@pytest.mark.parametrize("leases", [True, False], ids=["kernel-lease", "proc-scan-only"])
def test_a_session_opening_an_earlier_rollout_of_the_batch_loses_nothing(tmp_path, monkeypatch, cli, leases):
    """The first rollout's temp file is written; while the batch writes the next ones, a session
    opens the first for append. Its replace window is still open (its lease and checks hold
    until its own replace), so every line the session writes is in the file it is left with."""
    root = tmp_path / "home"
    threads = padded_home(root, 3)
    first = threads[0]
    sessions: List[subprocess.Popen] = []
    real_prepare = csr.prepare_rewrite
    if not leases:
        monkeypatch.setattr(csr, "take_read_lease", lambda fd: None)

    def prepare(item: Any, *args: Any) -> None:
        if item.edit.path == threads[1].path and not sessions:
            ready = tmp_path / "ready"
            sessions.append(subprocess.Popen([sys.executable, "-c", SESSION, str(first.path), str(ready), "20"]))
            deadline = time.time() + 30
            while not ready.exists() and time.time() < deadline:
                time.sleep(0.01)
            time.sleep(0.5)  # its open() is under way (held by the lease) or done
        real_prepare(item, *args)

    monkeypatch.setattr(csr, "prepare_rewrite", prepare)
    code, doc = cli(*provider_apply(root))
    assert sessions, "the batch never reached its second rollout"
    sessions[0].wait(timeout=120)
    assert code == csr.EXIT_OK, doc
    lines = [json.loads(raw)["payload"].get("message", "") for raw in first.path.read_bytes().splitlines()]
    assert [m for m in lines if m.startswith("late ")] == ["late %d" % n for n in range(20)]
    assert first.id in {s["thread_id"] for s in doc["skipped"]}, doc["skipped"]
    for thread in threads[1:]:
        assert json.loads(thread.path.read_bytes().splitlines()[0])["payload"]["model_provider"] == "proxy"


def test_the_rewrite_hashes_nothing_when_the_backup_copy_holds_the_planned_bytes(tmp_path, monkeypatch, cli):
    """The new bytes' SHA-256 (what the journal records before the renames) is taken from the
    backup copy's bytes with the planned edits, as the backup copies them: the rewrite, which
    holds each rollout's lease and writer lock, compares and writes but hashes nothing. The
    journal and the manifest still name the digest of exactly the bytes the new file holds."""
    root = tmp_path / "home"
    threads = padded_home(root, 3)
    counted = Counted(monkeypatch)
    in_rewrite: List[int] = []
    real_rewrite_batch = csr.rewrite_batch

    def rewrite_batch(*args: Any, **kwargs: Any) -> Any:
        before = counted.hashed
        try:
            return real_rewrite_batch(*args, **kwargs)
        finally:
            in_rewrite.append(counted.hashed - before)

    monkeypatch.setattr(csr, "rewrite_batch", rewrite_batch)
    code, doc = cli(*provider_apply(root))
    assert code == csr.EXIT_OK and not doc["skipped"], doc
    assert in_rewrite == [0], in_rewrite
    backup = Path(doc["backup_dir"])
    intents = [json.loads(line) for line in (backup / csr.JOURNAL_NAME).read_text().splitlines()]
    for thread in threads:
        now = hashlib.sha256(thread.path.read_bytes()).hexdigest()
        name = str(thread.path.relative_to(root))
        assert [i["sha256_after"] for i in intents if i["path"] == name] == [now]


def test_each_committed_db_is_dumped_twice_its_state_after_taken_from_the_commit(tmp_path, monkeypatch, cli):
    """A DB's dump digest is taken for the backup (of its copy, which restore puts back) and,
    inside the transaction, for the journal; the manifest's `digest_after` reuses the journal's
    while no other connection has committed since (PRAGMA data_version) and the path still
    names that file, instead of a third dump."""
    root = tmp_path / "home"
    padded_home(root, 2)
    dumps: List[str] = []
    real_db_digest = csr.db_digest

    def db_digest(conn: Any) -> str:
        dumps.append(conn.execute("PRAGMA database_list").fetchone()[2])
        return real_db_digest(conn)

    monkeypatch.setattr(csr, "db_digest", db_digest)
    code, doc = cli(*provider_apply(root))
    assert code == csr.EXIT_OK and not doc["skipped"], doc
    manifest = json.loads((Path(doc["backup_dir"]) / "manifest.json").read_text())
    committed = [e for e in manifest["entries"] if e["kind"] == "sqlite" and e["digest_after"] != e["digest_before"]]
    assert committed, manifest["entries"]
    for entry in committed:
        db = os.path.realpath(str(root / entry["path"]))
        copy = os.path.realpath(str(Path(doc["backup_dir"]) / entry["backup"]))
        assert (dumps.count(copy), dumps.count(db)) == (1, 1), (db, copy, dumps)
        with csr.readonly_db(Path(db)) as conn:
            assert entry["digest_after"] == real_db_digest(conn)


def test_a_db_committed_to_by_another_process_after_the_run_is_dumped_again(tmp_path, monkeypatch, cli):
    """Another connection commits after the run's commit (before it finishes): the manifest's
    `digest_after` is the DB as it is, not the run's own commit (as before the reuse)."""
    import sqlite3

    root = tmp_path / "home"
    padded_home(root, 2)
    real_write_sql = csr.write_sql
    changed: List[Path] = []

    def write_sql(plan: Any, *args: Any, **kwargs: Any) -> Any:
        done = real_write_sql(plan, *args, **kwargs)
        db = sorted({change.db for change in plan.sql})[0]
        other = sqlite3.connect(str(db), isolation_level=None)
        other.execute("UPDATE threads SET title = 'changed by another process'")
        other.close()
        changed.append(db)
        return done

    monkeypatch.setattr(csr, "write_sql", write_sql)
    code, doc = cli(*provider_apply(root))
    assert code == csr.EXIT_OK and changed, doc
    manifest = json.loads((Path(doc["backup_dir"]) / "manifest.json").read_text())
    entry = [e for e in manifest["entries"] if e["kind"] == "sqlite" and root / e["path"] == changed[0]][0]
    with csr.readonly_db(changed[0]) as conn:
        assert entry["digest_after"] == csr.db_digest(conn)


def test_the_edited_digest_is_the_digest_of_the_edited_bytes_whatever_the_chunks():
    import random

    rng = random.Random(7)
    for _ in range(300):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
        cuts = sorted(rng.sample(range(len(data)), min(len(data), rng.randrange(0, 6))))
        replacements, position = [], 0
        for a, b in zip(cuts[::2], cuts[1::2]):
            length = 0 if rng.random() < 0.2 else b - a  # an insertion, or a span replaced
            new = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 5)))
            replacements.append((a, length, new))
        edited, position = b"", 0
        for offset, length, new in replacements:
            edited += data[position:offset] + new
            position = offset + length
        edited += data[position:]
        check = csr.EditedDigest(list(reversed(replacements)))
        at = 0
        while at < len(data):
            step = rng.randrange(1, 40)
            check.update(memoryview(data)[at:at + step])
            at += step
        assert check.hexdigest() == hashlib.sha256(edited).hexdigest(), (data, replacements)
    short = csr.EditedDigest([(5, 2, b"x")])
    short.update(b"0123")
    assert short.hexdigest() is None  # the bytes ended before the replacement: not the plan's
    overlapping = csr.EditedDigest([(1, 4, b"a"), (3, 1, b"b")])
    overlapping.update(b"0123456789")
    assert overlapping.hexdigest() is None
