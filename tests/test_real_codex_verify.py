"""`--verify` against real Codex releases: the user's own Codex lists a scratch copy of the home.

What `--verify` reports as the real Codex's listing, before and after the plan, is held to what
the harness's own real `thread/list` shows on the real home before and after `--apply`. The
real home stays byte-identical under a `--verify` dry run, credentials are never opened nor
copied, the scratch folder is gone afterwards (also after SIGINT and SIGTERM), the verifying
app-server reaches no network, and a wrong prediction is caught and exits 1.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import pytest

import codex_harness as harness
import codex_session_recovery as csr
from homes import run_script, script_env
from test_real_codex import (CUSTOM, SCRIPT, RealHome, changed_files, real_home, run_tool,  # noqa: F401
                             snapshot)

pytestmark = pytest.mark.realcodex

# Every release the tier installs, newest first (0.171.0 whether or not the harness lists it yet).
VERIFY_RELEASES = tuple(dict.fromkeys(("0.171.0",) + tuple(harness.RELEASES)))
NEWEST = VERIFY_RELEASES[0]


def binary_of(version: str) -> str:
    return str(harness.require_release(version))


def verify(home: RealHome, version: str, *args: str):
    code, doc, err = run_tool(home.home, *args, "--verify", "--codex-bin", binary_of(version))
    return code, doc, doc["verification"], err


SCENARIOS = [(v, src, dst) for v in VERIFY_RELEASES for src, dst in (("openai", CUSTOM), (CUSTOM, "openai"))]


@pytest.mark.parametrize("version,src,dst", SCENARIOS, ids=["%s-%s-to-%s" % s for s in SCENARIOS])
def test_verify_equals_the_real_listing_before_and_after_apply(real_home, version, src, dst):
    """Codex 0.171.0, 0.169.0, 0.130.0 and 0.120.0, provider switch both ways: the dry run's
    --verify lists (before, after the plan) equal the real thread/list on the real home before
    and after --apply; the real home is byte-identical after the --verify dry run; the tool's
    prediction agrees; and `--apply --verify` reports the real listing of the repaired home."""
    home = real_home(version, src)
    home.switch_provider(dst)
    before = snapshot(home.home)
    code, doc, check, err = verify(home, version, "repair-provider", "--from", src)
    assert changed_files(before, snapshot(home.home)) == []
    assert code == csr.EXIT_FINDINGS and doc["changes"] > 0
    assert check["status"] == "verified", check
    assert check["codex_version"] == version and check["codex_origin"] == "--codex-bin"
    assert check["disagreements"] == [] and check["agrees"] is True, check
    assert check["conversations_before"] == check["conversations_after"] == 2
    assert 0 < check["cost"]["bytes_copied"] < check["cost"]["home_bytes"]

    real_before = home.listed()
    assert sorted(check["listed_before"]) == sorted(real_before) == []
    code, doc, _ = run_tool(home.home, "repair-provider", "--from", src, "--apply")
    assert code == csr.EXIT_OK, doc
    real_after = home.listed()
    assert sorted(check["listed_after"]) == sorted(real_after) == sorted(home.interactive)
    assert sorted(check["predicted_after"]) == sorted(real_after)

    # After --apply --verify (a fresh copy of the switched home): the repaired home's copy.
    home = real_home(version, src)
    home.switch_provider(dst)
    code, doc, check, err = verify(home, version, "repair-provider", "--from", src, "--apply")
    assert code == csr.EXIT_OK and doc["applied"] is True, (doc, err)
    assert check["status"] == "verified" and check["agrees"] is True, check
    assert check["listed_before"] == []
    assert sorted(check["listed_after"]) == sorted(home.listed()) == sorted(home.interactive)


@pytest.mark.parametrize("version", VERIFY_RELEASES)
def test_diagnose_verify_on_a_clean_home_agrees_and_keeps_exit_0(real_home, version):
    """diagnose --verify on an untouched home: Codex lists both interactive threads (the exec
    and the archived ones are hidden by design), as predicted; the exit code is diagnose's
    own (0), no byte changed."""
    home = real_home(version, "openai")
    plain, _doc, _err = run_tool(home.home, "diagnose")
    assert plain == csr.EXIT_OK
    before = snapshot(home.home)
    code, doc, check, err = verify(home, version, "diagnose")
    assert changed_files(before, snapshot(home.home)) == []
    assert code == plain, (check, err)
    assert check["agrees"] is True and check["listed_after"] is None
    assert sorted(check["listed_before"]) == sorted(home.listed()) == sorted(home.interactive)


def test_verify_never_opens_nor_copies_credentials_and_removes_the_scratch(real_home, monkeypatch):
    """Codex 0.169.0, openai home (auth.json from `codex login`): under --verify the tool
    never opens auth.json (audit hook), the scratch copies hold no auth.json nor any file
    that is not a copy of what listing reads, and the scratch folders are gone afterwards."""
    home = real_home("0.169.0", "openai")
    home.switch_provider(CUSTOM)
    assert (home.home / "auth.json").exists()
    seen: Dict[str, List[str]] = {}
    real_enter = csr.CodexLister.__enter__

    def record(self):
        seen[str(self.scratch.root)] = sorted(
            str(p.relative_to(self.scratch.root)) for p in self.scratch.root.rglob("*") if p.is_file())
        return real_enter(self)

    monkeypatch.setattr(csr.CodexLister, "__enter__", record)
    opened: List[str] = []

    def hook(event, args):
        if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
            opened.append(os.fsdecode(args[0]))

    from test_safety import _HOOKS
    if not getattr(sys, "_csr_audit_installed", False):
        sys.addaudithook(lambda e, a: [f(e, a) for f in list(_HOOKS)])
        sys._csr_audit_installed = True
    _HOOKS.append(hook)
    try:
        code, doc, check, err = verify(home, "0.169.0", "repair-provider", "--from", "openai")
    finally:
        _HOOKS.remove(hook)
    assert check["status"] == "verified" and check["agrees"], check
    assert not [p for p in opened if os.path.basename(p) in ("auth.json", "auth.json.lock")]
    assert len(seen) == 2  # before and after the plan
    for root, files in seen.items():
        assert not Path(root).exists()
        assert not [f for f in files if "auth" in os.path.basename(f)], files
        assert all(f.startswith("codex-home/") for f in files), files
        names = {os.path.basename(f) for f in files}
        assert names <= {"config.toml", "state_5.sqlite", "session_index.jsonl"} | {
            os.path.basename(f) for f in files if os.path.basename(f).startswith("rollout-")}, names
        assert Path(root).parent == Path(csr.tempfile.gettempdir()).resolve()


def test_verify_reaches_no_network(real_home, tmp_path):
    """Codex 0.169.0: the verifying app-server makes no request to the configured provider
    (the stand-in counts none), and the same --verify run inside a network namespace with no
    network at all (`unshare -n`) gives the same answer."""
    home = real_home("0.169.0", "openai")
    home.switch_provider(CUSTOM)
    served = len(home.standin.requests)
    code, doc, check, _ = verify(home, "0.169.0", "repair-provider", "--from", "openai")
    assert check["status"] == "verified" and check["agrees"]
    assert len(home.standin.requests) == served
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("unshare -n is not available here")
    # Not run_script: the script runs under `unshare -n`, in a namespace with no network.
    done = subprocess.run(["unshare", "-n", sys.executable, str(SCRIPT), "--codex-home", str(home.home),
                           "repair-provider", "--from", "openai", "--verify", "--codex-bin", binary_of("0.169.0"),
                           "--json"], capture_output=True, text=True, timeout=180)
    import json
    offline = json.loads(done.stdout)["verification"]
    assert offline["status"] == "verified", (offline, done.stderr)
    assert (offline["listed_before"], sorted(offline["listed_after"])) == (
        check["listed_before"], sorted(check["listed_after"]))
    assert offline["agrees"] is True


def _scratch_dirs(tmp: Path) -> List[Path]:
    return sorted(tmp.glob("csr-verify-*"))


def _processes_under(folder: Path) -> List[str]:
    """Pids whose environment names the folder (a verifying codex left running)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/environ" % entry, "rb") as handle:
                if str(folder).encode() in handle.read():
                    found.append(entry)
        except OSError:
            continue
    return found


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_verify_removes_the_scratch_and_stops_codex(real_home, tmp_path, signum):
    """Codex 0.169.0: a --verify run interrupted while its app-server lists the scratch copy
    (SIGINT as Ctrl-C sends it, or SIGTERM) removes the scratch folder, leaves no codex
    process behind, prints no traceback, and the real home is unchanged."""
    home = real_home("0.169.0", "openai")
    home.switch_provider(CUSTOM)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    before = snapshot(home.home)
    env = script_env({"TMPDIR": str(tmp)})
    # Popen, not run_script: the run is interrupted while it runs. SIGINT as a terminal leaves
    # it: a suite started as a background job of a non-interactive shell passes SIGINT on
    # ignored (POSIX), and Python then installs no Ctrl-C handler at all.
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--codex-home", str(home.home), "repair-provider",
                             "--from", "openai", "--verify", "--codex-bin", binary_of("0.169.0")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    running = False
    while time.monotonic() < deadline and proc.poll() is None:
        # The app-server has opened the scratch DB once its -wal exists.
        if any((d / "codex-home" / "state_5.sqlite-wal").exists() for d in _scratch_dirs(tmp)):
            running = True
            break
        time.sleep(0.005)
    assert running, "the verifying app-server never started"
    scratch = _scratch_dirs(tmp)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (proc.returncode, err)
    assert "Traceback" not in err and "interrupted" in err
    assert _scratch_dirs(tmp) == []
    time.sleep(0.2)
    assert [pid for d in scratch for pid in _processes_under(d)] == []
    assert changed_files(before, snapshot(home.home)) == []


