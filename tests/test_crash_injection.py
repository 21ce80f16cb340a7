"""Crash injection: SIGKILL the real script at every write point, at every visit of it.

For each repair with something to do, and for `restore --latest --apply`, and for each name in
`csr.WRITE_POINTS`, the script runs as a subprocess with
CODEX_SESSION_RECOVERY_FAULT=<point>:<N>:kill for N = 1 .. (visits that occur in a full run).
After each kill:

* every file of the home (recovery-backups/ and *-shm aside; state DBs compared by iterdump with
  their -wal folded in, other files by SHA-256) is exactly "before" or exactly "after" (a
  reference home where the same command ran fully), or else `restore --latest --apply` (no override)
  (for a killed restore: the undo backup it named) returns it to "before";
* no conversation line is lost: every line of every original rollout is present, parsed-equal
  modulo the repaired provider fields, in the rollout the user is left with, after the kill and
  after any restore.

A point a command never reaches is run once to prove it (the run completes unharmed) and is
counted as not applicable, never as passed. The figures are printed at the end of the session.

Two concurrency checks close the file: a live writer appending to a rollout while
repair-provider runs, and two copies of the tool applying to one home at once.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest

import codex_session_recovery as csr
from homes import HomeBuilder, db_dump, run_captured, run_script, script_env

pytestmark = pytest.mark.crash

SCRIPT = Path(csr.__file__).resolve()
KILLED = -getattr(signal, "SIGKILL", signal.SIGTERM)
HOME_TOKEN = "<HOME>"

if os.name != "posix":  # pragma: no cover - SIGKILL semantics
    pytest.skip("crash injection uses SIGKILL", allow_module_level=True)


# ---------------------------------------------------------------------------------------------
# Figures for the summary
# ---------------------------------------------------------------------------------------------


class Tally:
    def __init__(self) -> None:
        self.cases = 0               # kill runs tried
        self.killed = 0              # runs that really died at the point
        self.survived = 0            # kills after which the home was before/after, or restored to before
        self.states: collections.Counter = collections.Counter()
        self.points_exercised = 0    # (command, point) pairs reached at least once
        self.points_na: List[str] = []
        self.bytes_lost = 0
        self.lines_lost = 0
        self.debris = 0
        self.failures: List[str] = []
        self.by_command: Dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.soak: List[str] = []
        self.random: List[str] = []

    def render(self) -> str:
        lines = ["", "crash-injection summary",
                 "  kill runs tried:         %d" % self.cases,
                 "  killed at the point:     %d" % self.killed,
                 "  survived:                %d" % self.survived,
                 "  left as before/after/restored-to-before: %d/%d/%d" % (
                     self.states["before"], self.states["after"], self.states["restored"]),
                 "  (command, point) pairs exercised: %d; not applicable: %d" % (
                     self.points_exercised, len(self.points_na)),
                 "  conversation lines lost: %d; bytes lost: %d" % (self.lines_lost, self.bytes_lost),
                 "  kills that left a temp file behind (ignored above): %d" % self.debris]
        for command, counts in sorted(self.by_command.items()):
            lines.append("  %-20s %s" % (command, ", ".join("%s %d" % kv for kv in sorted(counts.items()))))
        if self.points_na:
            lines.append("  not applicable: %s" % ", ".join(self.points_na))
        lines.extend("  " + line for line in self.soak + self.random)
        for failure in self.failures:
            lines.append("  FAILED: %s" % failure)
        return "\n".join(lines)


@pytest.fixture(scope="session")
def tally(request):
    figures = Tally()
    yield figures
    if not figures.cases and not figures.points_na and not figures.soak and not figures.random:
        return
    text = figures.render()
    capman = request.config.pluginmanager.getplugin("capturemanager")
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    with (capman.global_and_fixture_disabled() if capman else contextlib.nullcontext()):
        if reporter is not None:
            for line in text.splitlines():
                reporter.write_line(line)
        else:  # pragma: no cover
            print(text)


# ---------------------------------------------------------------------------------------------
# Snapshots
# ---------------------------------------------------------------------------------------------


def dump_db(path: Path, root: Path) -> Tuple[str, ...]:
    """iterdump of a private copy (DB, -wal, -journal), so a read never checkpoints the home."""
    folder = Path(tempfile.mkdtemp(prefix="csr-crash-dump-"))
    try:
        for suffix in ("", "-wal", "-journal"):
            source = Path(str(path) + suffix)
            if source.exists():
                shutil.copyfile(str(source), str(folder / (path.name + suffix)))
        return tuple(line.replace(str(root), HOME_TOKEN) for line in db_dump(folder / path.name))
    finally:
        shutil.rmtree(str(folder), ignore_errors=True)


def snapshot(root: Path) -> Dict[str, Any]:
    """The home as the user sees it: DBs by rows, other files by SHA-256."""
    state: Dict[str, Any] = {}
    for folder, dirs, files in os.walk(str(root)):
        dirs[:] = [d for d in dirs if d != csr.BACKUP_DIR_NAME]
        for name in files:
            if name.endswith(("-shm", "-wal", "-journal")) or TEMP_MARK in name:
                continue  # temp files are debris, counted on their own (see temp_debris)
            path = Path(folder) / name
            rel = str(path.relative_to(root))
            if name.endswith(".sqlite"):
                try:
                    state[rel] = ("db", dump_db(path, root))
                except sqlite3.DatabaseError:  # a damaged DB (rebuild-db's case): its bytes are what counts
                    state[rel] = ("sha256", hashlib.sha256(path.read_bytes()).hexdigest())
            else:
                state[rel] = ("sha256", hashlib.sha256(path.read_bytes()).hexdigest())
    return state


TEMP_MARK = ".csr-tmp-"


def temp_debris(root: Path) -> List[str]:
    """The tool's temp files left in the home (a kill between writing one and renaming it)."""
    found = []
    for folder, dirs, files in os.walk(str(root)):
        dirs[:] = [d for d in dirs if d != csr.BACKUP_DIR_NAME]
        found += [str((Path(folder) / n).relative_to(root)) for n in files if TEMP_MARK in n]
    return sorted(found)


