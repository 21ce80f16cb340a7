"""Synthetic Codex homes for the fast test tier.

The state DB schemas in tests/fixtures/ were dumped from homes that the real Codex releases
created (tables, indexes, triggers and `_sqlx_migrations` rows, and the empty `sqlite_sequence`
every real state DB has; no thread data), and the rollout lines below follow the line
sequences those releases wrote:

* 0.169.0: session_meta (~21 KB, `history_mode`, `ordinal` on every line), task_started,
  developer and <environment_context> messages, world_state, turn_context,
  thread_settings_applied, the prompt as a role=user response_item, then
  event_msg/item_completed with a UserMessage item; no event_msg/user_message.
* 0.130.0 and 0.120.0: the same head without ordinals, and event_msg/user_message.
* 0.171.0: the lines of 0.169.0; its state DB is at schema 64 (63 "session model ids" adds a
  table, 64 "thread listing indexes" adds indexes), its history DB gains migration 9.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import codex_harness as harness

FIXTURES = Path(__file__).resolve().parent / "fixtures"
RELEASES = harness.RELEASES
BASE_TIME_MS = 1_790_000_000_000  # 2026-09-21


def new_thread_id(seed: str) -> str:
    """A UUIDv7-looking, deterministic id."""
    digest = hashlib.sha256(seed.encode()).hexdigest()
    return "019a%s-%s-7%s-8%s-%s" % (digest[:4], digest[4:8], digest[8:11], digest[11:14], digest[14:26])


class Thread:
    def __init__(self, thread_id: str, path: Path, created_ms: int) -> None:
        self.id = thread_id
        self.path = path
        self.created_ms = created_ms


class HomeBuilder:
    """Builds a CODEX_HOME: config, state DB (from a real release's schema), rollouts, index."""

    def __init__(self, root: Path, release: str = "0.169.0", with_db: bool = True) -> None:
        self.root = root
        self.release = release
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "sessions").mkdir(exist_ok=True)
        self.db_path: Optional[Path] = None
        self.counter = 0
        if with_db:
            self.db_path = self.root / "state_5.sqlite"
            create_state_db(self.db_path, release)

    # -- files --------------------------------------------------------------------------------

    def config(self, text: str, name: str = "config.toml") -> "HomeBuilder":
        (self.root / name).write_text(text, encoding="utf-8")
        return self

    def provider_config(self, provider: str) -> "HomeBuilder":
        if provider == "openai":
            return self.config("")
        return self.config(
            'model_provider = "%s"\n\n[model_providers.%s]\nname = "%s"\nbase_url = "http://127.0.0.1:9/v1"\n'
            'wire_api = "responses"\nenv_key = "CSR_FAKE_KEY"\n' % (provider, provider, provider))

    def thread(
        self,
        provider: Optional[str] = "openai",
        source: Any = "vscode",
        user_text: Optional[str] = "fix the failing checkout test",
        archived: bool = False,
        row: bool = True,
        row_overrides: Optional[Dict[str, Any]] = None,
        turns: int = 1,
        extra_lines: Optional[List[Dict[str, Any]]] = None,
        cwd: str = "/home/ana/shop",
        thread_id: Optional[str] = None,
    ) -> Thread:
        self.counter += 1
        thread_id = thread_id or new_thread_id("%s/%d" % (self.root.name, self.counter))
        created_ms = BASE_TIME_MS + self.counter * 60_000
        stamp = _stamp(created_ms)
        name = "rollout-%s-%s.jsonl" % (stamp.replace(":", "-")[:19], thread_id)
        folder = self.root / "archived_sessions" if archived else self.root / "sessions" / stamp[:4] / stamp[5:7] / stamp[8:10]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        lines = rollout_lines(self.release, thread_id, created_ms, provider, source, user_text, turns, cwd)
        lines += extra_lines or []
        write_jsonl(path, lines)
        thread = Thread(thread_id, path, created_ms)
        if self.release >= "0.169.0" and self.db_path is not None:
            record_projection(self.root / "thread_history_1.sqlite", thread, self.release)
        if row and self.db_path is not None:
            values = row_values(self.release, thread, provider, source, user_text, archived, cwd)
            values.update(row_overrides or {})
            insert_row(self.db_path, values)
        return thread

    def index(self, entries: List[Dict[str, Any]]) -> "HomeBuilder":
        write_jsonl(self.root / "session_index.jsonl", entries)
        return self


