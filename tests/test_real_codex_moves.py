"""History that moved, checked by the real Codex: a second machine imports the first one's
home and follows its project folder to the new path.

Machine A (a real release, the built-in provider) has conversations in project folder P1: two
interactive threads with names, one archived, one `exec`. Machine B (the same release, another
provider) has its own thread in P2, a folder with the same name; P1 does not exist on B. On B:
`diagnose` suggests the exact `remap-cwd` line; `import --from A --to auto --apply`, then that
line with --apply. Afterwards the real `thread/list` on B lists A's interactive threads and B's
own, each reads with its turns, one continues; `codex exec resume --last` run from P2 resumes
the newest of them; a name resolves with `codex exec resume NAME`. A stays byte-identical, dry
runs change no byte, and a second run of each command plans nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

import codex_harness as harness
import codex_session_recovery as csr
from homes import hash_tree, run_in_process

pytestmark = pytest.mark.realcodex

# 0.171.0 joins when the harness lists it among the releases it drives.
VERSIONS = [v for v in ("0.171.0",) if v in harness.RELEASES] + ["0.169.0", "0.130.0"]
NAMES = ("checkout bug", "payment retries")


def snapshot(root: Path) -> Dict[str, str]:
    """Every file under root, SQLite side files included (for the home that must not change)."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def run_tool(home: Path, *args: str) -> Tuple[int, Dict[str, Any]]:
    code, doc, _err = run_in_process("--codex-home", str(home), *args)
    return code, doc


def user_texts(thread: Dict[str, Any]) -> List[List[str]]:
    return [[part["text"] for item in turn["items"] if item["type"] == "userMessage"
             for part in item["content"] if part.get("type") == "text"] for turn in thread["turns"]]


