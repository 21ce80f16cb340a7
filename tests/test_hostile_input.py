"""Hostile input: damaged, odd or adversarial homes, each built by code in tmp_path.

Every case runs through `diagnose` and through the repair that would touch the bad thing, as a
dry run and with --apply, and asserts:

* a clear finding (or skip entry) names the problem, or a one-line error goes to stderr, and no
  run ends in a traceback;
* the exit code follows the contract (0 clean/applied, 1 findings/pending, 2 usage, 3 refused,
  4 apply failed);
* no byte of the bad thing is written (SHA-256 before and after; FIFOs are never opened);
* the rest of the run goes on where it safely can: a healthy thread in the same home is still
  reported as hidden by provider, and is repaired by the apply.

A case where the script misbehaves is marked strict-xfail with the reason; the tests around it
still pin what works.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import pytest

import codex_session_recovery as csr
from homes import (HomeBuilder, Thread, add_migration, db_dump, hash_tree, new_thread_id, retype_column, run_captured,
                   run_script, write_jsonl)

SCRIPT = Path(csr.__file__).resolve()
POSIX = os.name == "posix"
ROOT = POSIX and os.geteuid() == 0
ACTIVE = "proxy"
READ_PROBLEMS_KEY = "rollout_unreadable"


# ---------------------------------------------------------------------------------------------
# Running the tool
# ---------------------------------------------------------------------------------------------


class Result:
    def __init__(self, argv: Sequence[str], code: Any, out: str, err: str) -> None:
        self.argv, self.code, self.out, self.err = list(argv), code, out, err
        try:
            self.doc: Optional[Dict[str, Any]] = json.loads(out) if out.strip() else None
        except ValueError:
            self.doc = None

    def __repr__(self) -> str:
        return "Result(%s -> %r)\nstderr: %s" % (" ".join(self.argv[:2]), self.code, self.err[-2000:])


def tool(*argv: str) -> Result:
    """The tool in-process (homes.run_captured), with --json; an exception escaping main() is
    recorded as a traceback."""
    argv = [*argv, "--json"]
    try:
        code, out, err = run_captured(*argv)
    except BaseException:  # noqa: BLE001 - the point is to see it
        return Result(argv, "traceback", "", traceback.format_exc())
    return Result(argv, code, out, err)


def tool_proc(*argv: str, timeout: float = 60, env: Optional[Dict[str, str]] = None) -> Result:
    """The real script in a subprocess (for cases that could block or need another process)."""
    argv = [*argv, "--json"]
    try:
        done = run_script(*argv, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return Result(argv, "timeout", "", "the run did not finish within %ss" % timeout)
    return Result(argv, done.returncode, done.stdout.decode("utf-8", "replace"), done.stderr.decode("utf-8", "replace"))


def assert_clean_exit(result: Result, expected: Iterable[int]) -> None:
    expected = set(expected)
    assert "Traceback" not in result.err, result
    assert result.code in expected, result
    if result.code in (csr.EXIT_USAGE, csr.EXIT_REFUSED, csr.EXIT_APPLY_FAILED):
        lines = [l for l in result.err.splitlines() if not l.startswith("warning: ")]
        assert len(lines) == 1, result
        assert lines[0].split(":", 1)[0] in ("error", "refused", "apply failed"), result
    if result.doc is not None:
        assert result.doc["exit_code"] == result.code, result


def findings(result: Result) -> Dict[str, Dict[str, Any]]:
    return {f["code"]: f for f in (result.doc or {}).get("findings", [])}


def rollout_problems(result: Result) -> Dict[str, int]:
    found = findings(result).get(READ_PROBLEMS_KEY)
    return found["evidence"]["problems"] if found else {}


def thread_reasons(result: Result, thread_id: str) -> Optional[List[str]]:
    for entry in (result.doc or {}).get("threads", []):
        if entry["id"] == thread_id:
            return entry["reasons"]
    return None


def skipped_ids(result: Result) -> List[str]:
    return [s.get("thread_id") or s.get("path") for s in (result.doc or {}).get("skipped", [])]


# ---------------------------------------------------------------------------------------------
# Fingerprints: what "no byte written" means for files, folders, FIFOs and symlinks
# ---------------------------------------------------------------------------------------------


def fingerprint(path: Path) -> Any:
    """A comparable summary of `path` that never opens a FIFO or follows a symlink's target
    for its identity (the target is fingerprinted separately when it matters)."""
    try:
        st = os.lstat(str(path))
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return ("symlink", os.readlink(str(path)))
    if stat.S_ISFIFO(st.st_mode):
        return ("fifo", st.st_ino, st.st_mode)
    if stat.S_ISDIR(st.st_mode):
        return ("dir", tuple(sorted(hash_tree(path, ignore_shm=False).items())))
    digest = hashlib.sha256()
    with open(str(path), "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return ("file", st.st_size, digest.hexdigest())


def home_files(root: Path) -> Dict[str, Any]:
    """Every entry of a home (recovery-backups/ and -shm aside), FIFOs included, none opened."""
    found = {}
    for folder, dirs, files in os.walk(str(root)):
        dirs[:] = [d for d in dirs if d != csr.BACKUP_DIR_NAME]
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            if name.endswith("-shm"):
                continue
            path = Path(folder) / name
            found[str(path.relative_to(root))] = fingerprint(path)
    return found


def logical_home(root: Path) -> Dict[str, Any]:
    """Files by content, state DBs by their rows (a -wal is folded into its DB)."""
    out = {}
    for rel, value in home_files(root).items():
        if rel.endswith(("-wal", "-journal")):
            continue
        path = root / rel
        if rel.endswith(".sqlite") and value and value[0] == "file":
            try:
                out[rel] = ("db", tuple(dump_copy(path)))
                continue
            except sqlite3.DatabaseError:
                pass
        out[rel] = value
    return out


def dump_copy(path: Path) -> List[str]:
    """iterdump of a private copy (DB plus -wal), so reading never checkpoints the home's DB."""
    import tempfile
    folder = Path(tempfile.mkdtemp(prefix="csr-test-dump-"))
    try:
        for suffix in ("", "-wal", "-journal"):
            source = Path(str(path) + suffix)
            if source.exists():
                shutil.copyfile(str(source), str(folder / (path.name + suffix)))
        return db_dump(folder / path.name)
    finally:
        shutil.rmtree(str(folder), ignore_errors=True)


