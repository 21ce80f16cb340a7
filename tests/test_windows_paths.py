"""Homes written by Windows Codex, read from another system (WSL through /mnt/c, or a copy).

Rows store `rollout_path` as Windows paths (`C:\\Users\\ana\\.codex\\sessions\\…`, sometimes with
the `\\\\?\\` prefix) and `cwd` likewise. The data is built with PureWindowsPath."""

import os
import sqlite3
from pathlib import PureWindowsPath

import pytest

import codex_session_recovery as csr
from homes import HomeBuilder

WINDOWS_HOME = PureWindowsPath(r"C:\Users\ana\.codex")

pytestmark = pytest.mark.skipif(os.name == "nt", reason="on Windows these paths are native")


def windows_rollout_path(thread, home_root, verbatim=False):
    relative = thread.path.relative_to(home_root)
    path = str(WINDOWS_HOME.joinpath(*relative.parts))
    return "\\\\?\\" + path if verbatim else path


@pytest.mark.parametrize("verbatim", [False, True])
def test_windows_rollout_paths_name_the_files_of_this_home(tmp_path, cli, verbatim):
    home = HomeBuilder(tmp_path / "home", "0.169.0").provider_config("proxy")
    moved = home.thread(provider="openai")
    listed = home.thread(provider="proxy")
    archived = home.thread(provider="proxy", archived=True)
    conn = sqlite3.connect(str(home.db_path))
    for thread in (moved, listed, archived):
        conn.execute("UPDATE threads SET rollout_path = ?, cwd = ? WHERE id = ?",
                     (windows_rollout_path(thread, home.root, verbatim), str(PureWindowsPath(r"D:\Code\shop")), thread.id))
    conn.commit()
    conn.close()
    code, doc = cli("diagnose", "--codex-home", str(home.root))
    reasons = {t["id"]: t["reasons"] for t in doc["threads"]}
    assert reasons.get(listed.id) is None, reasons
    assert reasons[moved.id] == ["provider_mismatch"]
    assert reasons[archived.id] == ["archived"]
    # reindex must not "repoint" Windows paths that Windows Codex needs
    code, doc = cli("reindex", "--codex-home", str(home.root))
    assert code == csr.EXIT_OK and doc["changes"] == 0
    code, doc = cli("repair-provider", "--codex-home", str(home.root), "--from", "openai", "--apply")
    assert code == csr.EXIT_OK and doc["plan"]["threads"] == 1
    stored = sqlite3.connect(str(home.db_path)).execute("SELECT rollout_path, model_provider FROM threads WHERE id = ?",
                                                      (moved.id,)).fetchone()
    assert stored == (windows_rollout_path(moved, home.root, verbatim), "proxy")
    assert b'"model_provider":"proxy"' in moved.path.read_bytes()


def test_verbatim_windows_cwd_is_reported(tmp_path, cli):
    home = HomeBuilder(tmp_path / "home")
    thread = home.thread(row_overrides={"cwd": "\\\\?\\" + str(PureWindowsPath(r"C:\Code\proj"))})
    _, doc = cli("diagnose", "--codex-home", str(home.root))
    entry = next(t for t in doc["threads"] if t["id"] == thread.id)
    assert entry["evidence"]["cwd_unmatchable"] == {"problem": "windows_verbatim_prefix"}


@pytest.mark.parametrize("stored, tail", [
    (r"C:\Users\ana\.codex\sessions\2026\09\21\rollout-x.jsonl", "sessions/2026/09/21/rollout-x.jsonl"),
    (r"\\?\C:\Users\ana\.codex\archived_sessions\rollout-x.jsonl", "archived_sessions/rollout-x.jsonl"),
    (r"\\?\UNC\server\share\.codex\sessions\rollout-x.jsonl", "sessions/rollout-x.jsonl"),
    ("/mnt/c/Users/ana/.codex/sessions/2026/rollout-x.jsonl", "sessions/2026/rollout-x.jsonl"),
])
def test_home_relative_tail(stored, tail):
    assert csr.home_relative_tail(stored) == tail


@pytest.mark.parametrize("text, windows", [
    (str(PureWindowsPath(r"C:\Users\ana")), True), (r"\\?\C:\x", True), (r"\\server\share", True),
    ("c:/mixed/slashes", True), ("/home/ana", False), ("relative\\path", False),
])
def test_is_windows_path(text, windows):
    assert csr.is_windows_path(text) is windows