def exec_resume(binary: Path, home: Path, cwd: Path, *target: str) -> str:
    """`codex exec resume ...` run from `cwd`; the id of the thread it ran the turn in."""
    with tempfile.TemporaryDirectory(prefix="csr-user-home-") as user_home:
        proc = subprocess.run([str(binary), "exec", "--skip-git-repo-check", "--json", "resume", *target,
                               "one more question"], cwd=str(cwd), env=harness.clean_env(home, user_home),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    started = [json.loads(line) for line in proc.stdout.splitlines() if '"thread.started"' in line]
    assert started, proc.stdout
    return started[0]["thread_id"]


# Both machines on one release, and an old machine on 0.130.0 moving to a new one on 0.169.0.
PAIRS = [(v, v) for v in VERSIONS] + [("0.130.0", "0.169.0")]


def wait_past_second(stamp: int) -> None:
    """Sleeps until the wall clock is in a later whole second than `stamp`."""
    while time.time() < stamp + 1:
        time.sleep(0.05)


@pytest.mark.parametrize("version_a,version", PAIRS, ids=["%s-to-%s" % p for p in PAIRS])
def test_import_and_remap_cwd_bring_another_machines_history_back(version_a, version, standin, tmp_path):
    binary = harness.require_release(version)
    binary_a = harness.require_release(version_a)
    # Machine A: its project folder P1, its conversations, names set through the app-server.
    p1 = tmp_path / "machine-a" / "src" / "shop"
    p1.mkdir(parents=True)
    home_a = harness.build_home(version_a, tmp_path / "machine-a" / "codex", standin)
    ids = harness.populate_sample_home(version_a, home_a, p1)
    with harness.AppServer(binary_a, home_a, cwd=p1) as server:
        for thread_id, name in zip(ids["interactive"], NAMES):
            server.set_name(thread_id, name)
    shutil.rmtree(str(p1))  # P1 does not exist on machine B
    # Machine B: another provider, its own conversation in P2 (same folder name, another path).
    p2 = tmp_path / "machine-b" / "work" / "shop"
    p2.mkdir(parents=True)
    home_b = harness.build_home(version, tmp_path / "machine-b" / "codex", standin, provider=harness.CUSTOM_PROVIDER)
    with harness.AppServer(binary, home_b, cwd=p2) as server:
        own = server.start_thread(p2)
        server.run_turn(own, "a question on machine b")
    a_before = snapshot(home_a)

    # The import: dry run first (no byte), then --apply, then nothing left to do.
    b_before = hash_tree(home_b)
    code, doc = run_tool(home_b, "import", "--from", str(home_a), "--to", "auto")
    assert code == csr.EXIT_FINDINGS and hash_tree(home_b) == b_before
    assert doc["plan"]["to_provider"] == harness.CUSTOM_PROVIDER
    assert doc["plan"]["counts"] == {"imported": 4}, doc
    code, doc = run_tool(home_b, "import", "--from", str(home_a), "--to", "auto", "--apply")
    assert code == csr.EXIT_OK, doc
    code, doc = run_tool(home_b, "import", "--from", str(home_a), "--to", "auto")
    assert (code, doc["changes"], doc["findings"]) == (csr.EXIT_OK, 0, []), doc

    # diagnose sees the folder move and gives the exact line; it is run as given.
    code, doc = run_tool(home_b, "diagnose")
    moved = next(f for f in doc["findings"] if f["code"] == "cwd_moved")
    assert set(moved["thread_ids"]) == set(ids["interactive"]) | {ids["exec"], ids["archived"]}
    remaps = [c for c in doc["next_commands"] if " remap-cwd " in c]
    assert len(remaps) == 1, doc["next_commands"]
    argv = shlex.split(remaps[0])
    argv = argv[argv.index("--codex-home"):]
    assert argv[argv.index("--from") + 1] == str(p1) and argv[argv.index("--to") + 1] == str(p2)
    b_before = hash_tree(home_b)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert csr.main(argv) == csr.EXIT_FINDINGS
    assert hash_tree(home_b) == b_before
    with contextlib.redirect_stdout(out):
        assert csr.main(argv + ["--apply"]) == csr.EXIT_OK, out.getvalue()
    code, doc = run_tool(home_b, *argv[2:])
    assert (code, doc["changes"]) == (csr.EXIT_OK, 0), doc
    code, doc = run_tool(home_b, "diagnose")
    assert not {"cwd_moved", "provider_mismatch", "no_db_row"} & {f["code"] for f in doc["findings"]}, doc["findings"]
    assert snapshot(home_a) == a_before

    # The real Codex on B: A's interactive threads and B's own, all readable, one continues.
    expected = set(ids["interactive"]) | {own}
    with harness.AppServer(binary, home_b, cwd=p2) as server:
        listing = server.list_threads()
        assert {item["id"] for item in listing} == expected
        assert {item["cwd"] for item in listing} == {str(p2)}
        assert server.listed_ids(cwd=str(p2)) and set(server.listed_ids(cwd=str(p2))) == expected
        for n, thread_id in enumerate(ids["interactive"]):
            label = ("alpha", "beta")[n]
            thread = server.read_thread(thread_id)
            assert user_texts(thread) == [["first question in %s" % label], ["second question in %s" % label]]
        # updatedAt counts whole seconds: the turn goes into a later second than any listed one,
        # or a tie leaves "the newest" to the listing's order.
        wait_past_second(max(item["updatedAt"] for item in listing))
        server.resume_thread(ids["interactive"][1])
        assert server.run_turn(ids["interactive"][1], "continued on machine b")["status"] == "completed"
        thread = server.read_thread(ids["interactive"][1])
        assert user_texts(thread)[-1] == ["continued on machine b"]
        assert set(server.listed_ids(archived=True)) == {ids["archived"]}
        newest = max(server.list_threads(cwd=str(p2)), key=lambda item: item["updatedAt"])["id"]
    assert newest == ids["interactive"][1]
    # `codex exec resume --last` from P2 finds the newest of them; a name finds its thread.
    assert exec_resume(binary, home_b, p2, "--last") == newest
    assert exec_resume(binary, home_b, p2, NAMES[0]) == ids["interactive"][0]
    assert snapshot(home_a) == a_before


@pytest.mark.parametrize("version", VERSIONS)
def test_a_copied_home_and_a_moved_project_come_back_with_the_next_lines(version, standin, tmp_path, monkeypatch):
    """The old `.codex` copied to a new machine where the project lives at another path (its
    rows point into the old home and the old folder, neither of which exists there):
    diagnose's Next, run line by line with --apply, brings every interactive thread back to
    the real listing, readable, and `codex exec resume --last` in the new folder finds the
    newest thread of the folder."""
    binary = harness.require_release(version)
    old_project = tmp_path / "old-user" / "src" / "shop"
    old_project.mkdir(parents=True)
    old_home = harness.build_home(version, tmp_path / "old-user" / ".codex", standin)
    ids = harness.populate_sample_home(version, old_home, old_project)
    new_home = tmp_path / "new-user" / ".codex"
    shutil.copytree(str(old_home), str(new_home), symlinks=True)
    shutil.rmtree(str(tmp_path / "old-user"))
    project = tmp_path / "new-user" / "work" / "shop"
    project.mkdir(parents=True)
    monkeypatch.chdir(str(project))

    code, doc = run_tool(new_home, "diagnose")
    assert code == csr.EXIT_FINDINGS
    assert "cwd_moved" in {f["code"] for f in doc["findings"]}
    steps = [shlex.split(line) for line in doc["next_commands"]]
    assert [s[s.index("--codex-home") + 2] for s in steps][-1] == "remap-cwd"
    for step in steps:
        argv = step[step.index("--codex-home"):]
        before = hash_tree(new_home)
        code, doc = run_tool(Path(argv[1]), *argv[2:])
        assert code == csr.EXIT_FINDINGS and hash_tree(new_home) == before, doc
        code, doc = run_tool(Path(argv[1]), *argv[2:], "--apply")
        assert code == csr.EXIT_OK, doc
    code, doc = run_tool(new_home, "diagnose")
    assert not {"cwd_moved", "rollout_path_stale"} & {f["code"] for f in doc["findings"]}, doc["findings"]

    with harness.AppServer(binary, new_home, cwd=project) as server:
        listing = server.list_threads()
        assert {item["id"] for item in listing} == set(ids["interactive"])
        assert {item["cwd"] for item in listing} == {str(project)}
        for n, thread_id in enumerate(ids["interactive"]):
            label = ("alpha", "beta")[n]
            assert user_texts(server.read_thread(thread_id)) == \
                [["first question in %s" % label], ["second question in %s" % label]]
    # CODEX-COMPAT: `codex exec resume --last` counts `exec` threads too (measured on 0.169.0
    # and 0.130.0): the newest thread of the folder is the sample home's exec thread.
    assert exec_resume(binary, new_home, project, "--last") == ids["exec"]


def test_import_verify_lists_the_copies_on_the_scratch_home(tmp_path):
    """Codex 0.169.0 judges `import --verify`: on the scratch copy the plan leaves, it lists
    the imported threads, as the tool predicts; the home itself is not written."""
    from homes import HomeBuilder

    binary = harness.require_release("0.169.0")
    other = HomeBuilder(tmp_path / "machine-a", "0.169.0")
    imported = [other.thread(cwd="/home/ana/src/shop").id, other.thread(cwd="/home/ana/src/shop").id]
    home = HomeBuilder(tmp_path / "machine-b", "0.169.0")
    own = home.thread(cwd=str(tmp_path)).id
    before = hash_tree(home.root)
    code, doc = run_tool(home.root, "import", "--from", str(other.root), "--verify", "--codex-bin", str(binary))
    assert code == csr.EXIT_FINDINGS and hash_tree(home.root) == before
    verification = doc["verification"]
    assert verification["status"] == "verified" and verification["agrees"] is True, verification
    assert set(verification["listed_after"]) == set(imported) | {own}
