"""Plans hold what changes, not the lines it changes in: a provider edit of a ~21 KB
session_meta line is a few bytes at an offset, so a dry run over thousands of threads stays
small, and the rewrite splices those bytes exactly where the whole new line would have gone."""

import json
import random

import codex_session_recovery as csr
from homes import HomeBuilder, hash_tree


def test_changed_span_rebuilds_the_new_line_exactly():
    rnd = random.Random(7)
    for _ in range(5000):
        old = bytes(rnd.choice(b'ab"\n') for _ in range(rnd.randint(1, 12)))
        new = bytes(rnd.choice(b'ab"\n') for _ in range(rnd.randint(0, 12)))
        offset = rnd.randint(0, 100)
        start, length, replacement = csr.changed_span(offset, old, new)
        at = start - offset
        assert 0 <= at and at + length <= len(old)
        assert old[:at] + replacement + old[at + length:] == new
        assert not (at == 0 and length == 0), "an insertion at a line start would move that line for shift()"


def test_provider_plan_holds_a_few_bytes_per_line_not_the_lines(tmp_path, capsys):
    builder = HomeBuilder(tmp_path / "home", "0.169.0").provider_config("proxy")
    threads = [builder.thread(provider="openai", turns=3) for _ in range(4)]
    args = csr.build_parser().parse_args(["repair-provider", "--codex-home", str(builder.root),
                                          "--from", "openai", "--to", "proxy"])
    inv = csr.build_inventory(args)
    csr.run_checks(inv)
    plan = csr.plan_provider_repair(inv, args)
    assert len(plan.rollout_edits) == len(threads)
    for edit in plan.rollout_edits:
        assert len(edit.replacements) == 4  # session_meta and three thread_settings_applied lines
        assert all(len(new) <= len("proxy") + 2 for _offset, _length, new in edit.replacements), edit.replacements
        assert [d for _s, _l, d in edit.deltas] == [len("proxy") - len("openai")] * 4

    before = hash_tree(builder.root)
    assert csr.main(["repair-provider", "--codex-home", str(builder.root), "--from", "openai", "--to", "proxy",
                     "--apply", "--json"]) == csr.EXIT_OK
    capsys.readouterr()
    assert hash_tree(builder.root) != before
    for thread in threads:
        lines = [json.loads(line) for line in thread.path.read_bytes().splitlines()]
        assert lines[0]["payload"]["model_provider"] == "proxy"
        assert lines[0]["payload"]["base_instructions"]["text"].startswith("You are Codex.")
        settings = [r for r in lines if r["payload"].get("type") == "thread_settings_applied"]
        assert [r["payload"]["thread_settings"]["model_provider_id"] for r in settings] == ["proxy"] * 3
