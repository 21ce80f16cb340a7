"""A rollout in sessions/ that is a symbolic link (a conversation kept in a synced folder).

Codex's file listing skips links (measured on 0.120.0-0.171.0 in
tests/test_real_codex_odd_files.py), and the tool never writes through a link. A provider
switch on such a home must still converge: the repair moves every other thread and skips the
linked one (it does not refuse the whole apply), diagnose names the manual step, and once the
user has done it the next round moves that thread too.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

import codex_session_recovery as csr
from homes import HomeBuilder, hash_tree

pytestmark = pytest.mark.skipif(os.name != "posix", reason="symbolic links")


def linked_home(root: Path):
    """Two threads made under openai with proxy active; the second one's rollout kept in
    CODEX_HOME/synced/ and linked into sessions/."""
    home = HomeBuilder(root, "0.169.0").provider_config("proxy")
    plain = home.thread(provider="openai")
    linked = home.thread(provider="openai")
    kept = root / "synced" / linked.path.name
    kept.parent.mkdir()
    shutil.move(str(linked.path), str(kept))
    os.symlink(str(kept), str(linked.path))
    return plain, linked, kept


def run_manual_step(evidence) -> None:
    """The manual step's command (evidence `command`, the shell line between the step's
    backticks), run by a POSIX shell as written."""
    step, command = evidence["manual_step"], evidence["command"]
    assert "(`%s`)" % command in step, (step, command)
    subprocess.run(["sh", "-c", command], check=True, timeout=30)


def next_argv(doc):
    return [shlex.split(line)[2:] for line in doc["next_commands"]]


def by_code(doc, thread_id):
    entry = next(t for t in doc["threads"] if t["id"] == thread_id)
    return {code: entry["evidence"].get(code, {}) for code in entry["reasons"]}


def test_a_linked_rollout_is_skipped_named_and_moved_once_the_link_is_replaced(tmp_path, cli):
    root = tmp_path / "home"
    plain, linked, kept = linked_home(root)
    kept_bytes = kept.read_bytes()

    code, doc = cli("--codex-home", str(root), "diagnose")
    assert code == csr.EXIT_FINDINGS
    reasons = by_code(doc, linked.id)
    assert reasons["rollout_is_link"]["manual_step"].startswith("replace the link")
    assert {f["code"]: f["severity"] for f in doc["findings"] if linked.id in f.get("thread_ids", [])} == {
        "rollout_is_link": "warning", "provider_mismatch": "info"}
    lines = next_argv(doc)
    assert len(lines) == 1 and "repair-provider" in lines[0], doc["next_commands"]

    # The Next line as printed: a dry run that writes nothing, then the apply, which skips the
    # link (never written through) and moves the other thread.
    before = hash_tree(root)
    code, plan = cli(*lines[0])
    assert code == csr.EXIT_FINDINGS and hash_tree(root) == before
    assert [s["thread_id"] for s in plan["skipped"]] == [linked.id], plan["skipped"]
    assert "symbolic link" in plan["skipped"][0]["reason"]
    code, applied = cli(*lines[0], "--apply", "--expect-plan", plan["plan_id"])
    assert code == csr.EXIT_OK and applied["applied"] is True, applied
    assert os.path.islink(str(linked.path)) and kept.read_bytes() == kept_bytes
    assert b'"model_provider":"proxy"' in plain.path.read_bytes().replace(b" ", b"")

    # What is left is the manual step, and no repair line that would plan nothing.
    code, doc = cli("--codex-home", str(root), "diagnose")
    assert code == csr.EXIT_FINDINGS and next_argv(doc) == [], doc["next_commands"]
    assert [f["code"] for f in doc["findings"] if f["severity"] != "info"] == ["rollout_is_link"]

    # The user runs the manual step's command as written; the next round moves the thread.
    run_manual_step(reasons["rollout_is_link"])
    assert not os.path.islink(str(linked.path)) and linked.path.read_bytes() == kept_bytes
    code, doc = cli("--codex-home", str(root), "diagnose")
    assert "rollout_is_link" not in by_code(doc, linked.id)
    (line,) = next_argv(doc)
    code, plan = cli(*line)
    code, applied = cli(*line, "--apply", "--expect-plan", plan["plan_id"])
    assert code == csr.EXIT_OK, applied
    code, doc = cli("--codex-home", str(root), "diagnose")
    assert code == csr.EXIT_OK, [(f["severity"], f["code"]) for f in doc["findings"]]
    assert kept.read_bytes() == kept_bytes  # the synced copy is the user's: never written


def test_reindex_gives_a_linked_rollout_a_row_without_writing_through_the_link(tmp_path, cli):
    """A linked rollout with no DB row: reindex adds the row (0.120.0 lists it then), the link
    and its target stay as they were, and rollout_is_link still names the manual step."""
    root = tmp_path / "home"
    home = HomeBuilder(root, "0.169.0").provider_config("proxy")
    thread = home.thread(provider="proxy", row=False)
    kept = root / "synced" / thread.path.name
    kept.parent.mkdir()
    shutil.move(str(thread.path), str(kept))
    os.symlink(str(kept), str(thread.path))
    kept_bytes = kept.read_bytes()
    code, doc = cli("--codex-home", str(root), "diagnose")
    assert set(by_code(doc, thread.id)) >= {"no_db_row", "rollout_is_link"}
    code, applied = cli("--codex-home", str(root), "reindex", "--apply")
    assert code == csr.EXIT_OK and applied["applied"] is True, applied
    assert os.path.islink(str(thread.path)) and kept.read_bytes() == kept_bytes
    code, doc = cli("--codex-home", str(root), "diagnose")
    assert set(by_code(doc, thread.id)) == {"rollout_is_link"}
    assert code == csr.EXIT_FINDINGS and next_argv(doc) == []


def test_a_linked_day_folder_converges_once_its_manual_step_is_run(tmp_path, cli):
    """A day folder under sessions/ kept elsewhere (a path with a space) and linked in: its
    threads are skipped by the repair, diagnose gives the folder's command, and after it runs
    as written one more round ends with diagnose exiting 0. The home's path holds a backtick
    and a quote: the evidence's `command` runs as it is."""
    root = tmp_path / "my `codex` home's" / "home"
    home = HomeBuilder(root, "0.169.0").provider_config("proxy")
    thread = home.thread(provider="openai")
    day = thread.path.parent
    kept = tmp_path / "synced `folder` it's" / "day"  # a backtick and a quote in the path
    kept.parent.mkdir()
    shutil.move(str(day), str(kept))
    os.symlink(str(kept), str(day))
    code, doc = cli("--codex-home", str(root), "diagnose")
    assert code == csr.EXIT_FINDINGS and next_argv(doc) == [], doc["next_commands"]
    evidence = by_code(doc, thread.id)["rollout_is_link"]
    assert evidence["manual_step"].startswith("replace the linked folder"), evidence
    run_manual_step(evidence)
    run_manual_step(evidence)  # a second thread of the folder carries the same step: a no-op now
    assert day.is_dir() and not os.path.islink(str(day)) and (kept / thread.path.name).is_file()
    for _round in range(2):
        code, doc = cli("--codex-home", str(root), "diagnose")
        for line in next_argv(doc):
            code, plan = cli(*line)
            code, applied = cli(*line, "--apply", "--expect-plan", plan["plan_id"])
            assert code == csr.EXIT_OK, applied
    code, doc = cli("--codex-home", str(root), "diagnose")
    assert code == csr.EXIT_OK, [(f["severity"], f["code"]) for f in doc["findings"]]