def describe_difference(a: Dict[str, Any], b: Dict[str, Any]) -> List[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def rollout_files(root: Path) -> Dict[str, bytes]:
    found = {}
    for top in ("sessions", "archived_sessions"):
        for path in sorted((root / top).rglob("rollout-*.jsonl")) if (root / top).is_dir() else []:
            found[str(path.relative_to(root))] = path.read_bytes()
    return found


def normalise_line(raw: bytes) -> str:
    """A rollout line with the fields a repair may change (provider, folder) blanked out; a line
    that is not JSON (a torn last line) must come through byte for byte."""
    try:
        record = json.loads(raw)
    except ValueError:
        return "raw:" + raw.rstrip(b"\n").hex()
    payload = record.get("payload") if isinstance(record, dict) else None
    if isinstance(payload, dict):
        if record.get("type") == "session_meta":
            payload["model_provider"] = None
        if record.get("type") in ("session_meta", "turn_context"):
            payload["cwd"] = None
        settings = payload.get("thread_settings")
        if payload.get("type") == "thread_settings_applied" and isinstance(settings, dict):
            settings["model_provider_id"] = None
    return json.dumps(record, sort_keys=True)


def lost_lines(original: Dict[str, bytes], root: Path) -> Tuple[int, int, List[str]]:
    """(lines, bytes, where) of original conversation lines missing from the home's rollouts."""
    now = rollout_files(root)
    lines = size = 0
    where = []
    for rel, data in original.items():
        present = collections.Counter(normalise_line(l) for l in now.get(rel, b"").splitlines() if l.strip())
        for raw in data.splitlines(keepends=True):
            if not raw.strip():
                continue
            key = normalise_line(raw)
            if present[key] > 0:
                present[key] -= 1
            else:
                lines += 1
                size += len(raw)
                where.append(rel)
    return lines, size, sorted(set(where))


# ---------------------------------------------------------------------------------------------
# The commands under test and their homes
# ---------------------------------------------------------------------------------------------


def build_provider_home(root: Path) -> None:
    """0.169.0, three threads under openai (one and several turns: several projection rows) and
    one under the active provider; the paginated-history projection is present. One moved
    rollout ends in a torn last line (a crash mid-append), which the repair carries verbatim."""
    home = HomeBuilder(root, "0.169.0").provider_config("proxy")
    home.thread(provider="openai", turns=2)
    torn = home.thread(provider="openai", turns=3)
    with open(str(torn.path), "ab") as handle:
        handle.write(b'{"timestamp":"2026-09-21T00:00:09.000Z","type":"response_item","payload":{"type":"mess')
    home.thread(provider="openai")
    home.thread(provider="proxy")


def build_user_events_home(root: Path) -> None:
    home = HomeBuilder(root, "0.120.0")
    for n in range(3):
        home.thread(user_text="lost prompt %d" % n, row_overrides={"first_user_message": "", "title": ""})
    home.thread()


def build_ui_state_home(root: Path) -> None:
    home = HomeBuilder(root, "0.169.0")
    home.thread()
    (root / ".codex-global-state.json").write_text(json.dumps({
        "electron-saved-workspace-roots": ["/home/ana/shop"],
        "electron-persisted-atom-state": {
            "sidebar-collapsed-groups": {"/home/ana/shop": True},
            "sidebar-workspace-filter-v2": "/home/ana/shop",
            "thread-sort-key": "created_at",
            "prompt-history": ["kept"],
        }}, indent=2) + "\n")


def build_index_home(root: Path) -> None:
    home = HomeBuilder(root, "0.169.0")
    named = home.thread()
    home.thread(row_overrides={"name": "from the db"})
    home.index([
        {"id": named.id, "thread_name": "checkout bug", "updated_at": "2026-10-01T00:00:00Z"},
        {"id": "019a0000-0000-7000-8000-00000000dead", "thread_name": "gone", "updated_at": "2026-10-02T00:00:00Z"},
    ])
    with open(str(root / "session_index.jsonl"), "ab") as handle:
        handle.write(b"garbage\n")


def build_reindex_home(root: Path) -> None:
    """Rollouts with no row, a row with a stale path, a row whose archived flag is wrong."""
    home = HomeBuilder(root, "0.169.0")
    home.thread()
    home.thread(row=False)
    home.thread(row=False, archived=True)
    home.thread(row_overrides={"archived": 1, "archived_at": 1790000000})
    moved = home.thread()
    target = moved.path.parent.parent / moved.path.name
    os.replace(str(moved.path), str(target))
    pin_mtimes(root)


def pin_mtimes(root: Path) -> None:
    """Rows reindex builds take updated_at from the file's mtime: pin it, so two homes built
    apart compare equal."""
    for folder, _dirs, files in os.walk(str(root)):
        for name in files:
            if name.startswith("rollout-"):
                os.utime(os.path.join(folder, name), (1790000000, 1790000000))


def build_rebuild_db_home(root: Path) -> None:
    """A state DB Codex cannot read, and a thread name only the index will keep."""
    home = HomeBuilder(root, "0.169.0")
    home.thread()
    for suffix in ("-wal", "-shm"):
        extra = Path(str(home.db_path) + suffix)
        if extra.exists():
            extra.unlink()
    home.db_path.write_bytes(b"not a database " * 300)


def build_restore_home(root: Path) -> None:
    """A home right after a full repair-provider --apply: restore has one backup to put back."""
    build_provider_home(root)
    code, _out, err = run_in_process(["repair-provider", "--codex-home", str(root), "--from", "openai", "--apply"])
    assert code == csr.EXIT_OK, err


def other_home_of(root: Path) -> Path:
    return root.parent / "machine-a"


def build_import_home(root: Path) -> None:
    """Another machine's home beside this one (several turns: several projection rows; one
    archived; one name), and this home with its own thread under another provider."""
    other = HomeBuilder(other_home_of(root), "0.169.0")
    named = other.thread(turns=2)
    other.thread(turns=3)
    other.thread(archived=True)
    other.index([{"id": named.id, "thread_name": "checkout bug", "updated_at": "2026-10-01T00:00:00Z"}])
    pin_mtimes(other.root)
    home = HomeBuilder(root, "0.169.0").provider_config("proxy")
    home.thread(provider="proxy")


def build_remap_home(root: Path) -> None:
    home = HomeBuilder(root, "0.169.0")
    home.thread(cwd="/home/ana/src/shop", turns=2)
    home.thread(cwd="/home/ana/src/shop/api", turns=3)
    home.thread(cwd="/home/ana/src/shopfront")
    (root / ".codex-global-state.json").write_text(json.dumps({
        "electron-saved-workspace-roots": ["/home/ana/src/shop"]}, indent=2) + "\n")


class Command:
    def __init__(self, name: str, build: Callable[[Path], None], argv: List[str]) -> None:
        self.name, self.build, self.argv = name, build, argv

    def args(self, root: Path) -> List[str]:
        argv = [self.argv[0], "--codex-home", str(root), *self.argv[1:]]
        return [str(other_home_of(root)) if a == "{other}" else a for a in argv]


COMMANDS = [
    Command("repair-provider", build_provider_home, ["repair-provider", "--from", "openai", "--apply"]),
    Command("repair-user-events", build_user_events_home, ["repair-user-events", "--apply"]),
    Command("repair-ui-state", build_ui_state_home, ["repair-ui-state", "--apply"]),
    Command("rebuild-index", build_index_home, ["rebuild-index", "--apply"]),
    Command("reindex", build_reindex_home, ["reindex", "--apply"]),
    Command("rebuild-db", build_rebuild_db_home, ["rebuild-db", "--apply"]),
    Command("import", build_import_home, ["import", "--from", "{other}", "--to", "auto", "--apply"]),
    Command("remap-cwd", build_remap_home, ["remap-cwd", "--from", "/home/ana/src/shop", "--to", "/srv/shop", "--apply"]),
    Command("restore", build_restore_home, ["restore", "--latest", "--apply"]),
]


def run_in_process(argv: List[str], count: Optional[collections.Counter] = None) -> Tuple[int, str, str]:
    """The tool in this process (homes.run_captured); with `count`, every write point visited is
    counted instead of being armed."""
    original = csr._fault_point
    if count is not None:
        csr._fault_point = lambda name: count.update([name])  # type: ignore[assignment]
    try:
        return run_captured(*argv)
    finally:
        csr._fault_point = original  # type: ignore[assignment]


class Reference:
    """For one command: the write-point visits of a full run and the home it leaves."""

    def __init__(self, command: Command, base: Path) -> None:
        root = base / "home"
        command.build(root)
        self.before = snapshot(root)
        self.visits: collections.Counter = collections.Counter()
        code, _out, err = run_in_process(command.args(root), self.visits)
        assert code == csr.EXIT_OK, (command.name, err)
        self.after = snapshot(root)
        assert self.after != self.before, "%s changed nothing: the reference home has nothing to do" % command.name


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    cache: Dict[str, Reference] = {}

    def get(command: Command) -> Reference:
        if command.name not in cache:
            cache[command.name] = Reference(command, tmp_path_factory.mktemp("ref-" + command.name))
        return cache[command.name]

    return get


def new_backups(root: Path, known: set) -> List[Path]:
    folder = root / csr.BACKUP_DIR_NAME
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name not in known)