def switched_home(root: Path, release: str = "0.169.0", turns: Sequence[int] = (1, 1),
                  active: str = "proxy") -> Tuple[HomeBuilder, List[Thread]]:
    """The commonest case of vanished chats: chats made under openai (one per entry of
    `turns`, that many turns each), then config.toml switched to the custom provider
    `active`, so Codex's default list shows none of them."""
    home = HomeBuilder(root, release).provider_config(active)
    threads = [home.thread(provider="openai", turns=count) for count in turns]
    return home, threads


# -- rollouts ---------------------------------------------------------------------------------


def _stamp(millis: int) -> str:
    import datetime as dt
    return dt.datetime.fromtimestamp(millis / 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:23] + "Z"


def write_jsonl(path: Path, records: List[Dict[str, Any]]) -> None:
    with open(str(path), "wb") as handle:
        for record in records:
            handle.write(json.dumps(record, separators=(",", ":")).encode("utf-8") + b"\n")


def session_meta(release: str, thread_id: str, created_ms: int, provider: Optional[str], source: Any,
                 cwd: str) -> Dict[str, Any]:
    payload: Dict[str, Any] = {}
    if release >= "0.169.0":
        payload.update(account_scoped=True, session_id=thread_id)
    payload.update(id=thread_id, timestamp=_stamp(created_ms), cwd=cwd, originator="codex_vscode",
                   cli_version=release, source=source)
    if provider is not None:
        payload["model_provider"] = provider
    payload["base_instructions"] = {"text": "You are Codex. " + "x" * 20_000}
    if release >= "0.169.0":
        payload["history_mode"] = "paginated"
    return {"timestamp": _stamp(created_ms), "type": "session_meta", "payload": payload}


def rollout_lines(release: str, thread_id: str, created_ms: int, provider: Optional[str], source: Any,
                  user_text: Optional[str], turns: int, cwd: str) -> List[Dict[str, Any]]:
    ts = _stamp(created_ms + 500)
    lines = [session_meta(release, thread_id, created_ms, provider, source, cwd)]

    def add(kind: str, payload: Dict[str, Any]) -> None:
        lines.append({"timestamp": ts, "type": kind, "payload": payload})

    for turn in range(turns):
        add("event_msg", {"type": "task_started", "turn_id": "turn-%d" % turn})
        if turn == 0:
            add("response_item", {"type": "message", "role": "developer",
                                  "content": [{"type": "input_text", "text": "<permissions instructions>\nsandbox\n</permissions instructions>"}]})
            add("response_item", {"type": "message", "role": "user",
                                  "content": [{"type": "input_text", "text": "<environment_context>\n  <cwd>%s</cwd>\n</environment_context>" % cwd}]})
        add("turn_context", {"cwd": cwd, "model": "gpt-5.5"})
        if release >= "0.169.0":
            add("event_msg", {"type": "thread_settings_applied", "thread_id": thread_id,
                              "thread_settings": {"model": "gpt-5.5", "model_provider_id": provider}})
        if user_text is not None:
            text = user_text if turn == 0 else "%s (turn %d)" % (user_text, turn + 1)
            add("response_item", {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]})
            if release >= "0.169.0":
                add("event_msg", {"type": "item_completed", "thread_id": thread_id, "turn_id": "turn-%d" % turn,
                                  "item": {"type": "UserMessage", "id": "u%d" % turn,
                                           "content": [{"type": "text", "text": text, "text_elements": []}]}})
            else:
                add("event_msg", {"type": "user_message", "message": text, "images": [], "local_images": [],
                                  "text_elements": []})
        add("response_item", {"type": "message", "role": "assistant",
                              "content": [{"type": "output_text", "text": "done %d" % turn}]})
        add("event_msg", {"type": "task_complete", "turn_id": "turn-%d" % turn})
    if release >= "0.169.0":
        for ordinal, line in enumerate(lines):
            line["ordinal"] = ordinal
    return lines


# -- the state DB -----------------------------------------------------------------------------


def create_state_db(path: Path, release: str) -> None:
    conn = sqlite3.connect(str(path))
    try:
        conn.executescript((FIXTURES / ("state_5-%s.sql" % release)).read_text(encoding="utf-8"))
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("INSERT OR REPLACE INTO backfill_state (id, status, last_watermark, last_success_at, updated_at) "
                     "VALUES (1, 'complete', NULL, 1790000000, 1790000000)")
        conn.commit()
    finally:
        conn.close()