def test_a_wrong_prediction_is_caught_and_exits_1(real_home, monkeypatch):
    """Codex 0.169.0 with a test double of the prediction that says every thread is listed:
    the real Codex disagrees, the command says so (per-thread verdicts, a warning on stderr)
    and exits 1 — also for diagnose on a clean home, which exits 0 without --verify; with
    --apply the contradicted plan is refused before a byte is written (exit 3)."""
    home = real_home("0.169.0", "openai")
    code, doc, check, err = verify(home, "0.169.0", "diagnose")
    assert code == csr.EXIT_OK and check["agrees"]

    monkeypatch.setattr(csr, "predicted_listed", lambda inv: sorted(inv.threads))
    code, doc, check, err = verify(home, "0.169.0", "diagnose")
    assert code == csr.EXIT_FINDINGS and doc["exit_code"] == 1
    assert check["agrees"] is False
    hidden_by_design = sorted([home.ids["exec"], home.ids["archived"]])
    assert sorted(d["id"] for d in check["disagreements"]) == hidden_by_design
    assert all((d["phase"], d["predicted"], d["codex"]) == ("before", "listed", "hidden")
               for d in check["disagreements"])
    assert "warning: Codex 0.169.0 disagrees with this tool's prediction for 2 threads" in err

    home.switch_provider(CUSTOM)
    code, doc, check, err = verify(home, "0.169.0", "repair-provider", "--from", "openai")
    assert code == csr.EXIT_FINDINGS and check["agrees"] is False
    phases = {(d["phase"], d["id"]) for d in check["disagreements"]}
    # Before the plan Codex lists nothing (every thread carries the old provider); after it the
    # two interactive threads, never the exec and the archived one.
    assert phases == {("before", t) for t in home.interactive + hidden_by_design} | {
        ("after", t) for t in hidden_by_design}
    out = run_script("--codex-home", str(home.home), "diagnose", timeout=120, text=True)
    assert out.returncode == csr.EXIT_FINDINGS  # the switched home has findings of its own

    # --apply --verify asks before it writes: the contradicted plan is refused (exit 3), and
    # not a byte of the home is written, not even a backup folder.
    before = snapshot(home.home)
    code, doc, check, err = verify(home, "0.169.0", "repair-provider", "--from", "openai", "--apply")
    assert (code, doc["exit_code"], doc["applied"]) == (csr.EXIT_REFUSED, csr.EXIT_REFUSED, False), (doc, err)
    assert check["refused"] is True and check["agrees"] is False
    assert {(d["phase"], d["id"]) for d in check["disagreements"]} == phases
    assert changed_files(before, snapshot(home.home)) == []
    assert not (home.home / csr.BACKUP_DIR_NAME).exists()
    assert "refused: the apply did not start and nothing was written" in err
    assert home.listed() == []


