"""Files named like rollouts that are not rollouts of this home, judged by the real Codex.

A file under sessions/ named `rollout-…-<id>.jsonl` that holds no readable session_meta (not
JSON, a FIFO) cannot become a listed thread, and a link leading out of the home is not this
home's file to index. On 0.171.0, 0.169.0, 0.130.0 and 0.120.0: the tool's prediction of the
default listing equals the real `thread/list` with such files in place, each gets
`rollout_not_indexable` with a manual step (no repair command, so the guided loop ends), and
`reindex --apply` writes no row for any of them and leaves every one of them as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import uuid
from pathlib import Path
from typing import Any, Dict, List

import pytest

import codex_harness as harness
import codex_session_recovery as csr
from homes import hash_tree, run_script
from test_real_codex import real_home  # noqa: F401
CUSTOM = harness.CUSTOM_PROVIDER

pytestmark = [pytest.mark.realcodex,
              pytest.mark.skipif(os.name != "posix", reason="FIFOs and symlinks")]

RELEASES = tuple(dict.fromkeys(("0.171.0",) + tuple(harness.RELEASES)))
ODD_NAME = "rollout-2026-12-01T10-00-0%d-%s.jsonl"


def run_tool(home: Path, *args: str) -> Dict[str, Any]:
    out = run_script("--codex-home", str(home), *args, "--json", timeout=300)
    # Either code: which one a call gets depends on the release and the step (the same
    # diagnose exits 0 on 0.120.0 and 1 on 0.169.0 with a linked rollout in place); each test
    # asserts the findings it follows from.
    assert out.returncode in (csr.EXIT_OK, csr.EXIT_FINDINGS), (out.returncode, out.stderr)
    return json.loads(out.stdout)


def plant_odd_files(home: Path, donor_rollout: Path, outside: Path) -> Dict[str, Path]:
    """Four files named like rollouts in today's sessions folder: not JSON, a FIFO, a link to a
    text file outside the home, and a link to a real rollout (of a thread this home has not
    got) kept outside the home."""
    folder = home / "sessions" / "2026" / "12" / "01"
    folder.mkdir(parents=True, exist_ok=True)
    odd = {kind: folder / (ODD_NAME % (n, uuid.UUID(int=n, version=4))) for n, kind in
           enumerate(("not_json", "fifo", "link_to_text", "link_to_rollout"), 1)}
    odd["not_json"].write_text("not json at all\n")
    os.mkfifo(str(odd["fifo"]))
    text = outside / "notes.txt"
    text.write_text("precious\n")
    os.symlink(str(text), str(odd["link_to_text"]))
    # A real rollout under a new thread id: the donor's bytes with its id replaced.
    old_id = donor_rollout.name[-len("00000000-0000-0000-0000-000000000000.jsonl"):-len(".jsonl")]
    new_id = str(uuid.UUID(int=99, version=4))
    kept = outside / donor_rollout.name.replace(old_id, new_id)
    kept.write_bytes(donor_rollout.read_bytes().replace(old_id.encode(), new_id.encode()))
    odd["link_to_rollout"] = folder / kept.name  # the link is named as its target is
    os.symlink(str(kept), str(odd["link_to_rollout"]))
    return odd


def predicted_visible(doc: Dict[str, Any]) -> List[str]:
    return sorted(t["id"] for t in doc["threads"] if not t["hidden"])


@pytest.mark.parametrize("version", RELEASES)
def test_files_that_are_not_rollouts_of_this_home_are_predicted_as_codex_lists_them(real_home, version, tmp_path):
    home = real_home(version, "openai")
    outside = tmp_path / "outside"
    outside.mkdir()
    odd = plant_odd_files(home.home, home.rollout(home.interactive[0]), outside)
    odd_ids = {kind: path.name[-len("00000000-0000-0000-0000-000000000000.jsonl"):-len(".jsonl")]
               for kind, path in odd.items()}

    doc = run_tool(home.home, "diagnose", "--verbose")
    real = sorted(home.listed())
    assert predicted_visible(doc) == real, (predicted_visible(doc), real)
    assert sorted(home.interactive) == [t for t in real if t in home.interactive]
    by_id = {t["id"]: t for t in doc["threads"]}
    for kind in ("not_json", "fifo", "link_to_text"):
        entry = by_id[odd_ids[kind]]
        assert "rollout_not_indexable" in entry["reasons"] and entry["hidden"], (kind, entry)
        assert entry["evidence"]["rollout_not_indexable"]["manual_step"], entry
    # The link's target holds a real rollout under the new id: what Codex makes of it decides
    # whether it is predicted listed, and the comparison above holds the prediction to that.
    link_entry = by_id.get(odd_ids["link_to_rollout"])
    assert odd_ids["link_to_rollout"] == str(uuid.UUID(int=99, version=4))
    assert link_entry is not None and "rollout_is_link" in link_entry["reasons"], sorted(by_id)
    assert link_entry["evidence"]["rollout_is_link"]["manual_step"].startswith("replace the link")
    assert not [c for c in doc["next_commands"] if " reindex" in c], doc["next_commands"]

    before = hash_tree(home.home, regular_only=True)
    targets = {p: os.readlink(str(p)) for p in odd.values() if p.is_symlink()}
    plan = run_tool(home.home, "reindex", "--apply")
    assert not [a for a in plan["actions"] if a.get("kind") == "sql"], plan["actions"]
    after = hash_tree(home.home, regular_only=True)
    changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
    assert changed == [], changed
    assert stat.S_ISFIFO(os.lstat(str(odd["fifo"])).st_mode)
    assert {p: os.readlink(str(p)) for p in targets} == targets
    assert (outside / "notes.txt").read_text() == "precious\n"
    assert sorted(home.listed()) == real


@pytest.mark.parametrize("version", RELEASES)
def test_a_rollout_linked_in_from_inside_the_home_is_predicted_as_codex_lists_it(real_home, version):
    """A rollout kept elsewhere in the home and linked into sessions/ (a sync set-up): Codex's
    file listing skips the link. Before and after `reindex --apply` gives it a row, the
    prediction equals the real default listing (0.120.0 lists it once it has a row; 0.130.0
    and newer do not), `rollout_is_link` says what to do, and doing it (the link replaced by
    the file it points to) lists the thread on every release."""
    home = real_home(version, "openai")
    donor = home.rollout(home.interactive[0])
    old_id = donor.name[-len("00000000-0000-0000-0000-000000000000.jsonl"):-len(".jsonl")]
    new_id = str(uuid.UUID(int=77, version=4))
    kept = home.home / "synced" / donor.name.replace(old_id, new_id)
    kept.parent.mkdir()
    kept.write_bytes(donor.read_bytes().replace(old_id.encode(), new_id.encode()))
    link = donor.parent / kept.name
    os.symlink(str(kept), str(link))

    for step in ("before", "after reindex"):
        doc = run_tool(home.home, "diagnose", "--verbose")
        real = sorted(home.listed())
        assert predicted_visible(doc) == real, (step, predicted_visible(doc), real)
        entry = next(t for t in doc["threads"] if t["id"] == new_id)
        assert "rollout_is_link" in entry["reasons"], (step, entry)
        assert entry["evidence"]["rollout_is_link"]["manual_step"].startswith("replace the link")
        assert (new_id in real) == (step == "after reindex" and version == "0.120.0"), (step, real)
        # --verify's scratch copy keeps the link a link: the user's Codex agrees.
        check = run_tool(home.home, "diagnose", "--verify", "--codex-bin", str(home.binary))["verification"]
        assert check["status"] == "verified" and check["agrees"] is True, (step, check)
        assert sorted(check["listed_before"]) == real
        if step == "before":
            plan = run_tool(home.home, "reindex", "--apply")
            assert plan["applied"] is True, plan

    # The manual step, done: the link becomes the file it points to.
    data = kept.read_bytes()
    link.unlink()
    link.write_bytes(data)
    doc = run_tool(home.home, "diagnose", "--verbose")
    real = sorted(home.listed())
    assert new_id in real and predicted_visible(doc) == real, (predicted_visible(doc), real)
    assert not [t for t in doc["threads"] if "rollout_is_link" in t["reasons"]]


@pytest.mark.parametrize("version", RELEASES)
def test_a_linked_day_folder_is_predicted_as_codex_lists_it(real_home, version, tmp_path):
    """A day folder of sessions/ kept in a synced folder and linked in: 0.130.0 and newer list
    none of its threads (0.120.0 lists them: they have rows), a linked sessions/ folder itself
    lists on every release, and the prediction equals the real listing in both set-ups; after
    the manual step (run as written) the threads are listed."""
    home = real_home(version, "openai")
    day = home.rollout(home.interactive[0]).parent
    in_day = [t for t in home.interactive if home.rollout(t).parent == day]
    kept = tmp_path / "synced" / "day"
    kept.parent.mkdir()
    shutil.move(str(day), str(kept))
    os.symlink(str(kept), str(day))
    doc = run_tool(home.home, "diagnose", "--verbose")
    real = sorted(home.listed())
    assert predicted_visible(doc) == real, (predicted_visible(doc), real)
    assert in_day and (set(in_day) <= set(real)) == (version == "0.120.0"), (in_day, real)
    step = next(t for t in doc["threads"] if t["id"] == in_day[0])["evidence"]["rollout_is_link"]
    subprocess.run(["sh", "-c", step["command"]], check=True, timeout=30)
    doc = run_tool(home.home, "diagnose", "--verbose")
    real = sorted(home.listed())
    assert set(in_day) <= set(real) and predicted_visible(doc) == real, (predicted_visible(doc), real)

    # sessions/ itself linked to a synced folder: followed by every release.
    sessions = home.home / "sessions"
    moved = tmp_path / "synced-sessions"
    shutil.move(str(sessions), str(moved))
    os.symlink(str(moved), str(sessions))
    doc = run_tool(home.home, "diagnose", "--verbose")
    real = sorted(home.listed())
    assert set(in_day) <= set(real) and predicted_visible(doc) == real, (predicted_visible(doc), real)
    assert not [t for t in doc["threads"] if "rollout_is_link" in t["reasons"]]


def spoil_utf8(path: Path, line_index: int) -> None:
    """Two bytes of one line replaced by bytes that are not UTF-8, the length kept (a bad
    sector, a partial overwrite): every offset stays true."""
    lines = path.read_bytes().split(b"\n")
    lines[line_index] = lines[line_index][:20] + b"\xff\xfe" + lines[line_index][22:]
    path.write_bytes(b"\n".join(lines))


def first_user_line(path: Path) -> int:
    """The index of the first line carrying a user message, as the tool's head scan finds it."""
    info = csr.scan_rollout(path, path.parent)
    return info.evidence_line - 1