def test_a_second_way_in_to_a_folder_or_file_of_the_home_changes_nothing(tmp_path, cli):
    """A link to a sibling day folder, and a link in another day to a regular rollout of the
    home: Codex skips both links and lists each thread once from its real file, so the tool sees
    no linked rollout, no duplicate, and nothing to do."""
    root = tmp_path / "home"
    home = HomeBuilder(root, "0.169.0").provider_config("openai")
    first = home.thread(provider="openai")
    second = home.thread(provider="openai")
    day = first.path.parent
    os.symlink(str(day), str(day.parent / "00"))  # sorts before the real day
    other_day = day.parent.parent / "11" / "30"
    other_day.mkdir(parents=True)
    os.symlink(str(second.path), str(other_day / second.path.name))
    code, doc = cli("--codex-home", str(root), "diagnose")
    assert code == csr.EXIT_OK, [(f["code"], f["severity"]) for f in doc["findings"]]
    assert doc["counts"]["visible_by_default"] == 2 and doc["counts"]["threads"] == 2, doc["counts"]
    assert not [t for t in doc["threads"] if t["reasons"]], doc["threads"]


def test_a_linked_sessions_folder_is_repaired_where_the_conversations_live(tmp_path, cli):
    """sessions/ itself linked to a synced folder (Codex follows it, measured 0.120.0-0.171.0):
    the provider repair writes there, backed up first, and the next round finds nothing."""
    root = tmp_path / "home"
    home = HomeBuilder(root, "0.169.0").provider_config("proxy")
    thread = home.thread(provider="openai")
    synced = tmp_path / "synced sessions"
    shutil.move(str(root / "sessions"), str(synced))
    os.symlink(str(synced), str(root / "sessions"))
    code, doc = cli("--codex-home", str(root), "diagnose")
    assert not [t for t in doc["threads"] if "rollout_is_link" in t["reasons"]]
    (line,) = next_argv(doc)
    before = hash_tree(root)
    code, plan = cli(*line)
    assert code == csr.EXIT_FINDINGS and hash_tree(root) == before and not plan["warnings"], plan["warnings"]
    code, applied = cli(*line, "--apply", "--expect-plan", plan["plan_id"])
    assert code == csr.EXIT_OK and applied["backup_dir"], applied
    moved = synced / thread.path.relative_to(root / "sessions")
    assert b'"model_provider":"proxy"' in moved.read_bytes().replace(b" ", b"")
    assert os.path.islink(str(root / "sessions"))
    code, doc = cli("--codex-home", str(root), "diagnose")
    assert code == csr.EXIT_OK, [(f["code"], f["severity"]) for f in doc["findings"]]


def test_stray_links_named_like_rollouts_leave_nothing_to_do(tmp_path, cli):
    """A dangling link and a two-link loop named like rollouts, with no rows: no conversation is
    there, Codex lists nothing of them, and diagnose says so without a warning (exit 0)."""
    root = tmp_path / "home"
    home = HomeBuilder(root, "0.169.0").provider_config("openai")
    thread = home.thread(provider="openai")
    day = thread.path.parent
    name = "rollout-2026-12-01T10-00-0%d-0%d0a0a0a-21ce-74f1-b2bc-6ef960a3cf83.jsonl"
    os.symlink(str(tmp_path / "gone.jsonl"), str(day / (name % (1, 1))))
    os.symlink(str(day / (name % (3, 3))), str(day / (name % (2, 2))))
    os.symlink(str(day / (name % (2, 2))), str(day / (name % (3, 3))))
    code, doc = cli("--codex-home", str(root), "diagnose")
    assert code == csr.EXIT_OK, [(f["code"], f["severity"]) for f in doc["findings"]]
    assert doc["counts"]["visible_by_default"] == 1 and next_argv(doc) == []