def test_verify_text_output_names_codex_and_counts(real_home):
    """The human report: which Codex answered, and the before/after counts of the issue's
    example sentence."""
    home = real_home(NEWEST, "openai")
    home.switch_provider(CUSTOM)
    done = run_script("--codex-home", str(home.home), "repair-provider", "--from", "openai", "--verify",
                      "--codex-bin", binary_of(NEWEST), timeout=180, text=True)
    assert done.returncode == csr.EXIT_FINDINGS, done.stderr
    assert ("Codex %s (--codex-bin) lists 0 of your 2 conversations now; after this plan it lists 2 of 2"
            % NEWEST) in done.stdout
    assert "Codex agrees with this tool's prediction for every thread." in done.stdout


def _blank_first_message(home: RealHome) -> None:
    from test_real_codex import execute
    assert execute(home.state_db, "UPDATE threads SET first_user_message = '', has_user_event = 0 WHERE id = ?",
                   (home.interactive[0],)) == 1


def _stale_rollout_path(home: RealHome) -> None:
    from test_real_codex import execute
    moved = str(home.home / "sessions" / "2020" / "01" / "01" / home.rollout(home.interactive[0]).name)
    assert execute(home.state_db, "UPDATE threads SET rollout_path = ? WHERE id = ?",
                   (moved, home.interactive[0])) == 1


