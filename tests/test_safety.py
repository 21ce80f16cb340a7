"""Safety: refusals (one condition at a time), the tool's own lock, credentials never opened,
no write outside CODEX_HOME."""

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import codex_session_recovery as csr
from homes import HomeBuilder, hash_tree


@pytest.fixture
def switched(tmp_path):
    home = HomeBuilder(tmp_path / "home", "0.169.0").provider_config("proxy")
    threads = [home.thread(provider="openai"), home.thread(provider="openai")]
    return home, threads


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


def test_refuses_unknown_schema_unless_forced(switched, capsys):
    home, _ = switched
    conn = sqlite3.connect(str(home.db_path))
    conn.execute("INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time) "
                 "VALUES (999, 'future', '2027-01-01', 1, x'00', 1)")
    conn.commit()
    conn.close()
    before = hash_tree(home.root)
    assert apply_provider(home) == csr.EXIT_REFUSED
    err = capsys.readouterr().err
    assert "schema version 999" in err and "use --force" in err
    assert hash_tree(home.root) == before
    assert apply_provider(home, "--force") == csr.EXIT_OK


def test_refuses_a_rollout_reached_through_a_symlink(switched, tmp_path, capsys):
    home, threads = switched
    outside = tmp_path / "elsewhere.jsonl"
    os.replace(threads[0].path, outside)
    os.symlink(outside, threads[0].path)
    before = outside.read_bytes()
    assert apply_provider(home, "--force") == csr.EXIT_REFUSED
    err = capsys.readouterr().err
    assert "symlink" in err and "This check has no override" in err
    assert outside.read_bytes() == before


def test_refuses_a_symlinked_folder_inside_the_home(tmp_path, capsys):
    home = HomeBuilder(tmp_path / "home").provider_config("proxy")
    thread = home.thread(provider="openai")
    real = tmp_path / "real-day"
    os.replace(thread.path.parent, real)
    os.symlink(real, thread.path.parent)
    assert apply_provider(home) == csr.EXIT_REFUSED
    assert "symlink" in capsys.readouterr().err


def test_symlinked_home_itself_is_allowed(switched, tmp_path, capsys):
    home, _ = switched
    link = tmp_path / "link-to-home"
    os.symlink(home.root, link)
    assert csr.main(["repair-provider", "--codex-home", str(link), "--from", "openai", "--apply"]) == csr.EXIT_OK


def test_second_copy_of_the_tool_refuses(switched, capsys):
    home, _ = switched
    with csr.ToolLock(home.root):
        script = Path(csr.__file__)
        result = subprocess.run([sys.executable, str(script), "repair-provider", "--codex-home", str(home.root),
                                 "--from", "openai", "--apply"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                timeout=60)
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
        assert code in (0, 1), (argv, code, capsys.readouterr().err)
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
