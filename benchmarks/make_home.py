#!/usr/bin/env python3
"""Generate a large synthetic CODEX_HOME shaped like what Codex 0.169.0 writes.

    python3 benchmarks/make_home.py --threads 10000 --seed 1 --giant-mb 1024 --out /tmp/csr-home

What it writes (deterministic for a seed):

* `state_5.sqlite` built from the real 0.169.0 schema dump (tests/fixtures/state_5-0.169.0.sql:
  43 thread columns, triggers, `_sqlx_migrations`), one row per thread, inserted in one
  transaction; `thread_history_1.sqlite` (tests/fixtures/thread_history_1-0.169.0.sql) with the
  `thread_turns` byte offsets and `thread_history_projection_state` of every rollout.
* one rollout per thread under sessions/YYYY/MM/DD/ (archived ones flat under
  archived_sessions/), with the 0.169.0 line sequence of tests/homes.py: a ~21 KB
  `session_meta` first line, task_started, developer and <environment_context> messages,
  turn_context, thread_settings_applied, the prompt as a role=user response_item, an
  item_completed UserMessage, then the turn's work (reasoning with encrypted_content,
  function calls and their output, token counts, the answer) and task_complete. Every line
  carries `ordinal`. File sizes follow a log-normal distribution (median ~96 KB, a long tail
  into tens of MB): most threads are small, a few are large.
* a mix of sources (vscode, cli, exec, subagent), providers (the active `proxy-gateway`,
  `openai` from before a provider switch, `ollama`), archived threads, named threads, and a
  little drift of every kind the tool repairs or reports: provider mismatch (the threads
  from before the switch, and rows whose provider disagrees with their rollout), a blank
  preview, a row whose rollout is missing, a rollout with no row, threads with no user
  message, a stale `session_index.jsonl`, and a narrowed Desktop sidebar.
* with `--giant-mb N`, one extra thread whose rollout is N MB, carrying provider `azure`
  (which no other thread carries, so `repair-provider --from azure` rewrites only it).

Standard library only. Files are written with one large buffered write each (the giant in
8 MB blocks), rows in one transaction per DB.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import math
import os
import random
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
RELEASE = "0.169.0"
ACTIVE_PROVIDER = "proxy-gateway"
GIANT_PROVIDER = "azure"
END_TIME_MS = 1_790_000_000_000  # 2026-09-21: the newest thread
SPAN_MS = 180 * 86_400_000  # threads spread over the six months before it

# Log-normal rollout sizes: median and shape. Mean ~ median * exp(sigma^2 / 2) ~ 400 KB.
SIZE_MEDIAN = 96 * 1024
SIZE_SIGMA = 1.7
SIZE_CAP = 48 * 1024 * 1024

# Share of threads for each kind of drift (each chosen independently per thread).
DRIFT = {
    "old_provider": 0.15,       # created under openai before the switch to proxy-gateway
    "ollama": 0.03,             # a local model now and then
    "db_provider_drift": 0.01,  # the row says proxy-gateway, the rollout still says openai
    "archived": 0.08,
    "blank_preview": 0.02,
    "missing_rollout": 0.01,
    "no_row": 0.01,
    "no_user_message": 0.01,
    "named": 0.05,
    "named_not_indexed": 0.01,
}
SOURCES = (("vscode", 0.55), ("cli", 0.20), ("exec", 0.15), ("subagent", 0.10))
PROJECTS = ("/home/ana/shop", "/home/ana/api", "/home/dev/site", "/home/dev/infra", "/home/ana/mobile-app", "/home/ana/data")
PROMPTS = (
    "fix the failing checkout test", "why does the build break on arm64", "add pagination to the orders endpoint",
    "refactor the config loader", "write a migration for the users table", "explain this stack trace",
    "make the CI cache the node modules", "review my last commit", "update the README for the new flags",
    "port this script to python 3.12",
)

# The same ~20 KB of instructions in every session_meta, as Codex writes them.
BASE_INSTRUCTIONS = ("You are Codex, a coding agent. " + " ".join(
    "Rule %d: follow the user's instructions, keep changes minimal, run the tests, and explain what changed." % n
    for n in range(200)))[:20_400]


def thread_id_for(seed: int, n: int) -> str:
    digest = hashlib.sha256(("%d/%d" % (seed, n)).encode()).hexdigest()
    return "019a%s-%s-7%s-8%s-%s" % (digest[:4], digest[4:8], digest[8:11], digest[11:14], digest[14:26])


def stamp(millis: int) -> str:
    return dt.datetime.fromtimestamp(millis / 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:23] + "Z"


class TextPool:
    """JSON-safe filler text (lower-case words, digits, spaces) sliced at varying offsets, so
    lines differ without generating fresh random text for every byte."""

    def __init__(self, rnd: random.Random, size: int = 1 << 20) -> None:
        words = ["".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 9)))
                 for _ in range(2000)]
        out: List[str] = []
        total = 0
        while total < size * 2:
            word = rnd.choice(words)
            out.append(word)
            total += len(word) + 1
        self.data = " ".join(out).encode("ascii")
        self.size = size

    def take(self, rnd: random.Random, length: int) -> bytes:
        length = max(1, min(length, self.size))
        start = rnd.randrange(0, len(self.data) - length)
        return self.data[start:start + length]


class RolloutWriter:
    """Builds one rollout's lines, tracking ordinals and the byte offsets the 0.169.0 history
    projection stores (each turn's first and past-last byte)."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.parts: List[bytes] = []
        self.pending = 0
        self.offset = 0
        self.ordinal = 0
        self.turns: List[Tuple[int, int]] = []  # (byte offset, ordinal) of each task_started

    def record(self, ts: str, kind: str, payload: Dict[str, Any]) -> None:
        line = json.dumps({"timestamp": ts, "type": kind, "payload": payload, "ordinal": self.ordinal},
                          separators=(",", ":")).encode("utf-8") + b"\n"
        if kind == "event_msg" and payload.get("type") == "task_started":
            self.turns.append((self.offset, self.ordinal))
        self.raw(line)

    def filler(self, ts: str, prefix: bytes, text: bytes, suffix: bytes) -> None:
        """A line whose big string value is `text`, built from bytes (no JSON encoding pass)."""
        self.raw(b'{"timestamp":"' + ts.encode() + b'",' + prefix + text + suffix
                 + b',"ordinal":' + str(self.ordinal).encode() + b"}\n")

    def raw(self, line: bytes) -> None:
        self.parts.append(line)
        self.pending += len(line)
        self.offset += len(line)
        self.ordinal += 1
        if self.pending >= 8 << 20:
            self.flush()

    def flush(self) -> None:
        if self.parts:
            self.handle.write(b"".join(self.parts))
            self.parts, self.pending = [], 0

    def projection(self, thread_id: str) -> Tuple[List[Tuple[Any, ...]], Tuple[Any, ...]]:
        turns = []
        for n, (start, start_ordinal) in enumerate(self.turns):
            end, end_ordinal = self.turns[n + 1] if n + 1 < len(self.turns) else (self.offset, self.ordinal)
            turns.append((thread_id, "turn-%d" % n, start_ordinal, "completed", 0, start, end_ordinal - 1, end))
        return turns, (thread_id, self.offset, self.ordinal)


def write_rollout(path: Path, spec: Dict[str, Any], rnd: random.Random, pool: TextPool) -> Tuple[Any, Any]:
    """Write the rollout of one thread; returns its projection rows."""
    created_ms = spec["created_ms"]
    ts = stamp(created_ms + 500)
    with open(str(path), "wb", buffering=0) as handle:
        out = RolloutWriter(handle)
        out.record(stamp(created_ms), "session_meta", {
            "account_scoped": True, "session_id": spec["id"], "id": spec["id"], "timestamp": stamp(created_ms),
            "cwd": spec["cwd"], "originator": "codex_vscode" if spec["source"] == "vscode" else "codex_cli_rs",
            "cli_version": RELEASE, "source": spec["source_json"], "model_provider": spec["provider"],
            "base_instructions": {"text": BASE_INSTRUCTIONS}, "history_mode": "paginated"})
        target = spec["size"]
        turns = spec["turns"]
        per_turn = max(0, (target - 23_000) // turns)
        for turn in range(turns):
            out.record(ts, "event_msg", {"type": "task_started", "turn_id": "turn-%d" % turn,
                                         "model_context_window": 258400})
            if turn == 0:
                out.record(ts, "response_item", {"type": "message", "role": "developer", "content": [
                    {"type": "input_text", "text": "<permissions instructions>\nsandbox_mode: workspace-write\n"
                                                   "network access: restricted\n</permissions instructions>"}]})
                out.record(ts, "response_item", {"type": "message", "role": "user", "content": [
                    {"type": "input_text", "text": "<environment_context>\n  <cwd>%s</cwd>\n  <shell>bash</shell>\n"
                                                   "</environment_context>" % spec["cwd"]}]})
            out.record(ts, "turn_context", {"cwd": spec["cwd"], "approval_policy": "on-request",
                                            "sandbox_policy": {"type": "workspace-write"}, "model": "gpt-5.5",
                                            "effort": "medium", "summary": "auto"})
            out.record(ts, "event_msg", {"type": "thread_settings_applied", "thread_id": spec["id"],
                                         "thread_settings": {"model": "gpt-5.5", "model_provider_id": spec["provider"]}})
            if spec["user_text"] is not None:
                text = spec["user_text"] if turn == 0 else "%s (follow-up %d)" % (spec["user_text"], turn)
                out.record(ts, "response_item", {"type": "message", "role": "user",
                                                 "content": [{"type": "input_text", "text": text}]})
                out.record(ts, "event_msg", {"type": "item_completed", "thread_id": spec["id"],
                                             "turn_id": "turn-%d" % turn, "item": {
                                                 "type": "UserMessage", "id": "u%d" % turn,
                                                 "content": [{"type": "text", "text": text, "text_elements": []}]}})
            work_lines(out, ts, per_turn, rnd, pool, turn)
            out.record(ts, "response_item", {"type": "message", "role": "assistant",
                                             "content": [{"type": "output_text", "text": "Done: turn %d." % turn}]})
            out.record(ts, "event_msg", {"type": "task_complete", "turn_id": "turn-%d" % turn,
                                         "last_agent_message": "Done: turn %d." % turn})
        out.flush()
    return out.projection(spec["id"])


def work_lines(out: RolloutWriter, ts: str, budget: int, rnd: random.Random, pool: TextPool, turn: int) -> None:
    """A turn's work, about `budget` bytes: reasoning, tool calls and their (long) output."""
    call = 0
    while budget > 0:
        call += 1
        enc = pool.take(rnd, rnd.randint(1500, 4000))
        out.filler(ts, b'"type":"response_item","payload":{"type":"reasoning","summary":[],"content":null,'
                       b'"encrypted_content":"gAAAA', enc.replace(b" ", b"x"), b'"}')
        cid = ("call_%d_%d" % (turn, call)).encode()
        out.filler(ts, b'"type":"response_item","payload":{"type":"function_call","name":"exec_command",'
                       b'"call_id":"' + cid + b'","arguments":"', pool.take(rnd, rnd.randint(60, 400)), b'"}')
        size = min(max(200, budget - 6000), int(rnd.lognormvariate(math.log(6000), 1.2)), 2 << 20)
        out.filler(ts, b'"type":"response_item","payload":{"type":"function_call_output","call_id":"' + cid
                   + b'","output":"', pool.take(rnd, size), b'"}')
        out.filler(ts, b'"type":"event_msg","payload":{"type":"token_count","info":{"total_token_usage":'
                       b'{"input_tokens":', str(rnd.randint(1000, 200000)).encode(),
                   b',"output_tokens":900}},"rate_limits":null}')
        budget -= size + len(enc) + 800


def giant_rollout(path: Path, spec: Dict[str, Any], mb: int, rnd: random.Random, pool: TextPool) -> Tuple[Any, Any]:
    """One rollout of about `mb` MB: many turns (each re-applying thread settings, as Codex does),
    long tool output, and now and then a `compacted` line of a few MB."""
    created_ms = spec["created_ms"]
    ts = stamp(created_ms + 500)
    target = mb << 20
    turn_bytes = 16 << 20
    with open(str(path), "wb", buffering=0) as handle:
        out = RolloutWriter(handle)
        out.record(stamp(created_ms), "session_meta", {
            "account_scoped": True, "session_id": spec["id"], "id": spec["id"], "timestamp": stamp(created_ms),
            "cwd": spec["cwd"], "originator": "codex_vscode", "cli_version": RELEASE, "source": "vscode",
            "model_provider": spec["provider"], "base_instructions": {"text": BASE_INSTRUCTIONS},
            "history_mode": "paginated"})
        turn = 0
        while out.offset < target:
            out.record(ts, "event_msg", {"type": "task_started", "turn_id": "turn-%d" % turn})
            if turn == 0:
                out.record(ts, "response_item", {"type": "message", "role": "user", "content": [
                    {"type": "input_text", "text": "<environment_context>\n  <cwd>%s</cwd>\n</environment_context>"
                                                   % spec["cwd"]}]})
            out.record(ts, "turn_context", {"cwd": spec["cwd"], "model": "gpt-5.5"})
            out.record(ts, "event_msg", {"type": "thread_settings_applied", "thread_id": spec["id"],
                                         "thread_settings": {"model": "gpt-5.5", "model_provider_id": spec["provider"]}})
            text = spec["user_text"] if turn == 0 else "keep going (%d)" % turn
            out.record(ts, "response_item", {"type": "message", "role": "user",
                                             "content": [{"type": "input_text", "text": text}]})
            out.record(ts, "event_msg", {"type": "item_completed", "thread_id": spec["id"], "turn_id": "turn-%d" % turn,
                                         "item": {"type": "UserMessage", "id": "u%d" % turn,
                                                  "content": [{"type": "text", "text": text, "text_elements": []}]}})
            if turn % 6 == 5:
                out.filler(ts, b'"type":"compacted","payload":{"message":"', pool.take(rnd, 3 << 19), b'"}')
            work_lines(out, ts, min(turn_bytes, target - out.offset), rnd, pool, turn)
            out.record(ts, "event_msg", {"type": "task_complete", "turn_id": "turn-%d" % turn})
            turn += 1
        out.flush()
    return out.projection(spec["id"])


def plan_threads(count: int, seed: int, rnd: random.Random, size_median: int = SIZE_MEDIAN) -> List[Dict[str, Any]]:
    specs = []
    step = SPAN_MS // max(1, count)
    for n in range(count):
        created_ms = END_TIME_MS - SPAN_MS + n * step + rnd.randrange(0, max(1, step // 2))
        roll = rnd.random()
        source = next(name for name, cum in _cumulative(SOURCES) if roll < cum)
        if source == "subagent":
            source_json: Any = ({"subagent": "review"} if rnd.random() < 0.5 else
                                {"subagent": {"thread_spawn": {"parent_thread_id": thread_id_for(seed, max(0, n - 1)),
                                                               "depth": 1, "agent_nickname": "scout"}}})
        else:
            source_json = source
        drift = {k: rnd.random() < p for k, p in DRIFT.items()}
        if n < count * DRIFT["old_provider"]:
            provider = "openai"  # the oldest threads predate the provider switch
        elif drift["ollama"]:
            provider = "ollama"
        else:
            provider = ACTIVE_PROVIDER
        size = min(SIZE_CAP, int(rnd.lognormvariate(math.log(size_median), SIZE_SIGMA)))
        user_text = None if drift["no_user_message"] else "%s [%d]" % (rnd.choice(PROMPTS), n)
        specs.append({
            "n": n, "id": thread_id_for(seed, n), "created_ms": created_ms, "source": source,
            "source_json": source_json, "provider": provider, "cwd": rnd.choice(PROJECTS), "size": size,
            "turns": max(1, min(60, size // (160 * 1024) + 1)), "user_text": user_text, "drift": drift,
        })
    return specs


def _cumulative(weights: Any) -> List[Tuple[str, float]]:
    total, out = 0.0, []
    for name, weight in weights:
        total += weight
        out.append((name, total))
    out[-1] = (out[-1][0], 1.01)
    return out


def rollout_path(home: Path, spec: Dict[str, Any]) -> Path:
    st = stamp(spec["created_ms"])
    name = "rollout-%s-%s.jsonl" % (st.replace(":", "-")[:19], spec["id"])
    if spec["drift"]["archived"]:
        return home / "archived_sessions" / name
    return home / "sessions" / st[:4] / st[5:7] / st[8:10] / name


def row_for(spec: Dict[str, Any], path: Path) -> Dict[str, Any]:
    d = spec["drift"]
    created_s = spec["created_ms"] // 1000
    text = spec["user_text"] or ""
    blank = d["blank_preview"]
    provider = ACTIVE_PROVIDER if d["db_provider_drift"] else spec["provider"]
    if d["db_provider_drift"]:
        spec["provider"] = "openai"  # the rollout keeps the old provider
    source = spec["source_json"] if isinstance(spec["source_json"], str) else json.dumps(spec["source_json"], separators=(",", ":"))
    archived = d["archived"]
    updated_ms = spec["created_ms"] + 60_000 * spec["turns"]
    return {
        "id": spec["id"], "rollout_path": str(path), "created_at": created_s, "updated_at": updated_ms // 1000,
        "source": source, "model_provider": provider, "cwd": spec["cwd"], "title": "" if blank else text,
        "sandbox_policy": '{"type":"workspace-write"}', "approval_mode": "on-request",
        "tokens_used": 1000 + spec["size"] // 40, "has_user_event": 0 if blank or not text else 1,
        "archived": int(archived), "archived_at": updated_ms // 1000 + 3600 if archived else None,
        "git_sha": hashlib.sha1(spec["id"].encode()).hexdigest(), "git_branch": "main",
        "git_origin_url": "git@example.com:dev/%s.git" % os.path.basename(spec["cwd"]),
        "cli_version": RELEASE, "first_user_message": "" if blank else text,
        "agent_nickname": "scout" if spec["source"] == "subagent" else None,
        "agent_role": "explorer" if spec["source"] == "subagent" else None,
        "memory_mode": "enabled", "model": "gpt-5.5", "reasoning_effort": "medium",
        "created_at_ms": spec["created_ms"], "updated_at_ms": updated_ms, "preview": "" if blank else text,
        "recency_at": updated_ms // 1000, "recency_at_ms": updated_ms, "history_mode": "paginated",
        "name": ("%s (named)" % text[:40]) if (d["named"] or d["named_not_indexed"]) and text else None,
        "originator": "codex_vscode" if spec["source"] == "vscode" else "codex_cli_rs",
    }


def create_db(path: Path, schema: str) -> sqlite3.Connection:
    if path.exists():
        path.unlink()
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.executescript((FIXTURES / schema).read_text(encoding="utf-8"))
    conn.execute("PRAGMA journal_mode=WAL")
    return conn


def make_home(out: Path, threads: int = 10000, seed: int = 1, giant_mb: int = 0,
              size_median: int = SIZE_MEDIAN) -> Dict[str, Any]:
    """Build the home at `out` (which must not exist or be empty). Returns a summary."""
    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise SystemExit("%s is not empty" % out)
    out = out.resolve()
    rnd = random.Random(seed)
    pool = TextPool(random.Random(seed + 1))
    (out / "config.toml").write_text(
        'model = "gpt-5.5"\nmodel_provider = "%s"\n\n[model_providers.%s]\nname = "Proxy gateway"\n'
        'base_url = "http://127.0.0.1:9/v1"\nwire_api = "responses"\nenv_key = "PROXY_GATEWAY_KEY"\n\n'
        '[model_providers.%s]\nname = "Azure"\nbase_url = "https://example.openai.azure.com/openai"\n'
        'wire_api = "responses"\nenv_key = "AZURE_OPENAI_API_KEY"\n' % (ACTIVE_PROVIDER, ACTIVE_PROVIDER, GIANT_PROVIDER),
        encoding="utf-8")
    specs = plan_threads(threads, seed, rnd, size_median)
    rows: List[Dict[str, Any]] = []
    turn_rows: List[Tuple[Any, ...]] = []
    state_rows: List[Tuple[Any, ...]] = []
    total_bytes = 0
    made_dirs = set()
    counts: Dict[str, int] = {k: 0 for k in DRIFT}
    for spec in specs:
        path = rollout_path(out, spec)
        d = spec["drift"]
        for key, value in d.items():
            counts[key] += int(value)
        row = None if d["no_row"] else row_for(spec, path)
        if not d["missing_rollout"]:
            if path.parent not in made_dirs:
                path.parent.mkdir(parents=True, exist_ok=True)
                made_dirs.add(path.parent)
            turns, state = write_rollout(path, spec, rnd, pool)
            total_bytes += state[1]
            if not d["archived"]:
                turn_rows.extend(turns)
                state_rows.append(state)
        if row is not None:
            rows.append(row)
    giant = None
    if giant_mb:
        n = threads
        spec = {"n": n, "id": thread_id_for(seed, n), "created_ms": END_TIME_MS - 3 * 3_600_000, "source": "vscode",
                "source_json": "vscode", "provider": GIANT_PROVIDER, "cwd": PROJECTS[0], "size": giant_mb << 20,
                "turns": 1, "user_text": "migrate the monorepo to the new build system",
                "drift": {k: False for k in DRIFT}}
        path = rollout_path(out, spec)
        path.parent.mkdir(parents=True, exist_ok=True)
        turns, state = giant_rollout(path, spec, giant_mb, rnd, pool)
        total_bytes += state[1]
        turn_rows.extend(turns)
        state_rows.append(state)
        spec["turns"] = len(turns)
        rows.append(row_for(spec, path))
        giant = {"thread_id": spec["id"], "path": str(path), "bytes": state[1], "turns": len(turns),
                 "provider": GIANT_PROVIDER}

    conn = create_db(out / "state_5.sqlite", "state_5-%s.sql" % RELEASE)
    try:
        columns = [r[1] for r in conn.execute("PRAGMA table_info(threads)")]
        names = [c for c in columns if c in rows[0]] if rows else []
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO threads (%s) VALUES (%s)" % (", ".join(names), ", ".join("?" * len(names))),
                         ([r.get(c) for c in names] for r in rows))
        conn.execute("INSERT OR REPLACE INTO backfill_state (id, status, last_watermark, last_success_at, updated_at) "
                     "VALUES (1, 'complete', NULL, ?, ?)", (END_TIME_MS // 1000, END_TIME_MS // 1000))
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    conn = create_db(out / "thread_history_1.sqlite", "thread_history_1-%s.sql" % RELEASE)
    try:
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO thread_turns (thread_id, turn_id, rollout_ordinal, status, started_at, "
                         "rollout_byte_offset, rollout_end_ordinal, rollout_end_byte_offset) VALUES (?,?,?,?,?,?,?,?)",
                         turn_rows)
        conn.executemany("INSERT INTO thread_history_projection_state (thread_id, next_rollout_byte_offset, "
                         "next_rollout_ordinal) VALUES (?,?,?)", state_rows)
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()

    # session_index.jsonl as Codex appends it: one line per rename, the last non-empty name wins.
    # Stale: names of threads whose rollout is gone, and of threads deleted long ago.
    index = []
    for spec, row in ((s, r) for s, r in _rows_by_spec(specs, rows)):
        if row is None or not row.get("name") or spec["drift"]["named_not_indexed"]:
            continue
        index.append({"id": spec["id"], "thread_name": "draft", "updated_at": stamp(spec["created_ms"])})
        index.append({"id": spec["id"], "thread_name": row["name"], "updated_at": stamp(spec["created_ms"] + 1000)})
    for n in range(max(1, threads // 200)):
        index.append({"id": thread_id_for(seed + 7, n), "thread_name": "deleted thread %d" % n,
                      "updated_at": stamp(END_TIME_MS - SPAN_MS - 86_400_000)})
    for spec in specs:
        if spec["drift"]["missing_rollout"] and spec["user_text"]:
            index.append({"id": spec["id"], "thread_name": "lost: %s" % spec["user_text"][:30],
                          "updated_at": stamp(spec["created_ms"])})
    index.sort(key=lambda e: e["updated_at"])
    with open(str(out / "session_index.jsonl"), "wb") as handle:
        handle.write(b"".join(json.dumps(e, separators=(",", ":")).encode() + b"\n" for e in index))

    # Desktop's UI state with a narrowed sidebar (one workspace, oldest first, a collapsed group).
    ui = {"electron-persisted-atom-state": {
        "sidebar-workspace-filter-v2": PROJECTS[0], "thread-sort-key": "created_at",
        "sidebar-collapsed-groups": {PROJECTS[1]: True}, "electron-sidebar-mode-v1": "threads"},
        "electron-saved-workspace-roots": list(PROJECTS), "active-workspace-roots": [PROJECTS[0]],
        "pinned-thread-ids": [specs[-1]["id"]] if specs else []}
    (out / ".codex-global-state.json").write_text(json.dumps(ui, indent=2) + "\n", encoding="utf-8")

    files = sum(1 for s in specs if not s["drift"]["missing_rollout"]) + int(bool(giant))
    return {"home": str(out), "threads": threads, "seed": seed, "rows": len(rows), "rollout_files": files,
            "rollout_bytes": total_bytes, "index_entries": len(index), "drift": counts, "giant": giant,
            "active_provider": ACTIVE_PROVIDER, "seconds": round(time.monotonic() - started, 2)}


def _rows_by_spec(specs: List[Dict[str, Any]], rows: List[Dict[str, Any]]) -> Any:
    by_id = {r["id"]: r for r in rows}
    for spec in specs:
        yield spec, by_id.get(spec["id"])


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=10000, help="threads to generate (default 10000)")
    parser.add_argument("--seed", type=int, default=1, help="random seed; the same seed gives the same home")
    parser.add_argument("--giant-mb", type=int, default=0, metavar="N", help="add one N MB rollout (default none)")
    parser.add_argument("--size-median-kb", type=int, default=SIZE_MEDIAN // 1024, metavar="KB",
                        help="median rollout size (default %d); small values give heads-only rollouts of "
                             "~25 KB, for 100,000 threads on a small disk" % (SIZE_MEDIAN // 1024))
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to create the home in (new or empty)")
    args = parser.parse_args(argv)
    summary = make_home(Path(args.out), args.threads, args.seed, args.giant_mb, args.size_median_kb * 1024)
    json.dump(summary, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
