"""tests/readme_examples.py --check compares README blocks with real output: how it matches."""

from __future__ import annotations

from typing import List, Tuple

import readme_examples as rx

CMD = "$ python3 scripts/codex_session_recovery.py restore --latest"
FRESH = ["Would restore 1 file(s) from /home/alice/.codex/recovery-backups/20261201T202502Z-repair-ui-state",
         "  .codex-global-state.json",
         "Nothing was written. Re-run with --apply to restore."]


def check(readme: str, log: List[Tuple[str, str]]) -> Tuple[str, List[str]]:
    problems: List[str] = []
    return rx.process(readme, "README.md", log, problems), problems


def block(lines: List[str]) -> str:
    return "Text.\n\n```console\n%s\n%s\n```\n\nMore text.\n" % (CMD, "\n".join(lines))


def test_stamps_pids_plan_ids_and_versions_are_placeholders():
    shown = list(FRESH)
    shown[0] = shown[0].replace("20261201T202502Z", "20261124T140551Z")
    new, problems = check(block(shown), [(CMD, "\n".join(FRESH))])
    assert problems == []
    assert new == block(shown), "a rewrite keeps the README's stamp where nothing else changed"
    assert rx.normalise("pid 20080 (python3); plan 4899171cb914e2ec") == "pid <PID> (python3); plan <PLAN_ID>"
    assert rx.normalise('"python": "3.11.7",') == '"python": "<VERSION>",'


def test_a_changed_line_is_reported_and_rewritten():
    shown = list(FRESH)
    shown[1] = "  session_index.jsonl"
    new, problems = check(block(shown), [(CMD, "\n".join(FRESH))])
    assert len(problems) == 1 and "differs" in problems[0] and "+  .codex-global-state.json" in problems[0]
    assert new == block(FRESH)


def test_an_elision_stands_for_the_lines_left_out_and_survives_the_rewrite():
    fresh = ["header", "a", "b", "c", "footer 1", "footer 2"]
    shown = ["header", "…", "footer 1", "footer 2"]
    new, problems = check(block(shown), [(CMD, "\n".join(fresh))])
    assert problems == [] and new == block(shown)
    # A line added inside a shown stretch is caught, and the rewrite keeps the elision.
    fresh = ["header", "a", "b", "footer 1", "new", "footer 2"]
    new, problems = check(block(shown), [(CMD, "\n".join(fresh))])
    assert len(problems) == 1 and "+new" in problems[0]
    assert new == block(["header", "…", "footer 1", "new", "footer 2"])
    # A stretch whose first line is gone cannot be refitted: trim by hand.
    new, problems = check(block(shown), [(CMD, "header\na\nsomething else")])
    assert len(problems) == 1 and "trim it again" in problems[0] and new == block(shown)


def test_a_command_the_script_does_not_run_is_reported():
    _new, problems = check(block(FRESH), [])
    assert len(problems) == 1 and "not among the commands" in problems[0]


def test_repeated_commands_take_their_runs_in_order():
    text = "```console\n%s\nfirst\n\n%s\nsecond\n```\n" % (CMD, CMD)
    _new, problems = check(text, [(CMD, "first"), (CMD, "second")])
    assert problems == []
    _new, problems = check(text, [(CMD, "second"), (CMD, "first")])
    assert len(problems) == 2


def test_a_trimmed_json_block_shows_only_true_values():
    real = {"tool": "t", "command": "diagnose", "exit_code": 1, "config": {"a": 1, "b": 2},
            "findings": [{"code": "x", "count": 3}, {"code": "y", "count": 1}], "threads": [{"id": 1}]}
    good = {"command": "diagnose", "exit_code": 1, "config": {"a": 1, "...": "..."},
            "findings": [{"code": "x", "count": 3}, "..."], "threads": ["... one entry per thread"]}
    assert rx.json_matches(good, real, top=True)
    for wrong in ({"exit_code": 0}, {"config": {"a": 1}}, {"findings": [{"code": "y", "count": 1}, "..."]},
                  {"findings": [{"code": "x"}, "..."]}, {"missing": "..."}, {"threads": []}):
        assert not rx.json_matches(dict(good, **wrong), real, top=True), wrong