# ---------------------------------------------------------------------------------------------
# The kill matrix
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("point", csr.WRITE_POINTS)
@pytest.mark.parametrize("command", COMMANDS, ids=[c.name for c in COMMANDS])
def test_kill_at_every_write_point(command, point, references, tally, tmp_path):
    reference = references(command)
    visits = reference.visits[point]
    if visits == 0:
        # Prove it: armed at visit 1, the script must run to the end unharmed.
        root = tmp_path / "na" / "home"
        command.build(root)
        done = run_script(*command.args(root), fault="%s:1:kill" % point)
        assert done.returncode == csr.EXIT_OK, (done.returncode, done.stderr.decode()[-2000:])
        assert snapshot(root) == reference.after
        tally.points_na.append("%s@%s" % (command.name, point))
        tally.by_command[command.name]["n/a"] += 1
        pytest.skip("%s never reaches %s: not applicable" % (command.name, point))

    tally.points_exercised += 1
    problems = []
    for n in range(1, visits + 1):
        root = tmp_path / ("visit-%d" % n) / "home"
        command.build(root)
        before = snapshot(root)
        # Normalised snapshots of different roots compare equal: the reference holds for this root.
        assert before == reference.before
        originals = rollout_files(root)
        known = {p.name for p in new_backups(root, set())}
        tally.cases += 1
        tally.by_command[command.name]["runs"] += 1
        done = run_script(*command.args(root), fault="%s:%d:kill" % (point, n))
        label = "%s %s:%d" % (command.name, point, n)
        if done.returncode != KILLED:
            problems.append("%s: expected SIGKILL, got exit %s: %s" % (label, done.returncode,
                                                                      done.stderr.decode()[-500:]))
            continue
        tally.killed += 1

        lines, size, where = lost_lines(originals, root)
        tally.debris += bool(temp_debris(root))
        state = snapshot(root)
        if state == before:
            outcome = "before"
        elif state == reference.after:
            outcome = "after"
        else:
            outcome = "restored"
            made = new_backups(root, known)
            if command.name == "restore":
                named = [b for b in made if (b / "manifest.json").is_file()]
                argv = ["restore", "--codex-home", str(root), str(named[-1]) if named else "--latest", "--apply"]
            else:
                # No override: the journal tells the dead run's own writes from anyone else's.
                argv = ["restore", "--codex-home", str(root), "--latest", "--apply"]
            fixed = run_script(*argv)
            after_restore = snapshot(root)
            more_lines, more_size, more_where = lost_lines(originals, root)
            lines, size, where = lines + more_lines, size + more_size, where + more_where
            if fixed.returncode != csr.EXIT_OK or after_restore != before:
                problems.append("%s: left neither before nor after (%s); restore exit %s, still differs: %s; %s" % (
                    label, ", ".join(describe_difference(state, before)[:4]), fixed.returncode,
                    ", ".join(describe_difference(after_restore, before)[:4]),
                    fixed.stderr.decode()[-300:]))
                outcome = "broken"
        tally.states[outcome] += 1
        tally.by_command[command.name][outcome] += 1
        tally.lines_lost += lines
        tally.bytes_lost += size
        if size:
            problems.append("%s: %d conversation line(s), %d bytes lost in %s" % (label, lines, size, where))
        if outcome != "broken" and not size:
            tally.survived += 1
    tally.failures.extend(problems)
    assert not problems, "\n".join(problems)