@pytest.mark.parametrize("version", RELEASES + (harness.ROLLOUT_ONLY_RELEASE,))
def test_a_line_that_is_not_utf8_hides_the_thread_only_before_the_first_user_message(real_home, version):
    """A line that is not UTF-8 before the first user message: 0.130.0, 0.169.0 and 0.171.0 do
    not list the thread, 0.120.0 does (from its row); after the first user message it hides
    nothing on any release. The prediction equals the real listing in both cases, and the
    damage is information (head_line_not_utf8), not a warning that no command can clear."""
    provider = CUSTOM_OF.get(version, "openai")
    home = real_home(version, provider)
    before_prompt, after_prompt = home.interactive
    path = home.rollout(before_prompt)
    spoil_utf8(path, first_user_line(path) - 1)
    path = home.rollout(after_prompt)
    spoil_utf8(path, first_user_line(path) + 2)
    doc = run_tool(home.home, "diagnose", "--verbose")
    real = sorted(home.listed())
    assert predicted_visible(doc) == real, (predicted_visible(doc), real)
    assert after_prompt in real
    assert (before_prompt in real) == (version == "0.120.0"), real
    entry = next(t for t in doc["threads"] if t["id"] == before_prompt)
    assert "head_line_not_utf8" in entry["reasons"], entry
    assert not [f for f in doc["findings"] if f["code"] in ("head_line_not_utf8", "rollout_unreadable")
                and f["severity"] != "info"], doc["findings"]
    assert doc["exit_code"] == csr.EXIT_OK, [(f["code"], f["severity"]) for f in doc["findings"]]