def meta_provider(path: Path) -> Any:
    with open(str(path), "rb") as handle:
        return json.loads(handle.readline())["payload"].get("model_provider")


def row_provider(db: Path, thread_id: str) -> Any:
    conn = sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT model_provider FROM threads WHERE id=?", (thread_id,)).fetchone()
        return row[0] if row else None
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------
# Homes
# ---------------------------------------------------------------------------------------------


def switched(tmp_path: Path, release: str = "0.169.0") -> "Scene":
    """A home whose config makes `proxy` active, with one healthy thread still under openai:
    diagnose must report it hidden by provider, and repair-provider must move it."""
    home = HomeBuilder(tmp_path / "home", release).provider_config(ACTIVE)
    healthy = home.thread(provider="openai", user_text="the healthy thread")
    return Scene(home, healthy)


class Scene:
    def __init__(self, home: HomeBuilder, healthy: Optional[Thread]) -> None:
        self.home = home
        self.root = home.root
        self.healthy = healthy

    def provider_repair(self, *extra: str) -> List[str]:
        return ["repair-provider", "--codex-home", str(self.root), "--from", "openai", *extra]


def exercise(
    scene: Scene,
    bad: Sequence[Path],
    repair: Sequence[str],
    *,
    diag_exit: Iterable[int] = (csr.EXIT_FINDINGS,),
    dry_exit: Iterable[int] = (csr.EXIT_FINDINGS,),
    apply_exit: Iterable[int] = (csr.EXIT_OK,),
    finding: Optional[str] = None,
    problem: Optional[str] = None,
    skipped: Optional[str] = None,
    healthy_repaired: Optional[bool] = None,
    runner: Any = tool,
) -> Dict[str, Result]:
    """diagnose, the repair as a dry run, then with --apply; the common assertions."""
    root = scene.root
    bad_before = {str(p): fingerprint(p) for p in bad}
    home_before = home_files(root)

    diag = runner("diagnose", "--codex-home", str(root))
    assert_clean_exit(diag, diag_exit)
    if finding:
        assert finding in findings(diag), (finding, sorted(findings(diag)))
    if problem:
        assert problem in rollout_problems(diag), rollout_problems(diag)
    if scene.healthy is not None:
        assert thread_reasons(diag, scene.healthy.id) == ["provider_mismatch"], diag.doc and diag.doc.get("threads")
    assert home_files(root) == home_before, "diagnose wrote to the home"

    dry = runner(*repair)
    assert_clean_exit(dry, dry_exit)
    assert home_files(root) == home_before, "the dry run wrote to the home"
    assert not (root / csr.BACKUP_DIR_NAME).exists() or not any(
        p.is_dir() for p in (root / csr.BACKUP_DIR_NAME).iterdir()), "the dry run made a backup"

    applied = runner(*repair, "--apply")
    assert_clean_exit(applied, apply_exit)
    for path, before in bad_before.items():
        assert fingerprint(Path(path)) == before, "a byte of %s was written" % path
    if skipped:
        assert skipped in skipped_ids(applied), (skipped, applied.doc and applied.doc.get("skipped"))
    if healthy_repaired is None:
        healthy_repaired = applied.code == csr.EXIT_OK and repair[0] == "repair-provider"
    if scene.healthy is not None and healthy_repaired:
        assert meta_provider(scene.healthy.path) == ACTIVE
        if scene.home.db_path is not None and scene.home.db_path.exists():
            try:
                assert row_provider(scene.home.db_path, scene.healthy.id) in (ACTIVE, None)
            except sqlite3.DatabaseError:
                pass  # the case damaged the state DB itself
    return {"diagnose": diag, "dry": dry, "apply": applied}


def victim(scene: Scene, **kwargs: Any) -> Thread:
    kwargs.setdefault("provider", "openai")
    kwargs.setdefault("user_text", "the damaged thread")
    return scene.home.thread(**kwargs)


