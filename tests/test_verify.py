"""`--verify` without a real Codex: finding the binary, the scratch copy, the no-Codex line.

The scratch copy is held to what `--apply` writes: the copy of each edited rollout is the head
of the file --apply leaves (plus the later lines listing reads), and the copied DB's rows are
the rows --apply leaves, with paths of the home pointing into the copy. The real-Codex side is
in test_real_codex_verify.py.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import time
from pathlib import Path

import pytest

import codex_session_recovery as csr
from homes import HomeBuilder, hash_tree, run_captured, switched_home


run = run_captured  # (exit code, stdout, stderr)


@pytest.fixture
def no_codex(tmp_path, monkeypatch):
    """A machine with no Codex: nothing on PATH, no Desktop app, no IDE extension."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setattr(csr, "CODEX_BUNDLED_BINARIES", tuple(
        (origin, pattern) for origin, pattern in csr.CODEX_BUNDLED_BINARIES if pattern.startswith("~")))


@pytest.fixture
def switched(tmp_path):
    return switched_home(tmp_path / "home", turns=(1, 3))


def test_no_codex_says_so_in_one_line_and_keeps_exit_codes(switched, no_codex):
    home, _ = switched
    root = str(home.root)
    for argv in (["diagnose"], ["repair-provider", "--from", "openai"], ["repair-user-events"]):
        plain, plain_out, _ = run(*[*argv, "--codex-home", root])
        before = hash_tree(home.root)
        code, out, err = run(*[*argv, "--codex-home", root, "--verify"])
        assert code == plain, argv
        assert hash_tree(home.root) == before
        assert err.count("verify: no Codex binary found") == 1
        assert "no Codex binary found" not in out
        code, out, _ = run(*[*argv, "--codex-home", root, "--verify", "--json"])
        doc = json.loads(out)
        assert code == plain and doc["verification"] == {"status": "no_codex", "message": csr.NO_CODEX_MESSAGE}


def test_apply_verify_without_codex_still_applies(switched, no_codex):
    home, threads = switched
    code, out, err = run(*["repair-provider", "--codex-home", str(home.root), "--from", "openai", "--apply",
                          "--verify", "--json"])
    doc = json.loads(out)
    assert code == csr.EXIT_OK and doc["applied"] is True
    assert doc["verification"]["status"] == "no_codex"
    assert run(*["repair-provider", "--codex-home", str(home.root), "--from", "openai"])[0] == csr.EXIT_OK


def test_codex_bin_that_is_not_a_program_is_a_usage_error(switched, tmp_path, capsys):
    home, _ = switched
    missing = tmp_path / "nope" / "codex"
    with pytest.raises(SystemExit) as stopped:
        csr.main(["diagnose", "--codex-home", str(home.root), "--verify", "--codex-bin", str(missing)])
    assert stopped.value.code == csr.EXIT_USAGE
    assert "argument --codex-bin: %s is not an executable file" % missing in capsys.readouterr().err


