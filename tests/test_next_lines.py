"""diagnose's Next block and trace's fix lines: derived from the one table of repairs, ordered
by what each repair needs first, complete (every option of the verdict, the absolute home,
shell-quoted), so each runs verbatim; severities that mean there is something to do; providers
resolved the way the release reading the home resolves them, per surface."""

import json
import os
import shlex
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import codex_session_recovery as csr
from homes import HomeBuilder, hash_tree, run_in_process, script_env

SCRIPT = Path(csr.__file__).resolve()


def diagnose(home, *extra):
    code, doc, _err = run_in_process("diagnose", "--codex-home", str(home), *extra)
    return code, doc


def finding(doc, code, severity=None):
    return next((f for f in doc["findings"] if f["code"] == code and severity in (None, f["severity"])), None)


def run_line(argv, cwd, *extra):
    """Not homes.run_script: `argv` is a Next line run verbatim, program and all."""
    return subprocess.run(list(argv) + list(extra), cwd=str(cwd), capture_output=True, text=True, timeout=120,
                          env=script_env())


def plan_id(stdout):
    return next(line.split()[2] for line in stdout.splitlines() if line.startswith("Plan id:"))


def follow(home, cwd, *extra, rounds=3):
    """Run diagnose and its Next lines verbatim (dry run, then --apply --expect-plan) until it
    exits 0; returns the rounds taken."""
    for n in range(1, rounds + 2):
        result = run_line([sys.executable, str(SCRIPT), "diagnose", "--codex-home", str(home), *extra, "--json"], cwd)
        doc = json.loads(result.stdout)
        if doc["exit_code"] == 0:
            return n - 1
        assert n <= rounds, [(f["severity"], f["code"]) for f in doc["findings"]]
        assert doc["next_argv"], [(f["severity"], f["code"]) for f in doc["findings"] if f["severity"] != "info"]
        for argv in doc["next_argv"]:
            dry = run_line(argv, cwd)
            assert dry.returncode == 1, "plans nothing: %s\n%s%s" % (argv, dry.stdout, dry.stderr)
            applied = run_line(argv, cwd, "--apply", "--expect-plan", plan_id(dry.stdout))
            assert applied.returncode == 0, applied.stdout + applied.stderr
    raise AssertionError("unreachable")


# -- the table ----------------------------------------------------------------------------------


def test_every_repair_command_comes_from_the_table():
    parser = csr.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, csr.argparse._SubParsersAction))
    repairs = {name for name, p in sub.choices.items() if p.get_default("handler") is csr.run_repair}
    assert repairs == set(csr.REPAIR_BY_NAME)
    for entry in csr.REPAIRS:
        assert sub.choices[entry.name].get_default("planner") is entry.planner
        known = set(csr.REASONS) | set(csr.HOME_FINDINGS)
        assert set(entry.cures) <= known, entry.name
        assert set(entry.after) <= set(csr.REPAIR_BY_NAME), entry.name
    order = [r.name for r in csr.repairs_in_order()]
    for entry in csr.REPAIRS:
        assert all(order.index(a) < order.index(entry.name) for a in entry.after)


def test_next_never_names_import_whatever_the_findings():
    """Only the user knows where another home is: import cures no code, so no finding gives it
    a Next line (every code of both tables, home-wide and for one thread)."""
    entry = csr.REPAIR_BY_NAME["import"]
    assert entry.cures == ()
    findings = [{"code": code, "severity": "warning"} for code in list(csr.REASONS) + list(csr.HOME_FINDINGS)]
    assert entry.next_args(None, findings, None) == []


def test_no_reason_is_cured_by_two_repairs():
    cured = [code for entry in csr.REPAIRS for code in entry.cures]
    assert len(cured) == len(set(cured))


# -- lines that run verbatim ---------------------------------------------------------------------


def test_moved_home_runs_reindex_before_repair_provider(tmp_path, capsys):
    home = HomeBuilder(tmp_path / "home", "0.169.0").provider_config("proxy")
    old_home = "/home/olduser/.codex"
    threads = [home.thread(provider="openai") for _ in range(2)]
    for thread in threads:
        stored = old_home + "/" + thread.path.relative_to(home.root).as_posix()
        conn = sqlite3.connect(str(home.db_path))
        conn.execute("UPDATE threads SET rollout_path = ? WHERE id = ?", (stored, thread.id))
        conn.commit()
        conn.close()
    code, doc = diagnose(home.root)
    names = [argv[argv.index("--codex-home") + 2] for argv in doc["next_argv"]]
    assert names == ["reindex", "repair-provider"]
    assert follow(home.root, tmp_path) == 1


