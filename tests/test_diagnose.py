"""diagnose on synthetic homes shaped like what the real releases write (see tests/homes.py)."""

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import codex_session_recovery as csr
from homes import RELEASES, HomeBuilder, hash_tree, run_in_process, write_jsonl

SCRIPT = Path(csr.__file__).resolve()


def diagnose(home, *extra):
    code, doc, _err = run_in_process("diagnose", "--codex-home", str(home), *extra)
    return code, doc


def thread(doc, thread_id):
    return next(t for t in doc["threads"] if t["id"] == thread_id)


def finding(doc, code):
    return next((f for f in doc["findings"] if f["code"] == code), None)


@pytest.mark.parametrize("release", RELEASES)
def test_provider_switch_hides_old_threads(tmp_path, capsys, release):
    home = HomeBuilder(tmp_path / "home", release).provider_config("proxy")
    old = [home.thread(provider="openai") for _ in range(3)]
    new = home.thread(provider="proxy")
    code, doc = diagnose(home.root)
    assert code == csr.EXIT_FINDINGS
    assert doc["config"]["active_provider"] == "proxy"
    assert doc["counts"]["visible_by_default"] == 1
    assert doc["counts"]["hidden"] == 3
    assert finding(doc, "provider_mismatch")["thread_ids"] == sorted(t.id for t in old)
    assert doc["provider_candidates"] == {"openai": 3}
    assert doc["next_commands"][0].endswith("--codex-home %s repair-provider --from openai --to proxy" % home.root.resolve())
    assert doc["next_argv"][0][-5:] == ["repair-provider", "--from", "openai", "--to", "proxy"]
    entry = thread(doc, old[0].id)
    assert entry["reasons"] == ["provider_mismatch"]
    assert entry["evidence"]["provider_mismatch"] == {"db": "openai", "rollout": "openai", "active": "proxy"}
    assert new.id not in [t["id"] for t in doc["threads"]]


def test_rollout_and_db_providers_are_reported_separately(tmp_path, capsys):
    home = HomeBuilder(tmp_path / "home").provider_config("proxy")
    drift = home.thread(provider="openai", row_overrides={"model_provider": "proxy"})
    _, doc = diagnose(home.root)
    assert thread(doc, drift.id)["evidence"]["provider_mismatch"] == {"db": "proxy", "rollout": "openai", "active": "proxy"}
    assert doc["counts"]["by_provider_db"] == {"proxy": 1}
    assert doc["counts"]["by_provider_rollout"] == {"openai": 1}


def test_missing_provider_in_rollout_counts_as_openai(tmp_path, capsys):
    home = HomeBuilder(tmp_path / "home", "0.130.0")
    legacy = home.thread(provider=None)
    code, doc = diagnose(home.root)
    assert code == csr.EXIT_OK, doc["findings"]
    assert doc["counts"]["visible_by_default"] == 1
    home.provider_config("proxy")
    _, doc = diagnose(home.root)
    assert thread(doc, legacy.id)["reasons"] == ["provider_mismatch"]


def test_by_design_reasons_do_not_fail_the_run(tmp_path, capsys):
    home = HomeBuilder(tmp_path / "home")
    visible = home.thread()
    exec_thread = home.thread(source="exec")
    sub = home.thread(source={"subagent": {"thread_spawn": {"parent_thread_id": visible.id, "depth": 1}}})
    archived = home.thread(archived=True)
    empty = home.thread(user_text=None)
    code, doc = diagnose(home.root)
    assert code == csr.EXIT_OK, doc["findings"]
    assert thread(doc, exec_thread.id)["reasons"] == ["source_filtered"]
    assert thread(doc, sub.id)["reasons"] == ["source_filtered"]
    assert thread(doc, archived.id)["reasons"] == ["archived"]
    assert thread(doc, empty.id)["reasons"] == ["no_user_content"]
    assert doc["counts"]["by_source"] == {"vscode": 3, "exec": 1, "subagent": 1}
    assert doc["counts"]["visible_by_default"] == 1
    assert doc["next_commands"] == []


def test_user_event_missing_hides_only_where_the_release_gates_on_it(tmp_path, capsys):
    old_home = HomeBuilder(tmp_path / "old", "0.120.0")
    blank = old_home.thread(row_overrides={"first_user_message": "", "has_user_event": 0})
    _, doc = diagnose(old_home.root)
    entry = thread(doc, blank.id)
    assert entry["reasons"] == ["user_event_missing"] and entry["hidden"] is True
    assert entry["evidence"]["user_event_missing"]["column"] == "first_user_message"
    assert any(c.endswith("repair-user-events") for c in doc["next_commands"])

    new_home = HomeBuilder(tmp_path / "new", "0.169.0")
    stale = new_home.thread(row_overrides={"preview": "", "first_user_message": ""})
    code, doc = diagnose(new_home.root, "--verbose")
    entry = thread(doc, stale.id)
    assert entry["reasons"] == ["user_event_missing"] and entry["hidden"] is False
    assert entry["evidence"]["user_event_missing"]["column"] == "preview"
    assert code == csr.EXIT_FINDINGS


