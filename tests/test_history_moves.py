"""History that moved: `import` of another home's conversations, and `remap-cwd` after a
project folder moved (another machine, user name, mount or Windows/WSL spelling).

Homes are synthetic, shaped like 0.169.0's (projection offsets included). Every command: a dry
run changes no byte; --apply backs up, then writes; a second run plans nothing; the other
home of an import is never written (every file hashed, -wal/-shm included) and its
credentials are never opened (an audit hook sees every open)."""

import json
import os
import shlex
import sqlite3
import sys
from pathlib import Path, PureWindowsPath

import pytest

import codex_session_recovery as csr
from homes import HomeBuilder, hash_tree, run_in_process


run = run_in_process  # (exit code, JSON document, stderr)


def rows(db, sql, params=()):
    conn = sqlite3.connect(str(db))
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def records(path):
    return [json.loads(line) for line in Path(path).read_bytes().splitlines()]


def folder_fields(path, thread_id):
    """(kind, value) of every place a rollout records its folder, in file order."""
    found = []
    for record in records(path):
        for container, key in csr.cwd_fields(record, thread_id):
            found.append((record["type"], container[key]))
    return found


def offsets_on_line_starts(history_db, path, thread_id):
    data = Path(path).read_bytes()
    starts = {0} | {n + 1 for n in range(len(data)) if data[n:n + 1] == b"\n"}
    offsets = [o for row in rows(history_db, "SELECT rollout_byte_offset, rollout_end_byte_offset FROM thread_turns "
                                             "WHERE thread_id = ?", (thread_id,)) for o in row]
    offsets += [r[0] for r in rows(history_db, "SELECT next_rollout_byte_offset FROM thread_history_projection_state "
                                               "WHERE thread_id = ?", (thread_id,))]
    assert offsets
    return all(o in starts for o in offsets)


# ---------------------------------------------------------------------------------------------
# Folder spellings


@pytest.mark.parametrize("stored, old, new, expected", [
    ("/home/ana/shop", "/home/ana/shop", "/srv/shop", "/srv/shop"),
    ("/home/ana/shop/api", "/home/ana/shop", "/srv/shop", "/srv/shop/api"),
    ("/home/ana/shopfront", "/home/ana/shop", "/srv/shop", None),
    ("/home/ana", "/home/ana/shop", "/srv/shop", None),
    ("/home/ana/shop/", "/home/ana/shop/", "/srv/shop/", "/srv/shop"),
    (str(PureWindowsPath(r"C:\Users\ana\shop\api")), str(PureWindowsPath(r"C:\Users\ana\shop")), "/home/ana/shop",
     "/home/ana/shop/api"),
    ("\\\\?\\" + str(PureWindowsPath(r"C:\Users\ana\shop")), str(PureWindowsPath(r"c:\users\ANA\shop")),
     "/home/ana/shop", "/home/ana/shop"),
    ("/mnt/c/Users/ana/shop/api", str(PureWindowsPath(r"C:\Users\ana\shop")), str(PureWindowsPath(r"D:\code\shop")),
     str(PureWindowsPath(r"D:\code\shop\api"))),
    (str(PureWindowsPath(r"C:\Users\ana\shop")), "/mnt/c/Users/ana/shop", "/home/ana/shop", "/home/ana/shop"),
    ("c:/Users/ana/shop/web", str(PureWindowsPath(r"C:\Users\ana\shop")), "/mnt/d/shop", "/mnt/d/shop/web"),
    ("\\\\?\\UNC\\nas\\team\\shop", "\\\\nas\\team\\shop", "/home/ana/shop", "/home/ana/shop"),
    (str(PureWindowsPath(r"D:\Users\ana\shop")), str(PureWindowsPath(r"C:\Users\ana\shop")), "/x", None),
    ("relative/shop", "/home/ana/shop", "/x", None),
])
def test_remap_folder_matches_whole_components_in_every_spelling(stored, old, new, expected):
    assert csr.remap_folder(stored, old, new) == expected


# ---------------------------------------------------------------------------------------------
# remap-cwd