def json_line(record: Dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode("utf-8") + b"\n"


def first_line_end(data: bytes) -> int:
    return data.index(b"\n") + 1


# ---------------------------------------------------------------------------------------------
# Rollout files with damaged bytes
# ---------------------------------------------------------------------------------------------


def only_provider_values_differ(before: bytes, after: bytes) -> List[int]:
    """The numbers of the lines whose provider value changed (openai -> the active one), after
    checking that every other byte is the same: each line is identical, or differs only in
    that value. A torn last fragment, NUL padding and unparsable lines must come out verbatim."""
    old_lines, new_lines = before.split(b"\n"), after.split(b"\n")
    assert len(old_lines) == len(new_lines)
    edited = []
    for number, (old, new) in enumerate(zip(old_lines, new_lines), 1):
        if old == new:
            continue
        assert old.replace(b'"model_provider":"openai"', b'"model_provider":"%s"' % ACTIVE.encode()).replace(
            b'"model_provider_id":"openai"', b'"model_provider_id":"%s"' % ACTIVE.encode()) == new, number
        edited.append(number)
    return edited


TORN_FRAGMENT = b'{"timestamp":"2026-09-21T00:00:00.000Z","type":"event_msg","payload":{"type":"agent_mess'


def repaired_around_damage(tmp_path: Path, damage: Any, problem: str,
                           edited: Sequence[int] = (1, 6)) -> Tuple[Thread, bytes, bytes]:
    """A hidden thread whose rollout carries `damage` outside the lines a provider repair edits:
    diagnose reports the damage (as information), the repair moves the thread, and everything
    but the two provider values comes out byte for byte."""
    scene = switched(tmp_path)
    bad = victim(scene)
    bad.path.write_bytes(damage(bad.path.read_bytes()))
    before = bad.path.read_bytes()
    results = exercise(scene, [], scene.provider_repair(), problem=problem)
    damaged = findings(results["diagnose"])[READ_PROBLEMS_KEY]
    assert damaged["severity"] == "info" and damaged["evidence"]["problems"].get(problem) == 1, damaged
    edit = next(a for a in results["dry"].doc["actions"] if a.get("thread_id") == bad.id and a["kind"] == "rollout_edit")
    assert problem in edit["kept_verbatim"]
    after = bad.path.read_bytes()
    assert only_provider_values_differ(before, after) == list(edited)  # session_meta, thread_settings_applied
    assert meta_provider(bad.path) == ACTIVE and row_provider(scene.home.db_path, bad.id) == ACTIVE
    again = tool(*scene.provider_repair())
    assert (again.code, again.doc["changes"]) == (csr.EXIT_OK, 0)
    return bad, before, after


def test_torn_last_line_is_carried_verbatim(tmp_path):
    """Codex 0.169.0 lists, reads and continues a thread whose last line a crash cut (measured);
    the repair edits its provider lines and keeps the fragment, without a line ending, as it was."""
    _bad, _before, after = repaired_around_damage(tmp_path, lambda data: data + TORN_FRAGMENT, "torn_line")
    assert after.endswith(b"\n" + TORN_FRAGMENT)


def test_nul_padding_at_the_end_is_carried_verbatim(tmp_path):
    _bad, _before, after = repaired_around_damage(tmp_path, lambda data: data + b"\x00" * 4096, "nul_bytes")
    assert after.endswith(b"}\n" + b"\x00" * 4096)


def test_unparsable_middle_line_is_carried_verbatim(tmp_path):
    def damage(data: bytes) -> bytes:
        lines = data.split(b"\n")  # before the first prompt, where diagnose's head scan sees it
        return b"\n".join(lines[:2] + [b'{"timestamp":"2026-09-21T00:00:00.000Z","type":"response_item",'] + lines[2:])
    repaired_around_damage(tmp_path, damage, "bad_json", edited=[1, 7])


def test_a_damaged_line_that_would_be_edited_refuses_the_rollout(tmp_path):
    """The one case where damage blocks: a complete line that names the provider and cannot be
    read may be a line Codex takes the provider from; the rollout is left as it is."""
    scene = switched(tmp_path)
    bad = victim(scene)
    lines = bad.path.read_bytes().split(b"\n")
    broken = (b'{"timestamp":"2026-09-21T00:00:00.000Z","type":"event_msg","payload":{"type":'
              b'"thread_settings_applied","thread_settings":{"model_provider_id":"openai"}')
    bad.path.write_bytes(b"\n".join(lines[:2] + [broken] + lines[2:]))
    results = exercise(scene, [bad.path], scene.provider_repair(), problem="bad_json", skipped=bad.id)
    reason = next(s["reason"] for s in results["dry"].doc["skipped"] if s.get("thread_id") == bad.id)
    assert "cannot be read" in reason


def test_file_cut_inside_a_utf8_sequence(tmp_path):
    """The file ends in the middle of a multi-byte character of the first prompt."""
    scene = switched(tmp_path)
    bad = victim(scene, user_text="fix the caf\u00e9 \u2615 checkout", row=False)
    data = bad.path.read_bytes().replace(b"\\u00e9", "\u00e9".encode("utf-8")).replace(
        b"\\u2615", "\u2615".encode("utf-8"))
    cut = data.index("\u2615".encode("utf-8")) + 1
    bad.path.write_bytes(data[:cut])
    results = exercise(scene, [bad.path], scene.provider_repair(), problem="invalid_utf8")
    assert bad.id not in [a.get("thread_id") for a in results["apply"].doc["actions"]]


def test_bom_before_session_meta(tmp_path):
    scene = switched(tmp_path)
    bad = victim(scene)
    bad.path.write_bytes(b"\xef\xbb\xbf" + bad.path.read_bytes())
    exercise(scene, [bad.path], scene.provider_repair(), problem="bom", skipped=bad.id)


def test_invalid_utf8_inside_session_meta(tmp_path):
    scene = switched(tmp_path)
    bad = victim(scene)
    data = bad.path.read_bytes()
    bad.path.write_bytes(data.replace(b"You are Codex.", b"You are \xff\xfe Codex.", 1))
    exercise(scene, [bad.path], scene.provider_repair(), problem="invalid_utf8", skipped=bad.id)


def test_mixed_crlf_and_lf_line_endings_are_kept(tmp_path):
    """Not damage: a file edited on Windows. It is repaired, and each line keeps its own ending."""
    scene = switched(tmp_path)
    odd = victim(scene)
    lines = odd.path.read_bytes().splitlines(keepends=True)
    mixed = [l.replace(b"\n", b"\r\n") if n % 2 == 0 else l for n, l in enumerate(lines)]
    odd.path.write_bytes(b"".join(mixed))
    results = exercise(scene, [], scene.provider_repair())
    assert READ_PROBLEMS_KEY not in findings(results["diagnose"])
    after = odd.path.read_bytes().splitlines(keepends=True)
    assert len(after) == len(mixed)
    for old, new in zip(mixed, after):
        assert old.endswith(b"\r\n") == new.endswith(b"\r\n")
        assert json.loads(old)["type"] == json.loads(new)["type"]
    assert meta_provider(odd.path) == ACTIVE


def test_empty_rollout(tmp_path):
    scene = switched(tmp_path)
    bad = victim(scene)
    bad.path.write_bytes(b"")
    results = exercise(scene, [bad.path], scene.provider_repair(), problem="empty_file")
    assert bad.path.stat().st_size == 0
    assert results["apply"].code == csr.EXIT_OK


def test_zero_byte_sync_copy_beside_a_healthy_rollout(tmp_path):
    """`rollout-…(1).jsonl`: what Dropbox/OneDrive leave after a conflict. It must neither
    shadow the real rollout of the same thread nor be written."""
    scene = switched(tmp_path)
    copy = scene.healthy.path.with_name(scene.healthy.path.name.replace(".jsonl", "(1).jsonl"))
    copy.write_bytes(b"")
    results = exercise(scene, [copy], scene.provider_repair(), problem="empty_file")
    assert "duplicate_thread_id" not in findings(results["diagnose"])
    assert copy.stat().st_size == 0


def test_non_empty_sync_copy_is_a_duplicate_and_neither_file_is_touched(tmp_path):
    scene = switched(tmp_path)
    bad = victim(scene)
    copy = bad.path.with_name(bad.path.name.replace(".jsonl", "(1).jsonl"))
    shutil.copyfile(str(bad.path), str(copy))
    results = exercise(scene, [bad.path, copy], scene.provider_repair(), finding="duplicate_thread_id",
                       skipped=bad.id)
    assert bad.id in findings(results["diagnose"])["duplicate_thread_id"]["evidence"]["thread_ids"]


def test_first_line_is_not_session_meta(tmp_path):
    scene = switched(tmp_path)
    bad = victim(scene)
    data = bad.path.read_bytes()
    bad.path.write_bytes(data[first_line_end(data):])
    exercise(scene, [bad.path], scene.provider_repair(), problem="first_line_not_session_meta", skipped=bad.id)


def test_session_meta_id_differs_from_file_name(tmp_path):
    scene = switched(tmp_path)
    bad = victim(scene)
    other = new_thread_id("someone else")
    data = bad.path.read_bytes()
    bad.path.write_bytes(data.replace(('"id":"%s"' % bad.id).encode(), ('"id":"%s"' % other).encode(), 1))
    results = exercise(scene, [bad.path], scene.provider_repair(), problem="id_mismatch", skipped=bad.id)
    assert other not in [t["id"] for t in results["diagnose"].doc["threads"]]


def test_headerless_pre_2025_rollout(tmp_path):
    scene = switched(tmp_path)
    legacy_id = "019a0000-0000-7000-8000-00000000beef"
    path = scene.root / "sessions" / ("rollout-2025-01-01T00-00-00-%s.jsonl" % legacy_id)
    write_jsonl(path, [
        {"id": legacy_id, "timestamp": "2025-01-01T00:00:00.000Z", "instructions": None},
        {"record_type": "state"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "old chat"}]},
    ])
    results = exercise(scene, [path], scene.provider_repair(), problem="legacy_format")
    assert legacy_id not in [a.get("thread_id") for a in results["apply"].doc["actions"]]