def test_has_user_event_zero_alone_is_normal(tmp_path, capsys):
    # Every release measured leaves has_user_event at 0 on real threads.
    home = HomeBuilder(tmp_path / "home", "0.169.0")
    home.thread(row_overrides={"has_user_event": 0})
    code, doc = diagnose(home.root)
    assert code == csr.EXIT_OK and doc["findings"] == []


def test_rows_and_files_that_do_not_match(tmp_path, capsys):
    home = HomeBuilder(tmp_path / "home")
    missing = home.thread()
    missing.path.unlink()
    moved = home.thread()
    target = moved.path.parent.parent / moved.path.name
    moved.path.rename(target)
    orphan = home.thread(row=False)
    flag = home.thread(row_overrides={"archived": 1})
    code, doc = diagnose(home.root)
    assert code == csr.EXIT_FINDINGS
    assert thread(doc, missing.id)["reasons"] == ["rollout_missing"]
    assert "rollout_path_stale" in thread(doc, moved.id)["reasons"]
    assert finding(doc, "no_db_row")["thread_ids"] == [orphan.id]
    assert finding(doc, "archive_flag_mismatch")["thread_ids"] == [flag.id]


def test_rollout_only_home(tmp_path, capsys):
    home = HomeBuilder(tmp_path / "home", "0.130.0", with_db=False)
    one = home.thread()
    home.thread(source="exec")
    code, doc = diagnose(home.root)
    assert code == csr.EXIT_OK
    assert doc["state_db"]["live"] is None
    assert doc["counts"] == {**doc["counts"], "threads": 2, "db_rows": 0, "rollout_files": 2, "visible_by_default": 1}
    assert doc["latest_interactive_thread"]["id"] == one.id


def test_session_index_stale_and_bad_lines(tmp_path, capsys):
    home = HomeBuilder(tmp_path / "home")
    kept = home.thread()
    home.index([{"id": kept.id, "thread_name": "checkout", "updated_at": "2026-01-01T00:00:00Z"},
                {"id": "019a0000-0000-7000-8000-000000000001", "thread_name": "gone", "updated_at": "x"}])
    with open(home.root / "session_index.jsonl", "ab") as handle:
        handle.write(b"not json\n[1,2]\n")
    _, doc = diagnose(home.root)
    assert finding(doc, "index_stale")["evidence"]["thread_ids"] == ["019a0000-0000-7000-8000-000000000001"]
    assert finding(doc, "index_bad_lines")["evidence"]["lines"] == 2
    assert doc["session_index"] == {"present": True, "entries": 2, "bad_lines": 2}


def test_several_state_dbs_pick_the_live_one(tmp_path, capsys):
    home = HomeBuilder(tmp_path / "home")
    home.thread()
    (home.root / "sqlite").mkdir()
    shutil.copy(home.db_path, home.root / "sqlite" / "state_5.sqlite")
    shutil.copy(home.db_path, home.root / "state_4.sqlite")
    os.utime(home.db_path, (1, 1))
    _, doc = diagnose(home.root)
    assert doc["state_db"]["live"]["path"] == os.path.join("sqlite", "state_5.sqlite")
    stale = finding(doc, "multiple_state_dbs")["evidence"]
    assert sorted(stale["others"]) == ["state_4.sqlite", "state_5.sqlite"]


def test_sqlite_home_setting_wins(tmp_path, capsys, monkeypatch):
    home = HomeBuilder(tmp_path / "home")
    home.thread()
    elsewhere = tmp_path / "db"
    elsewhere.mkdir()
    shutil.copy(home.db_path, elsewhere / "state_5.sqlite")
    monkeypatch.setenv("CODEX_SQLITE_HOME", str(elsewhere))
    _, doc = diagnose(home.root)
    assert doc["state_db"]["live"]["origin"] == "CODEX_SQLITE_HOME"
    assert doc["state_db"]["reason"] == "named by CODEX_SQLITE_HOME"


