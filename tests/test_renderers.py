"""The human-readable output of diagnose, a repair's plan and trace, as exact text.

Small synthetic homes, full expected text: a change to what a person reads shows up here as a
diff. Only the home's path, the backup folder's stamp and the plan id are placeholders. When
the output changes on purpose, update these texts and run `python3 tests/readme_examples.py`
to rewrite the README examples too.
"""

from __future__ import annotations

import re
import sys
import textwrap

import pytest

import codex_session_recovery as csr
from homes import HomeBuilder

ID = "019ae963-246d-729b-8383-7c25e3c27fbd"
EXEC_ID = "019a0926-9923-7acc-85fc-dcbcf5e95c14"
ROLLOUT = "sessions/2026/09/21/rollout-2026-09-21T14-14-20-%s.jsonl" % ID


@pytest.fixture
def home(tmp_path, monkeypatch):
    """One chat made under openai before config.toml switched to `proxy`, one exec thread."""
    monkeypatch.setattr(sys, "argv", ["codex-session-recovery"])  # the Next lines' prefix
    b = HomeBuilder(tmp_path / "home", "0.169.0").provider_config("proxy")
    chat = b.thread(provider="openai", user_text="fix the failing checkout test")
    b.thread(provider="proxy", source="exec", user_text="summarise the CI logs")
    b.index([{"id": chat.id, "thread_name": "checkout", "updated_at": "2026-09-21T14:14:21Z"}])
    assert chat.id == ID
    return b


def text_of(capsys, home: HomeBuilder, *argv: str) -> str:
    code = csr.main([*argv, "--codex-home", str(home.root)])
    out = capsys.readouterr().out
    out = out.replace(str(home.root.resolve()), "<HOME>").replace(str(home.root), "<HOME>")
    out = re.sub(r"\b\d{8}T\d{6}Z", "<STAMP>", out)
    out = re.sub(r"\b[0-9a-f]{16}\b", "<PLAN_ID>", out)
    return "%d\n%s" % (code, out)


def expected(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def test_diagnose_text(home, capsys):
    assert text_of(capsys, home, "diagnose") == expected("""
        1
        codex-session-recovery 0.1.0 diagnose
        Home:      <HOME> (from --codex-home)
        Safety:    read-only: no file was changed; credentials (auth.json, tokens) were not opened
        Provider:  proxy (config.toml model_provider)
        State DB:  state_5.sqlite (schema 62, 43 thread columns; only state DB)
        Release:   0.169.0 reads this home (the newest release that wrote it, by cli_version)
        Threads:   2 (2 DB rows, 2 rollout files); visible by default 0, hidden 2, archived 0
          by source:   exec 1, vscode 1
          by provider: openai 1, proxy 1
        Latest interactive thread: %(id)s (provider openai, 2026-09-21T14:14:21Z)
        Index:     session_index.jsonl present, 1 entry

        [warning] provider_mismatch (1 thread): recorded under a provider other than the active one
            e.g. %(id)s
        [info] source_filtered (1 thread): non-interactive source (exec, mcp, subagent…): hidden from default lists by design
            e.g. %(exec)s

        Next (dry runs; nothing is written without --apply):
          codex-session-recovery --codex-home <HOME> repair-provider --from openai --to proxy
        """ % {"id": ID, "exec": EXEC_ID})


def test_plan_text_dry_run_apply_and_fixed_point(home, capsys):
    header = expected("""
        codex-session-recovery 0.1.0 repair-provider
        Home:      <HOME>
        from:      openai
        to:        proxy
        to source: config.toml model_provider
        scope:     sources cli, vscode; archived threads left out; empty threads left out
        """)
    plan = expected("""
        threads:   1
        Plan:      1 rollout rewritten; 2 history-offset rows updated; 1 thread row updated
          rollout  %(rollout)s: line 1 model_provider, line 6 model_provider_id
          sql      thread_history_1.sqlite: update thread_turns row %(id)s
          sql      thread_history_1.sqlite: update thread_history_projection_state row %(id)s
          sql      state_5.sqlite: update threads row %(id)s
        """ % {"id": ID, "rollout": ROLLOUT})
    assert text_of(capsys, home, "repair-provider", "--from", "openai") == "1\n" + header + plan + expected("""
        Plan id:   <PLAN_ID> (add --expect-plan <PLAN_ID> to --apply to write exactly this plan)
        4 changes planned; nothing was written. Re-run with --apply to write them after a backup to CODEX_HOME/recovery-backups/.
        """)
    assert text_of(capsys, home, "repair-provider", "--from", "openai", "--apply") == "0\n" + header + plan + expected("""
        Applied 4 changes. Backup: <HOME>/recovery-backups/<STAMP>-repair-provider
        Restart Codex (or reload the window), then run diagnose again.
        """)
    assert text_of(capsys, home, "repair-provider", "--from", "openai") == "0\n" + header + expected("""
        threads:   0
        Plan:      nothing
        Nothing to do.
        """)


def test_trace_text_of_a_hidden_and_then_a_listed_thread(home, capsys):
    assert text_of(capsys, home, "trace", ID[:8]) == expected("""
        1
        Thread %(id)s: HIDDEN from default lists (provider_mismatch)
          provider       FAIL active proxy; DB openai; rollout openai
          source         ok   vscode
          archived       ok   in sessions/
          preview        ok   gate column preview; first user message found at line 7
          cwd            ok   matchable
          recent window  n/a  hidden by the filters above
        State DB state_5.sqlite: row present
          provider openai, source vscode, archived 0, rollout_path <HOME>/%(rollout)s
        Rollout %(rollout)s (22191 bytes)
          line 1 session_meta provider openai source vscode
          line 6 thread_settings_applied provider openai
        History projection: 1 turn, next offset 22191 of 22191 bytes
        Index name: set (--verbose shows it)
        Fix (provider_mismatch): codex-session-recovery --codex-home <HOME> repair-provider --from openai --to proxy
        """ % {"id": ID, "rollout": ROLLOUT})
    text_of(capsys, home, "repair-provider", "--from", "openai", "--apply")
    assert text_of(capsys, home, "trace", ID[:8]) == expected("""
        0
        Thread %(id)s: listed by default
          provider       ok   active proxy; DB proxy; rollout proxy
          source         ok   vscode
          archived       ok   in sessions/
          preview        ok   gate column preview; first user message found at line 7
          cwd            ok   matchable
          recent window  ok   rank 1 of the listed threads (Desktop loads ~50)
        State DB state_5.sqlite: row present
          provider proxy, source vscode, archived 0, rollout_path <HOME>/%(rollout)s
        Rollout %(rollout)s (22189 bytes)
          line 1 session_meta provider proxy source vscode
          line 6 thread_settings_applied provider proxy
        History projection: 1 turn, next offset 22189 of 22189 bytes
        Index name: set (--verbose shows it)
        """ % {"id": ID, "rollout": ROLLOUT})