@pytest.fixture
def moved_project(tmp_path):
    """0.169.0: three threads in /home/ana/src/shop (one in a subfolder), one in
    /home/ana/src/shopfront, and Desktop's roots naming the old folder."""
    home = HomeBuilder(tmp_path / "home", "0.169.0")
    inside = [home.thread(cwd="/home/ana/src/shop", turns=2), home.thread(cwd="/home/ana/src/shop/api"),
              home.thread(cwd="/home/ana/src/shop", archived=True)]
    beside = home.thread(cwd="/home/ana/src/shopfront")
    state = {"electron-saved-workspace-roots": ["/home/ana/src/shop", "/home/ana/src/shopfront", "/srv/shop"],
             "active-workspace-roots": ["/home/ana/src/shop"],
             "electron-workspace-root-labels": {"/home/ana/src/shop": "Shop"},
             "thread-workspace-root-hints": {inside[0].id: "/home/ana/src/shop"},
             "electron-persisted-atom-state": {"prompt-history": ["/home/ana/src/shop stays as typed"]}}
    (home.root / ".codex-global-state.json").write_text(json.dumps(state, indent=2) + "\n")
    return home, inside, beside


def test_remap_cwd_moves_every_place_codex_reads_the_folder(moved_project, capsys):
    home, inside, beside = moved_project
    argv = ("remap-cwd", "--codex-home", str(home.root), "--from", "/home/ana/src/shop", "--to", "/srv/shop")
    before = hash_tree(home.root)
    code, doc, _ = run(*argv)
    assert code == csr.EXIT_FINDINGS and doc["applied"] is False
    assert hash_tree(home.root) == before
    assert doc["plan"]["folders"] == {
        inside[0].id: "/home/ana/src/shop -> /srv/shop", inside[1].id: "/home/ana/src/shop/api -> /srv/shop/api",
        inside[2].id: "/home/ana/src/shop -> /srv/shop"}
    originals = {t.id: t.path.read_bytes() for t in inside + [beside]}

    code, doc, _ = run(*argv, "--apply")
    assert code == csr.EXIT_OK, doc
    history = home.root / "thread_history_1.sqlite"
    for thread, new in zip(inside, ("/srv/shop", "/srv/shop/api", "/srv/shop")):
        assert rows(home.db_path, "SELECT cwd FROM threads WHERE id = ?", (thread.id,)) == [(new,)]
        fields = folder_fields(thread.path, thread.id)
        assert fields and all(value == new for _kind, value in fields), fields
        assert {kind for kind, _ in fields} == {"session_meta", "turn_context"}
        # Only the folder fields changed: every other line is byte-identical.
        old_lines, new_lines = originals[thread.id].splitlines(), thread.path.read_bytes().splitlines()
        assert len(old_lines) == len(new_lines)
        for a, b in zip(old_lines, new_lines):
            if a != b:
                assert b'"session_meta"' in a or b'"turn_context"' in a
                assert a.replace(b'"/home/ana/src/shop', b'"/srv/shop') == b
        assert offsets_on_line_starts(history, thread.path, thread.id)
    # The conversation text keeps the folder the model saw.
    assert b"<cwd>/home/ana/src/shop</cwd>" in inside[0].path.read_bytes()
    assert beside.path.read_bytes() == originals[beside.id]
    state = json.loads((home.root / ".codex-global-state.json").read_text())
    assert state["electron-saved-workspace-roots"] == ["/srv/shop", "/home/ana/src/shopfront"]
    assert state["active-workspace-roots"] == ["/srv/shop"]
    assert state["electron-workspace-root-labels"] == {"/srv/shop": "Shop"}
    assert state["thread-workspace-root-hints"] == {inside[0].id: "/srv/shop"}
    assert state["electron-persisted-atom-state"]["prompt-history"] == ["/home/ana/src/shop stays as typed"]

    code, doc, _ = run(*argv)
    assert (code, doc["changes"]) == (csr.EXIT_OK, 0)
    code, doc, _ = run("restore", "--codex-home", str(home.root), "--latest", "--apply")
    assert code == csr.EXIT_OK, doc
    assert {t.id: t.path.read_bytes() for t in inside + [beside]} == originals


def test_remap_cwd_human_dry_run_lists_each_thread(moved_project, capsys):
    home, inside, _ = moved_project
    assert csr.main(["remap-cwd", "--codex-home", str(home.root), "--from", "/home/ana/src/shop",
                     "--to", "/srv/shop"]) == csr.EXIT_FINDINGS
    out = capsys.readouterr().out
    assert "Folders:   3 threads" in out
    assert "%s  /home/ana/src/shop/api -> /srv/shop/api" % inside[1].id in out


@pytest.mark.parametrize("old, new", [("/home/ana/src/shop", "/home/ana/src/shop"),
                                       ("/home/ana/src", "/home/ana/src/shop"), ("shop", "/srv/shop")])