def _fake_binary(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\necho codex-cli 9.9.9\n")
    path.chmod(0o755)
    return path


def test_finds_codex_on_path_then_the_ide_extensions_newest_first(tmp_path, monkeypatch):
    user = tmp_path / "user"
    platform = csr.bundle_platform()
    old = _fake_binary(user / ".vscode/extensions/openai.chatgpt-26.9.0-linux-x64/bin" / platform / "codex")
    new = _fake_binary(user / ".vscode/extensions/openai.chatgpt-26.10.0-linux-x64/bin" / platform / "codex")
    _fake_binary(user / ".vscode/extensions/openai.chatgpt-27.0.0-linux-x64/bin/other-platform/codex")
    env = {"PATH": str(tmp_path / "empty"), "HOME": str(user)}
    found = csr.find_codex_binary(None, env)
    assert (found.path, found.origin) == (new, "VS Code extension")
    assert old.exists()
    on_path = _fake_binary(tmp_path / "bin" / "codex")
    found = csr.find_codex_binary(None, dict(env, PATH=str(on_path.parent)))
    assert (found.path, found.origin) == (on_path, "PATH")
    flag = _fake_binary(tmp_path / "mine" / "codex")
    found = csr.find_codex_binary(str(flag), dict(env, PATH=str(on_path.parent)))
    assert (found.path, found.origin) == (flag, "--codex-bin")
    assert csr.find_codex_binary(None, {"PATH": str(tmp_path / "empty"), "HOME": str(tmp_path / "none")}) is None


def _scratch_files(scratch: csr.ScratchHome):
    return sorted(str(p.relative_to(scratch.home)) for p in scratch.home.rglob("*") if p.is_file())


def _rows(db: Path):
    conn = sqlite3.connect(str(db))
    try:
        return {r[0]: r[1:] for r in conn.execute("SELECT id, model_provider, rollout_path, preview FROM threads")}
    finally:
        conn.close()


def expected_head_lines(lines, info):
    """Through the first user message's event form (0.169.0 writes the prompt as a role=user
    response_item first, then an item_completed event), and at least 10 lines."""
    event = next(n for n in range(info.evidence_line - 1, len(lines))
                 if b'"user_message"' in lines[n] or b'"item_completed"' in lines[n])
    assert event >= info.evidence_line - 1
    return max(event + 1, 10)


def test_scratch_copy_is_what_apply_writes_headed_and_private(switched, tmp_path):
    """repair-provider on a 0.169.0-shaped home: the scratch copy after the plan holds, for
    each rollout, the head of the file --apply writes (through the first user message) plus
    the later provider lines; its DB rows are the rows --apply writes, pointing into the copy;
    the folder is 0700 outside the home, holds no credential, and is gone afterwards."""
    home, threads = switched
    (home.root / "auth.json").write_text('{"OPENAI_API_KEY": "sk-secret"}')
    (home.root / "work.config.toml").write_text('model_provider = "proxy"\n')
    late = {"timestamp": "2026-09-21T00:10:00.000Z", "type": "event_msg", "payload": {
        "type": "thread_settings_applied", "thread_settings": {"model_provider_id": "openai"}}}
    extra = home.thread(provider="openai", turns=4, extra_lines=[late])
    inv = csr.build_inventory(csr.build_parser().parse_args(["repair-provider", "--codex-home", str(home.root),
                                                              "--from", "openai"]))
    csr.run_checks(inv)
    args = csr.build_parser().parse_args(["repair-provider", "--codex-home", str(home.root), "--from", "openai"])
    plan = csr.plan_provider_repair(inv, args)
    assert plan.rollout_edits
    before = hash_tree(home.root)
    with csr.ScratchHome(inv.home, "test") as scratch:
        root = scratch.root
        assert stat.S_IMODE(root.stat().st_mode) == 0o700
        assert not csr.is_within(root, home.root)
        csr.build_scratch_home(inv, scratch, plan)
        files = _scratch_files(scratch)
        assert "auth.json" not in files and "work.config.toml" in files and "config.toml" in files
        assert not [f for f in files if f.startswith("thread_history")]
        copies = {t.id: scratch.path_for(t.path, inv.home).read_bytes() for t in threads + [extra]}
        scratch_rows = _rows(scratch.home / "state_5.sqlite")
        predicted = csr.predicted_listed(csr.scratch_inventory(scratch))
        copied = scratch.bytes_copied
    assert not root.exists()
    assert hash_tree(home.root) == before

    code, _out, _err = run(*["repair-provider", "--codex-home", str(home.root), "--from", "openai", "--apply"])
    assert code == csr.EXIT_OK
    real_rows = _rows(home.db_path)
    for thread in threads + [extra]:
        applied = thread.path.read_bytes()
        lines = applied.splitlines(keepends=True)
        head_lines = expected_head_lines(lines, csr.scan_rollout(thread.path, home.root))
        head = b"".join(lines[:head_lines])
        assert copies[thread.id].startswith(head)
        later = [line for line in lines[head_lines:]
                 if b'"session_meta"' in line or b'"thread_settings_applied"' in line]
        assert copies[thread.id] == head + b"".join(later)
        assert len(copies[thread.id]) < len(applied) or len(lines) <= csr.HEAD_RECORD_LIMIT
        provider, path, preview = real_rows[thread.id]
        assert scratch_rows[thread.id] == (provider, str(root / "codex-home") + path[len(str(home.root)):], preview)
    assert b'"model_provider_id":"proxy"' in copies[extra.id].splitlines()[-1]
    assert len(copies[extra.id]) < len(extra.path.read_bytes())
    assert predicted == sorted(t.id for t in threads + [extra])
    assert 0 < copied < sum(p.stat().st_size for p in home.root.rglob("*") if p.is_file())


def test_scratch_is_removed_when_building_it_fails(switched, monkeypatch):
    home, _ = switched
    inv = csr.build_inventory(csr.build_parser().parse_args(["diagnose", "--codex-home", str(home.root)]))

    def broken(*_args):
        raise csr.VerifyError("disk full")

    monkeypatch.setattr(csr, "copy_rollout_head", broken)
    seen = []
    with pytest.raises(csr.VerifyError):
        with csr.ScratchHome(inv.home, "test") as scratch:
            seen.append(scratch.root)
            csr.build_scratch_home(inv, scratch, None)
    assert seen and not seen[0].exists()


def test_temp_folder_inside_the_home_is_refused(switched, monkeypatch):
    home, _ = switched
    inside = home.root / "tmp"
    inside.mkdir()
    monkeypatch.setattr(csr.tempfile, "gettempdir", lambda: str(inside))
    with pytest.raises(csr.VerifyError, match="inside CODEX_HOME"):
        csr.ScratchHome(home.root, "test")
    assert list(inside.iterdir()) == []


SILENT_CODEX = """#!%s
import sys, time
if "--version" in sys.argv:
    print("codex-cli 0.999.0")
    sys.exit(0)
open(sys.argv[2], "w").write("started")  # the first -c value: where the test can see it ran
time.sleep(120)  # an app-server that never answers
"""


def test_a_codex_that_never_answers_times_out_in_one_line(switched, tmp_path, monkeypatch):
    """A hung app-server: the wait is bounded, the message says what timed out, the exit code
    is the command's own, the scratch folder and the process are gone."""
    import sys
    home, _ = switched
    fake = tmp_path / "bin" / "codex"
    fake.parent.mkdir()
    fake.write_text(SILENT_CODEX % sys.executable)
    fake.chmod(0o755)
    marker = tmp_path / "started"
    monkeypatch.setattr(csr, "VERIFY_TIMEOUT", 1.0)
    monkeypatch.setattr(csr, "OFFLINE_OVERRIDES", (str(marker),))  # becomes `-c MARKER app-server`
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(csr.tempfile, "gettempdir", lambda: str(tmp))
    plain = run(*["repair-provider", "--codex-home", str(home.root), "--from", "openai"])[0]
    code, out, err = run(*["repair-provider", "--codex-home", str(home.root), "--from", "openai", "--verify",
                          "--codex-bin", str(fake), "--json"])
    doc = json.loads(out)
    assert code == plain == csr.EXIT_FINDINGS
    assert marker.read_text() == "started"
    check = doc["verification"]
    assert check["status"] == "failed" and check["codex_version"] == "0.999.0"
    assert check["message"] == ("verification did not finish (before): Codex app-server did not answer "
                                "initialize within 1 s")
    assert err.strip().splitlines()[-1] == "verify: " + check["message"]
    assert list(tmp.iterdir()) == []

    # --apply --verify asked Codex to check first; a check that did not finish writes nothing.
    before = hash_tree(home.root)
    code, out, err = run(*["repair-provider", "--codex-home", str(home.root), "--from", "openai", "--verify",
                          "--codex-bin", str(fake), "--apply", "--json"])
    doc = json.loads(out)
    assert (code, doc["applied"], doc["verification"]["refused"]) == (csr.EXIT_REFUSED, False, True), doc
    assert "refused: the apply did not start and nothing was written" in err
    assert hash_tree(home.root) == before and not (home.root / csr.BACKUP_DIR_NAME).exists()
    assert list(tmp.iterdir()) == []


def test_rebuild_db_plan_moves_the_copy_of_a_db_in_an_outside_sqlite_home(tmp_path):
    """A state DB in a sqlite_home outside the home, with foreign migration checksums: in the
    scratch copy after rebuild-db's plan, the DB's copy (in the scratch folder's sqlite home)
    is moved aside, as --apply moves the real one into the backup; the real DB is untouched."""
    home = HomeBuilder(tmp_path / "home", "0.169.0")
    home.thread()
    outside = tmp_path / "dbs"
    outside.mkdir()
    shutil.move(str(home.db_path), str(outside / "state_5.sqlite"))
    (home.root / "config.toml").write_text('sqlite_home = "%s"\n' % outside)
    conn = sqlite3.connect(str(outside / "state_5.sqlite"))
    with conn:
        conn.execute("UPDATE _sqlx_migrations SET checksum = zeroblob(48) WHERE version = 1")
    conn.close()
    argv = ["rebuild-db", "--codex-home", str(home.root)]
    args = csr.build_parser().parse_args(argv)
    inv = csr.build_inventory(args)
    csr.run_checks(inv)
    plan = csr.plan_rebuild_db(inv, args)
    assert outside / "state_5.sqlite" in plan.moves
    before = hash_tree(outside), hash_tree(home.root)
    with csr.ScratchHome(inv.home, "test") as scratch:
        csr.build_scratch_home(inv, scratch, plan)
        assert scratch.sqlite_home is not None and csr.is_within(scratch.sqlite_home, scratch.root)
        assert not (scratch.sqlite_home / "state_5.sqlite").exists()
        assert (scratch.moved / "state_5.sqlite").exists()
    assert (hash_tree(outside), hash_tree(home.root)) == before


@pytest.mark.skipif(os.name != "posix", reason="process groups")
def test_a_version_check_that_hangs_is_stopped_with_what_it_started(switched, tmp_path, monkeypatch):
    """A `codex` whose --version starts a child and hangs: the check gives up after the time-out,
    stops the whole process group (no orphan left), and --apply --verify writes nothing."""
    home, _ = switched
    fake = tmp_path / "bin" / "codex"
    fake.parent.mkdir()
    marker = tmp_path / "child.pid"
    fake.write_text("#!/bin/sh\nsleep 300 &\necho $! > %s\necho codex-cli 0.171.0\nwait\n" % marker)
    fake.chmod(0o755)
    monkeypatch.setattr(csr, "VERIFY_TIMEOUT", 1.0)
    before = hash_tree(home.root)
    code, out, err = run(*["repair-provider", "--codex-home", str(home.root), "--from", "openai", "--verify",
                          "--codex-bin", str(fake), "--apply", "--json"])
    doc = json.loads(out)
    assert code == csr.EXIT_REFUSED and doc["verification"]["status"] == "failed", doc["verification"]
    assert "did not answer within 1 s" in doc["verification"]["message"]
    assert hash_tree(home.root) == before
    child = int(marker.read_text())
    for _ in range(50):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the --version child %d outlived the check" % child)


@pytest.mark.skipif(os.name != "posix", reason="pids and owners")
def test_scratch_folders_a_killed_run_left_are_removed_by_the_next(tmp_path, monkeypatch):
    """kill -9 leaves a run no chance to clean up: the next --verify removes the scratch
    folders whose run is gone, and leaves a live run's folder and anything else alone."""
    import subprocess
    import sys
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(csr.tempfile, "gettempdir", lambda: str(tmp))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp / ("csr-verify-before-%d-abc123" % dead.pid)
    live = tmp / ("csr-verify-after-%d-def456" % os.getpid())
    other = tmp / "csr-verify-notes"
    for folder in (stale, live, other):
        (folder / "codex-home").mkdir(parents=True)
    home = HomeBuilder(tmp_path / "home", "0.169.0")
    with csr.ScratchHome(home.root, "version") as scratch:
        assert scratch.root.name.startswith("csr-verify-version-%d-" % os.getpid())
    assert not stale.exists() and live.exists() and other.exists()