def _row_deleted(home: RealHome) -> None:
    from test_real_codex import execute
    assert execute(home.state_db, "DELETE FROM threads WHERE id = ?", (home.interactive[0],)) == 1


def _foreign_checksum(home: RealHome) -> None:
    """A DB migrated by a build with other migration checksums (Windows CRLF files)."""
    from test_real_codex import execute
    assert execute(home.state_db, "UPDATE _sqlx_migrations SET checksum = zeroblob(48) WHERE version = 1") == 1


def _stale_index_entry(home: RealHome) -> None:
    import json
    with open(str(home.home / "session_index.jsonl"), "a") as handle:
        handle.write(json.dumps({"id": "01a20000-0000-7000-8000-000000000000", "thread_name": "gone",
                                 "updated_at": "2026-01-01T00:00:00Z"}) + "\n")


REPAIRS = [
    ("0.169.0", "rebuild-index", _stale_index_entry),
    ("0.169.0", "rebuild-db", _foreign_checksum),
    (NEWEST, "rebuild-db", _foreign_checksum),
    ("0.120.0", "repair-user-events", _blank_first_message),
    ("0.169.0", "reindex", _stale_rollout_path),
    (NEWEST, "reindex", _stale_rollout_path),
    ("0.130.0", "reindex", _stale_rollout_path),
    ("0.120.0", "reindex", _stale_rollout_path),
    ("0.130.0", "reindex", _row_deleted),
    ("0.169.0", "reindex", _row_deleted),
]


@pytest.mark.parametrize("version,command,damage", REPAIRS,
                         ids=["%s-%s-%s" % (v, c, d.__name__.strip("_")) for v, c, d in REPAIRS])
def test_verify_of_db_repairs_equals_the_real_listing(real_home, version, command, damage):
    """Repairs whose plan is SQL (filled columns, repointed paths, inserted rows) or moves a DB
    aside: the scratch copy gets the plan's statements with every path of the home mapped into
    it (and the moves), and --verify's lists before and after equal the real thread/list before
    and after --apply. A DB with foreign migration checksums: the real app-server refuses to
    start on it, and --verify reports exactly that for the home as it is."""
    home = real_home(version, "openai")
    damage(home)
    before = snapshot(home.home)
    code, doc, check, err = verify(home, version, command)
    assert changed_files(before, snapshot(home.home)) == []
    assert check["status"] == "verified", check
    if damage is _foreign_checksum:
        with pytest.raises(harness.CodexError):
            home.listed()
        assert check["listed_before"] is None and "failed to migrate" in check["codex_errors"]["before"], check
        changed = snapshot(home.home)
        assert changed_files(before, changed) == []  # the real refusal wrote nothing either
    else:
        real_before = home.listed()
        assert sorted(check["listed_before"]) == sorted(real_before)
    code, doc, _ = run_tool(home.home, command, "--apply")
    assert code == csr.EXIT_OK, doc
    assert sorted(check["listed_after"]) == sorted(home.listed())
    # Measured with this very check: every release lists a row whose rollout_path is stale
    # while its file is in sessions/; the tool's prediction now says so too.
    assert check["disagreements"] == [] and check["agrees"] is True, check


def test_profile_plan_is_checked_for_the_app_server_and_the_cli_case_is_noted(real_home):
    """Codex 0.169.0 with `--profile work` (work.config.toml names the custom provider): the
    app-server (Desktop, IDE) has no --profile and lists under the top-level openai, so moving
    the threads to the profile's provider takes them out of its list. The surfaces disagree, so
    the move needs `--surface cli` (the user said they use the CLI): --verify shows 2 now, 0
    after the plan, in agreement with the prediction for the app-server, and notes what the
    CLI with --profile resolves instead."""
    home = real_home("0.169.0", "openai")
    (home.home / "work.config.toml").write_text(
        'model_provider = "%s"\n\n[model_providers.%s]\nname = "%s"\nbase_url = "%s"\nwire_api = "responses"\n'
        'env_key = "%s"\n' % (CUSTOM, CUSTOM, CUSTOM, home.standin.base_url, harness.FAKE_KEY_ENV))
    code, doc, check, err = verify(home, "0.169.0", "repair-provider", "--from", "openai", "--profile", "work",
                                   "--surface", "cli")
    assert doc["plan"]["to"] == CUSTOM
    assert check["status"] == "verified" and check["agrees"] is True, check
    assert sorted(check["listed_before"]) == sorted(home.interactive)
    assert check["listed_after"] == []
    assert "`codex --profile work` (the CLI) lists under %s" % CUSTOM in check["profile_note"]