def test_remap_cwd_refuses_a_move_that_is_not_one(moved_project, capsys, old, new):
    home, _, _ = moved_project
    before = hash_tree(home.root)
    code = csr.main(["remap-cwd", "--codex-home", str(home.root), "--from", old, "--to", new])
    assert code == csr.EXIT_USAGE
    assert "remap-cwd" not in capsys.readouterr().out
    assert hash_tree(home.root) == before


def test_remap_cwd_never_writes_desktop_state_it_cannot_write_back_as_json(moved_project, capsys):
    """1e999 would come back as `Infinity` (not JSON: Desktop could not read its state), and a
    lone surrogate cannot be encoded as UTF-8: the first is left alone, the second escaped."""
    home, _inside, _ = moved_project
    state_path = home.root / ".codex-global-state.json"
    state_path.write_text('{"active-workspace-roots": ["/home/ana/src/shop"], "zoom": 1e999}\n')
    original = state_path.read_bytes()
    argv = ("remap-cwd", "--codex-home", str(home.root), "--from", "/home/ana/src/shop", "--to", "/srv/shop")
    code, doc, _ = run(*argv, "--apply")
    assert code == csr.EXIT_OK, doc
    assert state_path.read_bytes() == original
    assert [s["path"] for s in doc["skipped"]] == [".codex-global-state.json"]
    assert "1e999" in doc["skipped"][0]["reason"]

    state_path.write_text('{"active-workspace-roots": ["/srv/shop"], "label": "\\ud800"}\n')
    code, doc, _ = run("remap-cwd", "--codex-home", str(home.root), "--from", "/srv/shop", "--to", "/home/ana/src/shop",
                       "--apply")
    assert code == csr.EXIT_OK, doc
    state = json.loads(state_path.read_text())
    assert state == {"active-workspace-roots": ["/home/ana/src/shop"], "label": "\ud800"}


WINDOWS_SHOP = PureWindowsPath(r"C:\Users\ana\shop")


def test_remap_cwd_windows_and_wsl_spellings(tmp_path, capsys):
    """Rows and rollouts Windows Codex wrote (`C:\\...`, `\\\\?\\C:\\...`) and WSL wrote
    (`/mnt/c/...`), moved to a Linux folder with one --from in either spelling."""
    home = HomeBuilder(tmp_path / "home", "0.169.0")
    plain = home.thread(cwd=str(WINDOWS_SHOP))
    verbatim = home.thread(cwd="\\\\?\\" + str(WINDOWS_SHOP / "api"))
    wsl = home.thread(cwd="/mnt/c/Users/ana/shop/web")
    other = home.thread(cwd=str(PureWindowsPath(r"C:\Users\ana\shopfront")))
    code, doc, _ = run("remap-cwd", "--codex-home", str(home.root), "--from", "/mnt/c/Users/ana/shop",
                       "--to", "/home/ana/shop", "--apply")
    assert code == csr.EXIT_OK, doc
    expected = {plain.id: "/home/ana/shop", verbatim.id: "/home/ana/shop/api", wsl.id: "/home/ana/shop/web",
                other.id: str(PureWindowsPath(r"C:\Users\ana\shopfront"))}
    for thread in (plain, verbatim, wsl, other):
        assert rows(home.db_path, "SELECT cwd FROM threads WHERE id = ?", (thread.id,)) == [(expected[thread.id],)]
        assert {v for _k, v in folder_fields(thread.path, thread.id)} == {expected[thread.id]}
    code, doc, _ = run("remap-cwd", "--codex-home", str(home.root), "--from", str(WINDOWS_SHOP),
                       "--to", "/home/ana/shop")
    assert (code, doc["changes"]) == (csr.EXIT_OK, 0)
    # And back to a Windows folder: spelled with backslashes, as the --to was given.
    code, doc, _ = run("remap-cwd", "--codex-home", str(home.root), "--from", "/home/ana/shop",
                       "--to", str(PureWindowsPath(r"D:\code\shop")), "--apply")
    assert code == csr.EXIT_OK, doc
    assert rows(home.db_path, "SELECT cwd FROM threads WHERE id = ?", (verbatim.id,)) == \
        [(str(PureWindowsPath(r"D:\code\shop\api")),)]
    assert {v for _k, v in folder_fields(verbatim.path, verbatim.id)} == {str(PureWindowsPath(r"D:\code\shop\api"))}