def test_zstd_compressed_rollout(tmp_path):
    scene = switched(tmp_path)
    bad = victim(scene)
    packed = bad.path.with_name(bad.path.name + ".zst")
    packed.write_bytes(b"\x28\xb5\x2f\xfd" + os.urandom(512))
    bad.path.unlink()
    conn = sqlite3.connect(str(scene.home.db_path))
    conn.execute("UPDATE threads SET rollout_path=? WHERE id=?", (str(packed), bad.id))
    conn.commit()
    conn.close()
    exercise(scene, [packed], scene.provider_repair(), problem="compressed", skipped=bad.id)


def _write_huge_line_rollout(path: Path, size: int) -> None:
    data = path.read_bytes()
    head = data[:first_line_end(data)]
    with open(str(path), "wb") as handle:
        handle.write(head)
        handle.write(b'{"timestamp":"2026-09-21T00:00:00.500Z","type":"response_item","payload":'
                     b'{"type":"function_call_output","call_id":"c1","output":"')
        block = b"A" * (1 << 20)
        for _ in range(size >> 20):
            handle.write(block)
        handle.write(b'"}}\n')
        handle.write(data[first_line_end(data):])


def test_fifty_megabyte_single_line(tmp_path):
    scene = switched(tmp_path)
    bad = victim(scene)
    _write_huge_line_rollout(bad.path, 50 << 20)
    exercise(scene, [bad.path], scene.provider_repair(), problem="oversized_line", skipped=bad.id)


