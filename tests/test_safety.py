"""Safety: refusals (one condition at a time), the tool's own lock, credentials never opened,
no write outside CODEX_HOME."""

import json
import os
import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import codex_session_recovery as csr
from homes import HomeBuilder, add_migration, hash_tree, retype_column, run_script, switched_home


@pytest.fixture
def switched(tmp_path):
    return switched_home(tmp_path / "home")


def apply_provider(home, *extra):
    return csr.main(["repair-provider", "--codex-home", str(home.root), "--from", "openai", "--apply", *extra])


HOLD_CONNECTION = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1])
conn.execute("SELECT count(*) FROM threads").fetchone()
print("ready", flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(os.name != "posix", reason="the -shm lock probe is POSIX")
def test_refuses_while_another_process_has_the_db_open(switched, capsys):
    home, _ = switched
    holder = subprocess.Popen([sys.executable, "-c", HOLD_CONNECTION, str(home.db_path)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"ready"
        before = hash_tree(home.root)
        assert apply_provider(home) == csr.EXIT_REFUSED
        err = capsys.readouterr().err
        assert err.startswith("refused: will not write: Codex is using this home")
        assert "pid %d" % holder.pid in err and "use --force" in err
        assert hash_tree(home.root) == before
        assert not list((home.root / "recovery-backups").glob("*-repair-provider"))
    finally:
        holder.kill()
        holder.wait()
    assert apply_provider(home) == csr.EXIT_OK


@pytest.mark.skipif(os.name != "posix", reason="the -shm lock probe is POSIX")
def test_force_overrides_the_running_check_but_never_implies_apply(switched, capsys):
    home, _ = switched
    holder = subprocess.Popen([sys.executable, "-c", HOLD_CONNECTION, str(home.db_path)], stdout=subprocess.PIPE)
    try:
        holder.stdout.readline()
        before = hash_tree(home.root)
        assert csr.main(["repair-provider", "--codex-home", str(home.root), "--from", "openai", "--force"]) == 1
        assert hash_tree(home.root) == before
        assert apply_provider(home, "--force") == csr.EXIT_OK
    finally:
        holder.kill()
        holder.wait()


def test_shm_probe_sees_nothing_when_nobody_holds_the_db(switched):
    home, _ = switched
    assert csr.codex_users(home.root, [home.db_path]) == []


def newer_home(tmp_path, *migrations):
    """A 0.171.0 home (schema 64) that a newer Codex then migrated further: `migrations` are
    (version, description, sql). Two threads under openai, config.toml on proxy."""
    home = HomeBuilder(tmp_path / "home", "0.171.0").provider_config("proxy")
    threads = [home.thread(provider="openai"), home.thread(provider="openai")]
    for version, description, sql in migrations:
        add_migration(home.db_path, version, description, sql)
    return home, threads


# What a future release plausibly does: a table of its own and a nullable column on threads.
UNRELATED_65 = (65, "thread labels", "CREATE TABLE thread_labels (thread_id TEXT NOT NULL, label TEXT NOT NULL);"
                                     "ALTER TABLE threads ADD COLUMN label_count INTEGER;")


def test_writes_on_a_newer_schema_where_what_the_plan_touches_is_unchanged(tmp_path, capsys):
    """Compatibility by what a plan touches, not by the version number: schema 65 is newer than
    any release checked, but every column, type and trigger repair-provider touches is as in
    0.171.0, so it writes without --force and says why, in text and in --json."""
    home, threads = newer_home(tmp_path, UNRELATED_65)
    assert csr.main(["diagnose", "--codex-home", str(home.root), "--json"]) == csr.EXIT_FINDINGS
    newer = next(f for f in json.loads(capsys.readouterr().out)["findings"] if f["code"] == "schema_newer")
    assert newer["severity"] == "info" and newer["evidence"]["unchanged"] is True
    assert newer["evidence"]["migrations"] == ["65 thread labels"]

    before = hash_tree(home.root)
    assert csr.main(["repair-provider", "--codex-home", str(home.root), "--from", "openai"]) == csr.EXIT_FINDINGS
    text = capsys.readouterr().out
    assert "Schema:    state DB schema 65 (newer than 64, the newest checked: 65 thread labels); " \
           "what this touches is unchanged, so writing is safe" in text
    assert hash_tree(home.root) == before

    assert csr.main(["repair-provider", "--codex-home", str(home.root), "--from", "openai", "--apply", "--json"]) == csr.EXIT_OK
    doc = json.loads(capsys.readouterr().out)
    compat = doc["compatibility"]
    assert (compat["schema_version"], compat["newer"], compat["unchanged"], compat["changed"]) == (65, True, True, [])
    assert "threads.model_provider" in compat["touches"] and "thread_turns.rollout_byte_offset" in compat["touches"]
    conn = sqlite3.connect(str(home.db_path))
    assert {r[0] for r in conn.execute("SELECT model_provider FROM threads")} == {"proxy"}
    conn.close()
    assert csr.main(["repair-provider", "--codex-home", str(home.root), "--from", "openai", "--json"]) == csr.EXIT_OK
    assert json.loads(capsys.readouterr().out)["changes"] == 0


@pytest.mark.parametrize("change,expected", [
    ("retype", "threads.model_provider is BLOB, was TEXT"),
    ("trigger", "trigger threads_provider_audit on threads is new"),
    ("checksum", "released migration(s) 1 carry other checksums"),
    ("history", "thread_turns.rollout_end_byte_offset is missing"),
])
def test_refuses_when_what_the_plan_touches_changed_shape(tmp_path, capsys, change, expected):
    """A newer schema that changed something the plan reads or writes: the dry run warns, --apply
    refuses with exit 3 naming --force and writes nothing; --force writes."""
    home, threads = newer_home(tmp_path, UNRELATED_65)
    if change == "retype":
        retype_column(home.db_path, "threads", "model_provider", "BLOB")
    elif change == "trigger":
        add_migration(home.db_path, 66, "provider audit",
                      "CREATE TABLE provider_audit (id TEXT); CREATE TRIGGER threads_provider_audit AFTER UPDATE OF "
                      "model_provider ON threads BEGIN INSERT INTO provider_audit VALUES (NEW.id); END;")
    elif change == "checksum":
        conn = sqlite3.connect(str(home.db_path))
        conn.execute("UPDATE _sqlx_migrations SET checksum = x'54bbd6f4aa' WHERE version = 1")
        conn.commit()
        conn.close()
    else:
        conn = sqlite3.connect(str(home.root / "thread_history_1.sqlite"))
        conn.execute("ALTER TABLE thread_turns RENAME COLUMN rollout_end_byte_offset TO rollout_end_offset")
        conn.commit()
        conn.close()
    capsys.readouterr()
    assert csr.main(["repair-provider", "--codex-home", str(home.root), "--from", "openai"]) == csr.EXIT_FINDINGS
    captured = capsys.readouterr()
    assert "what this touches changed shape" in captured.out and expected in captured.out
    assert "--apply refuses unless --force" in captured.err
    before = hash_tree(home.root)
    assert apply_provider(home) == csr.EXIT_REFUSED
    err = capsys.readouterr().err
    assert expected in err and "use --force" in err
    assert hash_tree(home.root) == before
    assert not list((home.root / "recovery-backups").glob("*-repair-provider"))
    assert apply_provider(home, "--force") == csr.EXIT_OK


def test_never_writes_a_rollout_reached_through_a_symlink(switched, tmp_path, capsys):
    """The planner skips a linked rollout (rollout_is_link names the manual step), and the
    apply engine's own guard still refuses a plan that names one, with no override."""
    home, threads = switched
    outside = tmp_path / "elsewhere.jsonl"
    os.replace(threads[0].path, outside)
    os.symlink(outside, threads[0].path)
    before = outside.read_bytes()
    assert apply_provider(home, "--force") == csr.EXIT_OK
    assert "skipped  %s: its rollout is a symbolic link" % threads[0].id in capsys.readouterr().out
    assert outside.read_bytes() == before and os.path.islink(threads[0].path)
    with pytest.raises(csr.RefusedError, match="through a symlink.*This check has no override"):
        csr.check_inside_home(Path(threads[0].path), Path(home.root).resolve())


def test_never_writes_through_a_symlinked_folder_inside_the_home(tmp_path, capsys):
    """A rollout in a linked day folder is skipped (rollout_is_link, with the folder's manual
    step), never written through; the apply engine's guard refuses a plan that names it."""
    home = HomeBuilder(tmp_path / "home").provider_config("proxy")
    thread = home.thread(provider="openai")
    real = tmp_path / "real-day"
    os.replace(thread.path.parent, real)
    os.symlink(real, thread.path.parent)
    before = (real / thread.path.name).read_bytes()
    assert apply_provider(home) == csr.EXIT_OK
    assert "skipped  %s: its rollout is a symbolic link" % thread.id in capsys.readouterr().out
    assert (real / thread.path.name).read_bytes() == before
    assert csr.main(["diagnose", "--codex-home", str(home.root), "--json"]) == csr.EXIT_FINDINGS
    doc = json.loads(capsys.readouterr().out)
    entry = next(t for t in doc["threads"] if t["id"] == thread.id)
    step = entry["evidence"]["rollout_is_link"]["manual_step"]
    assert step.startswith("replace the linked folder") and str(thread.path.parent) in step, step
    with pytest.raises(csr.RefusedError, match="through a symlink"):
        csr.check_inside_home(Path(thread.path), Path(home.root).resolve())


def _guard_verdict(path, home, verified=None):
    try:
        csr.check_inside_home(path, home, verified)
    except csr.RefusedError as exc:
        return str(exc)
    return "ok"


def test_the_path_guard_gives_each_path_its_own_verdict_with_walked_folders_remembered(tmp_path, monkeypatch):
    """check_plan_paths walks each folder once for all the rollouts in it; a path's verdict is
    the one it gets alone, whatever was checked before it and in whatever order."""
    home = (tmp_path / "home").resolve()
    days = home / "sessions" / "2026" / "09"
    for day in ("21", "23"):
        (days / day).mkdir(parents=True)
        (days / day / "rollout-a.jsonl").write_text("x")
        (days / day / "rollout-b.jsonl").write_text("x")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "day").mkdir(parents=True)
    (elsewhere / "day" / "rollout-c.jsonl").write_text("x")
    (elsewhere / "archive").mkdir()
    (elsewhere / "archive" / "rollout-d.jsonl").write_text("x")
    os.symlink(elsewhere / "day", days / "22")  # a linked day folder: refused
    os.symlink(elsewhere / "archive", home / "archived_sessions")  # a linked top folder: followed
    os.symlink(days / "21" / "rollout-a.jsonl", days / "21" / "rollout-link.jsonl")
    (days / "21" / "rollout-dir.jsonl").mkdir()
    paths = [days / "21" / "rollout-a.jsonl", days / "21" / "rollout-b.jsonl",
             days / "22" / "rollout-c.jsonl", days / "21" / "rollout-link.jsonl",
             days / "21" / "rollout-dir.jsonl", days / "23" / "rollout-new.jsonl",
             home / "archived_sessions" / "rollout-d.jsonl", home / "session_index.jsonl",
             tmp_path / "outside.jsonl", days / "21" / ".." / ".." / ".." / ".." / ".." / "escape.jsonl",
             days / "21", days / "22"]
    alone = {str(p): _guard_verdict(p, home) for p in paths}
    assert alone[str(paths[0])] == alone[str(paths[6])] == alone[str(paths[5])] == "ok"
    assert "through a symlink" in alone[str(paths[2])] and "through a symlink" in alone[str(paths[3])]
    assert "not a regular file" in alone[str(paths[4])] and "not a regular file" in alone[str(paths[10])]
    assert "outside CODEX_HOME" in alone[str(paths[8])] and "outside CODEX_HOME" in alone[str(paths[9])]
    rnd = random.Random(3)
    for _ in range(30):
        order = paths[:]
        rnd.shuffle(order)
        verified = set()
        assert {str(p): _guard_verdict(p, home, verified) for p in order} == alone
    looked_at = []
    real_is_link = csr._is_link_for_guard
    monkeypatch.setattr(csr, "_is_link_for_guard",
                        lambda p, path, home: looked_at.append(p) or real_is_link(p, path, home))
    verified = set()
    for n in range(50):
        assert _guard_verdict(days / "23" / ("rollout-%d.jsonl" % n), home, verified) == "ok"
    # Each file, then its three folders up to sessions/ once: not 50 walks of four.
    assert len(looked_at) == 50 + 4, looked_at


def test_the_path_guard_refuses_a_path_it_cannot_look_at(tmp_path):
    """A name too long to look up (or a folder it may not read) is neither a link nor absent:
    the guard cannot say the write is safe, so it refuses, before anything is written, in one
    line (not an OSError from deep in the apply, and not a pass)."""
    home = (tmp_path / "home").resolve()
    (home / "sessions" / "2026").mkdir(parents=True)
    too_long = home / "sessions" / "2026" / ("x" * 300 + ".jsonl")
    verdict = _guard_verdict(too_long, home)
    assert "cannot be checked" in verdict and "name too long" in verdict.lower(), verdict
    deeper = home / "sessions" / ("y" * 300) / "rollout.jsonl"
    assert "cannot be checked" in _guard_verdict(deeper, home, set())


def test_the_path_guard_ends_at_the_file_systems_root(tmp_path):
    """With the home at / a path spelled with two leading slashes walks up to "//", whose parent
    is itself: the walk ends there (it looped for ever)."""
    code = ("import sys; sys.path.insert(0, %r); import codex_session_recovery as csr; "
            "from pathlib import Path\n"
            "for path in ('//x/y', '//', '/x/y'):\n"
            "    try:\n"
            "        csr.check_inside_home(Path(path), Path('/'), set())\n"
            "    except csr.RefusedError as exc:\n"
            "        print(exc)\n"
            "print('done')\n" % str(Path(csr.__file__).parent))
    result = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, timeout=10)
    assert result.returncode == 0 and result.stdout.decode().splitlines()[-1] == "done", result


def test_symlinked_home_itself_is_allowed(switched, tmp_path, capsys):
    home, _ = switched
    link = tmp_path / "link-to-home"
    os.symlink(home.root, link)
    assert csr.main(["repair-provider", "--codex-home", str(link), "--from", "openai", "--apply"]) == csr.EXIT_OK


def test_second_copy_of_the_tool_refuses(switched, capsys):
    home, _ = switched
    with csr.ToolLock(home.root):
        result = run_script("repair-provider", "--codex-home", str(home.root), "--from", "openai", "--apply")
    assert result.returncode == csr.EXIT_REFUSED
    assert b"another codex-session-recovery run is writing to this home" in result.stderr
    assert apply_provider(home) == csr.EXIT_OK


SECRET_NAMES = ("auth.json", "auth.json.lock", "auth.lock", ".credentials.json", "cookies.sqlite")


@pytest.fixture
def audited(monkeypatch):
    """Records every open() and file-moving call the process makes."""
    events = []

    def hook(event, args):
        if event in ("open", "os.rename", "os.replace", "os.remove", "os.unlink", "os.mkdir", "os.chmod",
                     "os.utime", "shutil.copyfile", "os.rmdir", "sqlite3.connect"):
            events.append((event, args))

    if not getattr(sys, "_csr_audit_installed", False):
        sys.addaudithook(lambda e, a: [f(e, a) for f in list(_HOOKS)])
        sys._csr_audit_installed = True
    _HOOKS.append(hook)
    yield events
    _HOOKS.remove(hook)


_HOOKS = []


def _paths(events):
    for event, args in events:
        if not args:
            continue
        first = args[0]
        if isinstance(first, (str, bytes, os.PathLike)):
            yield event, os.fsdecode(first), args
        if event in ("os.rename", "os.replace", "shutil.copyfile") and len(args) > 1:
            yield event, os.fsdecode(args[1]), args


def _writes(events):
    for event, path, args in _paths(events):
        if event == "open":
            mode = args[1] if len(args) > 1 else "r"
            flags = args[2] if len(args) > 2 else 0
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or \
                      (isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
            if writing:
                yield path
        elif event == "sqlite3.connect":
            if "mode=ro" not in path and path != ":memory:":
                yield path
        else:
            yield path


def test_credentials_are_never_opened_and_writes_stay_in_the_home(tmp_path, capsys, audited):
    home = HomeBuilder(tmp_path / "home", "0.169.0").provider_config("proxy")
    for name in SECRET_NAMES:
        (home.root / name).write_text('{"OPENAI_API_KEY": "sk-secret"}')
    home.thread(provider="openai")
    home.thread(provider="proxy", row_overrides={"preview": "", "first_user_message": ""})
    home.index([{"id": "019a0000-0000-7000-8000-00000000dead", "thread_name": "x", "updated_at": "t"}])
    (home.root / ".codex-global-state.json").write_text(json.dumps({"electron-persisted-atom-state": {
        "sidebar-collapsed-groups": {"/a": True}}}))
    audited.clear()
    root = str(home.root)
    commands = [["diagnose"], ["diagnose", "--verbose"]]
    for command in ("repair-provider", "repair-user-events", "repair-ui-state", "rebuild-index"):
        extra = ["--from", "openai"] if command == "repair-provider" else []
        commands += [[command, *extra], [command, *extra, "--apply"]]
    commands += [["restore", "--list"], ["restore", "--latest", "--apply", "--force"]]
    for argv in commands:
        code = csr.main([*argv, "--codex-home", root, "--json"])
        # Each dry run has something to do; each --apply does it; restore lists or puts back.
        expected = csr.EXIT_OK if "--apply" in argv or argv[0] == "restore" else csr.EXIT_FINDINGS
        assert code == expected, (argv, code, capsys.readouterr().err)
    capsys.readouterr()
    opened = [path for _event, path, _ in _paths(audited)]
    assert not [p for p in opened if os.path.basename(p) in SECRET_NAMES]
    temp_root = os.path.realpath(os.environ.get("TMPDIR", "/tmp")) if os.name == "posix" else None
    outside = [p for p in _writes(audited)
               if not (os.path.realpath(p) + os.sep).startswith(os.path.realpath(root) + os.sep)
               and not p.startswith("file:") and not os.path.realpath(p).startswith(
                   os.path.join(temp_root or "", "csr-read-"))]
    assert outside == []
    assert len(opened) > 50  # the hook saw the commands' file traffic


def test_backups_are_private_and_keep_modes(switched, capsys):
    home, threads = switched
    os.chmod(threads[0].path, 0o640)
    assert apply_provider(home) == csr.EXIT_OK
    assert threads[0].path.stat().st_mode & 0o777 == 0o640
    backups = home.root / "recovery-backups"
    folder = next(p for p in backups.iterdir() if p.is_dir())
    if os.name == "posix":
        assert backups.stat().st_mode & 0o777 == 0o700
        assert folder.stat().st_mode & 0o777 == 0o700
    manifest = json.loads((folder / "manifest.json").read_text())
    entry = next(e for e in manifest["entries"] if e["path"].endswith(threads[0].path.name))
    assert entry["mode"] == 0o640


HOLDER = r"""
import os, sys
reader = os.open(sys.argv[1], os.O_RDONLY)
writer = os.open(sys.argv[2], os.O_WRONLY | os.O_APPEND)
print(reader, writer, flush=True)
sys.stdin.readline()
os.close(reader)
os.close(writer)
print("closed", flush=True)
sys.stdin.readline()
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/fdinfo"), reason="needs Linux /proc")
def test_a_descriptor_closed_while_it_is_looked_at_is_no_writer(tmp_path):
    """Another process's descriptor is found in /proc/PID/fd, then its flags are read from
    /proc/PID/fdinfo: a reader that closes the file in between (a second copy of this tool
    reading rollout heads) was counted as a writer, so an apply left that rollout alone as
    "a live session". A descriptor whose flags cannot be read while it is open still counts."""
    read, written = tmp_path / "read.jsonl", tmp_path / "written.jsonl"
    read.write_bytes(b"{}\n")
    written.write_bytes(b"{}\n")
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(read), str(written)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        reader, writer = child.stdout.readline().split()
        links = ["/proc/%d/fd/%s" % (child.pid, fd) for fd in (reader, writer)]
        assert [csr.descriptor_writes(link) for link in links] == [False, True]
        assert set(csr.open_elsewhere(tmp_path)) == {os.path.realpath(str(written))}
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "closed"
        assert [csr.descriptor_writes(link) for link in links] == [False, False]
        assert csr.open_elsewhere(tmp_path) == {}
    finally:
        child.kill()
        child.wait()
