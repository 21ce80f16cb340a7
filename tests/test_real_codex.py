"""The recovery tool against homes written by real Codex releases, checked by real Codex.

Each populated home is built once per module with the real release (two interactive
app-server threads of two turns, one ``exec`` thread, one archived thread) and copied back
into place for every test, so tests stay independent. A home is always used at the path it
was built at: the state DB and the history projection hold absolute rollout paths.

What the tool says is compared with what the real ``codex app-server`` does afterwards:
the default ``thread/list`` (what a user sees), ``thread/read``, ``thread/turns/list``,
``thread/resume`` + ``turn/start``. Read-only commands are held to "no byte changed" with a
hash of every file of the home (``*-shm`` files, which SQLite rewrites on any open, and the
tool's own ``recovery-backups/`` are left out).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest

import codex_harness as harness
import codex_session_recovery as csr
from homes import SCRIPT, hash_tree, pythons_here, run_in_process, run_script, script_env

pytestmark = pytest.mark.realcodex

SCRIPT = Path(csr.__file__).resolve()
CUSTOM = harness.CUSTOM_PROVIDER
# A second custom provider, for switches between two custom providers.
OTHER_CUSTOM = "csr-other"
# The newest release measured to keep no state DB at all: its homes are rollout-only.
ROLLOUT_ONLY_RELEASE = harness.ROLLOUT_ONLY_RELEASE

ALPHA_TEXTS = ["first question in alpha", "second question in alpha"]
BETA_TEXTS = ["first question in beta", "second question in beta"]


require_release = harness.require_release


# ---------------------------------------------------------------------------------------------
# Files, DBs and the tool


# sha256 of every file in the home, except SQLite's shared-memory index (rewritten by any
# open, read-only ones included) and the tool's own backup folder.
snapshot = hash_tree


def changed_files(before: Dict[str, str], after: Dict[str, str]) -> List[str]:
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


def query(db: Path, sql: str, params: Tuple[Any, ...] = ()) -> List[Tuple[Any, ...]]:
    """Read a Codex DB without writing beside it: ``mode=ro`` reads the -wal; with no -wal
    the file is opened immutable (a ``mode=ro`` open would create an empty -wal)."""
    wal = Path(str(db) + "-wal")
    uri = db.resolve().as_uri() + ("?mode=ro" if wal.exists() else "?mode=ro&immutable=1")
    conn = sqlite3.connect(uri, uri=True, timeout=5.0)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def execute(db: Path, sql: str, params: Tuple[Any, ...] = ()) -> int:
    """A hand edit of a Codex DB, as a user with the sqlite3 shell would make it."""
    conn = sqlite3.connect(str(db), timeout=5.0)
    try:
        with conn:
            return conn.execute(sql, params).rowcount
    finally:
        conn.close()


def run_tool(home: Path, *args: str) -> Tuple[int, Dict[str, Any], str]:
    """The tool in-process with --json: (exit code, the one JSON document, stderr)."""
    return run_in_process("--codex-home", str(home), *args)


def run_tool_process(home: Path, *args: str) -> subprocess.CompletedProcess:
    """The tool as a separate process, the way a user runs it (its own pid, its own stderr)."""
    return run_script("--codex-home", str(home), *args, timeout=120, text=True)


def user_texts(turn: Dict[str, Any]) -> List[str]:
    return [part["text"] for item in turn["items"] if item["type"] == "userMessage"
            for part in item["content"] if part.get("type") == "text"]


def rollout_lines(path: Path) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def provider_fields(path: Path) -> List[Tuple[str, Optional[str]]]:
    """(kind, provider) of every line a provider is recorded in, in file order."""
    found = []
    for record in rollout_lines(path):
        payload = record.get("payload") or {}
        if record.get("type") == "session_meta":
            found.append(("session_meta", payload.get("model_provider")))
        elif record.get("type") == "event_msg" and payload.get("type") == "thread_settings_applied":
            found.append(("thread_settings_applied",
                          (payload.get("thread_settings") or {}).get("model_provider_id")))
    return found


# ---------------------------------------------------------------------------------------------
# Homes


class RealHome:
    """One populated CODEX_HOME made by a real release, plus the way to talk to it."""

    def __init__(self, version: str, provider: str, root: Path, ids: Dict[str, Any],
                 binary: Path, standin: harness.ResponsesStandIn) -> None:
        self.version = version
        self.provider = provider
        self.root = root
        self.home = root / "home"
        self.cwd = root / "project"
        self.ids = ids
        self.binary = binary
        self.standin = standin

    @property
    def interactive(self) -> List[str]:
        return list(self.ids["interactive"])

    @property
    def state_db(self) -> Path:
        return self.home / "state_5.sqlite"

    @property
    def history_db(self) -> Path:
        return self.home / "thread_history_1.sqlite"

    def switch_provider(self, provider: str, keep_defined: Optional[str] = None) -> None:
        """What a user does: point config.toml at another provider. ``keep_defined`` names a
        custom provider whose table stays in config.toml (pointing at the stand-in too), so
        a thread still recorded under it can run a turn without leaving the machine."""
        extra = ""
        if keep_defined:
            extra = ("\n[model_providers.%s]\nname = \"%s\"\nbase_url = \"%s\"\n"
                     "wire_api = \"responses\"\nenv_key = \"%s\"\n"
                     % (keep_defined, keep_defined, self.standin.base_url, harness.FAKE_KEY_ENV))
        harness.write_config(self.home, provider, self.standin.base_url, extra=extra)
        self.provider = provider

    def app_server(self) -> harness.AppServer:
        return harness.AppServer(self.binary, self.home, cwd=self.cwd)

    def listed(self, **params: Any) -> List[str]:
        with self.app_server() as server:
            return server.listed_ids(**params)

    def rollout(self, thread_id: str) -> Path:
        found = [p for folder in ("sessions", "archived_sessions")
                 for p in (self.home / folder).rglob("rollout-*%s.jsonl" % thread_id)]
        assert len(found) == 1, found
        return found[0]

    def row(self, thread_id: str, *columns: str) -> Optional[Tuple[Any, ...]]:
        rows = query(self.state_db, "SELECT %s FROM threads WHERE id = ?" % ", ".join(columns),
                     (thread_id,))
        return rows[0] if rows else None




@pytest.fixture(scope="module")
def real_home(standin, tmp_path_factory):
    """``real_home(version, provider)``: a fresh copy of a populated home that ``version``
    built under ``provider``. The first call builds it (at ``<root>/live``, keeping a copy at
    ``<root>/pristine``); later calls copy the pristine one back to ``live``."""
    base = tmp_path_factory.mktemp("real-homes")
    built: Dict[Tuple[str, str], Dict[str, Any]] = {}

    def make(version: str, provider: str) -> RealHome:
        binary = require_release(version)
        key = (version, provider)
        folder = base / ("%s-%s" % key)
        live, pristine = folder / "live", folder / "pristine"
        if key not in built:
            shutil.rmtree(str(folder), ignore_errors=True)  # what a failed build left
            cwd = live / "project"
            cwd.mkdir(parents=True)
            home = harness.build_home(version, live / "home", standin, provider=provider)
            if provider != "openai" and version != ROLLOUT_ONLY_RELEASE:
                # Stored auth lets a test switch this home to the built-in provider later.
                harness.login_with_api_key(binary, home, live / "user-home")
            built[key] = harness.populate_sample_home(version, home, cwd)
            shutil.copytree(str(live), str(pristine), symlinks=True)
        else:
            shutil.rmtree(str(live))
            shutil.copytree(str(pristine), str(live), symlinks=True)
        return RealHome(version, provider, live, built[key], binary, standin)

    return make


def diagnose_read_only(home: RealHome, expected_code: int) -> Dict[str, Any]:
    """diagnose --json, proving it changed no byte of the home."""
    before = snapshot(home.home)
    code, doc, _err = run_tool(home.home, "diagnose")
    assert changed_files(before, snapshot(home.home)) == []
    assert code == expected_code, doc["findings"]
    return doc


def reasons_by_thread(doc: Dict[str, Any]) -> Dict[str, List[str]]:
    return {entry["id"]: entry["reasons"] for entry in doc["threads"] if entry["hidden"]}


def finding(doc: Dict[str, Any], code: str) -> Optional[Dict[str, Any]]:
    return next((f for f in doc["findings"] if f["code"] == code), None)


def thread_entry(doc: Dict[str, Any], thread_id: str) -> Dict[str, Any]:
    return next(t for t in doc["threads"] if t["id"] == thread_id)


# ---------------------------------------------------------------------------------------------
# 1. diagnose tells the truth


SWITCHES = [(v, src, dst) for v in harness.RELEASES
            for src, dst in (("openai", CUSTOM), (CUSTOM, "openai"))]


@pytest.mark.parametrize("version,src,dst", SWITCHES,
                         ids=["%s-%s-to-%s" % s for s in SWITCHES])
def test_diagnose_matches_the_real_default_listing(real_home, version, src, dst):
    """Codex 0.169.0, 0.130.0 and 0.120.0, provider switch both ways (openai -> custom,
    custom -> openai): diagnose's visible_by_default is exactly what the real default
    thread/list returns after it, each hidden thread carries the codes that hide it, and
    diagnose changes no byte."""
    home = real_home(version, src)
    ids = home.ids
    everything = home.interactive + [ids["exec"], ids["archived"]]

    doc = diagnose_read_only(home, csr.EXIT_OK)
    listed = home.listed()
    assert sorted(listed) == sorted(home.interactive)
    assert doc["counts"]["visible_by_default"] == len(listed) == 2
    assert reasons_by_thread(doc) == {ids["exec"]: ["source_filtered"],
                                      ids["archived"]: ["archived"]}

    home.switch_provider(dst)
    doc = diagnose_read_only(home, csr.EXIT_FINDINGS)
    counts = doc["counts"]
    assert doc["config"]["active_provider"] == dst
    assert doc["codex_release"] == version
    assert (counts["threads"], counts["db_rows"], counts["rollout_files"]) == (4, 4, 4)
    assert counts["archived"] == 1
    assert counts["by_source"] == {"vscode": 3, "exec": 1}
    assert counts["by_provider_db"] == {src: 4}
    assert counts["by_provider_rollout"] == {src: 4}
    assert counts["hidden"] == 4
    listed = home.listed()
    assert counts["visible_by_default"] == len(listed) == 0

    reasons = {tid: sorted(codes) for tid, codes in reasons_by_thread(doc).items()}
    assert reasons == {
        home.interactive[0]: ["provider_mismatch"],
        home.interactive[1]: ["provider_mismatch"],
        ids["exec"]: ["provider_mismatch", "source_filtered"],
        ids["archived"]: ["archived", "provider_mismatch"],
    }
    for thread_id in everything:
        assert thread_entry(doc, thread_id)["evidence"]["provider_mismatch"] == {
            "db": src, "rollout": src, "active": dst}
    assert doc["provider_candidates"] == {src: 2}
    assert any(c.endswith("repair-provider --from %s --to %s" % (src, dst)) for c in doc["next_commands"])
    not_configured = finding(doc, "provider_not_configured")
    if src == "openai":
        assert not_configured is None  # built in: no table needed
    else:
        assert not_configured["evidence"]["provider"] == src

    # Nothing is lost: asking for every provider and source shows all four.
    with home.app_server() as server:
        assert sorted(server.listed_ids(modelProviders=[])) == sorted(home.interactive)
        assert sorted(server.listed_ids(modelProviders=[], sourceKinds=["vscode", "exec"])) == \
            sorted(home.interactive + [ids["exec"]])
        assert server.listed_ids(modelProviders=[], archived=True) == [ids["archived"]]


def test_diagnose_rollout_only_home_of_a_release_without_state_db(real_home):
    """Codex 0.100.0 (keeps no state DB: rollouts only), switch between two custom providers:
    diagnose reads the rollouts alone, its visible_by_default equals the real default
    thread/list before and after the switch, and the release still writes no state DB."""
    home = real_home(ROLLOUT_ONLY_RELEASE, CUSTOM)
    ids = home.ids
    assert not list(home.home.glob("state_*.sqlite*"))

    doc = diagnose_read_only(home, csr.EXIT_OK)
    assert doc["state_db"]["live"] is None
    assert doc["codex_release"] == ROLLOUT_ONLY_RELEASE
    assert (doc["counts"]["db_rows"], doc["counts"]["rollout_files"]) == (0, 4)
    listed = home.listed()
    assert sorted(listed) == sorted(home.interactive)
    assert doc["counts"]["visible_by_default"] == len(listed)
    assert reasons_by_thread(doc) == {ids["exec"]: ["source_filtered"],
                                      ids["archived"]: ["archived"]}

    home.switch_provider(OTHER_CUSTOM)
    doc = diagnose_read_only(home, csr.EXIT_FINDINGS)
    listed = home.listed()
    assert doc["counts"]["visible_by_default"] == len(listed) == 0
    reasons = {tid: sorted(codes) for tid, codes in reasons_by_thread(doc).items()}
    assert reasons == {
        home.interactive[0]: ["provider_mismatch"],
        home.interactive[1]: ["provider_mismatch"],
        ids["exec"]: ["provider_mismatch", "source_filtered"],
        ids["archived"]: ["archived", "provider_mismatch"],
    }
    assert thread_entry(doc, home.interactive[0])["evidence"]["provider_mismatch"] == {
        "db": None, "rollout": CUSTOM, "active": OTHER_CUSTOM}
    assert doc["provider_candidates"] == {CUSTOM: 2}
    assert not list(home.home.glob("state_*.sqlite*"))


def test_diagnose_home_whose_state_db_was_removed(real_home):
    """Codex 0.169.0 with state_5.sqlite (and its -wal/-shm) deleted: diagnose works from the
    rollouts alone and its visible_by_default equals what the real default thread/list shows
    (0.169.0 rebuilds the DB from the rollouts at start-up)."""
    home = real_home("0.169.0", "openai")
    ids = home.ids
    for path in home.home.glob("state_5.sqlite*"):
        path.unlink()

    doc = diagnose_read_only(home, csr.EXIT_OK)
    assert doc["state_db"]["live"] is None
    assert (doc["counts"]["db_rows"], doc["counts"]["rollout_files"]) == (0, 4)
    assert reasons_by_thread(doc) == {ids["exec"]: ["source_filtered"],
                                      ids["archived"]: ["archived"]}
    listed = home.listed()
    assert sorted(listed) == sorted(home.interactive)
    assert doc["counts"]["visible_by_default"] == len(listed)
    # Codex rebuilt the DB from the rollouts; the tool now sees every row again.
    assert home.state_db.exists()
    doc = diagnose_read_only(home, csr.EXIT_OK)
    assert doc["counts"]["db_rows"] == 4
    assert doc["counts"]["visible_by_default"] == 2


# ---------------------------------------------------------------------------------------------
# 2. repair-provider end to end


MOVES = [(v, src, dst) for v in ("0.171.0", "0.169.0", "0.130.0")
         for src, dst in (("openai", CUSTOM), (CUSTOM, "openai"))]


@pytest.mark.parametrize("version,src,dst", MOVES, ids=["%s-%s-to-%s" % m for m in MOVES])
def test_repair_provider_end_to_end(real_home, version, src, dst):
    """Codex 0.171.0 (schema 64, without --force), 0.169.0 and 0.130.0, both directions
    (openai -> custom, custom -> openai): hidden before; the dry run changes no byte; --apply backs up and moves; a second dry run
    has nothing left; a fresh real app-server lists, reads (thread/turns/list on 0.169.0) and
    continues every moved thread; restore --latest refuses while the files differ from what
    the run left (exit 3, naming --force) and with --force gives back the exact rollouts."""
    home = real_home(version, src)
    home.switch_provider(dst)
    moved = home.interactive
    texts = {moved[0]: ALPHA_TEXTS, moved[1]: BETA_TEXTS}
    assert home.listed() == []

    original = {tid: home.rollout(tid).read_bytes() for tid in moved}
    before = snapshot(home.home)
    code, doc, _ = run_tool(home.home, "repair-provider", "--from", src)
    assert code == csr.EXIT_FINDINGS
    assert changed_files(before, snapshot(home.home)) == []
    assert doc["applied"] is False and doc["changes"] > 0
    assert doc["plan"]["to"] == dst
    edited = {a["thread_id"] for a in doc["actions"] if a["kind"] == "rollout_edit"}
    assert edited == set(moved)  # exec and archived threads are out of the default scope

    code, doc, _ = run_tool(home.home, "repair-provider", "--from", src, "--apply")
    assert code == csr.EXIT_OK, doc
    backup = Path(doc["backup_dir"])
    assert backup.parent == home.home / csr.BACKUP_DIR_NAME
    manifest = json.loads((backup / "manifest.json").read_text())
    assert manifest["command"] == "repair-provider" and manifest["complete"] is True
    after_apply = snapshot(home.home)
    for tid in moved:
        kinds = provider_fields(home.rollout(tid))
        assert kinds and all(value == dst for _kind, value in kinds), kinds
        assert home.row(tid, "model_provider") == (dst,)
    # Only the moved rollouts and the DBs changed.
    touched = changed_files(before, after_apply)
    assert {home.rollout(tid).relative_to(home.home).as_posix() for tid in moved} <= set(touched)
    assert all(p.startswith("sessions/") or ".sqlite" in p for p in touched), touched

    code, doc, _ = run_tool(home.home, "repair-provider", "--from", src)
    assert (code, doc["changes"]) == (csr.EXIT_OK, 0)

    served = home.standin.responses_served
    with home.app_server() as server:
        listing = server.list_threads()
        assert sorted(item["id"] for item in listing) == sorted(moved)
        assert {item["modelProvider"] for item in listing} == {dst}
        for tid in moved:
            thread = server.read_thread(tid)
            assert [user_texts(turn) for turn in thread["turns"]] == [[t] for t in texts[tid]]
            if harness.at_least(version, "0.169.0"):
                # thread/turns/list pages newest first.
                page = server.request("thread/turns/list", {"threadId": tid})
                assert [turn["id"] for turn in reversed(page["data"])] == \
                    [turn["id"] for turn in thread["turns"]]
                assert [user_texts(turn) for turn in reversed(page["data"])] == [[t] for t in texts[tid]]
        resumed = server.resume_thread(moved[0])
        assert resumed["thread"]["id"] == moved[0]
        assert resumed["modelProvider"] == dst
        turn = server.run_turn(moved[0], "third question after the repair")
        assert turn["status"] == "completed"
        thread = server.read_thread(moved[0])
        assert [user_texts(t) for t in thread["turns"]] == \
            [[t] for t in ALPHA_TEXTS] + [["third question after the repair"]]
    assert home.standin.responses_served == served + 1

    # The continued thread's rollout (and the DBs) changed after the run: restore says so,
    # refuses without --discard-changes, and its refusal writes nothing.
    code, doc, _ = run_tool(home.home, "restore", "--latest")
    assert code == csr.EXIT_FINDINGS and doc["applied"] is False
    continued = home.rollout(moved[0]).relative_to(home.home).as_posix()
    assert continued in doc["changed_since_run"]
    assert home.rollout(moved[1]).relative_to(home.home).as_posix() not in doc["changed_since_run"]
    before_restore = snapshot(home.home)
    code, doc, err = run_tool(home.home, "restore", "--latest", "--apply")
    assert code == csr.EXIT_REFUSED
    assert "changed after that run" in err and "--discard-changes" in err
    assert changed_files(before_restore, snapshot(home.home)) == []

    code, doc, _ = run_tool(home.home, "restore", "--latest", "--apply", "--discard-changes")
    assert code == csr.EXIT_OK, doc
    assert Path(doc["backup_dir"]) == backup
    for tid in moved:
        assert home.rollout(tid).read_bytes() == original[tid]
        assert home.row(tid, "model_provider") == (src,)
    with home.app_server() as server:
        assert server.listed_ids() == []
        assert sorted(server.listed_ids(modelProviders=[])) == sorted(moved)


def test_restore_after_codex_only_listed_and_read_needs_no_force(real_home):
    """Codex 0.169.0: when the real app-server has only listed and read the moved threads
    (thread/list, thread/read, thread/turns/list) after repair-provider --apply, restore
    finds nothing changed since the run and restores without --force."""
    home = real_home("0.169.0", "openai")
    home.switch_provider(CUSTOM)
    original = {tid: home.rollout(tid).read_bytes() for tid in home.interactive}
    code, doc, _ = run_tool(home.home, "repair-provider", "--from", "openai", "--apply")
    assert code == csr.EXIT_OK, doc
    with home.app_server() as server:
        assert sorted(server.listed_ids()) == sorted(home.interactive)
        for tid in home.interactive:
            server.read_thread(tid)
            server.request("thread/turns/list", {"threadId": tid})
    code, doc, _ = run_tool(home.home, "restore", "--latest")
    assert (code, doc["changed_since_run"]) == (csr.EXIT_FINDINGS, [])
    code, doc, _ = run_tool(home.home, "restore", "--latest", "--apply")
    assert code == csr.EXIT_OK, doc
    for tid in home.interactive:
        assert home.rollout(tid).read_bytes() == original[tid]
    assert home.listed() == []


def python_of_the_other_dump_layout() -> Optional[str]:
    """A Python whose sqlite3 dump lays out sqlite_sequence otherwise than this one's: 3.9
    among the tables, 3.10 and later at the end."""
    found = [p for p in pythons_here() if ("3.9." in p) != (sys.version_info[:2] == (3, 9))]
    return found[0] if found else None


def test_a_repair_applied_under_one_python_restores_under_another(real_home):
    """Codex 0.171.0: repair-provider --apply run by one python3 (3.9, as macOS has it; or a
    later one when this is 3.9), then restore run by this one: the backup verifies, nothing
    counts as changed since, every rollout comes back byte for byte and the real Codex lists
    what it listed before the repair. The real state DB has a sqlite_sequence, which the two
    Pythons' SQL dumps place differently."""
    other = python_of_the_other_dump_layout()
    if other is None:
        pytest.skip("no Python here whose SQL dump is laid out otherwise than this one's")
    home = real_home("0.171.0", "openai")
    home.switch_provider(CUSTOM)
    original = {tid: home.rollout(tid).read_bytes() for tid in home.interactive}
    assert query(home.state_db, "SELECT name FROM sqlite_master WHERE name = 'sqlite_sequence'")
    applied = subprocess.run([other, str(SCRIPT), "--codex-home", str(home.home),
                              "repair-provider", "--from", "openai", "--apply", "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             timeout=120, env=script_env())
    assert applied.returncode == csr.EXIT_OK, applied.stderr
    assert sorted(home.listed()) == sorted(home.interactive)
    code, doc, _ = run_tool(home.home, "restore", "--latest")
    assert code == csr.EXIT_FINDINGS, doc
    assert doc["changed_since_run"] == []
    code, doc, _ = run_tool(home.home, "restore", "--latest", "--apply")
    assert code == csr.EXIT_OK, doc
    for tid in home.interactive:
        assert home.rollout(tid).read_bytes() == original[tid]
    assert home.listed() == []


@pytest.mark.parametrize("version", ["0.171.0", "0.169.0", "0.130.0"])
def test_resuming_a_hidden_thread_does_not_move_it(real_home, version):
    """Codex 0.169.0 and 0.130.0, switch between two custom providers (the old one still
    defined): a plain thread/resume of a hidden thread continues it under the provider it
    was recorded with, not the active one, and it stays hidden after a turn. Asking
    thread/resume for the active provider is refused by 0.169.0 ("Cannot change this
    thread's model provider ... on resume"); 0.130.0 accepts it but records nothing, and the
    thread stays hidden. Moving the recorded provider is left to repair-provider."""
    home = real_home(version, CUSTOM)
    home.switch_provider(OTHER_CUSTOM, keep_defined=CUSTOM)
    thread_id = home.interactive[0]
    with home.app_server() as server:
        resumed = server.resume_thread(thread_id)
        assert resumed["modelProvider"] == CUSTOM
        assert server.run_turn(thread_id, "a question after the switch")["status"] == "completed"
        assert server.listed_ids() == []
    with home.app_server() as server:
        if harness.at_least(version, "0.169.0"):
            with pytest.raises(harness.JsonRpcError) as refused:
                server.request("thread/resume", {"threadId": thread_id, "modelProvider": OTHER_CUSTOM})
            assert "Cannot change this thread's model provider" in refused.value.error["message"]
        else:
            moved = server.request("thread/resume", {"threadId": thread_id, "modelProvider": OTHER_CUSTOM})
            assert moved["modelProvider"] == OTHER_CUSTOM
        assert server.listed_ids() == []
    assert {value for _kind, value in provider_fields(home.rollout(thread_id))} == {CUSTOM}
    assert home.row(thread_id, "model_provider") == (CUSTOM,)
    doc = diagnose_read_only(home, csr.EXIT_FINDINGS)
    assert doc["counts"]["visible_by_default"] == 0
    assert doc["provider_candidates"] == {CUSTOM: 2}

    code, doc, _ = run_tool(home.home, "repair-provider", "--from", CUSTOM, "--apply")
    assert code == csr.EXIT_OK, doc
    with home.app_server() as server:
        assert sorted(server.listed_ids()) == sorted(home.interactive)
        turns = server.read_thread(thread_id)["turns"]
        assert [user_texts(turn) for turn in turns] == \
            [[t] for t in ALPHA_TEXTS] + [["a question after the switch"]]


# ---------------------------------------------------------------------------------------------
# 3. Why the rollout must change too


@pytest.mark.parametrize("version", ["0.171.0", "0.169.0", "0.130.0"])
def test_sqlite_only_provider_edit_is_reverted_by_the_listing(real_home, version):
    """Codex 0.169.0 and 0.130.0: after a switch openai -> custom, setting only
    threads.model_provider to the new provider (rollout untouched) does not bring a thread
    back: the next default listing re-derives the row from the rollout (model_provider goes
    back to openai) and the thread stays hidden."""
    home = real_home(version, "openai")
    home.switch_provider(CUSTOM)
    edited = home.interactive[0]
    rollout_before = home.rollout(edited).read_bytes()
    assert execute(home.state_db, "UPDATE threads SET model_provider = ? WHERE id = ?",
                   (CUSTOM, edited)) == 1
    assert home.row(edited, "model_provider") == (CUSTOM,)

    with home.app_server() as server:
        assert edited not in server.listed_ids()
        assert edited not in server.listed_ids()
    assert home.row(edited, "model_provider") == ("openai",)
    assert home.rollout(edited).read_bytes() == rollout_before

    doc = diagnose_read_only(home, csr.EXIT_FINDINGS)
    assert thread_entry(doc, edited)["evidence"]["provider_mismatch"] == {
        "db": "openai", "rollout": "openai", "active": CUSTOM}


# ---------------------------------------------------------------------------------------------
# 4. thread_settings_applied


def test_thread_settings_applied_decides_the_provider_when_codex_rederives_a_row(
        real_home, standin, tmp_path):
    """Codex 0.169.0. Observed: a thread's first turn writes one event_msg
    thread_settings_applied (thread_settings.model_provider_id = the provider of the moment);
    thread/resume + another turn under the same provider adds none.

    After a switch openai -> custom, rewriting only the session_meta model_provider and the
    DB row (leaving thread_settings_applied at openai):
      * the real default thread/list shows the thread, and listing, reading and restarting
        the app-server do not flip the DB row back (the row is only read-repaired);
      * but as soon as Codex re-derives the row from the rollout (the row is gone: a
        rebuilt or restored-from-elsewhere DB), model_provider comes from the latest
        thread_settings_applied: the row says openai again, thread/read reports openai and
        a state-DB listing (useStateDbOnly) hides the thread.
    With thread_settings_applied rewritten as well (what repair-provider does), the
    re-derived row keeps the custom provider and every listing shows the thread.
    So thread_settings_applied must be rewritten too."""
    binary = require_release("0.169.0")
    root = tmp_path / "settings"
    cwd = root / "project"
    cwd.mkdir(parents=True)
    home_dir = harness.build_home("0.169.0", root / "home", standin, provider="openai")
    with harness.AppServer(binary, home_dir, cwd=cwd) as server:
        thread_id = server.start_thread(cwd)
        server.run_turn(thread_id, "a question before the resume")
    home = RealHome("0.169.0", "openai", root, {"interactive": [thread_id]}, binary, standin)
    rollout = home.rollout(thread_id)
    assert provider_fields(rollout) == [("session_meta", "openai"),
                                        ("thread_settings_applied", "openai")]
    with home.app_server() as server:
        server.resume_thread(thread_id)
        server.run_turn(thread_id, "a question after the resume")
    assert provider_fields(rollout) == [("session_meta", "openai"),
                                        ("thread_settings_applied", "openai")]
    pristine = root.parent / "settings-pristine"
    shutil.copytree(str(root), str(pristine), symlinks=True)

    def delete_row_and_list() -> Tuple[List[str], List[str], str]:
        execute(home.state_db, "DELETE FROM threads WHERE id = ?", (thread_id,))
        with home.app_server() as server:
            listed = server.listed_ids()
            db_only = server.listed_ids(useStateDbOnly=True)
            read = server.read_thread(thread_id, include_turns=False)
        return listed, db_only, read["modelProvider"]

    # Session_meta and the DB row only, by hand.
    home.switch_provider(CUSTOM)
    raw = rollout.read_bytes()
    first, rest = raw.split(b"\n", 1)
    assert first.count(b'"model_provider":"openai"') == 1
    stat = rollout.stat()
    rollout.write_bytes(first.replace(b'"model_provider":"openai"',
                                      b'"model_provider":"%s"' % CUSTOM.encode()) + b"\n" + rest)
    os.utime(str(rollout), ns=(stat.st_atime_ns, stat.st_mtime_ns))
    execute(home.state_db, "UPDATE threads SET model_provider = ? WHERE id = ?", (CUSTOM, thread_id))
    assert provider_fields(rollout) == [("session_meta", CUSTOM), ("thread_settings_applied", "openai")]

    with home.app_server() as server:
        assert server.listed_ids() == [thread_id]
        assert home.row(thread_id, "model_provider") == (CUSTOM,)
        assert server.read_thread(thread_id)["modelProvider"] == CUSTOM
        assert server.listed_ids(useStateDbOnly=True) == [thread_id]
    assert home.row(thread_id, "model_provider") == (CUSTOM,)
    with home.app_server() as server:
        assert server.listed_ids() == [thread_id]
    assert home.row(thread_id, "model_provider") == (CUSTOM,)

    listed, db_only, read_provider = delete_row_and_list()
    assert home.row(thread_id, "model_provider") == ("openai",)
    assert listed == [thread_id]  # the file scan goes by session_meta
    assert db_only == []
    assert read_provider == "openai"

    # The same with the tool, which rewrites thread_settings_applied too.
    shutil.rmtree(str(root))
    shutil.copytree(str(pristine), str(root), symlinks=True)
    home.switch_provider(CUSTOM)
    code, _doc, _ = run_tool(home.home, "repair-provider", "--from", "openai", "--apply")
    assert code == csr.EXIT_OK
    assert provider_fields(rollout) == [("session_meta", CUSTOM), ("thread_settings_applied", CUSTOM)]
    listed, db_only, read_provider = delete_row_and_list()
    assert home.row(thread_id, "model_provider") == (CUSTOM,)
    assert listed == [thread_id]
    assert db_only == [thread_id]
    assert read_provider == CUSTOM


# ---------------------------------------------------------------------------------------------
# 5. repair-user-events


def test_blank_first_user_message_hides_and_repair_user_events_brings_back_0_120_0(real_home):
    """Codex 0.120.0: a thread whose DB row has a blank first_user_message (and
    has_user_event = 0) is hidden from the real default thread/list, which does not repair
    the row; diagnose reports user_event_missing as hiding it; repair-user-events --apply
    fills the column from the rollout and the real listing shows the thread again."""
    home = real_home("0.120.0", "openai")
    blanked = home.interactive[0]
    assert execute(home.state_db, "UPDATE threads SET first_user_message = '', has_user_event = 0 "
                   "WHERE id = ?", (blanked,)) == 1
    with home.app_server() as server:
        assert server.listed_ids() == [home.interactive[1]]
    assert home.row(blanked, "first_user_message") == ("",)

    doc = diagnose_read_only(home, csr.EXIT_FINDINGS)
    entry = thread_entry(doc, blanked)
    assert entry["hidden"] is True
    assert entry["reasons"] == ["user_event_missing"]
    assert entry["evidence"]["user_event_missing"]["column"] == "first_user_message"
    assert doc["counts"]["visible_by_default"] == 1

    before = snapshot(home.home)
    code, doc, _ = run_tool(home.home, "repair-user-events")
    assert code == csr.EXIT_FINDINGS and doc["changes"] == 1
    assert changed_files(before, snapshot(home.home)) == []
    code, doc, _ = run_tool(home.home, "repair-user-events", "--apply")
    assert code == csr.EXIT_OK, doc
    assert home.row(blanked, "first_user_message", "has_user_event") == (ALPHA_TEXTS[0], 1)

    with home.app_server() as server:
        listing = server.list_threads()
    assert sorted(item["id"] for item in listing) == sorted(home.interactive)
    assert next(i for i in listing if i["id"] == blanked)["preview"] == ALPHA_TEXTS[0]
    code, doc, _ = run_tool(home.home, "repair-user-events")
    assert (code, doc["changes"]) == (csr.EXIT_OK, 0)


@pytest.mark.parametrize("version", ["0.171.0", "0.169.0", "0.130.0"])
def test_blank_preview_does_not_hide_from_the_default_listing_in_newer_releases(real_home, version):
    """Codex 0.169.0 and 0.130.0: blanking preview / first_user_message of a DB row
    (has_user_event is 0 on every real row anyway) does NOT hide the thread from the default
    thread/list, and diagnose reports user_event_missing with hidden false.

    Observed as well: the default listing shows the preview it reads from the rollout but
    never writes it back (the row stays blank), and a state-DB listing
    (thread/list useStateDbOnly: true) does leave the thread out; 0.169.0's thread/read then
    reports an empty preview. repair-user-events --apply fills the row and the state-DB
    listing shows the thread again."""
    home = real_home(version, "openai")
    blanked = home.interactive[0]
    columns = "preview = '', first_user_message = ''" if harness.at_least(version, "0.169.0") else "first_user_message = ''"
    assert execute(home.state_db, "UPDATE threads SET %s, has_user_event = 0 WHERE id = ?" % columns,
                   (blanked,)) == 1

    doc = diagnose_read_only(home, csr.EXIT_FINDINGS)
    assert blanked not in reasons_by_thread(doc)
    assert finding(doc, "user_event_missing")["thread_ids"] == [blanked]
    assert doc["counts"]["visible_by_default"] == 2
    code, verbose, _ = run_tool(home.home, "diagnose", "--verbose")
    entry = thread_entry(verbose, blanked)
    assert (entry["hidden"], entry["reasons"]) == (False, ["user_event_missing"])
    assert any(c.endswith("repair-user-events") for c in doc["next_commands"])

    with home.app_server() as server:
        listing = server.list_threads()
        assert sorted(item["id"] for item in listing) == sorted(home.interactive)
        assert next(i for i in listing if i["id"] == blanked)["preview"] == ALPHA_TEXTS[0]
        assert server.listed_ids(useStateDbOnly=True) == [home.interactive[1]]
        if harness.at_least(version, "0.169.0"):
            assert server.read_thread(blanked, include_turns=False)["preview"] == ""
    assert home.row(blanked, "first_user_message") == ("",)

    code, doc, _ = run_tool(home.home, "repair-user-events", "--apply")
    assert code == csr.EXIT_OK, doc
    assert home.row(blanked, "first_user_message", "has_user_event") == (ALPHA_TEXTS[0], 1)
    with home.app_server() as server:
        assert sorted(server.listed_ids(useStateDbOnly=True)) == sorted(home.interactive)
        assert server.read_thread(blanked, include_turns=False)["preview"] == ALPHA_TEXTS[0]


# ---------------------------------------------------------------------------------------------
# 6. rebuild-index


@pytest.mark.parametrize("version", ["0.171.0", "0.169.0", "0.130.0"])
def test_rebuild_index_drops_stale_entries_and_keeps_names(real_home, version):
    """Codex 0.169.0 (and 0.130.0, whose DB has no name column: the index is the only
    store of the name): a thread named with thread/name/set, plus a stale index line for a
    thread that does not exist; rebuild-index --apply drops the stale line, keeps the name,
    and the real Codex still shows the name (thread/list and thread/read)."""
    home = real_home(version, "openai")
    named = home.interactive[0]
    with home.app_server() as server:
        server.set_name(named, "Renamed alpha")
    index = home.home / "session_index.jsonl"
    stale_id = "01a20000-0000-7000-8000-000000000000"
    with open(str(index), "a") as handle:
        handle.write(json.dumps({"id": stale_id, "thread_name": "gone",
                                 "updated_at": "2026-01-01T00:00:00Z"}) + "\n")

    doc = diagnose_read_only(home, csr.EXIT_FINDINGS)
    assert finding(doc, "index_stale")["evidence"]["thread_ids"] == [stale_id]
    code, doc, _ = run_tool(home.home, "rebuild-index", "--apply")
    assert code == csr.EXIT_OK, doc
    entries = [json.loads(line) for line in index.read_text().splitlines()]
    assert [(e["id"], e["thread_name"]) for e in entries] == [(named, "Renamed alpha")]
    assert finding(diagnose_read_only(home, csr.EXIT_OK), "index_stale") is None

    with home.app_server() as server:
        listing = {item["id"]: item for item in server.list_threads()}
        assert listing[named]["name"] == "Renamed alpha"
        assert server.read_thread(named, include_turns=False)["name"] == "Renamed alpha"


# ---------------------------------------------------------------------------------------------
# 7. Refusal while Codex runs


def test_apply_refuses_while_an_idle_app_server_runs(real_home):
    """Codex 0.169.0: with an idle real app-server on the home, repair-provider --apply exits
    3, its stderr names the reason and --force, and no byte changes; after the app-server
    exits the same command applies."""
    home = real_home("0.169.0", "openai")
    home.switch_provider(CUSTOM)
    argv = ("repair-provider", "--from", "openai", "--apply")
    with home.app_server() as server:
        assert server.listed_ids() == []
        before = snapshot(home.home)
        proc = run_tool_process(home.home, *argv)
        after = snapshot(home.home)
        assert proc.returncode == csr.EXIT_REFUSED, proc.stderr
        assert "Codex is using this home" in proc.stderr
        assert "--force" in proc.stderr
        # The pid named is the app-server (or the native binary the npm launcher runs in
        # the same process group).
        holders = {int(pid) for pid in re.findall(r"pid (\d+)", proc.stderr)}
        assert holders and all(os.getpgid(pid) == server.pid for pid in holders), proc.stderr
        assert changed_files(before, after) == []
        assert not (home.home / csr.BACKUP_DIR_NAME).exists() or \
            not [p for p in (home.home / csr.BACKUP_DIR_NAME).iterdir() if p.is_dir()]
    proc = run_tool_process(home.home, *argv)
    assert proc.returncode == csr.EXIT_OK, proc.stderr
    assert sorted(home.listed()) == sorted(home.interactive)


# ---------------------------------------------------------------------------------------------
# 8. History projection offsets


def line_at(data: bytes, offset: int) -> Optional[Dict[str, Any]]:
    if offset >= len(data):
        return None
    end = data.find(b"\n", offset)
    return json.loads(data[offset:end if end >= 0 else len(data)])


def at_line_boundary(data: bytes, offset: int) -> bool:
    return offset == 0 or (0 < offset <= len(data) and data[offset - 1:offset] == b"\n")


@pytest.mark.parametrize("version", ["0.171.0", "0.169.0"])
def test_repair_provider_keeps_history_offsets_on_line_boundaries(real_home, version):
    """Codex 0.169.0 and 0.171.0 (paginated history in thread_history_1.sqlite): after repair-provider
    to a provider id of another length (openai -> csr-standin), every rollout_byte_offset,
    rollout_end_byte_offset and next_rollout_byte_offset of a moved thread sits on a line
    boundary of the new rollout, the line at each offset has the ordinal it had before, and
    the real Codex reads every turn (thread/read and thread/turns/list)."""
    home = real_home(version, "openai")
    home.switch_provider(CUSTOM)
    assert len(CUSTOM) != len("openai")
    turn_sql = ("SELECT turn_id, rollout_byte_offset, rollout_end_byte_offset FROM thread_turns "
                "WHERE thread_id = ? ORDER BY rollout_ordinal")
    state_sql = "SELECT next_rollout_byte_offset FROM thread_history_projection_state WHERE thread_id = ?"

    def offsets(thread_id: str) -> List[Tuple[str, int]]:
        found = []
        for turn_id, start, end in query(home.history_db, turn_sql, (thread_id,)):
            found += [(turn_id + ":start", start), (turn_id + ":end", end)]
        found += [("next", value) for (value,) in query(home.history_db, state_sql, (thread_id,))]
        return found

    def ordinals(data: bytes, points: List[Tuple[str, int]]) -> Dict[str, Optional[int]]:
        return {name: (line_at(data, value) or {}).get("ordinal") if value < len(data) else "EOF"
                for name, value in points}

    before = {}
    for tid in home.interactive:
        data = home.rollout(tid).read_bytes()
        points = offsets(tid)
        assert len(points) == 5  # two turns, start and end each, and the projection state
        assert all(at_line_boundary(data, value) for _name, value in points)
        before[tid] = (ordinals(data, points), [name for name, _ in points])

    code, doc, _ = run_tool(home.home, "repair-provider", "--from", "openai", "--apply")
    assert code == csr.EXIT_OK, doc
    for tid in home.interactive:
        data = home.rollout(tid).read_bytes()
        points = offsets(tid)
        assert [name for name, _ in points] == before[tid][1]
        bad = [(name, value) for name, value in points if not at_line_boundary(data, value)]
        assert bad == [], "offsets off a line boundary in %s: %s" % (tid, bad)
        assert ordinals(data, points) == before[tid][0]
        assert points[-1][1] == len(data)

    with home.app_server() as server:
        for tid, texts in zip(home.interactive, (ALPHA_TEXTS, BETA_TEXTS)):
            thread = server.read_thread(tid)
            assert [user_texts(turn) for turn in thread["turns"]] == [[t] for t in texts]
            page = server.request("thread/turns/list", {"threadId": tid})
            assert [user_texts(turn) for turn in reversed(page["data"])] == [[t] for t in texts]
            assert [turn["id"] for turn in reversed(page["data"])] == \
                [turn["id"] for turn in thread["turns"]]


def test_offsets_left_by_a_killed_run_are_realigned_and_codex_reads_every_turn(real_home):
    """Codex 0.169.0: a repair-provider killed right after replacing the first rollout leaves
    that thread's thread_history_1.sqlite offsets at the old byte positions. diagnose names it
    (history_offsets_misaligned), the rerun of the same command realigns them from each line's
    ordinal, and the real Codex then reads every turn of every thread."""
    home = real_home("0.169.0", "openai")
    home.switch_provider(CUSTOM)
    killed = run_script("--codex-home", str(home.home), "repair-provider", "--from", "openai", "--apply",
                        timeout=120, fault="after_rollout_replace:1:kill")
    assert killed.returncode < 0, killed.stderr
    code, doc, _ = run_tool(home.home, "diagnose")
    misaligned = finding(doc, "history_offsets_misaligned")
    assert misaligned is not None and len(misaligned["evidence"]["thread_ids"]) == 1
    code, doc, _ = run_tool(home.home, "repair-provider", "--from", "openai", "--apply")
    assert code == csr.EXIT_OK, doc
    code, doc, _ = run_tool(home.home, "repair-provider", "--from", "openai")
    assert (code, doc["changes"]) == (csr.EXIT_OK, 0)
    for tid in home.interactive:
        data = home.rollout(tid).read_bytes()
        values = [v for row in query(home.history_db, "SELECT rollout_byte_offset, rollout_end_byte_offset "
                                     "FROM thread_turns WHERE thread_id = ?", (tid,)) for v in row]
        assert values and all(at_line_boundary(data, v) for v in values), (tid, values)
    with home.app_server() as server:
        for tid, texts in zip(home.interactive, (ALPHA_TEXTS, BETA_TEXTS)):
            thread = server.read_thread(tid)
            assert [user_texts(turn) for turn in thread["turns"]] == [[t] for t in texts]


def history_offsets_on_line_starts(home: RealHome, thread_id: str) -> None:
    """Every offset 0.169.0+ keeps for the thread points at a line start of its rollout."""
    data = home.rollout(thread_id).read_bytes()
    rows = query(home.history_db, "SELECT rollout_byte_offset, rollout_end_byte_offset FROM thread_turns "
                 "WHERE thread_id = ?", (thread_id,))
    rows += [(v, v) for (v,) in query(home.history_db, "SELECT next_rollout_byte_offset FROM "
                                      "thread_history_projection_state WHERE thread_id = ?", (thread_id,))]
    assert rows, "no projection rows for %s" % thread_id
    bad = [v for row in rows for v in row if v is not None and not at_line_boundary(data, v)]
    assert bad == [], bad


def listed_read_and_continued(home: RealHome, moved: List[str], texts: Dict[str, List[str]],
                              continued: str) -> Dict[str, Any]:
    """A fresh real app-server lists every moved thread by default, reads every turn of each,
    and continues `continued` (resume + turn/start). Returns the continued thread as read."""
    with home.app_server() as server:
        assert sorted(server.listed_ids()) == sorted(moved)
        for tid in moved:
            thread = server.read_thread(tid)
            assert [user_texts(turn) for turn in thread["turns"]] == [[t] for t in texts[tid]]
        assert server.resume_thread(continued)["modelProvider"] == home.provider
        assert server.run_turn(continued, "a question after the repair")["status"] == "completed"
        thread = server.read_thread(continued)
        assert [user_texts(t) for t in thread["turns"]] == [[t] for t in texts[continued]] + \
            [["a question after the repair"]]
        return thread


# ---------------------------------------------------------------------------------------------
# 9. Newer schemas, judged by what a repair touches


def test_a_schema_newer_than_the_tool_knows_is_written_when_what_it_touches_is_unchanged(real_home, monkeypatch):
    """Codex 0.171.0 migrates the state DB to schema 64 (63 "session model ids", 64 "thread
    listing indexes"). A tool checked only against 0.169.0 (schema 62) must not refuse it by
    number: every column, type and trigger repair-provider touches is unchanged, so it writes
    without --force and says so; the real 0.171.0 then lists, reads and continues the threads,
    and the history offsets stay on line starts."""
    monkeypatch.setattr(csr, "NEWEST_CHECKED_SCHEMA", 62)
    monkeypatch.setattr(csr, "MIGRATION_CHECKSUMS", {v: c for v, c in csr.MIGRATION_CHECKSUMS.items() if v <= 62})
    home = real_home("0.171.0", "openai")
    home.switch_provider(CUSTOM)
    moved = home.interactive
    assert home.listed() == []

    doc = diagnose_read_only(home, csr.EXIT_FINDINGS)
    newer = finding(doc, "schema_newer")
    assert newer["severity"] == "info" and newer["evidence"]["unchanged"] is True
    assert newer["evidence"]["migrations"] == ["63 session model ids", "64 thread listing indexes"]

    before = snapshot(home.home)
    code, doc, _ = run_tool(home.home, "repair-provider", "--from", "openai")
    assert code == csr.EXIT_FINDINGS and changed_files(before, snapshot(home.home)) == []
    compat = doc["compatibility"]
    assert (compat["schema_version"], compat["newer"], compat["unchanged"]) == (64, True, True), compat
    code, doc, err = run_tool(home.home, "repair-provider", "--from", "openai", "--apply")
    assert code == csr.EXIT_OK, (doc, err)
    code, doc, _ = run_tool(home.home, "repair-provider", "--from", "openai")
    assert (code, doc["changes"]) == (csr.EXIT_OK, 0)
    for tid in moved:
        history_offsets_on_line_starts(home, tid)
    listed_read_and_continued(home, moved, {moved[0]: ALPHA_TEXTS, moved[1]: BETA_TEXTS}, moved[0])


# ---------------------------------------------------------------------------------------------
# 10. A torn last line


TORN = b'{"timestamp":"2026-12-01T00:00:00.000Z","type":"response_item","payload":{"type":"message","role":"assi'


@pytest.mark.parametrize("version", ["0.171.0", "0.169.0", "0.130.0", "0.120.0"])
def test_a_rollout_with_a_torn_last_line_is_repaired_and_continues(real_home, version):
    """A crash cut the last line of a rollout mid-object. diagnose reports it as information;
    repair-provider edits only the provider lines and carries the fragment verbatim; the real
    release then lists the thread, reads every complete turn and continues it (on resume it
    ends the fragment with a newline before appending: measured on 0.169.0 and 0.171.0)."""
    home = real_home(version, "openai")
    home.switch_provider(CUSTOM)
    torn, other = home.interactive
    path = home.rollout(torn)
    with open(str(path), "ab") as handle:
        handle.write(TORN)
    original = path.read_bytes()

    doc = diagnose_read_only(home, csr.EXIT_FINDINGS)
    damage = finding(doc, "rollout_unreadable")
    assert damage["severity"] == "info" and damage["evidence"]["problems"] == {"torn_line": 1}
    assert torn in reasons_by_thread(doc) and "provider_mismatch" in reasons_by_thread(doc)[torn]

    before = snapshot(home.home)
    code, doc, _ = run_tool(home.home, "repair-provider", "--from", "openai")
    assert code == csr.EXIT_FINDINGS and changed_files(before, snapshot(home.home)) == []
    edit = next(a for a in doc["actions"] if a["kind"] == "rollout_edit" and a["thread_id"] == torn)
    assert edit["kept_verbatim"] == ["torn_line"]
    assert torn not in [s.get("thread_id") for s in doc["skipped"]]
    code, doc, _ = run_tool(home.home, "repair-provider", "--from", "openai", "--apply")
    assert code == csr.EXIT_OK, doc
    repaired = path.read_bytes()
    assert repaired.endswith(b"\n" + TORN)
    assert repaired.replace(b'"model_provider":"%s"' % CUSTOM.encode(), b'"model_provider":"openai"').replace(
        b'"model_provider_id":"%s"' % CUSTOM.encode(), b'"model_provider_id":"openai"') == original
    code, doc, _ = run_tool(home.home, "repair-provider", "--from", "openai")
    assert (code, doc["changes"]) == (csr.EXIT_OK, 0)
    if harness.at_least(version, "0.169.0"):
        history_offsets_on_line_starts(home, torn)

    listed_read_and_continued(home, [torn, other], {torn: ALPHA_TEXTS, other: BETA_TEXTS}, torn)
    after = path.read_bytes()
    assert after.startswith(repaired)
    if harness.at_least(version, "0.169.0"):
        # CODEX-COMPAT: 0.169.0 and 0.171.0 end the fragment with a newline, then append.
        assert after[len(repaired):len(repaired) + 1] == b"\n"


def _damage_in_place(spoil: Any) -> Any:
    """Spoil the first world_state line (in the head diagnose reads) in place, keeping its
    length, as a bad sector or a partial overwrite would: the history offsets stay true."""
    def damage(data: bytes) -> bytes:
        start = data.rfind(b"\n", 0, data.index(b'"world_state"')) + 1
        end = data.index(b"\n", start)
        spoilt = spoil(data[start:end])
        assert len(spoilt) == end - start
        return data[:start] + spoilt + data[end:]
    return damage


DAMAGE = {
    "nul_padding": (lambda data: data + b"\x00" * 4096, "nul_bytes", True),
    "nul_line": (_damage_in_place(lambda line: b"\x00" * len(line)), "nul_bytes", True),
    "bad_json": (_damage_in_place(lambda line: line[:-1] + b" "), "bad_json", True),
    "not_utf8": (_damage_in_place(lambda line: line[:20] + b"\xff\xfe" + line[22:]), "invalid_utf8", False),
}


@pytest.mark.parametrize("version", ["0.171.0", "0.169.0"])
@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_other_damage_is_carried_verbatim_and_codex_reads_the_thread(real_home, version, kind):
    """NUL padding, a line of NULs, a line that is not JSON, a line that is not UTF-8: the
    provider repair edits only its lines and copies the damage verbatim; the real release reads
    every turn and continues the thread. It lists it too, except with a line that is not UTF-8
    (measured on 0.169.0 and 0.171.0), which diagnose names for that thread (head_line_not_utf8,
    information: no repair may change the conversation's bytes)."""
    damage, problem, listed_by_default = DAMAGE[kind]
    home = real_home(version, "openai")
    home.switch_provider(CUSTOM)
    damaged, other = home.interactive
    path = home.rollout(damaged)
    path.write_bytes(damage(path.read_bytes()))
    original = path.read_bytes()
    doc = diagnose_read_only(home, csr.EXIT_FINDINGS)
    found = finding(doc, "rollout_unreadable")
    assert problem in found["evidence"]["problems"] and found["evidence"]["files"] == 1, found
    # Information either way: read past, or (not UTF-8) no repair may touch the bytes; the
    # thread it hides says so itself (head_line_not_utf8).
    assert found["severity"] == "info"
    hidden_by_damage = [t["id"] for t in doc["threads"] if "head_line_not_utf8" in t["reasons"]]
    assert hidden_by_damage == ([] if listed_by_default else [damaged]), hidden_by_damage
    code, doc, _ = run_tool(home.home, "repair-provider", "--from", "openai", "--apply")
    assert code == csr.EXIT_OK, doc
    edit = next(a for a in doc["actions"] if a["kind"] == "rollout_edit" and a["thread_id"] == damaged)
    assert problem in edit["kept_verbatim"]
    assert path.read_bytes().replace(b'"model_provider":"%s"' % CUSTOM.encode(), b'"model_provider":"openai"').replace(
        b'"model_provider_id":"%s"' % CUSTOM.encode(), b'"model_provider_id":"openai"') == original
    history_offsets_on_line_starts(home, damaged)
    with home.app_server() as server:
        assert (damaged in server.listed_ids()) is listed_by_default
        assert [user_texts(t) for t in server.read_thread(damaged)["turns"]] == [[t] for t in ALPHA_TEXTS]
        server.resume_thread(damaged)
        assert server.run_turn(damaged, "a question after the repair")["status"] == "completed"
        assert len(server.read_thread(damaged)["turns"]) == 3


# ---------------------------------------------------------------------------------------------
# 11. Rollouts copied in from another machine


def copied_in_home(real_home, version: str, tmp_path: Path) -> Tuple[RealHome, List[str], Dict[str, bytes]]:
    """A populated home of `version`, plus the two interactive rollouts of another home of the
    same release (another machine) copied into its sessions/: no DB rows, no projection rows."""
    source = real_home(version, "openai")
    donor = tmp_path / "donor"
    shutil.copytree(str(source.home / "sessions"), str(donor))
    copied = source.interactive
    home = real_home(version, CUSTOM)
    home.switch_provider("openai")  # the copied threads' provider; the home's own are hidden by provider
    data = {}
    for tid in copied:
        found = next(donor.rglob("rollout-*%s.jsonl" % tid))
        target = home.home / "sessions" / found.relative_to(donor)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(str(found), str(target))
        data[tid] = target.read_bytes()
    return home, copied, data


@pytest.mark.parametrize("version", ["0.171.0", "0.169.0", "0.130.0", "0.120.0"])
def test_copied_in_rollouts_read_every_turn_after_the_step_diagnose_names(real_home, version, tmp_path):
    """Rollouts copied in from another machine (no rows): 0.130.0 and 0.120.0 list and read them
    as they are. 0.169.0 and 0.171.0 list them but thread/read returns no turns; no row helps (reindex
    builds the rows: still no turns). diagnose says so (history_projection_missing, not the
    sqlite_home advice, which does not apply) and names the step that works: one resume, which
    rebuilds the turns and leaves the rollout byte for byte as it was."""
    home, copied, data = copied_in_home(real_home, version, tmp_path)
    texts = {copied[0]: ALPHA_TEXTS, copied[1]: BETA_TEXTS}
    code, doc, _ = run_tool(home.home, "reindex", "--apply")
    assert code == csr.EXIT_OK and doc["changes"] >= 2, doc
    with home.app_server() as server:
        assert set(copied) <= set(server.listed_ids())
        turns = {tid: server.read_thread(tid)["turns"] for tid in copied}
    if not harness.at_least(version, "0.169.0"):
        assert {tid: [user_texts(t) for t in turns[tid]] for tid in copied} == \
            {tid: [[t] for t in texts[tid]] for tid in copied}
        assert finding(diagnose_read_only(home, csr.EXIT_FINDINGS), "history_projection_missing") is None
        return
    assert turns == {copied[0]: [], copied[1]: []}

    code, doc, _ = run_tool(home.home, "diagnose", "--verbose")
    missing = finding(doc, "history_projection_missing")
    assert missing is not None and sorted(missing["thread_ids"]) == sorted(copied)
    evidence = thread_entry(doc, copied[0])["evidence"]["history_projection_missing"]
    assert evidence["elsewhere"] is False
    assert "sqlite_home" not in evidence["manual_step"]
    assert "codex resume %s" % copied[0] in evidence["manual_step"]

    with home.app_server() as server:
        for tid in copied:
            server.resume_thread(tid)  # the step, and nothing sent
    for tid in copied:
        assert home.rollout(tid).read_bytes() == data[tid]
    with home.app_server() as server:
        for tid in copied:
            assert [user_texts(t) for t in server.read_thread(tid)["turns"]] == [[t] for t in texts[tid]]
    code, doc, _ = run_tool(home.home, "diagnose")
    assert finding(doc, "history_projection_missing") is None


@pytest.mark.parametrize("version", ["0.171.0", "0.169.0"])
def test_forced_apply_leaves_a_thread_codex_has_loaded(real_home, version):
    """A real app-server with one thread resumed holds that thread's writer lock
    (thread-writer-locks/<id>.lock) and its rollout open. repair-provider --apply --force
    leaves that thread byte for byte (reported as skipped) and moves the others; once the
    app-server is gone the rerun moves it too, and the real Codex lists and reads them all."""
    home = real_home(version, "openai")
    home.switch_provider(CUSTOM)
    loaded, other = home.interactive[0], home.interactive[1]
    with home.app_server() as server:
        server.resume_thread(loaded)
        before = home.rollout(loaded).read_bytes()
        proc = run_tool_process(home.home, "repair-provider", "--from", "openai", "--apply", "--force", "--json")
        assert proc.returncode == csr.EXIT_OK, proc.stderr
        skipped = {s["thread_id"]: s["reason"] for s in json.loads(proc.stdout)["skipped"]}
        assert loaded in skipped and ("writer lock" in skipped[loaded] or "open" in skipped[loaded]), skipped
        assert home.rollout(loaded).read_bytes().startswith(before)
        assert all(v == CUSTOM for _k, v in provider_fields(home.rollout(other)))
    code, doc, _ = run_tool(home.home, "repair-provider", "--from", "openai", "--apply")
    assert code == csr.EXIT_OK, doc
    with home.app_server() as server:
        assert sorted(server.listed_ids()) == sorted(home.interactive)
        for tid, texts in zip(home.interactive, (ALPHA_TEXTS, BETA_TEXTS)):
            assert [user_texts(turn) for turn in server.read_thread(tid)["turns"]] == [[t] for t in texts]
