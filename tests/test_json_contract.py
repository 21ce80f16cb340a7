"""The --json contract: every command, on every path (findings, success, usage error, refusal,
failed apply), prints exactly one JSON document on stdout, and it starts with the envelope
CHANGELOG.md's Migrating policy names."""

from __future__ import annotations

import io
import json
import sys
from typing import Any, Dict, List, Tuple

import pytest

import codex_session_recovery as csr
from homes import one_json_document, run_captured, switched_home

# Written out here, not read from the script: changing the envelope must change this test too.
CONTRACT_KEYS = ("tool", "version", "command", "codex_home", "exit_code", "applied")


def run(*argv: str) -> Tuple[int, Dict[str, Any]]:
    """Like the `cli` fixture, but with no --json added: each case says where it puts it."""
    code, out, _err = run_captured(*argv)
    return code, one_json_document(out)


def assert_envelope(doc: Dict[str, Any], code: int, command: Any) -> None:
    assert tuple(doc)[:len(CONTRACT_KEYS)] == CONTRACT_KEYS, list(doc)
    assert doc["tool"] == csr.TOOL_NAME and doc["version"] == csr.__version__
    assert doc["command"] == command
    assert doc["exit_code"] == code
    assert isinstance(doc["applied"], bool)
    if code in (csr.EXIT_USAGE, csr.EXIT_REFUSED, csr.EXIT_APPLY_FAILED):
        assert doc["applied"] is False
        assert set(doc["error"]) == {"kind", "message"} and doc["error"]["message"], doc
        assert doc["error"]["kind"] == {csr.EXIT_USAGE: "error", csr.EXIT_REFUSED: "refused",
                                        csr.EXIT_APPLY_FAILED: "apply failed"}[code]


READ_ONLY = [
    (["diagnose"], csr.EXIT_FINDINGS),
    (["report"], csr.EXIT_FINDINGS),
    (["repair-provider", "--from", "openai"], csr.EXIT_FINDINGS),
    (["repair-user-events"], csr.EXIT_OK),
    (["repair-ui-state"], csr.EXIT_OK),
    (["rebuild-index"], csr.EXIT_OK),
    (["reindex"], csr.EXIT_OK),
    (["rebuild-db"], csr.EXIT_OK),
    (["restore", "--list"], csr.EXIT_OK),
    (["restore", "--latest"], csr.EXIT_USAGE),  # no backups yet
    (["trace", "019a0000"], csr.EXIT_USAGE),  # no such thread
]


@pytest.mark.parametrize("argv,expected", READ_ONLY, ids=[" ".join(a) for a, _ in READ_ONLY])
def test_every_read_only_path_prints_one_envelope(tmp_path, argv, expected):
    home, _ = switched_home(tmp_path / "home")
    code, doc = run(*argv, "--codex-home", str(home.root), "--json")
    assert code == expected
    assert_envelope(doc, code, argv[0])
    assert doc["codex_home"] == ("<CODEX_HOME>" if argv[0] == "report" else str(home.root.resolve()))


def test_trace_of_a_thread_prints_one_envelope(tmp_path):
    home, _ = switched_home(tmp_path / "home")
    thread = home.thread(provider="openai")
    code, doc = run("trace", thread.id, "--codex-home", str(home.root), "--json")
    assert code == csr.EXIT_FINDINGS
    assert_envelope(doc, code, "trace")
    assert doc["trace"]["id"] == thread.id


def test_apply_restore_and_their_refusals_print_one_envelope(tmp_path, monkeypatch):
    home, _ = switched_home(tmp_path / "home")
    root = str(home.root)
    repair = ["repair-provider", "--from", "openai", "--codex-home", root, "--json"]

    code, doc = run(*repair, "--apply", "--expect-plan", "0" * 16)
    assert code == csr.EXIT_REFUSED
    assert_envelope(doc, code, "repair-provider")

    monkeypatch.setenv(csr.FAULT_ENV, "before_rollout_replace:raise")
    monkeypatch.setattr(csr, "_fault_visits", {})
    code, doc = run(*repair, "--apply")
    assert code == csr.EXIT_APPLY_FAILED
    assert_envelope(doc, code, "repair-provider")
    monkeypatch.delenv(csr.FAULT_ENV)

    code, doc = run(*repair, "--apply")
    assert code == csr.EXIT_OK
    assert_envelope(doc, code, "repair-provider")
    assert doc["applied"] is True and doc["backup_dir"]

    restore = ["restore", "--latest", "--codex-home", root, "--json"]
    for argv, expected, applied in ((restore, csr.EXIT_FINDINGS, False),
                                    (restore + ["--apply"], csr.EXIT_OK, True),
                                    (["restore", "--list", "--codex-home", root, "--json"], csr.EXIT_OK, False)):
        code, doc = run(*argv)
        assert code == expected
        assert_envelope(doc, code, "restore")
        assert doc["applied"] is applied

    # The restored files now differ from the latest non-restore backup's "after" state.
    code, doc = run("restore", "--latest", "--apply", "--codex-home", root, "--json")
    assert code == csr.EXIT_REFUSED
    assert_envelope(doc, code, "restore")


USAGE_ERRORS = [
    (["repair-provider"], "repair-provider"),  # --from is required
    (["diagnose", "--source", "nonsense"], "diagnose"),
    ([], None),  # no command at all
    (["repair-everything"], None),
]