def test_codex_on_path_is_found_and_named(real_home, monkeypatch):
    """The npm `codex` launcher on PATH (a node script that starts the native binary) is the
    Codex --verify uses when no --codex-bin is given, and the output says so."""
    home = real_home("0.169.0", "openai")
    launcher = Path(binary_of("0.169.0"))
    monkeypatch.setenv("PATH", os.pathsep.join([str(launcher.parent), os.environ.get("PATH", "")]))
    code, doc, err = run_tool(home.home, "diagnose", "--verify")
    check = doc["verification"]
    assert (check["status"], check["codex_origin"], check["codex_version"]) == ("verified", "PATH", "0.169.0")
    assert check["codex_bin"] == str(launcher)
    assert check["agrees"] is True


def _pad_before_prompt(home: RealHome, thread_id: str, count: int) -> None:
    """Insert `count` token_count events after the session_meta line, as a long-running
    start-up would: the first user message moves `count` lines down."""
    import json
    path = home.rollout(thread_id)
    lines = path.read_bytes().splitlines(keepends=True)
    filler = (json.dumps({"timestamp": "2026-12-01T00:00:00.000Z", "type": "event_msg",
                          "payload": {"type": "token_count", "info": None, "rate_limits": None}},
                         separators=(",", ":")) + "\n").encode()
    path.write_bytes(lines[0] + filler * count + b"".join(lines[1:]))


HEADS = [(v, pad) for v in VERIFY_RELEASES for pad in (8, 230)]


@pytest.mark.parametrize("version,pad", HEADS, ids=["%s-%d" % h for h in HEADS])
def test_rollout_heads_hold_what_each_release_reads(real_home, version, pad):
    """What listing reads of a rollout, measured per release: with the first user message
    pushed down 8 lines (past the 10 head records, the prompt's response_item before its
    event) or 230 lines (past the 10 + 200 the file lister scans), --verify's listing of the
    scratch copy (rollout heads only) equals the real listing of the real home."""
    home = real_home(version, "openai")
    padded = home.interactive[0]
    _pad_before_prompt(home, padded, pad)
    code, doc, check, err = verify(home, version, "diagnose")
    assert check["status"] == "verified", check
    listed = home.listed()
    assert sorted(check["listed_before"]) == sorted(listed)
    # Measured with this very check: past the 210 lines, 0.130.0 and newer hide the thread,
    # 0.120.0 lists it; the tool's prediction says the same.
    assert (padded in listed) == (pad < csr.HEAD_SCAN_LINES or version == "0.120.0")
    assert check["disagreements"] == [] and check["agrees"] is True, check


def test_a_sqlite_home_inside_the_home_is_not_opened_by_the_verifying_codex(real_home):
    """Codex 0.169.0 with config.toml's sqlite_home naming a folder of the real home (the DBs
    moved there): the copied config.toml would lead the verifying Codex to the real DBs; it is
    pointed at the scratch copy instead. The real home stays byte-identical, and --verify
    lists what the real Codex lists."""
    import shutil as _shutil
    home = real_home("0.169.0", "openai")
    dbs = home.home / "dbs"
    dbs.mkdir()
    for path in list(home.home.glob("state_5.sqlite*")) + list(home.home.glob("thread_history_1.sqlite*")):
        _shutil.move(str(path), str(dbs / path.name))
    config = home.home / "config.toml"
    config.write_text('sqlite_home = "%s"\n' % dbs + config.read_text())
    real = home.listed()
    assert sorted(real) == sorted(home.interactive)
    home.switch_provider(CUSTOM)
    config.write_text('sqlite_home = "%s"\n' % dbs + config.read_text())
    before = snapshot(home.home)
    code, doc, check, err = verify(home, "0.169.0", "repair-provider", "--from", "openai")
    assert changed_files(before, snapshot(home.home)) == []
    assert check["status"] == "verified" and check["agrees"] is True, check
    assert check["listed_before"] == [] and sorted(check["listed_after"]) == sorted(home.interactive)