def test_reference_runs_visit_every_write_point_somewhere(references):
    """Every write point the script declares is reached by at least one command here; a point
    nothing reaches would be a point this suite never proves."""
    reached = set()
    for command in COMMANDS:
        reached |= {p for p, n in references(command).visits.items() if n}
    assert set(csr.WRITE_POINTS) <= reached, sorted(set(csr.WRITE_POINTS) - reached)


# ---------------------------------------------------------------------------------------------
# A live writer appending while repair-provider runs
# ---------------------------------------------------------------------------------------------

APPENDER = r"""
import json, os, sys, time
path, stop, ready, mode = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
n = 0
handle = open(path, "ab") if mode == "held" else None
def line(n):
    return (json.dumps({"timestamp": "2026-09-21T00:00:00.000Z", "type": "event_msg",
                        "payload": {"type": "agent_message", "message": "live %d" % n}},
                       separators=(",", ":")) + "\n").encode()
while not os.path.exists(stop):
    data = line(n)
    if handle is None:
        with open(path, "ab") as h:
            h.write(data)
    else:
        handle.write(data)
        handle.flush()
    n += 1
    if n == 20:
        open(ready, "w").close()
    time.sleep(0.003)
print(n, flush=True)
"""


def _appended_lines(data: bytes) -> List[int]:
    found = []
    for raw in data.splitlines():
        if b'"live ' in raw:
            found.append(int(json.loads(raw)["payload"]["message"].split()[1]))
    return found


@pytest.mark.parametrize("mode, force", [("reopened", False), ("held", True)],
                         ids=["writer-reopens-each-line", "writer-holds-the-file-open-forced"])