# ---------------------------------------------------------------------------------------------
# diagnose notices a moved folder


def test_diagnose_suggests_the_exact_remap_line(tmp_path, capsys):
    old = tmp_path / "old machine" / "src" / "shop"
    new = tmp_path / "new" / "projects" / "shop"
    (new / "api").mkdir(parents=True)
    home = HomeBuilder(tmp_path / "home", "0.169.0")
    lost = [home.thread(cwd=str(old)), home.thread(cwd=str(old / "api"))]
    home.thread(cwd=str(new))
    code, doc, _ = run("diagnose", "--codex-home", str(home.root))
    assert code == csr.EXIT_FINDINGS
    finding = next(f for f in doc["findings"] if f["code"] == "cwd_moved")
    assert sorted(finding["thread_ids"]) == sorted(t.id for t in lost)
    entry = next(t for t in doc["threads"] if t["id"] == lost[0].id)
    assert entry["evidence"]["cwd_moved"]["found"] == str(new)
    remaps = [c for c in doc["next_commands"] if " remap-cwd " in c]
    assert len(remaps) == 1, doc["next_commands"]  # the subfolder is covered by its parent's move
    argv = shlex.split(remaps[0])
    assert argv[argv.index("--codex-home") + 1] == str(home.root)
    assert argv[argv.index("--from") + 1] == str(old) and argv[argv.index("--to") + 1] == str(new)
    code, doc, _ = run(*argv[argv.index("remap-cwd"):], "--codex-home", str(home.root), "--apply")
    assert code == csr.EXIT_OK, doc
    code, doc, _ = run("diagnose", "--codex-home", str(home.root))
    assert "cwd_moved" not in {f["code"] for f in doc["findings"]}
    assert rows(home.db_path, "SELECT cwd FROM threads WHERE id = ?", (lost[1].id,)) == [(str(new / "api"),)]


def test_diagnose_names_no_folder_when_two_match(tmp_path, capsys):
    for parent in ("a", "b"):
        (tmp_path / parent / "shop").mkdir(parents=True)
    home = HomeBuilder(tmp_path / "home", "0.169.0")
    lost = home.thread(cwd="/gone/machine/shop")
    home.thread(cwd=str(tmp_path / "a" / "shop"))
    home.thread(cwd=str(tmp_path / "b" / "shop"))
    code, doc, _ = run("diagnose", "--codex-home", str(home.root))
    entry = next(t for t in doc["threads"] if t["id"] == lost.id)
    assert entry["evidence"]["cwd_moved"]["candidates"] == [str(tmp_path / "a" / "shop"), str(tmp_path / "b" / "shop")]
    assert not [c for c in doc["next_commands"] if " remap-cwd " in c]


def test_trace_gives_the_remap_line(tmp_path, capsys):
    new = tmp_path / "here" / "shop"
    new.mkdir(parents=True)
    home = HomeBuilder(tmp_path / "home", "0.169.0")
    lost = home.thread(cwd="/Users/ana/shop")
    home.thread(cwd=str(new))
    code, doc, _ = run("trace", "--codex-home", str(home.root), lost.id)
    argv = doc["trace"]["fix_commands"]["cwd_moved"]
    assert argv[argv.index("remap-cwd"):] == ["remap-cwd", "--from", "/Users/ana/shop", "--to", str(new)]
    assert argv[argv.index("--codex-home") + 1] == str(home.root)
    cwd_filter = next(f for f in doc["trace"]["filters"] if f["filter"] == "cwd")
    assert cwd_filter["passes"] is False and str(new) in cwd_filter["detail"]


# ---------------------------------------------------------------------------------------------
# import


class OpenRecorder:
    """Every path this process opens (files and SQLite DBs), seen through an audit hook."""

    paths = []
    active = False

    @classmethod
    def hook(cls, event, args):
        if cls.active and event in ("open", "sqlite3.connect") and args and isinstance(args[0], (str, bytes, Path)):
            cls.paths.append(os.fsdecode(args[0]))


sys.addaudithook(OpenRecorder.hook)