def test_huge_line_is_read_in_bounded_memory(tmp_path):
    """The real script, in a child process: diagnose and a dry run over a rollout with one huge
    line. Peak RSS must not grow with the line: 50 MB and 120 MB lines cost the same."""
    if not POSIX:
        pytest.skip("peak RSS via resource is POSIX")
    probe = ("import resource, runpy, sys; sys.argv = sys.argv[1:]\n"
             "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
             "except SystemExit as e:\n    code = e.code\n"
             "sys.stderr.write('maxrss=%d\\n' % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
             "raise SystemExit(code)\n")
    peaks = {}
    for megabytes in (50, 120):
        scene = switched(tmp_path / str(megabytes))
        bad = victim(scene)
        _write_huge_line_rollout(bad.path, megabytes << 20)
        before = fingerprint(bad.path)
        for argv in (["diagnose"], ["repair-provider", "--from", "openai"]):
            # Not run_script: the script runs inside `probe`, which reports the peak RSS.
            done = subprocess.run([sys.executable, "-c", probe, str(SCRIPT), *argv, "--codex-home", str(scene.root),
                                   "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
            err = done.stderr.decode()
            assert "Traceback" not in err and done.returncode == csr.EXIT_FINDINGS, err
            peaks[(megabytes, argv[0])] = int(err.rsplit("maxrss=", 1)[1].split()[0])
        assert fingerprint(bad.path) == before
        shutil.rmtree(str(scene.root))
    for command in ("diagnose", "repair-provider"):
        grew_kb = peaks[(120, command)] - peaks[(50, command)]
        assert grew_kb < 24 * 1024, "peak RSS grew by %d KB with the line (%s): %s" % (grew_kb, command, peaks)
        assert peaks[(120, command)] < (3 * csr.MAX_LINE_BYTES >> 10) + 96 * 1024, peaks


def test_nul_bytes_in_a_rollout_without_a_row(tmp_path):
    """NUL bytes inside the head of a rollout the DB does not know: reported, and carried
    verbatim when the provider lines around them are edited."""
    scene = switched(tmp_path)
    bad = victim(scene, row=False)
    data = bad.path.read_bytes()
    bad.path.write_bytes(data[:first_line_end(data)] + b"\x00" * 64 + b"\n" + data[first_line_end(data):])
    before = bad.path.read_bytes()
    exercise(scene, [], scene.provider_repair(), problem="nul_bytes", healthy_repaired=True)
    assert only_provider_values_differ(before, bad.path.read_bytes()) == [1, 7]


# ---------------------------------------------------------------------------------------------
# Valid JSON of the wrong shape
# ---------------------------------------------------------------------------------------------


def _rewrite_meta(path: Path, change: Any) -> None:
    data = path.read_bytes()
    first = json.loads(data[:first_line_end(data)])
    change(first)
    path.write_bytes(json_line(first) + data[first_line_end(data):])


def test_session_meta_payload_is_a_list(tmp_path):
    scene = switched(tmp_path)
    bad = victim(scene)
    _rewrite_meta(bad.path, lambda rec: rec.__setitem__("payload", ["not", "an", "object"]))
    exercise(scene, [bad.path], scene.provider_repair(), problem="first_line_not_session_meta", skipped=bad.id)


def test_model_provider_is_a_number(tmp_path):
    scene = switched(tmp_path)
    bad = victim(scene)
    _rewrite_meta(bad.path, lambda rec: rec["payload"].__setitem__("model_provider", 7))
    exercise(scene, [bad.path], scene.provider_repair(), problem="wrong_shape", skipped=bad.id)


def test_cli_version_of_unexpected_shape(tmp_path):
    """A release named by a list or an object in session_meta names no release: the home's
    release comes from the other rollouts and rows, and nothing breaks."""
    scene = switched(tmp_path)
    odd = [victim(scene), victim(scene), victim(scene)]
    for thread, shape in zip(odd, (["0", "999", "0"], {"v": "999.0.0"}, 999)):
        _rewrite_meta(thread.path, lambda rec, shape=shape: rec["payload"].__setitem__(
            "cli_version", shape))
    results = exercise(scene, [], scene.provider_repair())
    assert results["diagnose"].doc["codex_release"] == "0.169.0"


def test_source_of_unexpected_shape(tmp_path):
    scene = switched(tmp_path)
    shapes = [{"subagent": {"weird": [1, {"x": None}]}}, [1, 2], 42, {}, {"custom": 5}]
    odd = [victim(scene, source=shape, row=False) for shape in shapes]
    results = exercise(scene, [t.path for t in odd], scene.provider_repair())
    for thread in odd:
        assert "source_filtered" in thread_reasons(results["diagnose"], thread.id)
    assert {a.get("thread_id") for a in results["apply"].doc["actions"]} == {scene.healthy.id}


def test_state_db_values_of_the_wrong_type(tmp_path):
    """SQLite lets any column hold any type: a number as model_provider, text as a timestamp."""
    scene = switched(tmp_path)
    bad = victim(scene, row_overrides={"model_provider": 5, "updated_at": "yesterday",
                                       "updated_at_ms": "soon", "recency_at_ms": None, "archived": "no"})
    victim(scene, provider="ghost")
    before = dump_copy(scene.home.db_path)
    results = exercise(scene, [], scene.provider_repair())
    assert bad.id in findings(results["diagnose"])["provider_mismatch"]["thread_ids"]
    assert before != dump_copy(scene.home.db_path)  # the healthy row moved; the odd row is still there
    conn = sqlite3.connect(str(scene.home.db_path))
    assert conn.execute("SELECT model_provider FROM threads WHERE id=?", (bad.id,)).fetchone()[0] == "5"
    conn.close()


def test_state_db_blob_values(tmp_path):
    scene = switched(tmp_path)
    bad = victim(scene, row_overrides={"model_provider": b"\x05", "source": b"\x01"})
    victim(scene, provider="ghost")
    results = exercise(scene, [], scene.provider_repair())
    assert bad.id in findings(results["diagnose"])["provider_mismatch"]["thread_ids"]


# ---------------------------------------------------------------------------------------------
# rollout_path values that point somewhere odd
# ---------------------------------------------------------------------------------------------


def _set_rollout_path(scene: Scene, thread: Thread, value: Any) -> None:
    conn = sqlite3.connect(str(scene.home.db_path))
    conn.execute("UPDATE threads SET rollout_path=? WHERE id=?", (value, thread.id))
    conn.commit()
    conn.close()


def test_rollout_path_outside_the_home(tmp_path):
    scene = switched(tmp_path)
    bad = victim(scene)
    outside = tmp_path / "elsewhere" / bad.path.name
    outside.parent.mkdir()
    os.replace(str(bad.path), str(outside))
    _set_rollout_path(scene, bad, str(outside))
    results = exercise(scene, [outside], scene.provider_repair(), skipped=bad.id)
    assert "provider_mismatch" in thread_reasons(results["diagnose"], bad.id)


def test_rollout_path_is_a_directory(tmp_path):
    scene = switched(tmp_path)
    bad = victim(scene)
    folder = scene.root / "odd-folder"
    folder.mkdir()
    (folder / "keep.txt").write_text("x")
    _set_rollout_path(scene, bad, str(folder))
    results = exercise(scene, [folder, bad.path], scene.provider_repair(), skipped=bad.id)
    assert "rollout_path_stale" in thread_reasons(results["diagnose"], bad.id)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_rollout_path_is_a_fifo(tmp_path):
    """Reading a FIFO blocks forever: the script runs in a child with a deadline."""
    scene = switched(tmp_path)
    bad = victim(scene)
    fifo = scene.root / "a-pipe"
    os.mkfifo(str(fifo))
    _set_rollout_path(scene, bad, str(fifo))
    results = exercise(scene, [fifo, bad.path], scene.provider_repair(), skipped=bad.id,
                       runner=lambda *a: tool_proc(*a, timeout=60))
    assert "rollout_path_stale" in thread_reasons(results["diagnose"], bad.id)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_fifo_named_like_a_rollout_inside_sessions(tmp_path):
    scene = switched(tmp_path)
    bad = victim(scene)
    bad.path.unlink()
    os.mkfifo(str(bad.path))
    exercise(scene, [bad.path], scene.provider_repair(), skipped=bad.id,
             runner=lambda *a: tool_proc(*a, timeout=60))


def test_rollout_path_to_a_missing_file(tmp_path):
    scene = switched(tmp_path)
    bad = victim(scene)
    bad.path.unlink()
    results = exercise(scene, [bad.path], scene.provider_repair(), skipped=bad.id)
    assert "rollout_missing" in thread_reasons(results["diagnose"], bad.id)
    assert not bad.path.exists()


def test_rollout_path_is_an_empty_string(tmp_path):
    scene = switched(tmp_path)
    bad = victim(scene)
    _set_rollout_path(scene, bad, "")
    results = exercise(scene, [bad.path], scene.provider_repair(), skipped=bad.id)
    assert "rollout_path_stale" in thread_reasons(results["diagnose"], bad.id)


# ---------------------------------------------------------------------------------------------
# Symlinks
# ---------------------------------------------------------------------------------------------


def test_symlinked_rollout_pointing_outside_is_never_written_through(tmp_path):
    """The linked thread is skipped (named, with its reason), never written through: the link
    and its target keep every byte, while the healthy thread is repaired. (Before, one link
    refused the whole apply, and the guided path could not go on.)"""
    scene = switched(tmp_path)
    bad = victim(scene)
    outside = tmp_path / "synced" / bad.path.name
    outside.parent.mkdir()
    os.replace(str(bad.path), str(outside))
    os.symlink(str(outside), str(bad.path))
    results = exercise(scene, [outside, bad.path], scene.provider_repair(), skipped=bad.id, healthy_repaired=True)
    assert "symbolic link" in next(s["reason"] for s in results["apply"].doc["skipped"] if s["thread_id"] == bad.id)
    assert os.path.islink(str(bad.path)) and os.readlink(str(bad.path)) == str(outside)


def test_symlinked_home_with_paths_stored_through_the_link(tmp_path):
    """Codex stores rollout paths as it saw them: through the link. The home resolves once;
    the rows are neither stale nor missing, and the repair writes through the resolved path."""
    real = tmp_path / "real-home"
    link = tmp_path / "link-home"
    home = HomeBuilder(real, "0.169.0").provider_config(ACTIVE)
    os.symlink(str(real), str(link))
    healthy = home.thread(provider="openai")
    conn = sqlite3.connect(str(home.db_path))
    conn.execute("UPDATE threads SET rollout_path=replace(rollout_path, ?, ?)", (str(real), str(link)))
    conn.commit()
    conn.close()
    scene = Scene(home, healthy)
    results = exercise(scene, [link], ["repair-provider", "--codex-home", str(link), "--from", "openai"])
    diag_threads = results["diagnose"].doc["threads"]
    assert all("rollout_path_stale" not in t["reasons"] for t in diag_threads)
    assert os.path.islink(str(link))


def test_symlinked_session_index_is_not_written_through(tmp_path):
    scene = switched(tmp_path)
    outside = tmp_path / "shared-index.jsonl"
    outside.write_bytes(b'{"id":"019a0000-0000-7000-8000-00000000dead","thread_name":"gone"}\nnot json\n')
    os.symlink(str(outside), str(scene.root / "session_index.jsonl"))
    exercise(scene, [outside, scene.root / "session_index.jsonl"],
             ["rebuild-index", "--codex-home", str(scene.root)], finding="index_stale",
             apply_exit=[csr.EXIT_REFUSED])


def test_symlinked_global_state_is_not_written_through(tmp_path):
    scene = switched(tmp_path)
    outside = tmp_path / "global-state.json"
    outside.write_text(json.dumps({"electron-persisted-atom-state": {"sidebar-collapsed-groups": {"/a": True}}}))
    os.symlink(str(outside), str(scene.root / ".codex-global-state.json"))
    exercise(scene, [outside, scene.root / ".codex-global-state.json"],
             ["repair-ui-state", "--codex-home", str(scene.root)], finding="sidebar_filtered",
             apply_exit=[csr.EXIT_REFUSED])


def test_symlinked_state_db_outside_the_home_is_not_written(tmp_path):
    home = HomeBuilder(tmp_path / "home", "0.120.0")
    blank = home.thread(row_overrides={"first_user_message": "", "title": ""})
    outside = tmp_path / "elsewhere.sqlite"
    os.replace(str(home.db_path), str(outside))
    os.symlink(str(outside), str(home.db_path))
    scene = Scene(home, None)
    exercise(scene, [outside, home.db_path], ["repair-user-events", "--codex-home", str(home.root)],
             finding="user_event_missing", apply_exit=[csr.EXIT_REFUSED])
    assert blank.path.exists()


# ---------------------------------------------------------------------------------------------
# config.toml
# ---------------------------------------------------------------------------------------------


def test_unparsable_config_and_to_auto(tmp_path):
    home = HomeBuilder(tmp_path / "home", "0.169.0")
    home.config('model_provider = "proxy\n[model_providers.proxy]\nname = "proxy"\n')
    home.thread(provider="openai")
    mine = home.thread(provider="proxy")
    scene = Scene(home, None)
    exercise(scene, [home.root / "config.toml", mine.path],
             ["repair-provider", "--codex-home", str(home.root), "--from", "proxy"],
             # `--to auto` needs a config that parses: the command line is fine, the home refuses.
             finding="config_unparsable", dry_exit=[csr.EXIT_REFUSED], apply_exit=[csr.EXIT_REFUSED])


def test_unparsable_config_with_explicit_target(tmp_path):
    home = HomeBuilder(tmp_path / "home", "0.169.0")
    home.config('model_provider = "proxy\n')
    healthy = home.thread(provider="proxy")
    scene = Scene(home, None)
    results = exercise(scene, [home.root / "config.toml"],
                       ["repair-provider", "--codex-home", str(home.root), "--from", "proxy", "--to", "openai"],
                       finding="config_unparsable")
    assert meta_provider(healthy.path) == "openai"
    assert findings(results["diagnose"])["config_unparsable"]["severity"] == "error"


def test_config_is_a_directory(tmp_path):
    scene = switched(tmp_path)
    (scene.root / "config.toml").unlink()
    (scene.root / "config.toml").mkdir()
    scene.healthy = None  # with no readable config, openai is the active provider: nothing hidden
    exercise(scene, [scene.root / "config.toml"], scene.provider_repair("--to", ACTIVE),
             finding="config_unreadable")


def test_config_names_an_unknown_provider(tmp_path):
    home = HomeBuilder(tmp_path / "home", "0.169.0").config('model_provider = "ghost"\n')
    healthy = home.thread(provider="openai")
    scene = Scene(home, None)
    results = exercise(scene, [home.root / "config.toml"],
                       ["repair-provider", "--codex-home", str(home.root), "--from", "openai"])
    assert "provider_mismatch" in findings(results["diagnose"])
    assert "ghost is not defined in config.toml" in results["dry"].err
    assert meta_provider(healthy.path) == "ghost"


def test_diagnose_names_an_undefined_active_provider(tmp_path):
    home = HomeBuilder(tmp_path / "home", "0.169.0").config('model_provider = "ghost"\n')
    home.thread(provider="openai")
    diag = tool("diagnose", "--codex-home", str(home.root))
    assert_clean_exit(diag, [csr.EXIT_FINDINGS])
    assert any("ghost" in json.dumps(f) for code, f in findings(diag).items() if code != "provider_mismatch")


def test_legacy_top_level_profile(tmp_path):
    home = HomeBuilder(tmp_path / "home", "0.130.0")
    home.config('profile = "work"\n\n[profiles.work]\nmodel_provider = "proxy"\n\n[model_providers.proxy]\n'
                'name = "proxy"\nbase_url = "http://127.0.0.1:9/v1"\n')
    healthy = home.thread(provider="openai")
    scene = Scene(home, healthy)
    results = exercise(scene, [home.root / "config.toml"], scene.provider_repair(), finding="legacy_profile")
    assert results["dry"].doc["plan"]["to"] == ACTIVE


# ---------------------------------------------------------------------------------------------
# The state DB
# ---------------------------------------------------------------------------------------------


def _drop_sidecars(db: Path) -> None:
    for suffix in ("-wal", "-shm"):
        side = Path(str(db) + suffix)
        if side.exists():
            side.unlink()


def test_state_db_is_not_a_database(tmp_path):
    scene = switched(tmp_path)
    _drop_sidecars(scene.home.db_path)
    scene.home.db_path.write_bytes(b"this is not a database" * 200)
    results = exercise(scene, [scene.home.db_path], scene.provider_repair(), finding="state_db_unreadable")
    assert "not a database" in findings(results["diagnose"])["state_db_unreadable"]["evidence"]["error"]


def test_state_db_is_not_a_database_for_repair_user_events(tmp_path):
    home = HomeBuilder(tmp_path / "home", "0.120.0")
    home.thread(row_overrides={"first_user_message": ""})
    _drop_sidecars(home.db_path)
    home.db_path.write_bytes(b"\x00" * 8192)
    exercise(Scene(home, None), [home.db_path], ["repair-user-events", "--codex-home", str(home.root)],
             finding="state_db_unreadable", dry_exit=[csr.EXIT_OK], apply_exit=[csr.EXIT_OK])


HOLD_EXCLUSIVE = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
conn.execute("UPDATE backfill_state SET updated_at = updated_at")
print("ready", flush=True)
time.sleep(float(sys.argv[2]))
"""


@pytest.fixture
def exclusive_holder():
    procs = []

    def hold(db: Path, seconds: float = 120) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", HOLD_EXCLUSIVE, str(db), str(seconds)], stdout=subprocess.PIPE)
        procs.append(proc)
        assert proc.stdout.readline().strip() == b"ready"
        return proc

    yield hold
    for proc in procs:
        proc.kill()
        proc.wait()


@pytest.mark.skipif(not POSIX, reason="the open-file probe is POSIX")
def test_state_db_locked_by_another_process(tmp_path, exclusive_holder):
    scene = switched(tmp_path)
    holder = exclusive_holder(scene.home.db_path)
    results = exercise(scene, [scene.home.db_path, scene.healthy.path], scene.provider_repair(),
                       apply_exit=[csr.EXIT_REFUSED], runner=lambda *a: tool_proc(*a, timeout=60))
    assert "pid %d" % holder.pid in results["apply"].err


@pytest.mark.skipif(not POSIX, reason="the open-file probe is POSIX")
def test_state_db_locked_with_force_is_refused_before_any_write(tmp_path, exclusive_holder):
    """--force overrides "Codex is running", not a DB that cannot be written: every DB the plan
    changes is locked before the first rollout is touched, so the run stops with nothing changed."""
    scene = switched(tmp_path)
    victim(scene)
    exclusive_holder(scene.home.db_path)
    before = logical_home(scene.root)
    result = tool_proc(*scene.provider_repair("--apply", "--force"), timeout=15)
    assert_clean_exit(result, [csr.EXIT_REFUSED])
    assert "database is locked" in result.err
    assert logical_home(scene.root) == before
    assert not [p for p in (scene.root / "recovery-backups").glob("*") if p.is_dir()]


def _readonly(path: Path) -> Any:
    """Make `path` unwritable for this process. Root ignores permission bits, so as root the
    immutable attribute is used (chattr +i); returns an undo function, or skips."""
    if not ROOT:
        mode = path.stat().st_mode
        os.chmod(str(path), 0o555 if path.is_dir() else 0o444)
        return lambda: os.chmod(str(path), mode)
    chattr = shutil.which("chattr")
    if chattr is None:
        pytest.skip("running as root, where permission bits do not bind, and chattr is missing")
    done = subprocess.run([chattr, "+i", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if done.returncode != 0:
        pytest.skip("running as root, where permission bits do not bind, and this filesystem refuses "
                    "chattr +i: %s" % done.stderr.decode().strip())
    return lambda: subprocess.run([chattr, "-i", str(path)], check=True)


@pytest.fixture
def readonly():
    undo = []

    def make(path: Path) -> None:
        undo.append(_readonly(path))

    yield make
    for step in reversed(undo):
        step()


def test_state_db_read_only_file(tmp_path, readonly):
    scene = switched(tmp_path)
    bad = victim(scene)
    _drop_sidecars(scene.home.db_path)
    before = logical_home(scene.root)
    readonly(scene.home.db_path)
    # Refused before any write, for a user (chmod bits) and for root (chattr +i) alike: the
    # check that the DB can be written now meets it.
    exercise(scene, [scene.home.db_path, bad.path, scene.healthy.path], scene.provider_repair(),
             apply_exit=[csr.EXIT_REFUSED])
    assert logical_home(scene.root) == before


def test_home_folder_read_only(tmp_path, readonly):
    scene = switched(tmp_path)
    _drop_sidecars(scene.home.db_path)
    before = home_files(scene.root)
    readonly(scene.root)
    # Refused before any write, for a user and for root alike: the tool's lock in
    # recovery-backups/ cannot be made.
    exercise(scene, [scene.healthy.path, scene.home.db_path], scene.provider_repair(),
             apply_exit=[csr.EXIT_REFUSED])
    assert home_files(scene.root) == before


def test_state_db_whose_newer_migration_changed_a_column_the_repair_writes(tmp_path):
    """A newer Codex (migration 999) retyped first_user_message: what repair-user-events writes
    changed shape, so its writes are refused (exit 3, naming --force) and the DB keeps every byte."""
    home = HomeBuilder(tmp_path / "home", "0.120.0")
    blank = home.thread(user_text="lost prompt", row_overrides={"first_user_message": "", "title": ""})
    add_migration(home.db_path, 999, "future")
    retype_column(home.db_path, "threads", "first_user_message", "BLOB")
    _drop_sidecars(home.db_path)
    results = exercise(Scene(home, None), [home.db_path], ["repair-user-events", "--codex-home", str(home.root)],
                       finding="schema_newer", apply_exit=[csr.EXIT_REFUSED])
    assert "threads.first_user_message is BLOB, was TEXT" in results["apply"].err
    assert "--force" in results["apply"].err
    assert findings(results["diagnose"])["schema_newer"]["severity"] == "warning"
    assert blank.id in findings(results["diagnose"])["user_event_missing"]["thread_ids"]


def test_state_db_without_a_threads_table(tmp_path):
    scene = switched(tmp_path, release="0.130.0")
    conn = sqlite3.connect(str(scene.home.db_path))
    conn.execute("DROP TABLE threads")
    conn.commit()
    conn.close()
    _drop_sidecars(scene.home.db_path)
    results = exercise(scene, [scene.home.db_path], scene.provider_repair(), finding="state_db_unreadable")
    assert "no threads table" in findings(results["diagnose"])["state_db_unreadable"]["evidence"]["error"]


def test_two_state_dbs_only_the_live_one_is_written(tmp_path):
    scene = switched(tmp_path)
    stale = scene.root / "sqlite" / "state_5.sqlite"
    stale.parent.mkdir()
    conn = sqlite3.connect(str(scene.home.db_path))
    conn.execute("VACUUM INTO ?", (str(stale),))
    conn.close()
    os.utime(str(stale), (1_600_000_000, 1_600_000_000))
    results = exercise(scene, [stale], scene.provider_repair(), finding="multiple_state_dbs")
    assert findings(results["diagnose"])["multiple_state_dbs"]["evidence"]["live"] == "state_5.sqlite"
    assert row_provider(stale, scene.healthy.id) == "openai"


# ---------------------------------------------------------------------------------------------
# Desktop's global state and the session index
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content", [
    b'{"electron-persisted-atom-state": {"sidebar-collapsed-groups": {"/a": tr',
    b"\x00" * 2048,
    b"[1, 2, 3]\n",
], ids=["truncated-json", "nul-filled", "json-array"])
def test_global_state_not_a_json_object(tmp_path, content):
    scene = switched(tmp_path)
    path = scene.root / ".codex-global-state.json"
    path.write_bytes(content)
    results = exercise(scene, [path], ["repair-ui-state", "--codex-home", str(scene.root)],
                       finding="ui_state_unreadable", dry_exit=[csr.EXIT_OK], apply_exit=[csr.EXIT_OK])
    assert results["apply"].doc["applied"] is False and results["apply"].doc["backup_dir"] is None


def test_session_index_with_garbage_lines(tmp_path):
    """The index is what rebuild-index rewrites; the garbage goes, every real name stays, and the
    backup holds the old file byte for byte."""
    scene = switched(tmp_path)
    named = scene.healthy
    gone = "019a0000-0000-7000-8000-00000000dead"
    good = [json_line({"id": named.id, "thread_name": "checkout bug", "updated_at": "2026-10-01T00:00:00Z"}),
            json_line({"id": gone, "thread_name": "gone", "updated_at": "2026-10-02T00:00:00Z"})]
    garbage = [b"\x00\x00\x00\n", b"\xff\xfe\xfd not utf-8\n", b"[1, 2]\n", b'{"id": 5}\n', b"{torn",
               b"\n", b"   \n"]
    path = scene.root / "session_index.jsonl"
    original = good[0] + garbage[0] + garbage[1] + good[1] + garbage[2] + garbage[3] + garbage[5] + garbage[6] + garbage[4]
    path.write_bytes(original)
    results = exercise(scene, [], ["rebuild-index", "--codex-home", str(scene.root)], finding="index_bad_lines",
                       healthy_repaired=False)
    entries = [json.loads(l) for l in path.read_bytes().splitlines()]
    assert entries == [json.loads(good[0])]
    backup = Path(results["apply"].doc["backup_dir"])
    assert (backup / "files" / "session_index.jsonl").read_bytes() == original
    again = tool("rebuild-index", "--codex-home", str(scene.root))
    assert_clean_exit(again, [csr.EXIT_OK])


# ---------------------------------------------------------------------------------------------
# Odd homes
# ---------------------------------------------------------------------------------------------


def test_codex_home_is_a_file(tmp_path):
    target = tmp_path / "not-a-home"
    target.write_text("x")
    for argv in (["diagnose"], ["repair-provider", "--from", "openai"], ["repair-provider", "--from", "openai", "--apply"]):
        result = tool(*argv, "--codex-home", str(target))
        assert_clean_exit(result, [csr.EXIT_USAGE])
        assert "not a directory" in result.err
    assert target.read_text() == "x"


def test_sessions_is_a_file(tmp_path):
    home = HomeBuilder(tmp_path / "home", "0.169.0").provider_config(ACTIVE)
    shutil.rmtree(str(home.root / "sessions"))
    (home.root / "sessions").write_bytes(b"not a folder")
    results = exercise(Scene(home, None), [home.root / "sessions"],
                       ["repair-provider", "--codex-home", str(home.root), "--from", "openai"],
                       diag_exit=[csr.EXIT_OK], dry_exit=[csr.EXIT_OK], apply_exit=[csr.EXIT_OK])
    assert results["diagnose"].doc["counts"]["rollout_files"] == 0


# ---------------------------------------------------------------------------------------------
# A full disk while backing up
# ---------------------------------------------------------------------------------------------


def test_disk_full_while_copying_a_file_into_the_backup(tmp_path, monkeypatch):
    scene = switched(tmp_path)
    path = scene.root / ".codex-global-state.json"
    path.write_text(json.dumps({"electron-persisted-atom-state": {"sidebar-collapsed-groups": {"/a": True}}}))

    def full(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(csr, "copy_hashing", full)  # what the backup copies every file with
    before = logical_home(scene.root)
    # The backup cannot be made, so the apply fails before anything is written (never a refusal).
    exercise(scene, [path], ["repair-ui-state", "--codex-home", str(scene.root)], finding="sidebar_filtered",
             apply_exit=[csr.EXIT_APPLY_FAILED])
    assert logical_home(scene.root) == before


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 1 MB tmpfs (needs root and mount rights; skipped otherwise)."""
    if not ROOT or not sys.platform.startswith("linux"):
        pytest.skip("mounting a tmpfs needs root on Linux")
    point = tmp_path / "tiny"
    point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(point)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if done.returncode != 0:
        pytest.skip("mount -t tmpfs failed: %s" % done.stderr.decode().strip())
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)])


def test_disk_full_on_a_real_tiny_filesystem(tiny_tmpfs):
    home = HomeBuilder(tiny_tmpfs / "home", "0.169.0").provider_config(ACTIVE)
    healthy = home.thread(provider="openai")
    home.thread(provider="openai")
    st = os.statvfs(str(tiny_tmpfs))
    with open(str(tiny_tmpfs / "filler"), "wb") as handle:
        try:
            handle.write(b"\x00" * max(0, st.f_bavail * st.f_frsize - 16 * 1024))
        except OSError:
            pass
    scene = Scene(home, healthy)
    before = logical_home(home.root)
    # The 16 KB the filler leaves hold the lock and the checks before the apply, not the
    # backup's copy of a rollout (each is over 20 KB): the apply starts, fails and is undone.
    exercise(scene, [healthy.path], scene.provider_repair(), apply_exit=[csr.EXIT_APPLY_FAILED],
             runner=lambda *a: tool_proc(*a, timeout=60))
    assert logical_home(home.root) == before
