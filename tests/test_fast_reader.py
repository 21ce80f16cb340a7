"""The fast rollout reader finds exactly what the reference reader finds.

conftest.py already compares both readers on every home every test builds; these tests aim at
the reader's own edges: lines that cross read boundaries, oversized lines, torn and NUL tails
inside and past the head buffer, a BOM, bad UTF-8 and JSON, instructions that are not the
payload's own, non-regular files. Buffer sizes are shrunk so that every boundary is crossed."""

import json
import os
import random

import pytest

import codex_session_recovery as csr
from fast_deep import rollout_facts
from homes import BASE_TIME_MS, _stamp, new_thread_id, session_meta

INSTRUCTIONS = {"text": "You are Codex. " + "rule\\n \"quoted\" " * 200}


def meta_line(thread_id, **extra):
    record = session_meta("0.169.0", thread_id, BASE_TIME_MS, "openai", "vscode", "/home/ana/shop")
    record["payload"]["base_instructions"] = INSTRUCTIONS
    record["payload"].update(extra)
    return json.dumps(record, separators=(",", ":")).encode()


def line(kind, payload):
    return json.dumps({"timestamp": _stamp(BASE_TIME_MS), "type": kind, "payload": payload},
                      separators=(",", ":")).encode()


USER = line("response_item", {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "fix it"}]})
CONTEXT = line("response_item", {"type": "message", "role": "user", "content": [
    {"type": "input_text", "text": "<environment_context>\n</environment_context>"}]})
FILLER = line("event_msg", {"type": "token_count", "info": None})
USER_EVENT = line("event_msg", {"type": "user_message", "message": "fix it", "images": []})


def pieces(rnd, thread_id):
    """A random rollout made of the shapes real and damaged rollouts have."""
    head = rnd.choice([meta_line(thread_id), b"\xef\xbb\xbf" + meta_line(thread_id),
                       meta_line(thread_id, model_provider={"x": 1}), b'{"id":"%s","timestamp":"t"}' % thread_id.encode(),
                       line("turn_context", {}), meta_line(thread_id)[:-7], b"", b"not json"])
    body = [head]
    for _ in range(rnd.randint(0, 12)):
        body.append(rnd.choice([FILLER, CONTEXT, meta_line(thread_id), b"x" * rnd.randint(50, 400), b"{bad json}",
                                b"\xff\xfe bad utf8", b'{"a":"\x00"}', b"", b"   ", FILLER + b" " * 300,
                                line("event_msg", {"type": "user_message", "message": "hi", "images": []}),
                                line("response_item", {"base_instructions": INSTRUCTIONS, "type": "message",
                                                       "role": "user", "content": "nested"})]))
    if rnd.random() < 0.6:
        body.append(USER)
    # After the prompt: what the look-ahead to its event form reads (in the head's buffer or
    # past it, cut or not by its window), with a line that is not UTF-8 before or after it.
    for _ in range(rnd.randint(0, 6)):
        body.append(rnd.choice([FILLER, b"y" * rnd.randint(100, 3000), b"\xff\xfe bad utf8",
                                USER_EVENT]))
    data = b"\n".join(body)
    ending = rnd.choice([b"\n", b"", b"\n\x00\x00", b'\n{"torn":', b"\r\n"])
    return data + ending


@pytest.mark.parametrize("seed", range(40))
def test_fast_reader_matches_reference_reader_with_small_buffers(tmp_path, monkeypatch, seed):
    # Mostly tiny reads; some seeds read a head of 4 KB, which then holds a short look-ahead
    # window before the end of the file.
    monkeypatch.setattr(csr, "HEAD_READ", 4096 if seed % 5 == 4 else 97)
    monkeypatch.setattr(csr, "READ_CHUNK", 61)
    # Odd seeds: lines over 700 bytes (session_meta among them) are oversized; even: none is.
    monkeypatch.setattr(csr, "MAX_LINE_BYTES", 700 if seed % 2 else 1 << 20)
    monkeypatch.setattr(csr, "TAIL_BYTES", 150)
    monkeypatch.setattr(csr, "_known_instructions", [])
    rnd = random.Random(seed)
    monkeypatch.setattr(csr, "EVENT_LOOKAHEAD_BYTES", rnd.choice([120, 400, 64 * 1024]))
    folder = tmp_path / "sessions"
    folder.mkdir()
    for n in range(12):
        thread_id = new_thread_id("fast/%d/%d" % (seed, n))
        path = folder / ("rollout-2026-09-21T00-00-00-%s.jsonl" % thread_id)
        path.write_bytes(pieces(rnd, thread_id))
        fast = csr.scan_rollout(str(path), tmp_path)
        deep = csr.scan_rollout_deep(path, tmp_path)
        assert rollout_facts(fast) == rollout_facts(deep), path.read_bytes()[:300]