def build_machine_a(root, project="/home/ana/src/shop"):
    """Machine A: two named interactive threads, one archived, one exec, a secret it must keep."""
    a = HomeBuilder(root, "0.169.0")
    threads = {"alpha": a.thread(cwd=project, turns=2), "beta": a.thread(cwd=project),
               "archived": a.thread(cwd=project, archived=True), "exec": a.thread(cwd=project, source="exec")}
    a.index([{"id": threads["alpha"].id, "thread_name": "checkout bug", "updated_at": "2026-10-01T00:00:00Z"}])
    conn = sqlite3.connect(str(a.db_path))
    conn.execute("UPDATE threads SET name = 'db only name' WHERE id = ?", (threads["beta"].id,))
    conn.commit()
    conn.close()
    (root / "auth.json").write_text('{"OPENAI_API_KEY": "sk-never-read"}')
    (root / "config.toml").write_text('model_provider = "openai"\nexperimental_bearer_token = "never-read"\n')
    return a, threads


@pytest.fixture
def machines(tmp_path):
    a, threads = build_machine_a(tmp_path / "machine-a")
    b = HomeBuilder(tmp_path / "machine-b", "0.169.0").provider_config("proxy")
    own = b.thread(provider="proxy", cwd="/home/bo/projects/shop")
    return a, threads, b, own


def a_state(root):
    """Every byte of the other home, SQLite side files included: none may appear or change."""
    return hash_tree(root, ignore_shm=False)


def test_import_brings_every_conversation_and_never_writes_the_other_home(machines, capsys):
    a, threads, b, own = machines
    a_before, b_before = a_state(a.root), hash_tree(b.root)
    argv = ("import", "--codex-home", str(b.root), "--from", str(a.root))
    OpenRecorder.paths, OpenRecorder.active = [], True
    try:
        code, doc, _ = run(*argv)
    finally:
        OpenRecorder.active = False
    assert code == csr.EXIT_FINDINGS and doc["applied"] is False
    assert hash_tree(b.root) == b_before and a_state(a.root) == a_before
    opened_in_a = {p for p in OpenRecorder.paths if str(a.root) in p}
    assert any("session_index.jsonl" in p for p in opened_in_a) and any("state_5.sqlite" in p for p in opened_in_a)
    assert not [p for p in opened_in_a if "auth.json" in p or "config.toml" in p], opened_in_a
    assert doc["plan"]["counts"] == {"imported": 4}
    kinds = [x["kind"] for x in doc["actions"]]
    assert kinds.count("rollout_copy") == 4

    code, doc, _ = run(*argv, "--apply")
    assert code == csr.EXIT_OK, doc
    assert a_state(a.root) == a_before
    history = b.root / "thread_history_1.sqlite"
    for label, thread in threads.items():
        copy = b.root / thread.path.relative_to(a.root)
        assert copy.read_bytes() == thread.path.read_bytes(), label
        assert os.stat(str(copy)).st_mtime_ns == os.stat(str(thread.path)).st_mtime_ns
        row = rows(b.db_path, "SELECT rollout_path, model_provider, archived, cwd, source FROM threads WHERE id = ?",
                   (thread.id,))
        assert row == [(str(copy), "openai", int(label == "archived"), "/home/ana/src/shop",
                        "exec" if label == "exec" else "vscode")]
        assert offsets_on_line_starts(history, copy, thread.id)
        assert rows(history, "SELECT count(*) FROM thread_turns WHERE thread_id = ?", (thread.id,)) == \
            rows(a.root / "thread_history_1.sqlite", "SELECT count(*) FROM thread_turns WHERE thread_id = ?", (thread.id,))
    names = csr.read_session_index(b.root)["names"]
    assert names[threads["alpha"].id] == "checkout bug" and names[threads["beta"].id] == "db only name"
    assert rows(b.db_path, "SELECT name FROM threads WHERE id = ?", (threads["beta"].id,)) == [("db only name",)]
    assert own.path.read_bytes() == Path(own.path).read_bytes()

    code, doc, _ = run(*argv)
    assert (code, doc["changes"]) == (csr.EXIT_OK, 0), doc
    assert doc["plan"]["counts"] == {"identical": 4}

    # restore takes the imported files away again: the home is what it was.
    code, doc, _ = run("restore", "--codex-home", str(b.root), "--latest", "--apply")
    assert code == csr.EXIT_OK, doc
    after_restore = hash_tree(b.root)
    assert {k: v for k, v in after_restore.items() if not k.endswith((".sqlite", "-wal"))} == \
        {k: v for k, v in b_before.items() if not k.endswith((".sqlite", "-wal"))}