def row_values(release: str, thread: Thread, provider: Optional[str], source: Any, user_text: Optional[str],
               archived: bool, cwd: str) -> Dict[str, Any]:
    stored_source = source if isinstance(source, str) else json.dumps(source, separators=(",", ":"))
    text = user_text or ""
    return {
        "id": thread.id, "rollout_path": str(thread.path), "created_at": thread.created_ms // 1000,
        "updated_at": thread.created_ms // 1000 + 1, "source": stored_source,
        "model_provider": provider or "openai", "cwd": cwd, "title": text, "sandbox_policy": '{"type":"read-only"}',
        "approval_mode": "on-request", "tokens_used": 30, "has_user_event": 0, "archived": int(archived),
        "archived_at": thread.created_ms // 1000 + 5 if archived else None, "cli_version": release,
        "first_user_message": text, "memory_mode": "enabled", "model": "gpt-5.5",
        "created_at_ms": thread.created_ms, "updated_at_ms": thread.created_ms + 1000, "preview": text,
        "recency_at": thread.created_ms // 1000 + 1, "recency_at_ms": thread.created_ms + 1000,
        "history_mode": "paginated" if release >= "0.169.0" else "legacy", "originator": "codex_vscode",
    }


def insert_row(db_path: Path, values: Dict[str, Any]) -> None:
    conn = sqlite3.connect(str(db_path))
    try:
        columns = {r[1] for r in conn.execute("PRAGMA table_info(threads)")}
        names = [k for k in values if k in columns]
        conn.execute("INSERT OR REPLACE INTO threads (%s) VALUES (%s)" % (", ".join(names), ", ".join("?" * len(names))),
                     [values[k] for k in names])
        conn.commit()
    finally:
        conn.close()


def history_release(release: str) -> str:
    """The release whose thread_history_1 schema a synthetic home of `release` gets."""
    return release if (FIXTURES / ("thread_history_1-%s.sql" % release)).exists() else "0.169.0"


def add_migration(db_path: Path, version: int, description: str, sql: str = "") -> None:
    """What a Codex release newer than any fixture does: run `sql` and record the migration."""
    conn = sqlite3.connect(str(db_path))
    try:
        if sql:
            conn.executescript(sql)
        conn.execute("INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, "
                     "execution_time) VALUES (?, ?, '2027-01-01 00:00:00', 1, ?, 1)",
                     (version, description, hashlib.sha384(description.encode()).digest()))
        conn.commit()
    finally:
        conn.close()


