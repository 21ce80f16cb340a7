"""Defects an attack from outside the test suite found: backups that name files this tool never
writes, empty or control-character option values, rollouts that are not rollouts, a closed
pipe, and dry runs that promise what --apply refuses. One test (or family) per defect; each
failed before its fix. Homes are synthetic (tests/homes.py)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

import codex_session_recovery as csr
from homes import HomeBuilder, hash_tree, run_captured, run_script, script_env

POSIX = os.name == "posix"

# Every path the process opens while a test watches (builtins.open, os.open, sqlite3.connect).
_OPENED: List[str] = []
_WATCHING: List[bool] = []


def _audit(event: str, args: Tuple[Any, ...]) -> None:
    if _WATCHING and event in ("open", "sqlite3.connect", "sqlite3.connect/handle") and args:
        _OPENED.append(str(args[0]))


sys.addaudithook(_audit)


@contextlib.contextmanager
def watching_opens():
    _OPENED.clear()
    _WATCHING.append(True)
    try:
        yield _OPENED
    finally:
        _WATCHING.pop()


run = run_captured  # (exit code, stdout, stderr), a traceback failing the test


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------
# 1. restore puts back only what this tool writes, and never opens a credential
# ---------------------------------------------------------------------------------------------


def repaired_home(root: Path) -> Tuple[List[Any], Path]:
    home = HomeBuilder(root, "0.169.0").provider_config("proxy")
    threads = [home.thread(provider="openai", turns=2) for _ in range(2)]
    threads.append(home.thread(provider="proxy", user_text="a thread the repair leaves alone"))
    code, out, err = run(*["repair-provider", "--codex-home", str(root), "--from", "openai", "--to", "auto",
                          "--apply", "--json"])
    assert code == csr.EXIT_OK, err
    (root / "auth.json").write_text('{"OPENAI_API_KEY": "sk-real-key"}\n')
    return threads, Path(json.loads(out)["backup_dir"])


def add_entry(folder: Path, entry: Dict[str, Any]) -> None:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["entries"].append(entry)
    path.write_text(json.dumps(manifest))


def file_entry(path: str, payload: bytes, folder: Path) -> Dict[str, Any]:
    (folder / "files" / path).parent.mkdir(parents=True, exist_ok=True)
    (folder / "files" / path).write_bytes(payload)
    return {"path": path, "kind": "file", "existed": True, "backup": "files/" + path, "size": len(payload),
            "mode": 0o600, "mtime_ns": None, "sha256_before": sha(payload), "sha256_after": None}


def _auth_file(root, folder, threads):
    add_entry(folder, file_entry("auth.json", b"evil", folder))


def _auth_as_sqlite(root, folder, threads):
    payload = folder / "files" / "state_5.sqlite"
    add_entry(folder, {"path": "auth.json", "kind": "sqlite", "backup": "files/state_5.sqlite",
                       "digest_before": csr.current_db_digest(payload), "rows": {}})


def _lock_file(root, folder, threads):
    (root / "auth.json.lock").write_text("")
    add_entry(folder, file_entry("auth.json.lock", b"x", folder))


def _config_write(root, folder, threads):
    add_entry(folder, file_entry("config.toml", b'model_provider = "evil"\n', folder))


def _config_delete(root, folder, threads):
    add_entry(folder, {"path": "config.toml", "kind": "file", "existed": False,
                       "sha256_after": sha((root / "config.toml").read_bytes())})


def _token_under_sessions(root, folder, threads):
    add_entry(folder, file_entry("sessions/2026/token.json", b"{}", folder))


ATTACKS = [_auth_file, _auth_as_sqlite, _lock_file, _config_write, _config_delete, _token_under_sessions]


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda f: f.__name__.strip("_"))
@pytest.mark.parametrize("apply", [False, True], ids=["dry-run", "apply"])
def test_restore_refuses_a_backup_naming_what_this_tool_never_writes(tmp_path, attack, apply):
    """A manifest entry for auth.json, a lock, config.toml or any file that is not a rollout,
    session_index.jsonl, .codex-global-state.json or a state/history DB is refused (exit 3)
    before anything is opened: neither the dry run nor --apply reads the credential, and
    nothing is written or copied into a new backup."""
    root = tmp_path / "home"
    threads, folder = repaired_home(root)
    attack(root, folder, threads)
    before = hash_tree(root)
    argv = ["restore", "--codex-home", str(root), str(folder)] + (["--apply", "--discard-changes", "--force"]
                                                                 if apply else [])
    with watching_opens() as opened:
        code, _out, err = run(*argv)
    assert code == csr.EXIT_REFUSED, (code, err)
    assert len(err.strip().splitlines()) == 1
    assert not [p for p in opened if os.path.basename(p).startswith("auth.json")], opened
    assert not [p for p in opened if p.startswith(str(root / "config.toml")) and "w" in p], opened
    assert hash_tree(root) == before


def test_restore_refuses_removing_a_rollout_the_run_never_wrote(tmp_path):
    """An `existed: false` entry for a conversation the run's journal never names would delete
    it; restore refuses it, and a dry run names every file it would remove."""
    root = tmp_path / "home"
    threads, folder = repaired_home(root)
    victim = threads[-1].path  # on the active provider already: the run never wrote it
    rel = os.path.relpath(str(victim), str(root))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["entries"] = [e for e in manifest["entries"] if e["path"] != rel]
    manifest["entries"].append({"path": rel, "kind": "file", "existed": False,
                                "sha256_after": sha(victim.read_bytes())})
    (folder / "manifest.json").write_text(json.dumps(manifest))
    before = hash_tree(root)
    for extra in ([], ["--apply", "--discard-changes", "--force"]):
        code, _out, err = run(*["restore", "--codex-home", str(root), str(folder)] + extra)
        assert code == csr.EXIT_REFUSED, (code, err)
        assert "journal" in err
    assert hash_tree(root) == before


def test_restore_dry_run_names_what_it_would_remove(tmp_path):
    """A run that created a file (its journal names it): the dry run says plainly that restore
    would remove it, in text and in JSON, instead of only "Would restore N file(s)"."""
    root = tmp_path / "home"
    threads, folder = repaired_home(root)
    created = root / "session_index.jsonl"
    created.write_text('{"id": "%s", "thread_name": "x", "updated_at": "2026-01-01T00:00:00Z"}\n' % threads[0].id)
    add_entry(folder, {"path": "session_index.jsonl", "kind": "file", "existed": False,
                       "sha256_after": sha(created.read_bytes())})
    with open(str(folder / csr.JOURNAL_NAME), "a") as handle:
        handle.write(json.dumps({"path": "session_index.jsonl", "sha256_after": sha(created.read_bytes())}) + "\n")
    before = hash_tree(root)
    code, out, err = run(*["restore", "--codex-home", str(root), str(folder)])
    assert code == csr.EXIT_FINDINGS, err
    assert "would remove session_index.jsonl" in out.lower(), out
    code, out, err = run(*["restore", "--codex-home", str(root), str(folder), "--json"])
    assert json.loads(out)["would_remove"] == ["session_index.jsonl"]
    assert hash_tree(root) == before


def test_restore_of_a_genuine_backup_still_works(tmp_path):
    root = tmp_path / "home"
    threads, folder = repaired_home(root)
    before_rollout = (folder / "files" / os.path.relpath(str(threads[0].path), str(root))).read_bytes()
    code, _out, err = run(*["restore", "--codex-home", str(root), str(folder), "--apply"])
    assert code == csr.EXIT_OK, err
    assert threads[0].path.read_bytes() == before_rollout
    assert (root / "auth.json").read_text() == '{"OPENAI_API_KEY": "sk-real-key"}\n'


# ---------------------------------------------------------------------------------------------
# 2. An empty --codex-home is a usage error, not the default home
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["", "  "])
def test_empty_codex_home_is_a_usage_error(tmp_path, monkeypatch, value):
    fallback = tmp_path / "fallback"
    HomeBuilder(fallback, "0.169.0").provider_config("proxy").thread(provider="openai")
    monkeypatch.setenv("CODEX_HOME", str(fallback))
    before = hash_tree(fallback)
    for argv in (["diagnose"], ["repair-provider", "--from", "openai", "--apply"], ["restore", "--list"]):
        code, out, err = run(*argv[:1] + ["--codex-home", value] + argv[1:])
        assert code == csr.EXIT_USAGE, (argv, code, out, err)
        assert err.strip().splitlines() == ["error: --codex-home: empty path"] or \
            err.strip().endswith("--codex-home: empty path"), err
    assert hash_tree(fallback) == before


# ---------------------------------------------------------------------------------------------
# 3. Provider names: empty or control characters are usage errors; an empty value on disk is
#    named as such and can be moved back
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("option,value", [("--to", ""), ("--to", "proxy\nx"), ("--from", "open\nai"),
                                          ("--to", "a\x1b[2Jb"), ("--from", "openai\t")])
def test_provider_option_rejects_empty_and_control_characters(tmp_path, option, value):
    root = tmp_path / "home"
    HomeBuilder(root, "0.169.0").provider_config("proxy").thread(provider="openai")
    before = hash_tree(root)
    argv = ["repair-provider", "--codex-home", str(root), "--from", "openai", "--to", "auto", "--apply"]
    argv[argv.index(option) + 1] = value
    code, out, err = run(*argv)
    assert code == csr.EXIT_USAGE, (code, out, err)
    assert len(err.strip().splitlines()) == 1 and option in err, err
    assert hash_tree(root) == before


def test_a_thread_carrying_an_empty_provider_is_named_and_repairable(tmp_path):
    root = tmp_path / "home"
    home = HomeBuilder(root, "0.169.0").provider_config("proxy")
    thread = home.thread(provider="", row_overrides={"model_provider": ""})
    code, out, err = run(*["diagnose", "--codex-home", str(root), "--json"])
    doc = json.loads(out)
    assert doc["provider_candidates"] == {"": [thread.id]} or list(doc["provider_candidates"]) == [""], doc
    assert any("--from ''" in c for c in doc["next_commands"]), doc["next_commands"]
    assert not any("--from openai" in c for c in doc["next_commands"]), doc["next_commands"]
    code, out, err = run(*["repair-provider", "--codex-home", str(root), "--from", "", "--apply", "--json"])
    assert code == csr.EXIT_OK, (code, err)
    assert b'"model_provider":"proxy"' in thread.path.read_bytes().replace(b" ", b"")
    code, out, err = run(*["repair-provider", "--codex-home", str(root), "--from", "", "--json"])
    assert code == csr.EXIT_OK and json.loads(out)["actions"] == [], out


# ---------------------------------------------------------------------------------------------
# 4/5. A file named like a rollout that is not one gets no invented row, is not predicted
#      visible, and earns no repair command (the guided loop ends)
# ---------------------------------------------------------------------------------------------

ODD_NAME = "rollout-2026-12-01T10-00-0%d-11111111-2222-4333-8444-55555555555%d.jsonl"


def _not_json(folder: Path, outside: Path) -> Path:
    path = folder / (ODD_NAME % (1, 1))
    path.write_text("not json at all\n")
    return path


def _link_outside(folder: Path, outside: Path) -> Path:
    path = folder / (ODD_NAME % (2, 2))
    os.symlink(str(outside), str(path))
    return path


def _link_to_a_real_rollout_outside(folder: Path, outside: Path) -> Path:
    donor = HomeBuilder(outside.parent / "donor", "0.169.0").thread(provider="proxy")
    path = folder / donor.path.name
    os.symlink(str(donor.path), str(path))
    return path


def _fifo(folder: Path, outside: Path) -> Path:
    path = folder / (ODD_NAME % (3, 3))
    os.mkfifo(str(path))
    return path


ODD_FILES = [_not_json, _fifo] + ([_link_outside, _link_to_a_real_rollout_outside] if POSIX else [])


@pytest.mark.skipif(not POSIX, reason="FIFOs and symlinks")
@pytest.mark.parametrize("make", ODD_FILES, ids=lambda f: f.__name__.strip("_"))
def test_reindex_invents_no_row_for_a_file_that_is_not_a_rollout_of_this_home(tmp_path, make):
    root = tmp_path / "home"
    HomeBuilder(root, "0.169.0").provider_config("proxy").thread(provider="proxy")
    outside = tmp_path / "precious.txt"
    outside.write_text("precious\n")
    folder = root / "sessions" / "2026" / "12" / "01"
    folder.mkdir(parents=True)
    odd = make(folder, outside)
    before = hash_tree(root, regular_only=True)
    code, out, err = run(*["reindex", "--codex-home", str(root), "--json"])
    doc = json.loads(out)
    assert not [a for a in doc["actions"] if a.get("kind") == "sql"], doc["actions"]
    code, out, err = run(*["reindex", "--codex-home", str(root), "--apply", "--json"])
    assert code == csr.EXIT_OK and json.loads(out)["actions"] == [], out
    assert hash_tree(root, regular_only=True) == before
    code, out, err = run(*["diagnose", "--codex-home", str(root), "--json"])
    doc = json.loads(out)
    thread = next(t for t in doc["threads"] if t["rollout"] == os.path.relpath(str(odd), str(root)))
    # A real rollout linked in from outside gets the link's runnable step; anything else is not
    # a conversation Codex can read, which is information.
    expected = "rollout_is_link" if make is _link_to_a_real_rollout_outside else "rollout_not_indexable"
    assert expected in thread["reasons"], thread
    assert "no_db_row" not in thread["reasons"]
    severities = {f["code"]: f["severity"] for f in doc["findings"] if thread["id"] in f.get("thread_ids", [])}
    assert severities[expected] == ("warning" if expected == "rollout_is_link" else "info"), severities
    assert not any(" reindex" in c for c in doc["next_commands"]), doc["next_commands"]
    if make is not _link_to_a_real_rollout_outside:
        assert thread["hidden"], thread  # Codex lists a file-only thread from its session_meta
        code, out, err = run(*["trace", "--codex-home", str(root), thread["id"]])
        assert "HIDDEN" in out and "listed by default" not in out, out
    assert outside.read_text() == "precious\n"


# ---------------------------------------------------------------------------------------------
# 6. A closed pipe on stdout ends the run quietly
# ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(not POSIX, reason="a pipe whose reader is gone")
@pytest.mark.parametrize("argv", [["report"], ["diagnose"], ["diagnose", "--json"], ["restore", "--list", "--json"]])
def test_a_closed_pipe_is_no_traceback(tmp_path, argv):
    root = tmp_path / "home"
    home = HomeBuilder(root, "0.169.0").provider_config("proxy")
    for _ in range(3):
        home.thread(provider="openai")
    read_end, write_end = os.pipe()
    os.close(read_end)  # `| head -c 0`: the reader is gone before the first write
    try:
        proc = run_script(argv[0], "--codex-home", str(root), *argv[1:], stdout=write_end)
    finally:
        os.close(write_end)
    err = proc.stderr.decode("utf-8", "replace")
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err, err
    # Output not all delivered ends with 1 whatever the command (closed_pipe_exit).
    assert proc.returncode == csr.EXIT_FINDINGS, (proc.returncode, err)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="a device that is always full")
@pytest.mark.parametrize("argv", [["report"], ["diagnose"], ["diagnose", "--json"],
                                  ["trace", "--json", "THREAD"],
                                  ["repair-provider", "--from", "openai", "--to", "proxy"],
                                  ["restore", "--list"]])
def test_a_stdout_that_cannot_be_written_is_one_line_not_a_traceback(tmp_path, argv):
    """stdout on a full disk (/dev/full answers every write with ENOSPC): the run ends with
    one line on stderr naming what failed, and 1, as for a closed pipe: the output was not
    delivered. Nothing is written to the home by the dry runs that get there."""
    root = tmp_path / "home"
    home = HomeBuilder(root, "0.169.0").provider_config("proxy")
    thread = home.thread(provider="openai")
    argv = [thread.id if word == "THREAD" else word for word in argv]
    before = hash_tree(root)
    # Unbuffered, the first write fails; buffered (PYTHONUNBUFFERED empty), the flush does.
    for unbuffered in ("1", ""):
        with open("/dev/full", "wb") as full:
            proc = run_script(argv[0], "--codex-home", str(root), *argv[1:], stdout=full,
                              env={"PYTHONUNBUFFERED": unbuffered})
        err = proc.stderr.decode("utf-8", "replace")
        assert "Traceback" not in err and "Exception ignored" not in err, err
        lines = err.strip().splitlines()
        assert len([line for line in lines if "stdout" in line]) == 1, err
        assert "No space left on device" in err, err
        assert proc.returncode == csr.EXIT_FINDINGS, (proc.returncode, err)
    assert hash_tree(root) == before


@pytest.mark.skipif(not POSIX, reason="a descriptor closed before the run")
@pytest.mark.parametrize("apply", [False, True])
def test_a_closed_stdout_refuses_before_anything_is_read_or_written(tmp_path, apply):
    """`cmd >&-`: Python starts with no sys.stdout. Nothing the run did could be reported (an
    --apply's backup folder, its plan), so it refuses at once, with one line and 2, and an
    --apply writes nothing."""
    root = tmp_path / "home"
    home = HomeBuilder(root, "0.169.0").provider_config("proxy")
    home.thread(provider="openai")
    before = hash_tree(root)
    argv = ["repair-provider", "--codex-home", str(root), "--from", "openai", "--to", "proxy"]
    command = " ".join(shlex.quote(word) for word in
                       [sys.executable, str(csr.__file__)] + argv + (["--apply"] if apply else []))
    proc = subprocess.run(["sh", "-c", "exec %s >&-" % command], stderr=subprocess.PIPE,
                          env=script_env(), timeout=60)
    err = proc.stderr.decode("utf-8", "replace")
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert len(err.strip().splitlines()) == 1 and "stdout" in err, err
    assert proc.returncode == csr.EXIT_USAGE, (proc.returncode, err)
    assert hash_tree(root) == before
    assert not (root / csr.BACKUP_DIR_NAME).exists()


# ---------------------------------------------------------------------------------------------
# 7. Odd homes and options: the dry run and --list say what --apply would refuse; --version
#    keeps --json's promise
# ---------------------------------------------------------------------------------------------


def test_restore_list_refuses_a_backups_path_that_is_not_a_folder(tmp_path):
    root = tmp_path / "home"
    HomeBuilder(root, "0.169.0").provider_config("proxy").thread(provider="openai")
    (root / csr.BACKUP_DIR_NAME).write_text("not a folder\n")
    for extra in ([], ["--json"]):
        code, out, err = run(*["restore", "--codex-home", str(root), "--list"] + extra)
        assert code == csr.EXIT_REFUSED, (code, out, err)
        assert "not a folder" in err and "No backups" not in out


@pytest.mark.skipif(not POSIX, reason="symlinks")
def test_ui_state_dry_run_says_apply_will_refuse_a_symlinked_state_file(tmp_path):
    root = tmp_path / "home"
    HomeBuilder(root, "0.169.0").provider_config("proxy").thread(provider="proxy")
    real = tmp_path / "elsewhere.json"
    real.write_text(json.dumps({"electron-persisted-atom-state": {"sidebar-collapsed-groups": {"a": True},
                                                                  "thread-sort-key": "title"}}))
    os.symlink(str(real), str(root / ".codex-global-state.json"))
    code, out, err = run(*["repair-ui-state", "--codex-home", str(root), "--json"])
    doc = json.loads(out)
    if not doc["changes"]:
        pytest.skip("the planner plans nothing for this state file")
    assert any("--apply will refuse" in w and "symlink" in w for w in doc["warnings"]), doc["warnings"]
    code, _out, err = run(*["repair-ui-state", "--codex-home", str(root), "--apply", "--force"])
    assert code == csr.EXIT_REFUSED and "symlink" in err


def test_version_with_json_prints_one_json_document():
    code, out, _err = run(*["--version", "--json"])
    assert code == csr.EXIT_OK
    assert json.loads(out) == {"tool": csr.TOOL_NAME, "version": csr.__version__}


def test_an_empty_rollout_provider_under_another_row_provider_is_moved_with_from_empty(tmp_path):
    """The rollout carries "" and the row "openai": the rollout's value is the one diagnose
    names (Codex re-derives rows from it), and `--from ''` moves it."""
    root = tmp_path / "home"
    home = HomeBuilder(root, "0.169.0").provider_config("proxy")
    thread = home.thread(provider="", row_overrides={"model_provider": "openai"})
    code, out, _err = run(*["diagnose", "--codex-home", str(root), "--json"])
    assert list(json.loads(out)["provider_candidates"]) == [""], out
    code, out, err = run(*["repair-provider", "--codex-home", str(root), "--from", "", "--json"])
    assert code == csr.EXIT_FINDINGS and json.loads(out)["changes"] >= 1, (code, out, err)
    code, out, err = run(*["repair-provider", "--codex-home", str(root), "--from", "", "--apply", "--json"])
    assert code == csr.EXIT_OK, err
    assert b'"model_provider":"proxy"' in thread.path.read_bytes().replace(b" ", b"")