def test_import_to_auto_then_remap_then_again_plans_nothing(machines, capsys):
    a, threads, b, own = machines
    a_before = a_state(a.root)
    code, doc, _ = run("import", "--codex-home", str(b.root), "--from", str(a.root), "--to", "auto", "--apply")
    assert code == csr.EXIT_OK, doc
    history = b.root / "thread_history_1.sqlite"
    for thread in threads.values():
        copy = b.root / thread.path.relative_to(a.root)
        assert rows(b.db_path, "SELECT model_provider FROM threads WHERE id = ?", (thread.id,)) == [("proxy",)]
        providers = [r["payload"].get("model_provider") for r in records(copy) if r["type"] == "session_meta"]
        assert providers == ["proxy"]
        assert offsets_on_line_starts(history, copy, thread.id)
    code, doc, _ = run("diagnose", "--codex-home", str(b.root))
    assert "provider_mismatch" not in {f["code"] for f in doc["findings"]}

    code, doc, _ = run("remap-cwd", "--codex-home", str(b.root), "--from", "/home/ana/src/shop",
                       "--to", "/home/bo/projects/shop", "--apply")
    assert code == csr.EXIT_OK and doc["plan"]["threads"] == 4, doc
    for thread in threads.values():
        copy = b.root / thread.path.relative_to(a.root)
        assert offsets_on_line_starts(history, copy, thread.id)
    for argv in (("import", "--from", str(a.root), "--to", "auto"), ("import", "--from", str(a.root)),
                 ("remap-cwd", "--from", "/home/ana/src/shop", "--to", "/home/bo/projects/shop")):
        code, doc, _ = run(*argv, "--codex-home", str(b.root))
        assert (code, doc["changes"], doc["findings"]) == (csr.EXIT_OK, 0, []), (argv, doc)
    assert a_state(a.root) == a_before


def test_import_from_only_a_sessions_folder(tmp_path, capsys):
    a, threads = build_machine_a(tmp_path / "old" / "codex")
    flat = tmp_path / "copied" / "sessions"
    flat.mkdir(parents=True)
    for thread in threads.values():
        if "archived_sessions" not in str(thread.path):
            os.link(str(thread.path), str(flat / thread.path.name))  # flat: placed by their names
    b = HomeBuilder(tmp_path / "machine-b", "0.169.0")
    code, doc, _ = run("import", "--codex-home", str(b.root), "--from", str(flat), "--apply")
    assert code == csr.EXIT_OK and doc["plan"]["counts"] == {"imported": 3}, doc
    for label in ("alpha", "beta", "exec"):
        assert (b.root / threads[label].path.relative_to(a.root)).read_bytes() == threads[label].path.read_bytes()


def test_import_conflicts_are_reported_and_left_alone(machines, capsys):
    a, threads, b, own = machines
    diverged = b.root / threads["alpha"].path.relative_to(a.root)
    diverged.parent.mkdir(parents=True, exist_ok=True)
    data = threads["alpha"].path.read_bytes()
    diverged.write_bytes(data.replace(b"fix the failing checkout test", b"an entirely other conversation"))
    ours = diverged.read_bytes()
    code, doc, _ = run("import", "--codex-home", str(b.root), "--from", str(a.root))
    assert code == csr.EXIT_FINDINGS
    conflict = [f for f in doc["findings"] if f["code"] == "import_conflict"]
    assert [f["thread_id"] for f in conflict] == [threads["alpha"].id]
    assert conflict[0]["other_home"] == str(threads["alpha"].path)
    assert threads["alpha"].id not in {x.get("thread_id") for x in doc["actions"]}
    code, doc, _ = run("import", "--codex-home", str(b.root), "--from", str(a.root), "--apply")
    assert code == csr.EXIT_OK
    assert diverged.read_bytes() == ours and threads["alpha"].path.read_bytes() == data
    code, doc, _ = run("import", "--codex-home", str(b.root), "--from", str(a.root))
    assert (code, doc["changes"], len(doc["findings"])) == (csr.EXIT_FINDINGS, 0, 1)