def test_appends_during_repair_survive(tmp_path, mode, force):
    """A writer appends a line every ~3 ms to one rollout for the whole run. Every appended line
    must survive in that rollout, and the repair of that file must have been done before the
    appends began or skipped and reported; the other threads are repaired."""
    root = tmp_path / "home"
    home = HomeBuilder(root, "0.169.0").provider_config("proxy")
    threads = [home.thread(provider="openai") for _ in range(30)]
    target = threads[len(threads) // 2]
    original = target.path.read_bytes()
    stop, ready = tmp_path / "stop", tmp_path / "ready"
    writer = subprocess.Popen([sys.executable, "-c", APPENDER, str(target.path), str(stop), str(ready), mode],
                              stdout=subprocess.PIPE)
    try:
        deadline = time.time() + 30
        while not ready.exists() and time.time() < deadline:
            time.sleep(0.01)
        argv = ["repair-provider", "--codex-home", str(root), "--from", "openai", "--apply", "--json"]
        done = run_script(*argv + (["--force"] if force else []), timeout=120)
        time.sleep(0.05)
    finally:
        stop.touch()
        written = int(writer.communicate(timeout=30)[0].strip() or 0)
    err = done.stderr.decode()
    assert "Traceback" not in err
    final = target.path.read_bytes()
    assert _appended_lines(final) == list(range(written)), "appended lines were lost"
    lines, size, _ = lost_lines({str(target.path.relative_to(root)): original}, root)
    assert (lines, size) == (0, 0)
    if done.returncode == csr.EXIT_REFUSED:
        assert "Codex is using this home" in err
        return
    assert done.returncode == csr.EXIT_OK, err
    doc = json.loads(done.stdout)
    skipped = {s["thread_id"] for s in doc["skipped"]}
    repaired_first = json.loads(final.splitlines()[0])["payload"]["model_provider"] == "proxy"
    if repaired_first:
        # done before the appends began: impossible here, they began before the run
        pytest.fail("the rollout being appended to was rewritten")
    assert target.id in skipped, doc["skipped"]
    assert final.startswith(original)
    others = [t for t in threads if t is not target]
    assert all(json.loads(t.path.read_bytes().splitlines()[0])["payload"]["model_provider"] == "proxy"
               for t in others)


def test_idle_writer_holding_the_rollout_loses_nothing(tmp_path):
    root = tmp_path / "home"
    home = HomeBuilder(root, "0.169.0").provider_config("proxy")
    target = home.thread(provider="openai")
    home.thread(provider="openai")
    handle = open(str(target.path), "ab")  # an idle Codex session holds its rollout like this
    try:
        done = run_script(*["repair-provider", "--codex-home", str(root), "--from", "openai", "--apply", "--force"])
        assert done.returncode == csr.EXIT_OK, done.stderr.decode()
        handle.write(b'{"timestamp":"t","type":"event_msg","payload":{"type":"agent_message","message":"after"}}\n')
        handle.flush()
    finally:
        handle.close()
    assert b'"message":"after"' in target.path.read_bytes()


def test_append_between_last_check_and_replace_is_not_lost(tmp_path, monkeypatch):
    root = tmp_path / "home"
    home = HomeBuilder(root, "0.169.0").provider_config("proxy")
    target = home.thread(provider="openai")
    appended = b'{"timestamp":"t","type":"event_msg","payload":{"type":"agent_message","message":"late"}}\n'
    real_replace = os.replace

    def racing_replace(src, dst, *args, **kwargs):
        if os.fspath(dst) == str(target.path) and ".csr-tmp-" in os.fspath(src):
            with open(str(target.path), "ab") as h:
                h.write(appended)
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(csr.os, "replace", racing_replace)
    code, _out, err = run_in_process(["repair-provider", "--codex-home", str(root), "--from", "openai", "--apply"])
    monkeypatch.setattr(csr.os, "replace", real_replace)
    assert code == csr.EXIT_OK, err
    assert appended in target.path.read_bytes()


# ---------------------------------------------------------------------------------------------
# Two copies of the tool applying at once
# ---------------------------------------------------------------------------------------------

BARRIER_RUN = r"""
import os, runpy, sys, time
go = sys.argv[1]
sys.argv = sys.argv[2:]
while not os.path.exists(go):
    time.sleep(0.001)
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize("force", [True, False], ids=["forced-so-only-the-tool-lock-guards", "plain"])
def test_two_copies_applying_at_once(tmp_path, force):
    """Both start at one instant (a barrier file). Exactly one applies; the other is refused
    (exit 3) and writes nothing; the home equals one full apply. Either order. With --force the
    running-Codex probe is bypassed and the tool lock alone must keep them apart; without it, the
    probe may see the other copy's open files first, which is a refusal too."""
    reference_root = tmp_path / "ref" / "home"
    _many_threads(reference_root)
    run_in_process(["repair-provider", "--codex-home", str(reference_root), "--from", "openai", "--apply"])
    expected = snapshot(reference_root)
    outcomes = []
    for attempt in range(3):
        root = tmp_path / ("try-%d" % attempt) / "home"
        _many_threads(root)
        go = tmp_path / ("go-%d" % attempt)
        argv = [str(SCRIPT), "repair-provider", "--codex-home", str(root), "--from", "openai", "--apply", "--json"]
        argv += ["--force"] if force else []
        logs = [(tmp_path / ("out-%d-%d" % (attempt, k)), tmp_path / ("err-%d-%d" % (attempt, k))) for k in range(2)]
        procs = []  # Popen, not run_script: the two runs start together, behind BARRIER_RUN
        for out, err in logs:
            with open(str(out), "wb") as o, open(str(err), "wb") as e:
                procs.append(subprocess.Popen([sys.executable, "-c", BARRIER_RUN, str(go), *argv], stdout=o, stderr=e))
        time.sleep(0.5)  # both interpreters up and waiting
        go.touch()
        codes_in_order = [p.wait(timeout=120) for p in procs]
        results = [(code, out.read_text(), err.read_text()) for code, (out, err) in zip(codes_in_order, logs)]
        codes = sorted(r[0] for r in results)
        assert all("Traceback" not in r[2] for r in results), results
        assert snapshot(root) == expected, ("the two runs interleaved", codes, [r[1][-3000:] for r in results])
        backups = [b for b in (root / csr.BACKUP_DIR_NAME).iterdir() if b.is_dir()]
        applied = [json.loads(r[1]) for r in results if r[0] == csr.EXIT_OK]
        outcomes.append(codes)
        if codes == [csr.EXIT_OK, csr.EXIT_REFUSED]:
            loser = next(r for r in results if r[0] == csr.EXIT_REFUSED)
            lock_message = "another codex-session-recovery run is writing to this home"
            assert lock_message in loser[2] or (not force and "Codex is using this home" in loser[2]), loser[2]
            assert len(loser[2].strip().splitlines()) == 1
            assert len(backups) == 1 and applied[0]["applied"] is True
            return
        # The runs did not overlap (one finished before the other took the lock): the second then
        # found nothing left to do or skipped every changed file; never both applying the plan.
        assert codes in ([csr.EXIT_OK, csr.EXIT_OK], [csr.EXIT_OK, csr.EXIT_APPLY_FAILED]), results
        # A run "really applied" when some thread it planned was not skipped (skipped lists
        # threads; changes counts every field of every thread, so the two are not compared).
        real = [d for d in applied if d["applied"] and
                {a.get("thread_id") for a in d["actions"]} - {s.get("thread_id") for s in d["skipped"]}]
        assert len(real) <= 1, applied
    pytest.fail("the two copies never overlapped in 3 attempts: %s" % outcomes)


def _many_threads(root: Path) -> None:
    home = HomeBuilder(root, "0.169.0").provider_config("proxy")
    for _ in range(40):
        home.thread(provider="openai", turns=2)


# ---------------------------------------------------------------------------------------------
# Inside restore: it has no named write point past its own backup, so the kill is placed by an
# audit hook at the N-th file replace or SQLite open of a full restore run.
# ---------------------------------------------------------------------------------------------

AUDIT_KILL = r"""
import os, runpy, signal, sys
event, wanted = sys.argv[1], int(sys.argv[2])
sys.argv = sys.argv[3:]
seen = [0]
def hook(name, args):
    if name == event:
        seen[0] += 1
        if seen[0] == wanted:
            os.kill(os.getpid(), signal.SIGKILL)
sys.addaudithook(hook)
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    sys.stderr.write("\naudit-visits=%d\n" % seen[0])
"""


def _audit_run(event: str, n: int, argv: List[str]) -> subprocess.CompletedProcess:
    """Not run_script: the script runs under AUDIT_KILL's audit hook, a -c program."""
    return subprocess.run([sys.executable, "-c", AUDIT_KILL, event, str(n), str(SCRIPT), *argv],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=script_env(), timeout=60)


@pytest.mark.parametrize("event", ["os.rename", "sqlite3.connect"])
def test_kill_inside_restore(event, tmp_path, tally, references):
    """os.replace() raises the os.rename audit event: every file restore puts back (and each
    manifest write) is a kill point; so is every SQLite open."""
    command = next(c for c in COMMANDS if c.name == "restore")
    reference = references(command)
    probe_root = tmp_path / "probe" / "home"
    command.build(probe_root)
    probe = _audit_run(event, 0, command.args(probe_root))
    assert probe.returncode == csr.EXIT_OK, probe.stderr.decode()[-1000:]
    visits = int(probe.stderr.decode().rsplit("audit-visits=", 1)[1].split()[0])
    assert visits > 0
    problems = []
    for n in range(1, visits + 1):
        root = tmp_path / ("visit-%d" % n) / "home"
        command.build(root)
        before = snapshot(root)
        originals = rollout_files(root)
        known = {p.name for p in new_backups(root, set())}
        tally.cases += 1
        tally.by_command["restore(audit %s)" % event]["runs"] += 1
        done = _audit_run(event, n, command.args(root))
        label = "restore %s:%d" % (event, n)
        if done.returncode != KILLED:
            problems.append("%s: expected SIGKILL, got %s" % (label, done.returncode))
            continue
        tally.killed += 1
        lines, size, where = lost_lines(originals, root)
        tally.debris += bool(temp_debris(root))
        state = snapshot(root)
        outcome = "before" if state == before else "after" if state == reference.after else "restored"
        if outcome == "restored":
            undo = [b for b in new_backups(root, known) if (b / "manifest.json").is_file()]
            fixed = run_script(*["restore", "--codex-home", str(root), str(undo[-1]) if undo else "--latest",
                                "--apply"])
            more = lost_lines(originals, root)
            lines, size, where = lines + more[0], size + more[1], where + more[2]
            if fixed.returncode != csr.EXIT_OK or snapshot(root) != before:
                problems.append("%s: neither before nor after (%s), and the undo backup did not put it back: %s" % (
                    label, ", ".join(describe_difference(state, before)[:4]), fixed.stderr.decode()[-300:]))
                outcome = "broken"
        tally.states[outcome] += 1
        tally.by_command["restore(audit %s)" % event][outcome] += 1
        tally.lines_lost += lines
        tally.bytes_lost += size
        if size:
            problems.append("%s: %d line(s), %d bytes lost in %s" % (label, lines, size, where))
        if outcome != "broken" and not size:
            tally.survived += 1
    tally.failures.extend(problems)
    assert not problems, "\n".join(problems)


def test_no_temp_file_survives_a_kill_and_a_restore(tmp_path):
    command = next(c for c in COMMANDS if c.name == "restore")
    root = tmp_path / "home"
    command.build(root)
    known = {p.name for p in new_backups(root, set())}
    assert _audit_run("os.rename", 2, command.args(root)).returncode == KILLED
    undo = [b for b in new_backups(root, known) if (b / "manifest.json").is_file()]
    assert run_script(*["restore", "--codex-home", str(root), str(undo[-1]), "--apply"]).returncode == 0
    assert temp_debris(root) == []


# ---------------------------------------------------------------------------------------------
# Soak: writers appending to 10 rollouts, opening before, during and after the backup
# ---------------------------------------------------------------------------------------------

SOAK_WRITERS = r"""
import json, os, sys, threading, time
backups, stop, specs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
counts = {}

def started(trigger, path):
    if trigger == "before":
        return True
    if trigger == "copy-begun":  # the tool is writing this rollout's new copy: the replace is near
        folder, name = os.path.split(path)
        return any(n.startswith("." + name + ".csr-tmp-") for n in os.listdir(folder))
    folders = [os.path.join(backups, n) for n in os.listdir(backups)] if os.path.isdir(backups) else []
    folders = [f for f in folders if os.path.isdir(f)]
    if trigger == "backup-begun":
        return bool(folders)
    return any(os.path.exists(os.path.join(f, "manifest.json")) for f in folders)  # backup made

def line(n):
    return (json.dumps({"timestamp": "2026-09-21T00:00:00.000Z", "type": "event_msg",
                        "payload": {"type": "agent_message", "message": "soak %d" % n}},
                       separators=(",", ":")) + "\n").encode()

def writer(spec):
    path, trigger, mode = spec["path"], spec["trigger"], spec["mode"]
    while not started(trigger, path) and not os.path.exists(stop):
        time.sleep(0.0002)
    n, handle = 0, (open(path, "ab") if mode == "held" else None)
    if handle is not None and trigger == "copy-begun":
        # A resumed session opens its rollout at once and writes when its turn produces output.
        time.sleep(0.15)
    while not os.path.exists(stop):
        if handle is None:
            with open(path, "ab") as h:
                h.write(line(n))
        else:
            handle.write(line(n))
            handle.flush()
        n += 1
        time.sleep(0.003)
    counts[path] = n

threads = [threading.Thread(target=writer, args=(s,)) for s in specs]
for t in threads:
    t.start()
open(stop + ".ready", "w").close()
for t in threads:
    t.join()
print(json.dumps(counts), flush=True)
"""


def _soak_lines(data: bytes) -> List[int]:
    return [int(json.loads(raw)["payload"]["message"].split()[1]) for raw in data.splitlines() if b'"soak ' in raw]


def test_soak_writers_opening_before_during_and_after_the_backup(tmp_path, tally):
    """Ten rollouts, each with a writer appending a line every 3 ms for the whole run (held
    open, or reopened per line), started before the run, when its backup folder appears, and
    once the backup is made; 30 other threads give the run length. Every appended line and
    every original line is in the rollout afterwards, in order; each written rollout was
    repaired or reported as skipped."""
    root = tmp_path / "home"
    home = HomeBuilder(root, "0.169.0").provider_config("proxy")
    threads = [home.thread(provider="openai", turns=3) for _ in range(40)]
    targets = threads[::4][:10]
    # Big enough (~4 MB) that writing the new copy takes a while: a writer can open in between.
    bulk = [{"timestamp": "2026-09-21T00:00:00.000Z", "type": "response_item",
             "payload": {"type": "message", "role": "assistant", "content": [{"type": "output_text",
                                                                              "text": "y" * 4000}]}}]
    for thread in targets:
        with open(str(thread.path), "ab") as handle:
            handle.write((json.dumps(bulk[0], separators=(",", ":")) + "\n").encode() * 1000)
    kinds = [("before", "reopened"), ("backup-begun", "held"), ("backup-made", "reopened"), ("copy-begun", "held"),
             ("copy-begun", "reopened")]
    specs = [{"path": str(t.path), "trigger": kinds[n % 5][0], "mode": kinds[n % 5][1]} for n, t in enumerate(targets)]
    originals = rollout_files(root)
    stop = tmp_path / "stop"
    writers = subprocess.Popen([sys.executable, "-c", SOAK_WRITERS, str(root / csr.BACKUP_DIR_NAME), str(stop),
                                json.dumps(specs)], stdout=subprocess.PIPE)
    try:
        deadline = time.time() + 30
        while not Path(str(stop) + ".ready").exists() and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
        done = run_script(*["repair-provider", "--codex-home", str(root), "--from", "openai", "--apply", "--force",
                           "--json"], timeout=180)
        time.sleep(0.1)
    finally:
        stop.touch()
        counts = json.loads(writers.communicate(timeout=60)[0] or b"{}")
    err = done.stderr.decode()
    assert "Traceback" not in err and done.returncode == csr.EXIT_OK, err[-2000:]
    doc = json.loads(done.stdout)
    skipped = {s["thread_id"] for s in doc["skipped"]}
    written = lost = 0
    for thread, spec in zip(targets, specs):
        got = _soak_lines(thread.path.read_bytes())
        wanted = counts.get(spec["path"], 0)
        written += wanted
        lost += len(set(range(wanted)) - set(got))
        assert got == list(range(wanted)), "%s writer (%s): %d of %d lines lost or reordered" % (
            spec["trigger"], spec["mode"], len(set(range(wanted)) - set(got)), wanted)
        first = json.loads(thread.path.read_bytes().splitlines()[0])["payload"]["model_provider"]
        assert first == "proxy" or thread.id in skipped
    lines, size, where = lost_lines(originals, root)
    tally.soak.append("soak: %d writers, %d lines appended during the run, %d lost; %d of 10 rollouts "
                      "skipped as live; %d original lines lost" % (len(specs), written, lost,
                                                                  len(skipped & {t.id for t in targets}), lines))
    assert (lines, size) == (0, 0), where
    others = [t for t in threads if t not in targets]
    assert all(json.loads(t.path.read_bytes().splitlines()[0])["payload"]["model_provider"] == "proxy"
               for t in others)


# ---------------------------------------------------------------------------------------------
# Kills at random moments (not only at named points) on a home with a history DB
# ---------------------------------------------------------------------------------------------

RANDOM_KILLS = int(os.environ.get("CSR_RANDOM_KILLS", "24"))
RANDOM_SEED = int(os.environ.get("CSR_RANDOM_SEED", "1169"))


def build_history_home(root: Path) -> None:
    """0.169.0 with thread_history_1.sqlite: 12 threads of 3 turns under openai, big enough
    that a run lasts long enough to be hit anywhere."""
    home = HomeBuilder(root, "0.169.0").provider_config("proxy")
    filler = [{"timestamp": "2026-09-21T00:00:01.000Z", "type": "response_item",
               "payload": {"type": "function_call_output", "call_id": "c%d" % n, "output": "z" * 20000}}
              for n in range(20)]
    for _ in range(12):
        home.thread(provider="openai", turns=3, extra_lines=filler)
    home.thread(provider="proxy")


def off_line_starts(root: Path) -> int:
    """Projection offsets that are not line starts of the rollout they index."""
    paths = {Path(rel).name[-42:-6]: root / rel for rel in rollout_files(root)}  # by the uuid in the name
    conn = sqlite3.connect(str(root / "thread_history_1.sqlite"))
    try:
        rows = list(conn.execute("SELECT thread_id, rollout_byte_offset FROM thread_turns UNION ALL "
                                 "SELECT thread_id, rollout_end_byte_offset FROM thread_turns UNION ALL "
                                 "SELECT thread_id, next_rollout_byte_offset FROM thread_history_projection_state"))
    finally:
        conn.close()
    starts: Dict[str, set] = {}
    bad = 0
    for thread_id, offset in rows:
        if thread_id not in starts:
            data = paths[thread_id].read_bytes()
            starts[thread_id] = {0} | {i + 1 for i, b in enumerate(data) if b == 0x0A}
        bad += offset not in starts[thread_id]
    return bad


def test_kills_at_random_moments_with_a_history_db(tmp_path, tally):
    """SIGKILL at a random moment of `repair-provider --apply` (seeded; the figures are printed).
    After every kill each rollout is byte for byte its original or its repaired version. Then,
    alternately: `restore --latest --apply` with no override returns the original bytes (DBs by
    content); or the rerun of the same command converges (exit 0, then nothing to do) with every
    history offset on a line start."""
    import random
    rng = random.Random(RANDOM_SEED)
    reference = tmp_path / "ref" / "home"
    build_history_home(reference)
    originals = rollout_files(reference)
    before = snapshot(reference)
    argv = ["repair-provider", "--from", "openai", "--apply"]
    # The reference run also times when the backup folder appears: kills are drawn from a
    # little before that to the end, where the writes are (the start-up reads write nothing).
    # Popen, not run_script: the run is timed while it runs here, and the kills below land
    # in a run still going.
    env = script_env()
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(SCRIPT), argv[0], "--codex-home", str(reference), *argv[1:]],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    writing = None
    while proc.poll() is None:
        if writing is None and (reference / csr.BACKUP_DIR_NAME).exists():
            writing = time.monotonic() - started
        time.sleep(0.002)
    duration = time.monotonic() - started
    assert proc.returncode == csr.EXIT_OK, proc.stderr.read().decode()
    writing = writing if writing is not None else duration / 2
    repaired = rollout_files(reference)
    after = snapshot(reference)
    outcomes: collections.Counter = collections.Counter()
    problems, lines_lost = [], 0
    for n in range(RANDOM_KILLS):
        root = tmp_path / ("kill-%d" % n) / "home"
        build_history_home(root)
        assert snapshot(root) == before
        delay = rng.uniform(writing * 0.8, duration * 1.05)
        proc = subprocess.Popen([sys.executable, str(SCRIPT), argv[0], "--codex-home", str(root), *argv[1:]],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        try:
            proc.wait(timeout=delay)
            outcomes["finished before the kill"] += 1
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
            outcomes["killed"] += 1
        label = "kill %d at %.2fs" % (n, delay)
        for rel, data in rollout_files(root).items():
            if data not in (originals[rel], repaired[rel]):
                problems.append("%s: %s is neither its original nor its repaired bytes" % (label, rel))
        lines, _size, _where = lost_lines(originals, root)
        lines_lost += lines
        state = snapshot(root)
        outcomes["left as before" if state == before else "left as after" if state == after else "left midway"] += 1
        if n % 2 == 0:
            fixed = run_script(*["restore", "--codex-home", str(root), "--latest", "--apply"], timeout=120)
            if state == before and fixed.returncode == csr.EXIT_USAGE:
                outcomes["restore: no backup (killed before it)"] += 1
                continue
            if fixed.returncode != csr.EXIT_OK or snapshot(root) != before:
                problems.append("%s: restore without an override exit %s, differs: %s; %s" % (
                    label, fixed.returncode, describe_difference(snapshot(root), before)[:4],
                    fixed.stderr.decode()[-300:]))
            else:
                outcomes["restore: original bytes, no override"] += 1
        else:
            rerun = run_script(*[argv[0], "--codex-home", str(root), *argv[1:], "--json"], timeout=120)
            again = run_script(*[argv[0], "--codex-home", str(root), "--from", "openai", "--json"], timeout=120)
            misplaced = off_line_starts(root)
            pending = json.loads(again.stdout)["changes"] if again.stdout else None
            if rerun.returncode != csr.EXIT_OK or pending != 0 or misplaced:
                problems.append("%s: rerun exit %s, then %s change(s) pending, %d offset(s) off a line start; %s"
                                % (label, rerun.returncode, pending, misplaced, rerun.stderr.decode()[-300:]))
            elif rollout_files(root) != repaired:
                problems.append("%s: the rerun left rollouts other than the repaired ones" % label)
            else:
                outcomes["rerun: converged, offsets on line starts"] += 1
    tally.random.append("random kills (seed %d, run %.2fs, writes from %.2fs): %d tried; %s; lines lost %d; "
                        "failures %d" % (RANDOM_SEED, duration, writing, RANDOM_KILLS, ", ".join("%s %d" % kv for kv in sorted(outcomes.items())),
        lines_lost, len(problems)))
    tally.failures.extend(problems)
    assert lines_lost == 0
    assert not problems, "\n".join(problems)