@pytest.mark.parametrize("argv,command", USAGE_ERRORS, ids=[" ".join(a) or "(none)" for a, _ in USAGE_ERRORS])
def test_usage_errors_print_one_envelope(tmp_path, argv, command):
    code, doc = run(*argv, "--codex-home", str(tmp_path), "--json")
    assert code == csr.EXIT_USAGE
    assert_envelope(doc, code, command)


def every_command_run():
    """(command, with --apply?) for every command of the parser, and --apply where it has one."""
    for name, sub in sorted(csr.build_parser().get_default("command_names").items()):
        yield name, False
        if any("--apply" in action.option_strings for action in sub._actions):
            yield name, True


# The arguments a command cannot run without.
REQUIRED = {"trace": ["019a0000"], "repair-provider": ["--from", "openai"], "restore": ["--latest"],
            "import": ["--from", "/nowhere-else"], "remap-cwd": ["--from", "/old/shop", "--to", "/new/shop"]}
COMMAND_RUNS = list(every_command_run())


@pytest.mark.parametrize("command,apply", COMMAND_RUNS,
                         ids=[name + (" --apply" if apply else "") for name, apply in COMMAND_RUNS])
def test_every_command_answers_a_missing_home_with_one_envelope(tmp_path, command, apply):
    argv = [command, *REQUIRED.get(command, []), "--codex-home", str(tmp_path / "nowhere"), "--json"]
    code, doc = run(*argv, *(["--apply"] if apply else []))
    assert code == csr.EXIT_USAGE
    assert_envelope(doc, code, command)
    assert doc["codex_home"] == str(tmp_path / "nowhere")


def test_a_missing_home_prints_one_envelope_and_one_helpful_line(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    code = csr.main(["diagnose", "--codex-home", str(missing), "--json"])
    captured = capsys.readouterr()
    doc = one_json_document(captured.out)
    assert code == csr.EXIT_USAGE
    assert_envelope(doc, code, "diagnose")
    assert doc["codex_home"] == str(missing)
    lines = captured.err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: Codex home %s (from --codex-home) does not exist" % missing)
    for needed in ("--codex-home", "CODEX_HOME", "sessions/", "state_5.sqlite", "~/.codex"):
        assert needed in lines[0], needed


def test_no_home_at_all_names_both_ways_to_give_one(tmp_path, capsys, monkeypatch):
    """A newcomer with no ~/.codex and no CODEX_HOME."""
    monkeypatch.delenv("CODEX_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("USERPROFILE", str(tmp_path))
    assert csr.main(["diagnose"]) == csr.EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and "(from default) does not exist" in lines[0], lines
    assert "--codex-home PATH" in lines[0] and "CODEX_HOME" in lines[0] and "sessions/" in lines[0]


# -- the document's text ----------------------------------------------------------------------


class FakeTerminal(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


SAMPLE = {"tool": "t", "config": {"active_provider": "proxy", "nested": {"deep": [1, {"x": None}]}},
          "empty": {}, "none": [], "text": "a\nb"}


def emitted(monkeypatch, doc: Dict[str, Any], tty: bool) -> str:
    stream = FakeTerminal(tty)
    monkeypatch.setattr(sys, "stdout", stream)
    csr.emit_json(doc)
    return stream.getvalue()


def test_a_terminal_gets_the_document_indented_at_every_depth(monkeypatch):
    threads: List[Dict[str, Any]] = [{"id": "a", "reasons": ["x", "y"]}, {"id": "b", "reasons": []}]
    doc = dict(SAMPLE, threads=iter(threads), nothing=iter([]))
    expected = json.dumps(dict(SAMPLE, threads=threads, nothing=[]), indent=2) + "\n"
    assert emitted(monkeypatch, doc, tty=True) == expected


def test_a_pipe_gets_one_compact_line(monkeypatch):
    threads = [{"id": "a"}, {"id": "b"}]
    out = emitted(monkeypatch, dict(SAMPLE, threads=iter(threads)), tty=False)
    assert out == json.dumps(dict(SAMPLE, threads=threads), separators=(",", ":")) + "\n"
    assert out.count("\n") == 1


def test_the_thread_list_is_still_written_item_by_item(monkeypatch):
    """Each item reaches stdout before the next one is produced."""
    seen: List[str] = []
    stream = FakeTerminal(True)

    def items():
        for n in range(3):
            seen.append(stream.getvalue())
            yield {"n": n}

    monkeypatch.setattr(sys, "stdout", stream)
    csr.emit_json({"tool": "t", "threads": items()})
    assert [s.count('"n"') for s in seen] == [0, 1, 2]
    assert json.loads(stream.getvalue()) == {"tool": "t", "threads": [{"n": 0}, {"n": 1}, {"n": 2}]}


def test_dates_read_as_strftime_writes_them():
    """iso_from_millis formats the fields itself (it runs once per listed thread): the text is
    strftime's for every instant a datetime holds, and None past them."""
    import datetime
    import random
    rnd = random.Random(7)
    first, last = -62135596800000, 253402300799999  # year 1 and the end of year 9999, in ms
    samples = [0, 1, -1, first, last, last + 1, first - 1, -30610224000001, 1764600000000]
    samples += [rnd.randrange(first, last) for _ in range(20000)]
    for millis in samples:
        try:
            expected = datetime.datetime.fromtimestamp(millis / 1000, datetime.timezone.utc)
            text = expected.strftime("%Y-%m-%dT%H:%M:%SZ")
        except (OverflowError, ValueError, OSError):
            text = None
        assert csr.iso_from_millis(millis) == text, millis