def test_import_prefix_keeps_the_longer_copy(machines, capsys):
    a, threads, b, own = machines
    full = threads["alpha"].path.read_bytes()
    cut = full[:full.index(b"\n", len(full) // 2) + 1]
    # This home has the shorter copy (an older backup): the longer one replaces it, backed up.
    shorter = b.root / threads["alpha"].path.relative_to(a.root)
    shorter.parent.mkdir(parents=True, exist_ok=True)
    shorter.write_bytes(cut)
    # The other home has the shorter copy of beta: this home's longer one stays.
    longer = b.root / threads["beta"].path.relative_to(a.root)
    longer.parent.mkdir(parents=True, exist_ok=True)
    beta = threads["beta"].path.read_bytes()
    longer.write_bytes(beta + b'{"timestamp":"2026-10-01T00:00:00.000Z","type":"event_msg","payload":{"type":"x"}}\n')
    kept = longer.read_bytes()
    code, doc, _ = run("import", "--codex-home", str(b.root), "--from", str(a.root), "--apply")
    assert code == csr.EXIT_OK, doc
    assert doc["findings"] == []
    assert shorter.read_bytes() == full
    assert longer.read_bytes() == kept
    manifest = json.loads((Path(doc["backup_dir"]) / "manifest.json").read_text())
    entry = next(e for e in manifest["entries"] if e["path"].endswith(shorter.name))
    assert entry["existed"] is True
    assert (Path(doc["backup_dir"]) / entry["backup"]).read_bytes() == cut
    code, doc, _ = run("import", "--codex-home", str(b.root), "--from", str(a.root))
    assert (code, doc["changes"]) == (csr.EXIT_OK, 0), doc


def test_import_manifest_records_new_files_as_not_existing(machines, capsys):
    a, threads, b, own = machines
    code, doc, _ = run("import", "--codex-home", str(b.root), "--from", str(a.root), "--apply")
    manifest = json.loads((Path(doc["backup_dir"]) / "manifest.json").read_text())
    created = [e for e in manifest["entries"] if e["kind"] == "file" and "rollout-" in e["path"]]
    assert len(created) == 4 and all(e["existed"] is False and e["backup"] is None for e in created)


@pytest.mark.parametrize("where", ["same", "inside", "missing"])
def test_import_refuses_a_home_that_is_not_another_one(machines, capsys, where):
    a, threads, b, own = machines
    other = {"same": b.root, "inside": b.root / "sessions", "missing": b.root.parent / "nowhere"}[where]
    before = hash_tree(b.root)
    assert csr.main(["import", "--codex-home", str(b.root), "--from", str(other)]) == csr.EXIT_USAGE
    assert hash_tree(b.root) == before


def test_import_other_home_with_wal_is_read_without_side_files(machines, capsys):
    """A copy taken while Codex ran: the other DB has a -wal holding the name. It is read from
    a private copy; no -shm appears there."""
    a, threads, b, own = machines
    conn = sqlite3.connect(str(a.db_path))
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("UPDATE threads SET name = 'only in the wal' WHERE id = ?", (threads["exec"].id,))
    conn.commit()
    import shutil
    for suffix in ("", "-wal"):
        shutil.copyfile(str(a.db_path) + suffix, str(a.root / ("copy.sqlite" + suffix)))
    conn.close()
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(str(a.db_path) + suffix):
            os.unlink(str(a.db_path) + suffix)
    for suffix in ("", "-wal"):
        os.replace(str(a.root / ("copy.sqlite" + suffix)), str(a.db_path) + suffix)
    assert os.path.exists(str(a.db_path) + "-wal") and not os.path.exists(str(a.db_path) + "-shm")
    a_before = a_state(a.root)
    code, doc, _ = run("import", "--codex-home", str(b.root), "--from", str(a.root), "--apply")
    assert code == csr.EXIT_OK, doc
    assert a_state(a.root) == a_before and not os.path.exists(str(a.db_path) + "-shm")
    assert csr.read_session_index(b.root)["names"][threads["exec"].id] == "only in the wal"


# ---------------------------------------------------------------------------------------------
# A home copied to a new machine: rows point into the old home and the old project folder


def test_diagnose_on_a_freshly_copied_home_covers_the_folder_move(tmp_path, capsys, monkeypatch):
    import shutil
    old_home, new_home = tmp_path / "old" / ".codex", tmp_path / "new" / ".codex"
    project = tmp_path / "new" / "projects" / "shop"
    project.mkdir(parents=True)
    built = HomeBuilder(old_home, "0.169.0")
    threads = [built.thread(cwd=str(tmp_path / "old" / "src" / "shop"), turns=2),
               built.thread(cwd=str(tmp_path / "old" / "src" / "shop"))]
    shutil.copytree(str(old_home), str(new_home))
    shutil.rmtree(str(tmp_path / "old"))
    monkeypatch.chdir(str(project))  # the user runs it from the project, as Codex is run
    code, doc, _ = run("diagnose", "--codex-home", str(new_home))
    assert code == csr.EXIT_FINDINGS
    assert {"rollout_path_stale", "cwd_moved"} <= {f["code"] for f in doc["findings"]}
    steps = [shlex.split(c) for c in doc["next_commands"]]
    names = [s[s.index("--codex-home") + 2] for s in steps]
    assert names.index("reindex") < names.index("remap-cwd"), names
    for step in steps:
        argv = step[step.index("--codex-home"):]
        code, doc, _ = run(*argv, "--apply")
        assert code == csr.EXIT_OK and doc["changes"] > 0, (argv, doc)
    code, doc, _ = run("diagnose", "--codex-home", str(new_home))
    assert (code, doc["next_commands"]) == (csr.EXIT_OK, []), doc["findings"]
    for thread in threads:
        copy = new_home / thread.path.relative_to(old_home)
        assert rows(new_home / "state_5.sqlite", "SELECT rollout_path, cwd FROM threads WHERE id = ?", (thread.id,)) \
            == [(str(copy), str(project))]
        assert offsets_on_line_starts(new_home / "thread_history_1.sqlite", copy, thread.id)


def test_import_never_picks_between_two_copies_of_the_other_home(machines, capsys):
    a, threads, b, own = machines
    stray = a.root / "sessions" / threads["beta"].path.name  # the same thread, also flat in sessions/
    stray.write_bytes(threads["beta"].path.read_bytes())
    code, doc, _ = run("import", "--codex-home", str(b.root), "--from", str(a.root), "--apply")
    assert code == csr.EXIT_OK
    assert [f["thread_id"] for f in doc["findings"]] == [threads["beta"].id]
    assert doc["plan"]["counts"] == {"imported": 3, "conflict": 2}
    assert not list(b.root.rglob("*%s*" % threads["beta"].id))


def test_import_into_a_home_without_state_db_and_from_a_damaged_db(tmp_path, capsys):
    a, threads = build_machine_a(tmp_path / "machine-a")
    for suffix in ("-wal", "-shm"):
        if os.path.exists(str(a.db_path) + suffix):
            os.unlink(str(a.db_path) + suffix)
    a.db_path.write_bytes(b"not a database " * 100)
    b = HomeBuilder(tmp_path / "machine-b", "0.169.0", with_db=False)
    code, doc, err = run("import", "--codex-home", str(b.root), "--from", str(a.root), "--apply")
    assert code == csr.EXIT_OK, doc
    assert any("state DB cannot be read" in w for w in doc["warnings"])
    assert {x["kind"] for x in doc["actions"]} == {"rollout_copy", "file_write"}
    for thread in threads.values():
        assert (b.root / thread.path.relative_to(a.root)).read_bytes() == thread.path.read_bytes()
    assert csr.read_session_index(b.root)["names"] == {threads["alpha"].id: "checkout bug"}
    code, doc, _ = run("import", "--codex-home", str(b.root), "--from", str(a.root))
    assert (code, doc["changes"]) == (csr.EXIT_OK, 0)


def test_import_from_a_home_whose_index_cannot_be_read(machines, capsys):
    a, threads, b, own = machines
    index = a.root / "session_index.jsonl"
    index.unlink()
    index.mkdir()  # unreadable as a file, whoever runs the test
    code, doc, err = run("import", "--codex-home", str(b.root), "--from", str(a.root), "--apply")
    assert code == csr.EXIT_OK and doc["plan"]["counts"] == {"imported": 4}, doc
    assert csr.read_session_index(b.root)["names"] == {threads["beta"].id: "db only name"}


def test_import_gives_a_row_whose_rollout_was_lost_its_file_back(machines, capsys):
    a, threads, b, own = machines
    lost = b.thread(thread_id=threads["beta"].id, cwd="/home/ana/src/shop")
    lost.path.unlink()
    code, doc, _ = run("diagnose", "--codex-home", str(b.root))
    assert "rollout_missing" in {f["code"] for f in doc["findings"]}
    code, doc, _ = run("import", "--codex-home", str(b.root), "--from", str(a.root), "--apply")
    assert code == csr.EXIT_OK, doc
    copy = b.root / threads["beta"].path.relative_to(a.root)
    assert copy.read_bytes() == threads["beta"].path.read_bytes()
    assert rows(b.db_path, "SELECT rollout_path FROM threads WHERE id = ?", (threads["beta"].id,)) == [(str(copy),)]
    code, doc, _ = run("diagnose", "--codex-home", str(b.root))
    assert "rollout_missing" not in {f["code"] for f in doc["findings"]}
