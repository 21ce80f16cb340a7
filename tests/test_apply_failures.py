"""When an apply fails part-way, its automatic restore undoes only what the run wrote and nobody
changed since: a line a live session appended after the run replaced its rollout stays, and a
rollout the run never replaced (one a session held open, one of a batch not reached) is never
overwritten. A failure that comes after every write (finishing the backup's manifest) is an
apply failure with a one-line message, never a traceback. A low limit on open files makes
smaller batches, not a failed apply.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any, List

import pytest

import codex_session_recovery as csr
import homes

LIVE_LINE = (b'{"timestamp":"2026-09-21T00:09:00.000Z","type":"event_msg",'
             b'"payload":{"type":"agent_message","message":"a live session wrote this"}}\n')


def switched(root: Path, threads: int) -> List[Any]:
    """`threads` two-turn chats under openai, config.toml switched to proxy."""
    return homes.switched_home(root, turns=(2,) * threads)[1]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fail_at(monkeypatch: Any, name: str, before_raising: Any = None) -> None:
    """The write point `name` fails (after `before_raising` ran), as a full disk would."""
    real = csr._fault_point

    def point(seen: str) -> None:
        real(seen)
        if seen == name:
            if before_raising is not None:
                before_raising()
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(csr, "_fault_point", point)


def test_automatic_restore_keeps_a_line_appended_after_the_run_wrote_the_rollout(
        tmp_path, monkeypatch, cli):
    root = tmp_path / "home"
    threads = switched(root, 3)
    before = {t.path: digest(t.path) for t in threads}
    appended = threads[1].path

    def session_appends() -> None:
        with open(str(appended), "ab") as handle:
            handle.write(LIVE_LINE)

    fail_at(monkeypatch, "mid_transaction", session_appends)
    code, doc = cli("repair-provider", "--codex-home", str(root), "--from", "openai", "--apply")
    assert code == csr.EXIT_APPLY_FAILED, doc
    message = doc["error"]["message"]
    assert "automatic restore" in message and "succeeded" in message, message
    # The session's line is there, after the run's edit of the same file: nothing was put back
    # over it, and the message names the file left as it is.
    data = appended.read_bytes()
    assert data.endswith(LIVE_LINE) and data.count(LIVE_LINE) == 1
    assert b'"model_provider":"proxy"' in data
    assert appended.name in message, message
    for thread in threads:
        if thread.path != appended:
            assert digest(thread.path) == before[thread.path], thread.path


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="open files are read from /proc")
def test_automatic_restore_leaves_a_rollout_the_run_skipped_as_open(tmp_path, monkeypatch, cli):
    root = tmp_path / "home"
    threads = switched(root, 3)
    held = threads[0].path
    before = {t.path: digest(t.path) for t in threads}
    # A session holds the rollout open for appending: the run must not replace it, and its
    # restore must not either, even after the session has written to it.
    writer = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "f = open(sys.argv[1], 'ab', buffering=0)\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n"
        "f.write(sys.argv[2].encode())\n"
        "print('wrote', flush=True)\n"
        "time.sleep(60)\n"), str(held), LIVE_LINE.decode()],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, universal_newlines=True)
    try:
        assert writer.stdout.readline().strip() == "ready"

        def session_writes() -> None:
            writer.stdin.write("go\n")
            writer.stdin.flush()
            assert writer.stdout.readline().strip() == "wrote"

        fail_at(monkeypatch, "mid_transaction", session_writes)
        code, doc = cli("repair-provider", "--codex-home", str(root), "--from", "openai",
                        "--apply", "--force")
        assert code == csr.EXIT_APPLY_FAILED, doc
        data = held.read_bytes()
        assert data.endswith(LIVE_LINE) and data.count(LIVE_LINE) == 1
        assert os.stat(str(held)).st_ino == os.fstat(os.open(str(held), os.O_RDONLY)).st_ino
        for thread in threads[1:]:
            assert digest(thread.path) == before[thread.path], thread.path
    finally:
        writer.kill()
        writer.wait()


def test_a_failure_finishing_the_manifest_is_an_apply_failure_in_one_line(tmp_path, monkeypatch,
                                                                         cli):
    root = tmp_path / "home"
    threads = switched(root, 2)

    def broken(*_args: Any, **_kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(csr, "finish_manifest", broken)
    code, doc = cli("repair-provider", "--codex-home", str(root), "--from", "openai", "--apply")
    assert code == csr.EXIT_APPLY_FAILED, doc
    message = doc["error"]["message"]
    assert "\n" not in message and "No space left" in message, message
    # Every write had been made: the repair stands, and the message says how to undo it.
    assert "restore --latest" in message, message
    for thread in threads:
        assert b'"model_provider":"proxy"' in thread.path.read_bytes()
    monkeypatch.undo()
    code, doc = cli("restore", "--codex-home", str(root), "--latest", "--apply")
    assert code == csr.EXIT_OK, doc
    for thread in threads:
        assert b'"model_provider":"openai"' in thread.path.read_bytes()


@pytest.mark.parametrize("soft, expected", [(24, 1), (32, 2), (64, 10), (128, 26), (256, 58), (4096, 64)])
def test_batches_shrink_to_the_open_file_limit(soft, expected):
    assert csr.rollout_batch_files(soft, already_open=8) == expected


@pytest.mark.skipif(os.name != "posix", reason="RLIMIT_NOFILE is POSIX")
def test_an_apply_under_a_low_open_file_limit_succeeds(tmp_path):
    root = tmp_path / "home"
    threads = switched(root, 40)
    limit = ("import resource, runpy, sys\n"
             "resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))\n"
             "sys.argv = sys.argv[1:]\n"
             "runpy.run_path(sys.argv[0], run_name='__main__')\n")
    # The limit is set in the child before the script starts, as `ulimit -n 64` would.
    done = homes.run_script("repair-provider", "--codex-home", str(root), "--from", "openai",
                            "--apply", python_flags=("-c", limit), timeout=120)
    assert done.returncode == csr.EXIT_OK, done.stderr.decode()
    for thread in threads:
        assert b'"model_provider":"proxy"' in thread.path.read_bytes()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="open files are read from /proc")
def test_a_process_reading_a_rollout_does_not_keep_it_from_the_repair(tmp_path, cli):
    """Only a writer can lose lines to a replace; a reader (another copy of this tool scanning
    the home, a viewer) keeps reading the bytes it opened."""
    root = tmp_path / "home"
    threads = switched(root, 2)
    read = threads[0].path
    old = read.read_bytes()
    reader = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "f = open(sys.argv[1], 'rb')\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n"
        "sys.stdout.write(str(len(f.read())) + '\\n')\n"
        "sys.stdout.flush()\n"), str(read)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, universal_newlines=True)
    try:
        assert reader.stdout.readline().strip() == "ready"
        code, doc = cli("repair-provider", "--codex-home", str(root), "--from", "openai",
                        "--apply", "--force")
        assert code == csr.EXIT_OK and not doc["skipped"], doc
        assert b'"model_provider":"proxy"' in read.read_bytes()
        reader.stdin.write("go\n")
        reader.stdin.flush()
        assert int(reader.stdout.readline()) == len(old)  # the reader saw the bytes it opened
    finally:
        reader.kill()
        reader.wait()


def test_a_commit_by_codex_during_the_backup_leaves_a_backup_restore_accepts(
        tmp_path, monkeypatch, cli):
    """Codex commits to the state DB right after the backup copied it: the manifest's digest
    must be the copy's (what restore puts back), not the live DB's a moment later, or restore
    refuses the backup as damaged."""
    root = tmp_path / "home"
    threads = switched(root, 2)
    db = root / "state_5.sqlite"
    real_open = csr.open_db_readonly

    class CodexCommitsAfterTheCopy:
        def __init__(self, conn: Any) -> None:
            self._conn = conn

        def backup(self, dest: Any, *args: Any, **kwargs: Any) -> None:
            self._conn.backup(dest, *args, **kwargs)
            codex = sqlite3.connect(str(db))
            changed = codex.execute("UPDATE threads SET title = 'renamed by Codex' WHERE id = ?",
                                    (threads[1].id,)).rowcount
            codex.commit()
            assert changed == 1
            codex.close()

        def __getattr__(self, name: str) -> Any:
            return getattr(self._conn, name)

    def opened(path: Any) -> Any:
        conn = real_open(path)
        return CodexCommitsAfterTheCopy(conn) if Path(path) == db else conn

    # Codex keeps the DB in WAL mode with its -wal beside it while it runs (the tool reads such a
    # DB as it is, not as an immutable file).
    session = sqlite3.connect(str(db))
    assert session.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
    session.execute("SELECT count(*) FROM threads").fetchone()
    monkeypatch.setattr(csr, "open_db_readonly", opened)
    try:
        code, doc = cli("repair-provider", "--codex-home", str(root), "--from", "openai",
                        "--apply", "--force")
    finally:
        session.close()
    assert code == csr.EXIT_OK, doc
    monkeypatch.undo()
    code, doc = cli("restore", "--codex-home", str(root), "--latest", "--apply",
                    "--discard-changes")
    assert code == csr.EXIT_OK, doc
    for thread in threads:
        assert b'"model_provider":"openai"' in thread.path.read_bytes()
