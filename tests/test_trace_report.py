"""trace (one thread through every layer) and report (a redacted bundle)."""

import json
import sqlite3

import codex_session_recovery as csr
from homes import HomeBuilder, hash_tree


def test_trace_explains_a_hidden_thread_layer_by_layer(tmp_path, capsys, cli):
    home = HomeBuilder(tmp_path / "home", "0.169.0").provider_config("proxy")
    thread = home.thread(provider="openai", turns=2)
    home.index([{"id": thread.id, "thread_name": "checkout", "updated_at": "t"}])
    before = hash_tree(home.root)
    code, doc = cli("trace", thread.id[:10], "--codex-home", str(home.root))
    trace = doc["trace"]
    assert code == csr.EXIT_FINDINGS and trace["id"] == thread.id and not trace["listed_by_default"]
    verdicts = {v["filter"]: v["passes"] for v in trace["filters"]}
    assert verdicts == {"provider": False, "source": True, "archived": True, "preview": True, "cwd": True,
                        "recent window": None}
    layer = trace["rollouts"][0]
    assert [m["model_provider"] for m in layer["session_meta_lines"]] == ["openai"]
    assert [s["model_provider_id"] for s in layer["thread_settings_applied"]] == ["openai", "openai"]
    assert trace["projection"]["turns"] == 2
    assert trace["projection"]["next_rollout_byte_offset"] == thread.path.stat().st_size
    assert len(trace["fixes"]) == 1
    assert trace["fixes"][0].startswith("provider_mismatch: python3 ")
    assert trace["fixes"][0].endswith(" --codex-home %s repair-provider --from openai --to proxy" % home.root.resolve())
    assert trace["fix_commands"]["provider_mismatch"][-5:] == ["repair-provider", "--from", "openai", "--to", "proxy"]
    assert trace["index"]["name"] == "(named)"
    assert hash_tree(home.root) == before
    assert csr.main(["trace", thread.id, "--codex-home", str(home.root)]) == 1
    text = capsys.readouterr().out
    assert "HIDDEN from default lists (provider_mismatch)" in text and "FAIL" in text


def test_trace_of_a_listed_thread_and_of_unknown_ids(tmp_path, capsys, cli):
    home = HomeBuilder(tmp_path / "home")
    thread = home.thread()
    code, doc = cli("trace", thread.id, "--codex-home", str(home.root))
    assert code == csr.EXIT_OK
    assert doc["trace"]["listed_by_default"] is True
    assert csr.main(["trace", "019a0000", "--codex-home", str(home.root)]) == csr.EXIT_USAGE
    assert "no thread 019a0000" in capsys.readouterr().err


def test_trace_finds_a_thread_by_index_name_and_sees_stale_db_copies(tmp_path, cli):
    home = HomeBuilder(tmp_path / "home")
    thread = home.thread()
    home.index([{"id": thread.id, "thread_name": "Release Notes", "updated_at": "t"}])
    (home.root / "sqlite").mkdir()
    stale = home.root / "state_4.sqlite"
    conn = sqlite3.connect(str(stale))
    conn.execute("CREATE TABLE threads (id TEXT, model_provider TEXT, archived INTEGER, rollout_path TEXT)")
    conn.execute("INSERT INTO threads VALUES (?, 'legacy', 0, '')", (thread.id,))
    conn.commit()
    conn.close()
    trace = cli("trace", "release notes", "--codex-home", str(home.root))[1]["trace"]
    assert trace["id"] == thread.id
    assert trace["db"]["other_dbs"] == [{"db": "state_4.sqlite", "model_provider": "legacy", "archived": 0}]


def test_report_is_redacted(tmp_path, capsys):
    home = HomeBuilder(tmp_path / "home").provider_config("proxy")
    home.thread(provider="openai", user_text="confidential roadmap", cwd="/Users/ana/secret-project")
    home.index([{"id": "019a0000-0000-7000-8000-00000000dead", "thread_name": "Top secret name", "updated_at": "t"}])
    code = csr.main(["report", "--codex-home", str(home.root)])
    out = capsys.readouterr().out
    doc = json.loads(out)
    assert code == csr.EXIT_FINDINGS and doc["codex_home"] == "<CODEX_HOME>"
    for secret in ("confidential roadmap", "secret-project", "Top secret name", str(tmp_path)):
        assert secret not in out
    assert {f["code"] for f in doc["findings"]} >= {"provider_mismatch", "index_stale"}
    assert doc["state_db"]["live"]["path"] == "<CODEX_HOME>/state_5.sqlite"
    assert doc["counts"]["threads"] == 1
