"""Streaming guards: rollouts are read a line (or a bounded chunk) at a time, the evidence scan
stops at the first user message, and diagnose keeps no long message text per thread.

Reads are observed by replacing `open` in the script's module namespace with a wrapper that
counts the bytes actually read from disk (under Python's own buffering) or refuses unbounded
reads, and memory by tracemalloc's peak."""

import io
import json
import os
import tracemalloc
from pathlib import Path

import pytest

import codex_session_recovery as csr
from homes import BASE_TIME_MS, HomeBuilder, _stamp, new_thread_id, session_meta

MB = 1024 * 1024
LINE_BUDGET = 1 * MB  # READ_CHUNK: the largest single read a rollout reader may make here


class CountingFile(io.FileIO):
    """A raw file that counts every byte read from the OS."""

    def __init__(self, *args, counter, **kwargs):
        super().__init__(*args, **kwargs)
        self.counter = counter

    def readinto(self, buffer):
        n = super().readinto(buffer)
        self.counter["bytes"] += n or 0
        return n

    def readall(self):
        data = super().readall()
        self.counter["bytes"] += len(data)
        return data


class GuardedReader(io.BufferedReader):
    """Fails on any read that returns more than LINE_BUDGET bytes at once (read() or read(-1)
    of a big file, readall) and on readlines(); reading line by line or in bounded chunks passes."""

    def _check(self, data):
        assert len(data) <= LINE_BUDGET, "one read returned %d bytes of %s" % (len(data), self.name)
        return data

    def read(self, size=-1):
        return self._check(super().read(size))

    def read1(self, size=-1):
        return self._check(super().read1(size))

    def readline(self, size=-1):
        return self._check(super().readline(size))

    def readlines(self, hint=-1):
        raise AssertionError("readlines() on %s" % self.name)

    def __next__(self):
        return self._check(super().__next__())


def install_open(monkeypatch, counter=None, guarded=False):
    """Count (and with `guarded`, bound) what rollout readers get from the OS, whether they
    read through `open` or straight from a descriptor with os.read."""
    real_open = open
    real_read = os.read
    counter = counter if counter is not None else {"bytes": 0}

    def patched(file, mode="r", buffering=-1, *args, **kwargs):
        if mode in ("rb", "br") and not args and not kwargs:
            raw = CountingFile(file, "r", counter=counter)
            return (GuardedReader if guarded else io.BufferedReader)(raw)
        return real_open(file, mode, buffering, *args, **kwargs)

    def counted_read(fd, count):
        if guarded:
            assert count <= LINE_BUDGET, "one os.read of %d bytes" % count
        data = real_read(fd, count)
        counter["bytes"] += len(data)
        return data

    monkeypatch.setattr(csr, "open", patched, raising=False)
    monkeypatch.setattr(csr.os, "read", counted_read)