def test_known_instructions_are_matched_not_decoded(tmp_path):
    """The second rollout of a release is read with its instructions matched: the decoder is
    given "" in their place, and the facts stay those of the reference reader."""
    folder = tmp_path / "sessions"
    folder.mkdir()
    paths = []
    for n in range(2):
        thread_id = new_thread_id("instructions/%d" % n)
        path = folder / ("rollout-2026-09-21T00-00-00-%s.jsonl" % thread_id)
        path.write_bytes(meta_line(thread_id) + b"\n" + USER + b"\n")
        paths.append(path)
    seen = []
    real = csr._decode_whole
    csr._known_instructions[:] = []
    try:
        csr._decode_whole = lambda text: seen.append(len(text)) or real(text)
        for path in paths:
            assert rollout_facts(csr.scan_rollout(str(path), tmp_path)) == rollout_facts(
                csr.scan_rollout_deep(path, tmp_path))
    finally:
        csr._decode_whole = real
    first, second = seen[0], seen[2]
    assert first - second > 3000, seen  # the second session_meta was decoded without its instructions


def test_a_fifo_named_like_a_rollout_is_never_opened(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    folder = tmp_path / "sessions"
    folder.mkdir()
    fifo = folder / ("rollout-2026-09-21T00-00-00-%s.jsonl" % new_thread_id("fifo"))
    os.mkfifo(str(fifo))
    (info,) = [csr.scan_rollout(path, tmp_path, is_file=is_file) for path, is_file in csr.iter_rollout_entries(tmp_path)]
    assert info.problems == ("not_a_file",)
    fd, stat = csr.open_regular_readonly(str(fifo))  # swapped in after the listing: opened, refused
    assert fd is None and stat is not None


def lookahead_reference(window):
    """The look-ahead's definition: the window's whole lines in order, up to and including the
    first holding an event marker; one that is not UTF-8 among them is the listers' stop."""
    for raw in window.split(b"\n")[:-1]:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return ("invalid_utf8",)
        if any(marker in raw for marker in csr.USER_EVENT_MARKERS):
            return ()
    return ()


@pytest.mark.parametrize("window, problems", [
    (b"", ()),
    (b"\xff no line ending: cut by the window", ()),
    (b"\xff\n", ("invalid_utf8",)),
    (USER_EVENT + b"\n\xff\n", ()),  # past the event form: the listers stopped before it
    (FILLER + b"\n\xff\n" + USER_EVENT + b"\n", ("invalid_utf8",)),
    (FILLER + b"\n" + USER_EVENT[:-5] + b"\xff" + USER_EVENT[-5:] + b"\n", ("invalid_utf8",)),
    (FILLER + b"\n" + FILLER + b"\n\xff", ()),
    (b"\n\n" + USER_EVENT + b"\n", ()),
])
def test_the_look_ahead_judges_whole_lines_up_to_the_event_form(window, problems):
    info = csr.RolloutInfo("rollout-x.jsonl", csr.Path("."), stat=False)
    csr.check_lines_to_user_event(info, -1, 0, window)
    assert tuple(info.problems) == problems == lookahead_reference(window)
    assert info.bytes_read == len(window)


def test_the_look_ahead_agrees_with_its_definition_on_random_windows():
    rnd = random.Random(7)
    shapes = [FILLER, USER_EVENT, b"\xff\xfe bad utf8", b"", b"y" * 50, USER_EVENT + b"\xff", b"\xc3"]
    for _ in range(3000):
        window = b"\n".join(rnd.choice(shapes) for _ in range(rnd.randint(0, 6)))
        window = window[:rnd.randint(0, len(window))] if rnd.random() < 0.5 else window + b"\n"
        info = csr.RolloutInfo("rollout-x.jsonl", csr.Path("."), stat=False)
        csr.check_lines_to_user_event(info, -1, 0, window)
        assert tuple(info.problems) == lookahead_reference(window), window