def retype_column(db_path: Path, table: str, column: str, new_type: str) -> None:
    """Change the declared type of one column in place (SQLite has no ALTER COLUMN): the
    shape a future migration could give it, with every row kept."""
    import re
    conn = sqlite3.connect(str(db_path))
    try:
        (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name=?", (table,)).fetchone()
        changed, count = re.subn(r"(\b%s\s+)[A-Z]+" % re.escape(column), r"\g<1>" + new_type, sql, count=1)
        assert count == 1, sql
        conn.execute("PRAGMA writable_schema = ON")
        conn.execute("UPDATE sqlite_master SET sql = ? WHERE type='table' AND name=?", (changed, table))
        conn.execute("PRAGMA writable_schema = OFF")
        conn.commit()
    finally:
        conn.close()


def record_projection(db_path: Path, thread: Thread, release: str = "0.169.0") -> None:
    """What 0.169.0's paginated-history projection stores for a rollout: one thread_turns row
    per turn with byte offsets of its first and past-last line, and the next offset to read."""
    fresh = not db_path.exists()
    conn = sqlite3.connect(str(db_path))
    try:
        if fresh:
            conn.executescript((FIXTURES / ("thread_history_1-%s.sql" % history_release(release))).read_text(encoding="utf-8"))
        offset, starts, ordinal = 0, [], 0
        with open(str(thread.path), "rb") as handle:
            for raw in handle:
                record = json.loads(raw)
                if record["type"] == "event_msg" and record["payload"].get("type") == "task_started":
                    starts.append((offset, record.get("ordinal", ordinal)))
                offset += len(raw)
                ordinal += 1
        for n, (start, start_ordinal) in enumerate(starts):
            end, end_ordinal = (starts[n + 1] if n + 1 < len(starts) else (offset, ordinal))
            conn.execute("INSERT INTO thread_turns (thread_id, turn_id, rollout_ordinal, status, started_at, "
                         "rollout_byte_offset, rollout_end_ordinal, rollout_end_byte_offset) "
                         "VALUES (?, ?, ?, 'completed', 0, ?, ?, ?)",
                         (thread.id, "turn-%d" % n, start_ordinal, start, end_ordinal - 1, end))
        conn.execute("INSERT INTO thread_history_projection_state (thread_id, next_rollout_byte_offset, "
                     "next_rollout_ordinal) VALUES (?, ?, ?)", (thread.id, offset, ordinal))
        conn.commit()
    finally:
        conn.close()


def hash_tree(root: Path, ignore_shm: bool = True, regular_only: bool = False) -> Dict[str, str]:
    """SHA-256 of every file under root, except SQLite's -shm index (it may move on a read)
    and the tool's own recovery-backups/ folder. With `regular_only`, nothing that is not a
    regular file is opened: a FIFO (its read would block) and a symlink are left out."""
    digests = {}
    for folder, dirs, files in os.walk(str(root)):
        dirs[:] = [d for d in dirs if d != "recovery-backups"]
        for name in files:
            if ignore_shm and name.endswith("-shm"):
                continue
            path = Path(folder) / name
            if regular_only and not stat.S_ISREG(os.lstat(str(path)).st_mode):
                continue
            digests[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def db_dump(path: Path) -> List[str]:
    """The logical content of a DB, for comparing DBs whose files may differ (WAL, page order)."""
    conn = sqlite3.connect(str(path))
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


# -- running the tool -------------------------------------------------------------------------

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "codex_session_recovery.py"


def one_json_document(out: str) -> Dict[str, Any]:
    """The only JSON document in `out`: fails on none, on two, or on anything after it."""
    text = out.lstrip()
    assert text, "nothing on stdout"
    doc, end = json.JSONDecoder().raw_decode(text)
    assert text[end:].strip() == "", "more than one document on stdout: %r" % text[end:end + 200]
    assert isinstance(doc, dict), doc
    return doc


def run_captured(*argv: str) -> Tuple[int, str, str]:
    """The tool in this process, as a user runs it: (exit code, stdout, stderr). argparse's
    usage errors give their exit code; any other exception propagates and fails the test, and
    so does a traceback printed on stderr."""
    import codex_session_recovery as csr

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = csr.main(list(argv))
        except SystemExit as exc:
            code = exc.code
    assert "Traceback" not in err.getvalue(), err.getvalue()
    return code, out.getvalue(), err.getvalue()


def run_in_process(*argv: str) -> Tuple[int, Dict[str, Any], str]:
    """The tool in-process with --json: (exit code, its one JSON document, stderr), the
    document's exit_code checked against the real one."""
    code, out, err = run_captured(*argv, "--json")
    doc = one_json_document(out)
    assert doc["exit_code"] == code, (code, doc)
    return code, doc, err


def script_env(env: Optional[Dict[str, str]] = None, fault: Optional[str] = None) -> Dict[str, str]:
    """This process's environment without what would point the script elsewhere (a
    CODEX_HOME of the machine, an armed fault point), plus `env`, plus `fault` armed."""
    import codex_session_recovery as csr

    full = {k: v for k, v in os.environ.items() if k not in ("CODEX_HOME", csr.FAULT_ENV)}
    full.update(env or {})
    if fault:
        full[csr.FAULT_ENV] = fault
    return full


def pythons_here() -> List[str]:
    """The newest Python of each 3.9-3.13 on this machine, found as .ci/run finds them."""
    root = Path(os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))) / "versions"
    found = []
    for minor in range(9, 14):
        candidates = sorted(root.glob("3.%d.*/bin/python3" % minor),
                            key=lambda p: [int(n) if n.isdigit() else -1
                                           for n in p.parent.parent.name.split(".")])
        if candidates:
            found.append(str(candidates[-1]))
    return found


def run_script(*args: str, cwd: Optional[Path] = None, python_flags: Sequence[str] = (),
               timeout: float = 60, env: Optional[Dict[str, str]] = None,
               fault: Optional[str] = None, stdout: Any = subprocess.PIPE,
               text: bool = False) -> "subprocess.CompletedProcess[Any]":
    """The real script in a subprocess, as a user runs it: stdout (unless `stdout` says where
    it goes) and stderr captured, as bytes or with `text` as str; `env` added to script_env(),
    `fault` armed (the script's fault-injection variable, e.g. "<point>:<n>:kill")."""
    return subprocess.run([sys.executable, *python_flags, str(SCRIPT), *args],
                          cwd=None if cwd is None else str(cwd), stdout=stdout,
                          stderr=subprocess.PIPE, timeout=timeout, env=script_env(env, fault),
                          text=text)