def test_lines_carry_every_option_of_the_verdict_and_the_absolute_home(tmp_path, capsys):
    home = HomeBuilder(tmp_path / "my codex's home", "0.169.0").provider_config("proxy")
    home.thread(provider="openai", source="exec")
    home.thread(provider="openai", archived=True)
    home.thread(provider="openai", user_text=None)
    os.chdir(str(tmp_path))
    code = csr.main(["diagnose", "--codex-home", "my codex's home", "--json", "--source", "exec",
                     "--source", "vscode", "--include-archived", "--include-empty"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 1
    (argv,) = doc["next_argv"]
    assert argv[argv.index("--codex-home") + 1] == str(home.root.resolve())
    assert argv[argv.index("repair-provider"):] == ["repair-provider", "--from", "openai", "--to", "proxy",
                                                   "--source", "exec", "--source", "vscode",
                                                   "--include-archived", "--include-empty"]
    assert shlex.split(doc["next_commands"][0]) == argv
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    before = hash_tree(home.root)
    dry = run_line(shlex.split(doc["next_commands"][0]), elsewhere, "--json")
    assert json.loads(dry.stdout)["plan"]["threads"] == 3
    assert hash_tree(home.root) == before


def test_text_next_block_is_the_json_argv(tmp_path, capsys):
    home = HomeBuilder(tmp_path / "home", "0.169.0").provider_config("proxy")
    home.thread(provider="openai")
    home.config('model_provider = "proxy"\n[model_providers.proxy]\nbase_url = "x"\n', "work.config.toml")
    assert csr.main(["diagnose", "--codex-home", str(home.root), "--profile", "work"]) == 1
    text = capsys.readouterr().out
    block = text.split("Next (dry runs; nothing is written without --apply):\n", 1)[1]
    printed = [shlex.split(line) for line in block.splitlines() if line.startswith("  ")]
    csr.main(["diagnose", "--codex-home", str(home.root), "--profile", "work", "--json"])
    assert printed == json.loads(capsys.readouterr().out)["next_argv"]


# -- severity means action -----------------------------------------------------------------------


def test_threads_hidden_by_design_are_info_and_a_repaired_home_exits_0(tmp_path, capsys):
    home = HomeBuilder(tmp_path / "home", "0.169.0").provider_config("proxy")
    home.thread(provider="openai")
    exec_thread = home.thread(provider="openai", source="exec")
    archived = home.thread(provider="openai", archived=True)
    code, doc = diagnose(home.root)
    assert finding(doc, "provider_mismatch", "warning")["count"] == 1
    info = finding(doc, "provider_mismatch", "info")
    assert sorted(info["thread_ids"]) == sorted([exec_thread.id, archived.id])
    assert all("outside the repair scope" in why for why in info["why_no_action"])
    assert follow(home.root, tmp_path) == 1
    code, doc = diagnose(home.root)
    assert code == 0 and finding(doc, "provider_mismatch", "info")["count"] == 2


def test_old_provider_left_only_on_threads_hidden_by_design_is_info(tmp_path, capsys):
    home = HomeBuilder(tmp_path / "home", "0.169.0").provider_config("proxy")
    home.thread(provider="gone", source="exec")
    code, doc = diagnose(home.root)
    assert code == 0
    assert finding(doc, "provider_not_configured")["severity"] == "info"


def test_deleted_rollouts_end_the_loop(tmp_path, capsys):
    home = HomeBuilder(tmp_path / "home", "0.169.0").provider_config("proxy")
    kept = home.thread(provider="openai")
    gone = home.thread(provider="openai")
    home.index([{"id": gone.id, "thread_name": "old", "updated_at": "t"}])
    gone.path.unlink()
    code, doc = diagnose(home.root)
    assert doc["provider_candidates"] == {"openai": 1}
    assert finding(doc, "rollout_missing")["severity"] == "info"
    assert finding(doc, "provider_mismatch", "info")["thread_ids"] == [gone.id]
    names = [argv[argv.index("--codex-home") + 2] for argv in doc["next_argv"]]
    assert names == ["repair-provider", "rebuild-index"]
    assert follow(home.root, tmp_path) == 1
    assert kept.id


# -- release-aware resolution ---------------------------------------------------------------------


LEGACY = 'profile = "work"\nmodel_provider = "proxy"\n[model_providers.proxy]\nbase_url = "x"\n' \
         '[model_providers.other]\nbase_url = "y"\n[profiles.work]\nmodel_provider = "other"\n'


@pytest.mark.parametrize("release,provider,severity", [("0.130.0", "other", "info"), ("0.120.0", "other", "info"),
                                                        ("0.169.0", "proxy", "warning")])
def test_top_level_profile_is_followed_only_by_releases_that_accept_it(tmp_path, capsys, release, provider, severity):
    home = HomeBuilder(tmp_path / "home", release).config(LEGACY)
    home.thread(provider=provider)
    code, doc = diagnose(home.root)
    assert doc["config"]["active_provider"] == provider
    assert doc["reader_release"]["version"] == release
    legacy = finding(doc, "legacy_profile")
    assert legacy["severity"] == severity
    assert code == (1 if severity == "warning" else 0)
    if severity == "warning":
        assert 'remove the line `profile = "work"`' in legacy["evidence"]["manual_step"]
        assert not doc["next_argv"]


def profile_home(tmp_path):
    home = HomeBuilder(tmp_path / "home", "0.169.0").config('model_provider = "openai"\n')
    home.config('model_provider = "proxy"\n[model_providers.proxy]\nbase_url = "x"\n', "work.config.toml")
    listed = [home.thread(provider="openai") for _ in range(2)]
    profiled = home.thread(provider="proxy")
    return home, listed, profiled


def test_surfaces_that_disagree_are_said_and_no_move_is_planned_until_one_is_chosen(tmp_path, capsys):
    home, listed, profiled = profile_home(tmp_path)
    code, doc = diagnose(home.root, "--profile", "work")
    assert code == 1
    assert doc["config"]["surfaces"]["cli"]["provider"] == "proxy"
    assert doc["config"]["surfaces"]["app"]["provider"] == "openai"
    assert "--surface app" in finding(doc, "surfaces_disagree")["evidence"]["manual_step"]
    assert doc["next_argv"] == []
    before = hash_tree(home.root)
    assert csr.main(["repair-provider", "--codex-home", str(home.root), "--profile", "work", "--from", "openai"]) == 2
    assert "Desktop and the IDE" in capsys.readouterr().err
    assert hash_tree(home.root) == before


def test_the_chosen_surface_decides_the_move(tmp_path, capsys):
    home, listed, profiled = profile_home(tmp_path)
    code, doc = diagnose(home.root, "--profile", "work", "--surface", "app")
    (argv,) = doc["next_argv"]
    assert argv[argv.index("--codex-home"):] == ["--codex-home", str(home.root.resolve()), "--profile", "work",
                                                 "--surface", "app", "repair-provider", "--from", "proxy",
                                                 "--to", "openai"]
    code = csr.main(["repair-provider", "--codex-home", str(home.root), "--profile", "work", "--surface", "app",
                     "--from", "proxy", "--to", "openai", "--json"])
    warnings = json.loads(capsys.readouterr().out)["warnings"]
    assert any("the codex command line (--profile) uses proxy, and there the moved threads" in w for w in warnings)
    assert follow(home.root, tmp_path, "--profile", "work", "--surface", "app") == 1
    code, doc = diagnose(home.root, "--profile", "work", "--surface", "cli")
    assert finding(doc, "provider_mismatch", "warning")["count"] == 3


def test_release_on_path_is_used_when_newer(tmp_path, capsys, monkeypatch):
    home = HomeBuilder(tmp_path / "home", "0.130.0").config(LEGACY)
    home.thread(provider="other")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "codex"
    fake.write_text("#!/bin/sh\necho 'codex-cli 0.169.0'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", "%s%s%s" % (bin_dir, os.pathsep, os.environ["PATH"]))
    code, doc = diagnose(home.root)
    assert doc["reader_release"]["version"] == "0.169.0"
    assert "PATH" in doc["reader_release"]["basis"]
    assert doc["config"]["active_provider"] == "proxy"


# -- trace's fix lines --------------------------------------------------------------------------


def test_trace_fix_line_reaches_the_thread_it_traces(tmp_path, capsys):
    home = HomeBuilder(tmp_path / "home", "0.169.0").provider_config("proxy")
    exec_thread = home.thread(provider="openai", source="exec")
    csr.main(["trace", exec_thread.id, "--codex-home", str(home.root), "--json"])
    trace = json.loads(capsys.readouterr().out)["trace"]
    argv = trace["fix_commands"]["provider_mismatch"]
    assert argv[argv.index("repair-provider"):] == ["repair-provider", "--from", "openai", "--to", "proxy",
                                                   "--source", "exec"]
    dry = run_line(argv, tmp_path, "--json")
    assert json.loads(dry.stdout)["changes"] > 0


def test_trace_names_no_move_while_the_surfaces_disagree(tmp_path, capsys):
    home, listed, profiled = profile_home(tmp_path)
    csr.main(["trace", listed[0].id, "--codex-home", str(home.root), "--profile", "work", "--json"])
    trace = json.loads(capsys.readouterr().out)["trace"]
    assert trace["fix_commands"] == {}
    assert any("--surface" in fix for fix in trace["fixes"])


def test_trace_on_a_moved_home_repoints_before_it_moves(tmp_path, capsys):
    home = HomeBuilder(tmp_path / "home", "0.169.0").provider_config("proxy")
    thread = home.thread(provider="openai")
    conn = sqlite3.connect(str(home.db_path))
    conn.execute("UPDATE threads SET rollout_path = ? WHERE id = ?",
                 ("/home/olduser/.codex/" + thread.path.relative_to(home.root).as_posix(), thread.id))
    conn.commit()
    conn.close()
    csr.main(["trace", thread.id, "--codex-home", str(home.root), "--json"])
    trace = json.loads(capsys.readouterr().out)["trace"]
    order = [fix.split(": ", 1)[0] for fix in trace["fixes"]]
    assert order.index("rollout_path_stale") < order.index("provider_mismatch")
    assert trace["fix_commands"]["rollout_path_stale"][-1] == "reindex"