# 0.100.0's built-in openai provider ignores openai_base_url: its homes are made under a custom one.
CUSTOM_OF = {harness.ROLLOUT_ONLY_RELEASE: harness.CUSTOM_PROVIDER}


def user_event_line(path: Path) -> int:
    """The index of the line with the event form of the first user message (what the listers
    read on to), after the prompt's response_item."""
    lines = path.read_bytes().split(b"\n")
    start = first_user_line(path) + 1
    return next(n for n in range(start, len(lines)) if any(m in lines[n] for m in csr.USER_EVENT_MARKERS))


@pytest.mark.parametrize("version", ["0.171.0", "0.130.0"])
def test_a_line_that_is_not_utf8_on_the_way_to_the_user_event_hides_the_thread(real_home, version):
    """The listers read on from the prompt's response_item to the user message event: a bad
    line there (the event line itself) hides the thread on 0.130.0 and 0.171.0, and the
    prediction says so."""
    home = real_home(version, "openai")
    thread = home.interactive[0]
    path = home.rollout(thread)
    spoil_utf8(path, user_event_line(path))
    doc = run_tool(home.home, "diagnose", "--verbose")
    real = sorted(home.listed())
    assert thread not in real and predicted_visible(doc) == real, (predicted_visible(doc), real)
    assert "head_line_not_utf8" in next(t for t in doc["threads"] if t["id"] == thread)["reasons"]