def write_padded_rollout(folder: Path, pad_bytes: int) -> Path:
    """A 0.169.0-shaped rollout whose first user message is on line 3, followed by one line of
    `pad_bytes` of tool output and a closing line."""
    thread_id = new_thread_id("streaming/%d" % pad_bytes)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ("rollout-%s-%s.jsonl" % (_stamp(BASE_TIME_MS).replace(":", "-")[:19], thread_id))
    ts = _stamp(BASE_TIME_MS + 500)
    head = [
        session_meta("0.169.0", thread_id, BASE_TIME_MS, "openai", "vscode", "/home/ana/shop"),
        {"timestamp": ts, "type": "turn_context", "payload": {"cwd": "/home/ana/shop", "model": "gpt-5.5"}},
        {"timestamp": ts, "type": "response_item", "payload": {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "fix the failing checkout test"}]}},
    ]
    with open(str(path), "wb") as handle:
        for ordinal, record in enumerate(head):
            record["ordinal"] = ordinal
            handle.write(json.dumps(record, separators=(",", ":")).encode() + b"\n")
        handle.write(b'{"timestamp":"%s","type":"response_item","payload":{"type":"function_call_output",'
                     b'"call_id":"c1","output":"' % ts.encode())
        chunk = b"x" * MB
        for _ in range(pad_bytes // MB):
            handle.write(chunk)
        handle.write(b'"},"ordinal":3}\n')
        handle.write(b'{"timestamp":"%s","type":"event_msg","payload":{"type":"task_complete"},"ordinal":4}\n'
                     % ts.encode())
    return path


def test_evidence_scan_reads_under_1mb_of_a_50mb_rollout(tmp_path, monkeypatch):
    home = tmp_path / "home"
    path = write_padded_rollout(home / "sessions" / "2026" / "09" / "21", 50 * MB)
    assert path.stat().st_size > 50 * MB
    counter = {"bytes": 0}
    install_open(monkeypatch, counter)
    info = csr.scan_rollout(path, home)
    assert info.evidence_line == 3
    assert info.evidence_kind == "response_item"
    assert info.provider == "openai"
    assert info.bytes_read < MB, info.bytes_read
    assert 0 < counter["bytes"] < MB, counter["bytes"]


def test_provider_repair_plans_and_rewrites_a_big_rollout_line_by_line(tmp_path, monkeypatch, capsys):
    """The planner and the rewrite stream: no whole-file read(), no readlines(), and no
    more memory than a few lines, for a 50 MB rollout of 64 KB lines."""
    builder = HomeBuilder(tmp_path / "home", "0.169.0").provider_config("proxy")
    output = "y" * (64 * 1024)
    filler = [{"timestamp": "2026-09-21T00:00:01.000Z", "type": "response_item",
               "payload": {"type": "function_call_output", "call_id": "c%d" % n, "output": output}}
              for n in range(800)]
    thread = builder.thread(provider="openai", turns=2, extra_lines=filler)
    assert thread.path.stat().st_size > 50 * MB
    install_open(monkeypatch, guarded=True)

    tracemalloc.start()
    try:
        code = csr.main(["repair-provider", "--codex-home", str(builder.root), "--from", "openai",
                         "--to", "proxy", "--apply", "--json"])
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    doc = json.loads(capsys.readouterr().out)
    assert code == csr.EXIT_OK, doc
    assert doc["applied"] and [a["kind"] for a in doc["actions"]].count("rollout_edit") == 1
    assert peak < 8 * MB, "peak traced memory %.1f MB while repairing a 50 MB rollout" % (peak / MB)
    with open(str(thread.path), "rb") as handle:
        first = json.loads(handle.readline())
    assert first["payload"]["model_provider"] == "proxy"


def test_planner_and_rewrite_refuse_whole_file_reads_when_guarded(tmp_path, monkeypatch):
    """The guard itself works: a whole-file read of a big rollout through the patched `open` fails."""
    path = write_padded_rollout(tmp_path / "sessions", 2 * MB)
    install_open(monkeypatch, guarded=True)
    with pytest.raises(AssertionError):
        with csr.open(str(path), "rb") as handle:
            handle.read()
    with pytest.raises(AssertionError):
        with csr.open(str(path), "rb") as handle:
            handle.readlines()


def test_direct_plan_and_rewrite_stream(tmp_path, monkeypatch):
    """plan_rollout_edit and rewrite_rollout, called directly, under the guard."""
    builder = HomeBuilder(tmp_path / "home", "0.169.0")
    filler = [{"timestamp": "2026-09-21T00:00:01.000Z", "type": "response_item",
               "payload": {"type": "function_call_output", "call_id": "c%d" % n, "output": "z" * 500_000}}
              for n in range(8)]
    thread = builder.thread(provider="openai", turns=3, extra_lines=filler)
    install_open(monkeypatch, guarded=True)
    edit = csr.plan_rollout_edit(thread.path, thread.id,
                                 lambda raw: csr.provider_line_edit(raw, thread.id, "openai", "proxy"))
    assert [field for _line, field in edit.changes] == ["model_provider"] + ["model_provider_id"] * 3
    assert csr.rewrite_rollout(edit)
    assert b'"model_provider":"openai"' not in thread.path.read_bytes()


def _strings(obj, seen):
    """Every str reachable from obj through dicts, lists, tuples, sets and object attributes."""
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _strings(key, seen)
            yield from _strings(value, seen)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for item in obj:
            yield from _strings(item, seen)
    elif hasattr(obj, "__dict__") and not isinstance(obj, (type, Path)):
        yield from _strings(vars(obj), seen)
    elif hasattr(type(obj), "__slots__") and not isinstance(obj, (type, Path)):
        for name in type(obj).__slots__:
            yield from _strings(getattr(obj, name, None), seen)


def test_diagnose_keeps_at_most_200_chars_of_message_text_per_thread(tmp_path, capsys):
    builder = HomeBuilder(tmp_path / "home", "0.169.0").provider_config("proxy")
    marker = "UNIQUE-PROMPT-TEXT"
    texts = ["%s %d %s" % (marker, n, "please refactor the module " * 400) for n in range(5)]
    for n, text in enumerate(texts):
        builder.thread(provider="openai" if n % 2 else "proxy", user_text=text,
                       row_overrides={"preview": "" if n == 4 else text})
    args = csr.build_parser().parse_args(["diagnose", "--codex-home", str(builder.root), "--verbose"])
    inv = csr.build_inventory(args)
    csr.run_checks(inv)
    assert all(view.primary and view.primary.has_evidence for view in inv.threads.values())
    held = [s for s in _strings(inv, set()) if marker in s]
    assert held, "the evidence snippet is expected to be kept"
    assert max(len(s) for s in held) <= 200, max(len(s) for s in held)

    code = csr.main(["diagnose", "--codex-home", str(builder.root), "--json", "--verbose"])
    doc = json.loads(capsys.readouterr().out)
    assert doc["exit_code"] == code
    shown = [s for s in _strings(doc, set()) if marker in s]
    assert shown and max(len(s) for s in shown) <= 200