def test_provider_not_configured(tmp_path, capsys):
    home = HomeBuilder(tmp_path / "home").provider_config("proxy")
    home.thread(provider="retired")
    _, doc = diagnose(home.root)
    evidence = finding(doc, "provider_not_configured")["evidence"]
    assert evidence["provider"] == "retired" and evidence["threads"] == 1


def test_backfill_not_complete(tmp_path, capsys):
    home = HomeBuilder(tmp_path / "home")
    home.thread()
    conn = sqlite3.connect(str(home.db_path))
    conn.execute("UPDATE backfill_state SET status='running', last_watermark='sessions/2026/x.jsonl'")
    conn.commit()
    conn.close()
    _, doc = diagnose(home.root)
    assert finding(doc, "backfill_incomplete")["evidence"]["status"] == "running"


BAD_ROLLOUTS = {
    "torn_line": lambda good: good + b'{"timestamp":"x","type":"event_msg","payload":{"type":"user_mes',
    "bom": lambda good: b"\xef\xbb\xbf" + good,
    "invalid_utf8": lambda good: good.replace(b"fix the failing", b"fix the \xe2\x82 failing", 1),
    "nul_bytes": lambda good: good + b"\x00\x00\x00\n",
    "first_line_not_session_meta": lambda good: good.split(b"\n", 1)[1],
    "empty_file": lambda good: b"",
    "bad_json": lambda good: good.split(b"\n", 1)[0] + b"\n{not json}\n" + good.split(b"\n", 1)[1],
}


@pytest.mark.parametrize("problem", sorted(BAD_ROLLOUTS))
def test_damaged_rollouts_become_findings(tmp_path, capsys, problem):
    home = HomeBuilder(tmp_path / "home")
    healthy = home.thread()
    damaged = home.thread(row=False)
    damaged.path.write_bytes(BAD_ROLLOUTS[problem](damaged.path.read_bytes()))
    before = hash_tree(home.root)
    code, doc = diagnose(home.root)
    damage = finding(doc, "rollout_unreadable")
    bad = damage["evidence"]
    assert problem in bad["problems"], bad
    assert [e["path"] for e in bad["examples"]] == [os.path.relpath(damaged.path, home.root)]
    assert problem in bad["examples"][0]["problems"]
    # Damage Codex reads past (and repairs carry verbatim) is information, and so is a line that
    # is not UTF-8 (no repair may change the conversation's bytes; the thread it hides is named
    # by head_line_not_utf8), and an empty file, which holds nothing; the rest asks for a look.
    assert damage["severity"] == ("info" if problem in csr.READ_PAST_PROBLEMS + ("invalid_utf8", "empty_file") else "warning")
    assert bad["kept_verbatim"] is (problem in csr.CARRIED_PROBLEMS)
    # The damaged rollout has no DB row: no_db_row, to be reindexed; an empty file holds no
    # conversation to index (rollout_not_indexable, information), so nothing is left to do.
    assert code == (csr.EXIT_OK if problem == "empty_file" else csr.EXIT_FINDINGS)
    assert healthy.id not in [t["id"] for t in doc["threads"]]
    assert hash_tree(home.root) == before


def test_id_mismatch_and_legacy_and_compressed(tmp_path, capsys):
    home = HomeBuilder(tmp_path / "home", with_db=False)
    fork = home.thread()
    text = fork.path.read_text().replace('"id":"%s"' % fork.id, '"id":"019a0000-0000-7000-8000-00000000abcd"', 1)
    fork.path.write_text(text)
    legacy = home.root / "sessions" / "rollout-2025-01-01T00-00-00-019a0000-0000-7000-8000-00000000beef.jsonl"
    write_jsonl(legacy, [{"id": "019a0000-0000-7000-8000-00000000beef", "timestamp": "2025-01-01T00:00:00Z"}])
    (home.root / "sessions" / "rollout-2025-01-02T00-00-00-019a0000-0000-7000-8000-00000000cafe.jsonl.zst").write_bytes(b"\x28\xb5\x2f\xfd")
    _, doc = diagnose(home.root)
    problems = finding(doc, "rollout_unreadable")["evidence"]["problems"]
    assert problems == {"compressed": 1, "id_mismatch": 1, "legacy_format": 1}
    # The file name's UUID is the thread's identity, not a foreign id in session_meta.
    hidden = {t["id"]: t["reasons"] for t in doc["threads"]}
    assert "019a0000-0000-7000-8000-00000000abcd" not in hidden and fork.id not in hidden
    assert hidden == {"019a0000-0000-7000-8000-00000000beef": ["no_user_content"]}
    # Codex reads .zst when its compression feature is on; the tool cannot, so it stays counted.
    assert doc["counts"]["visible_by_default"] == 2


def test_diagnose_changes_no_byte(tmp_path, capsys):
    home = HomeBuilder(tmp_path / "home").provider_config("proxy")
    for provider in ("openai", "proxy", "openai"):
        home.thread(provider=provider)
    home.index([{"id": "x", "thread_name": "n", "updated_at": "t"}])
    (home.root / ".codex-global-state.json").write_text('{"electron-persisted-atom-state": {"sidebar-collapsed-groups": {"/a": true}}}')
    before = hash_tree(home.root)
    diagnose(home.root)
    csr.main(["diagnose", "--codex-home", str(home.root), "--verbose"])
    capsys.readouterr()
    assert hash_tree(home.root) == before


def test_json_has_no_message_text_unless_verbose(tmp_path, capsys):
    home = HomeBuilder(tmp_path / "home").provider_config("proxy")
    home.thread(provider="openai", user_text="my secret plan for the launch")
    code = csr.main(["diagnose", "--codex-home", str(home.root), "--json"])
    out = capsys.readouterr().out
    assert "secret plan" not in out
    csr.main(["diagnose", "--codex-home", str(home.root), "--json", "--verbose"])
    assert "secret plan" in capsys.readouterr().out
    assert code == csr.EXIT_FINDINGS


def test_shared_options_before_and_after_the_subcommand(tmp_path, capsys):
    home = HomeBuilder(tmp_path / "home")
    home.thread()
    assert csr.main(["--codex-home", str(home.root), "--json", "diagnose"]) == 0
    before = json.loads(capsys.readouterr().out)
    assert csr.main(["diagnose", "--codex-home", str(home.root), "--json"]) == 0
    after = json.loads(capsys.readouterr().out)
    assert before["counts"] == after["counts"]


def test_codex_home_from_environment(tmp_path, capsys, monkeypatch):
    home = HomeBuilder(tmp_path / "home")
    monkeypatch.setenv("CODEX_HOME", str(home.root))
    assert csr.main(["diagnose", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["codex_home_origin"] == "CODEX_HOME"


def test_missing_home_is_a_usage_error(tmp_path, capsys):
    assert csr.main(["diagnose", "--codex-home", str(tmp_path / "nope")]) == csr.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("error: Codex home") and err.count("\n") == 1
    assert csr.main(["diagnose", "--codex-home", str(tmp_path / "nope"), "--json"]) == csr.EXIT_USAGE
    doc = json.loads(capsys.readouterr().out)
    assert doc["error"]["kind"] == "error" and doc["exit_code"] == 2


def test_corrupt_state_db_is_a_finding(tmp_path, capsys):
    home = HomeBuilder(tmp_path / "home")
    home.thread()
    for suffix in ("-wal", "-shm"):
        Path(str(home.db_path) + suffix).unlink(missing_ok=True) if sys.version_info >= (3, 8) else None
    home.db_path.write_bytes(b"this is not a database" * 100)
    before = hash_tree(home.root)
    code, doc = diagnose(home.root)
    assert code == csr.EXIT_FINDINGS
    assert "not a database" in finding(doc, "state_db_unreadable")["evidence"]["error"]
    assert doc["counts"]["rollout_files"] == 1
    assert hash_tree(home.root) == before


def test_human_output_is_short_and_names_next_step(tmp_path, capsys):
    home = HomeBuilder(tmp_path / "home").provider_config("proxy")
    for _ in range(10):
        home.thread(provider="openai")
    assert csr.main(["diagnose", "--codex-home", str(home.root)]) == 1
    out = capsys.readouterr().out
    assert "provider_mismatch (10 threads)" in out
    assert "repair-provider --from openai --to proxy" in out
    assert len(out.splitlines()) < 30


def _pythons():
    found = []
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    for minor in range(9, 14):
        candidates = sorted(Path(root, "versions").glob("3.%d.*/bin/python3" % minor)) if os.path.isdir(root) else []
        found.extend(str(c) for c in candidates[-1:])
    return found or [sys.executable]


@pytest.mark.parametrize("python", _pythons())
def test_script_runs_under_each_python(tmp_path, python):
    home = HomeBuilder(tmp_path / "home").provider_config("proxy")
    home.thread(provider="openai")
    before = hash_tree(home.root)
    # Not run_script: the script runs under `python`, each interpreter in turn.
    result = subprocess.run([python, str(SCRIPT), "diagnose", "--codex-home", str(home.root), "--json"],
                            cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    assert result.returncode == 1, result.stderr.decode()
    doc = json.loads(result.stdout)
    assert doc["counts"]["hidden"] == 1
    assert result.stderr == b""
    assert hash_tree(home.root) == before
