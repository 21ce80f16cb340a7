"""The four repairs and restore, on synthetic homes shaped like the real releases'.

Every repair: a dry run changes no byte; --apply backs up, then writes; a second run plans
nothing; restore returns the home to what it was (files by SHA-256, DBs by iterdump)."""

import json
import sqlite3
from pathlib import Path

import pytest

import codex_session_recovery as csr
from homes import HomeBuilder, db_dump, hash_tree, run_in_process


run = run_in_process  # (exit code, JSON document, stderr)


def snapshot(home):
    dbs = {p.name: db_dump(p) for p in Path(home).glob("*.sqlite")}
    files = {k: v for k, v in hash_tree(home).items() if not k.endswith((".sqlite", ".sqlite-wal"))}
    return files, dbs


def lines(path):
    return Path(path).read_bytes().splitlines(keepends=True)


@pytest.fixture
def switched(tmp_path):
    """0.169.0 home: two threads under openai, one under the active custom provider."""
    home = HomeBuilder(tmp_path / "home", "0.169.0").provider_config("proxy-gateway")
    old = [home.thread(provider="openai", turns=2), home.thread(provider="openai")]
    home.thread(provider="proxy-gateway")
    return home, old


def test_repair_provider_dry_run_changes_nothing(switched, capsys):
    home, old = switched
    before = hash_tree(home.root)
    code, doc, _ = run("repair-provider", "--codex-home", str(home.root), "--from", "openai")
    assert code == csr.EXIT_FINDINGS
    assert doc["applied"] is False and doc["backup_dir"] is None
    assert doc["plan"]["to"] == "proxy-gateway" and doc["plan"]["to_source"] == "config.toml model_provider"
    assert doc["plan"]["threads"] == 2
    kinds = sorted(a["kind"] for a in doc["actions"])
    assert kinds.count("rollout_edit") == 2 and kinds.count("sql") >= 2
    assert hash_tree(home.root) == before
    assert not (home.root / "recovery-backups").exists()


def test_repair_provider_human_dry_run_says_how_to_apply(switched, capsys):
    home, _ = switched
    assert csr.main(["repair-provider", "--codex-home", str(home.root), "--from", "openai"]) == 1
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert "changes planned; nothing was written. Re-run with --apply" in last


def test_repair_provider_apply_is_surgical_and_a_fixed_point(switched, capsys):
    home, old = switched
    before_lines = {t.id: lines(t.path) for t in old}
    before_mtime = {t.id: t.path.stat().st_mtime_ns for t in old}
    code, doc, _ = run("repair-provider", "--codex-home", str(home.root), "--from", "openai", "--apply")
    assert code == csr.EXIT_OK and doc["applied"] is True
    backup = Path(doc["backup_dir"])
    manifest = json.loads((backup / "manifest.json").read_text())
    assert manifest["complete"] is True
    assert {e["kind"] for e in manifest["entries"]} == {"sqlite", "file"}
    for thread in old:
        after = lines(thread.path)
        assert len(after) == len(before_lines[thread.id])
        for old_raw, new_raw in zip(before_lines[thread.id], after):
            if old_raw == new_raw:
                continue
            old_rec, new_rec = json.loads(old_raw), json.loads(new_raw)
            if old_rec["type"] == "session_meta":
                old_rec["payload"]["model_provider"] = "proxy-gateway"
            else:
                assert old_rec["payload"]["type"] == "thread_settings_applied"
                old_rec["payload"]["thread_settings"]["model_provider_id"] = "proxy-gateway"
            assert new_rec == old_rec
            # only the value bytes differ: the rest of the line is the same text
            assert new_raw.replace(b'"proxy-gateway"', b'"openai"') == old_raw
        assert thread.path.stat().st_mtime_ns == before_mtime[thread.id]
        assert (backup / "files" / thread.path.relative_to(home.root)).read_bytes() == b"".join(before_lines[thread.id])
    conn = sqlite3.connect(str(home.db_path))
    assert {r[0] for r in conn.execute("SELECT model_provider FROM threads")} == {"proxy-gateway"}
    conn.close()
    code, doc, _ = run("repair-provider", "--codex-home", str(home.root), "--from", "openai")
    assert code == csr.EXIT_OK and doc["changes"] == 0
    code, doc, _ = run("diagnose", "--codex-home", str(home.root))
    assert code == csr.EXIT_OK and doc["counts"]["hidden"] == 0


def test_repair_provider_keeps_history_offsets_true(switched, capsys):
    home, old = switched
    thread = old[0]

    def line_ordinals_at_offsets():
        conn = sqlite3.connect(str(home.root / "thread_history_1.sqlite"))
        rows = conn.execute("SELECT rollout_byte_offset, rollout_end_byte_offset FROM thread_turns WHERE thread_id=? "
                            "ORDER BY rollout_ordinal", (thread.id,)).fetchall()
        state = conn.execute("SELECT next_rollout_byte_offset FROM thread_history_projection_state WHERE thread_id=?",
                             (thread.id,)).fetchone()[0]
        conn.close()
        data = thread.path.read_bytes()
        assert state == len(data)
        found = []
        for start, end in rows:
            assert start == 0 or data[start - 1:start] == b"\n"
            assert data[end - 1:end] == b"\n"
            found.append(json.loads(data[start:data.index(b"\n", start)])["ordinal"])
        return found

    before = line_ordinals_at_offsets()
    assert len(before) == 2
    run("repair-provider", "--codex-home", str(home.root), "--from", "openai", "--apply")
    assert line_ordinals_at_offsets() == before


def test_restore_returns_every_byte(switched, capsys):
    home, _ = switched
    files_before, dbs_before = snapshot(home.root)
    run("repair-provider", "--codex-home", str(home.root), "--from", "openai", "--apply")
    assert snapshot(home.root) != (files_before, dbs_before)
    code, doc, _ = run("restore", "--codex-home", str(home.root), "--latest")
    assert code == csr.EXIT_FINDINGS and doc["applied"] is False and doc["changed_since_run"] == []
    code, doc, _ = run("restore", "--codex-home", str(home.root), "--latest", "--apply")
    assert code == csr.EXIT_OK and Path(doc["undo_backup_dir"]).is_dir()
    assert snapshot(home.root) == (files_before, dbs_before)
    code, doc, _ = run("restore", "--codex-home", str(home.root), "--list")
    assert [b["command"] for b in doc["backups"]] == ["repair-provider", "restore"]


def test_restore_refuses_when_files_changed_since_the_run(switched, capsys):
    home, old = switched
    run("repair-provider", "--codex-home", str(home.root), "--from", "openai", "--apply")
    with open(old[0].path, "ab") as handle:
        handle.write(b'{"timestamp":"x","type":"event_msg","payload":{"type":"task_started"}}\n')
    code = csr.main(["restore", "--codex-home", str(home.root), "--latest", "--apply"])
    err = capsys.readouterr().err
    assert code == csr.EXIT_REFUSED
    assert "changed after that run" in err and "--discard-changes" in err
    # --force is only about a running Codex: it does not discard later changes.
    assert csr.main(["restore", "--codex-home", str(home.root), "--latest", "--apply", "--force"]) == csr.EXIT_REFUSED
    assert csr.main(["restore", "--codex-home", str(home.root), "--latest", "--apply", "--discard-changes"]) == 0


def test_restore_usage_errors(tmp_path, capsys):
    home = HomeBuilder(tmp_path / "home")
    assert csr.main(["restore", "--codex-home", str(home.root)]) == csr.EXIT_USAGE
    assert csr.main(["restore", "--codex-home", str(home.root), "--latest"]) == csr.EXIT_USAGE
    assert csr.main(["restore", "--codex-home", str(home.root), str(tmp_path)]) == csr.EXIT_REFUSED
    assert "not a backup folder of this home" in capsys.readouterr().err


def test_repair_provider_scope(tmp_path, capsys):
    home = HomeBuilder(tmp_path / "home", "0.130.0").provider_config("proxy")
    interactive = home.thread(provider="openai", source="cli")
    exec_thread = home.thread(provider="openai", source="exec")
    archived = home.thread(provider="openai", archived=True)
    empty = home.thread(provider="openai", user_text=None)
    untouched = {t.id: t.path.read_bytes() for t in (exec_thread, archived, empty)}
    _, doc, _ = run("repair-provider", "--codex-home", str(home.root), "--from", "openai", "--apply")
    assert {a["thread_id"] for a in doc["actions"]} == {interactive.id}
    for thread in (exec_thread, archived, empty):
        assert thread.path.read_bytes() == untouched[thread.id]
    _, doc, _ = run("repair-provider", "--codex-home", str(home.root), "--from", "openai", "--source", "any",
                    "--include-archived", "--include-empty")
    assert {a["thread_id"] for a in doc["actions"]} == {exec_thread.id, archived.id, empty.id}


def test_repair_provider_every_own_session_meta_but_not_a_forks(tmp_path, capsys):
    home = HomeBuilder(tmp_path / "home", "0.169.0").provider_config("proxy")
    parent_id = "019a0000-0000-7000-8000-0000000000aa"
    resumed_meta = {"timestamp": "t", "type": "session_meta", "payload": {"id": None, "model_provider": "openai"}}
    fork_meta = {"timestamp": "t", "type": "session_meta", "payload": {"id": parent_id, "model_provider": "openai"}}
    thread = home.thread(provider="openai", extra_lines=[fork_meta])
    with open(thread.path, "ab") as handle:
        resumed_meta["payload"]["id"] = thread.id
        handle.write(json.dumps(resumed_meta).encode() + b"\n")
    run("repair-provider", "--codex-home", str(home.root), "--from", "openai", "--apply")
    metas = [json.loads(r) for r in lines(thread.path) if b'"session_meta"' in r]
    assert [(m["payload"]["id"], m["payload"]["model_provider"]) for m in metas] == [
        (thread.id, "proxy"), (parent_id, "openai"), (thread.id, "proxy")]


def test_repair_provider_keeps_crlf_line_endings(tmp_path, capsys):
    home = HomeBuilder(tmp_path / "home", "0.130.0").provider_config("proxy")
    thread = home.thread(provider="openai")
    thread.path.write_bytes(thread.path.read_bytes().replace(b"\n", b"\r\n"))
    run("repair-provider", "--codex-home", str(home.root), "--from", "openai", "--apply")
    data = thread.path.read_bytes()
    assert data.count(b"\r\n") == data.count(b"\n") and b'"model_provider":"proxy"' in data


def test_repair_provider_to_auto_without_configured_provider(tmp_path, capsys):
    home = HomeBuilder(tmp_path / "home", "0.169.0")
    home.thread(provider="gateway")
    latest = home.thread(provider="desk")
    _, doc, _ = run("repair-provider", "--codex-home", str(home.root), "--from", "gateway")
    assert doc["plan"]["to"] == "desk"
    assert latest.id in doc["plan"]["to_source"] and "names no provider" in doc["plan"]["to_source"]
    assert any("not defined in config.toml" in w for w in doc["warnings"])


def test_repair_provider_same_provider_is_a_usage_error(switched, capsys):
    home, _ = switched
    assert csr.main(["repair-provider", "--codex-home", str(home.root), "--from", "proxy-gateway"]) == csr.EXIT_USAGE
    assert "same provider" in capsys.readouterr().err


def test_repair_provider_warns_about_encrypted_reasoning(tmp_path, capsys):
    home = HomeBuilder(tmp_path / "home").provider_config("proxy")
    home.thread(provider="openai", extra_lines=[{"timestamp": "t", "type": "response_item", "payload": {
        "type": "reasoning", "summary": [], "encrypted_content": "gAAAA"}}])
    _, doc, err = run("repair-provider", "--codex-home", str(home.root), "--from", "openai")
    assert any("encrypted_content" in w for w in doc["warnings"])
    assert "warning:" in err


def test_live_append_during_apply_is_kept_and_reported(switched, capsys, monkeypatch):
    home, old = switched
    appended = b'{"timestamp":"t","type":"event_msg","payload":{"type":"task_started","turn_id":"live"}}\n'
    victim = old[0]

    def append_once(name):
        if name == "before_rollout_replace" and appended not in victim.path.read_bytes():
            with open(victim.path, "ab") as handle:
                handle.write(appended)

    monkeypatch.setattr(csr, "_fault_point", append_once)
    before = victim.path.read_bytes()
    code, doc, _ = run("repair-provider", "--codex-home", str(home.root), "--from", "openai", "--apply")
    assert code == csr.EXIT_OK
    assert victim.path.read_bytes() == before + appended
    assert [s["thread_id"] for s in doc["skipped"]] == [victim.id]
    conn = sqlite3.connect(str(home.db_path))
    assert conn.execute("SELECT model_provider FROM threads WHERE id=?", (victim.id,)).fetchone()[0] == "openai"
    assert conn.execute("SELECT model_provider FROM threads WHERE id=?", (old[1].id,)).fetchone()[0] == "proxy-gateway"
    conn.close()


@pytest.mark.parametrize("point", ["before_rollout_replace", "after_rollout_replace", "mid_transaction", "after_commit"])
def test_failure_after_writing_began_restores(switched, capsys, monkeypatch, point):
    home, _ = switched
    files_before, dbs_before = snapshot(home.root)
    # fail on the second visit, so that something has been written already
    monkeypatch.setenv(csr.FAULT_ENV, "%s:2:raise" % point)
    monkeypatch.setattr(csr, "_fault_visits", {})
    code = csr.main(["repair-provider", "--codex-home", str(home.root), "--from", "openai", "--apply"])
    err = capsys.readouterr().err
    assert code == csr.EXIT_APPLY_FAILED
    assert "injected fault at %s" % point in err and "automatic restore" in err and "succeeded" in err
    assert snapshot(home.root) == (files_before, dbs_before)


def test_repair_user_events(tmp_path, capsys):
    home = HomeBuilder(tmp_path / "home", "0.120.0")
    blank = home.thread(user_text="where did my chat go", row_overrides={"first_user_message": "", "title": ""})
    fine = home.thread()
    rollouts = hash_tree(home.root / "sessions")
    code, doc, _ = run("repair-user-events", "--codex-home", str(home.root))
    assert code == csr.EXIT_FINDINGS and doc["changes"] == 1
    assert doc["actions"][0]["thread_id"] == blank.id
    code, doc, _ = run("repair-user-events", "--codex-home", str(home.root), "--apply")
    assert code == csr.EXIT_OK
    conn = sqlite3.connect(str(home.db_path))
    row = conn.execute("SELECT has_user_event, first_user_message, title FROM threads WHERE id=?", (blank.id,)).fetchone()
    assert row == (1, "where did my chat go", "where did my chat go")
    assert conn.execute("SELECT has_user_event FROM threads WHERE id=?", (fine.id,)).fetchone()[0] == 0
    conn.close()
    assert hash_tree(home.root / "sessions") == rollouts
    assert run("repair-user-events", "--codex-home", str(home.root))[0] == csr.EXIT_OK
    assert run("diagnose", "--codex-home", str(home.root))[0] == csr.EXIT_OK


GLOBAL_STATE = {
    "electron-saved-workspace-roots": ["/home/ana/shop"],
    "some-future-key": {"kept": [1, 2, 3]},
    "electron-persisted-atom-state": {
        "sidebar-collapsed-groups": {"/home/ana/shop": True},
        "sidebar-workspace-filter-v2": "/home/ana/shop",
        "thread-sort-key": "created_at",
        "prompt-history": ["kept as is"],
    },
}


def test_repair_ui_state(tmp_path, capsys):
    home = HomeBuilder(tmp_path / "home")
    home.thread()
    path = home.root / ".codex-global-state.json"
    path.write_text(json.dumps(GLOBAL_STATE))
    code, doc, _ = run("diagnose", "--codex-home", str(home.root))
    assert code == 1 and any(c.endswith("repair-ui-state") for c in doc["next_commands"])
    code, doc, _ = run("repair-ui-state", "--codex-home", str(home.root), "--apply")
    assert code == csr.EXIT_OK
    data = json.loads(path.read_text())
    atoms = data["electron-persisted-atom-state"]
    assert atoms["sidebar-collapsed-groups"] == {} and atoms["sidebar-workspace-filter-v2"] == "all"
    assert atoms["thread-sort-key"] == "updated_at" and atoms["prompt-history"] == ["kept as is"]
    assert data["some-future-key"] == {"kept": [1, 2, 3]}
    assert "sidebar-collapsed-sections-v1" not in atoms  # absent keys are not added
    assert list(data) == list(GLOBAL_STATE)
    assert run("repair-ui-state", "--codex-home", str(home.root))[0] == csr.EXIT_OK
    assert run("diagnose", "--codex-home", str(home.root))[0] == csr.EXIT_OK


def test_repair_ui_state_leaves_unreadable_file_alone(tmp_path, capsys):
    home = HomeBuilder(tmp_path / "home")
    path = home.root / ".codex-global-state.json"
    path.write_bytes(b"\x00" * 64)
    code, doc, _ = run("repair-ui-state", "--codex-home", str(home.root), "--apply")
    assert code == csr.EXIT_OK and doc["changes"] == 0 and doc["skipped"]
    assert path.read_bytes() == b"\x00" * 64


def test_rebuild_index(tmp_path, capsys):
    home = HomeBuilder(tmp_path / "home", "0.169.0")
    named = home.thread()
    renamed = home.thread()
    db_named = home.thread(row_overrides={"name": "from the db"})
    gone = "019a0000-0000-7000-8000-00000000dead"
    home.index([
        {"id": named.id, "thread_name": "checkout bug", "updated_at": "2026-10-01T00:00:00Z"},
        {"id": renamed.id, "thread_name": "first name", "updated_at": "2026-10-02T00:00:00Z"},
        {"id": gone, "thread_name": "deleted long ago", "updated_at": "2026-10-03T00:00:00Z"},
        {"id": renamed.id, "thread_name": "second name", "updated_at": "2026-10-04T00:00:00Z"},
        {"id": renamed.id, "thread_name": "", "updated_at": "2026-10-05T00:00:00Z"},
    ])
    with open(home.root / "session_index.jsonl", "ab") as handle:
        handle.write(b"garbage\n")
    code, doc, _ = run("rebuild-index", "--codex-home", str(home.root), "--apply")
    assert code == csr.EXIT_OK
    entries = [json.loads(l) for l in (home.root / "session_index.jsonl").read_text().splitlines()]
    names = {e["id"]: e["thread_name"] for e in entries}
    assert names == {named.id: "checkout bug", renamed.id: "second name", db_named.id: "from the db"}
    assert len(entries) == 3
    summary = doc["actions"][0]["summary"]
    assert summary["dropped_stale"] == 1 and summary["dropped_bad_lines"] == 1 and summary["added_from_db_names"] == 1
    assert run("rebuild-index", "--codex-home", str(home.root))[0] == csr.EXIT_OK


def test_rebuild_index_keeps_entries_it_cannot_prove_stale(tmp_path, capsys):
    home = HomeBuilder(tmp_path / "home")
    thread = home.thread()
    home.index([{"id": thread.id, "thread_name": "kept", "updated_at": "x"}])
    assert run("rebuild-index", "--codex-home", str(home.root))[1]["changes"] == 0


@pytest.mark.parametrize("seed", range(25))
def test_block_scan_finds_exactly_the_lines_a_line_reader_finds(tmp_path, monkeypatch, seed):
    """Lines that straddle blocks, markers split across blocks, CRLF and a missing last newline."""
    import hashlib
    import random
    rng = random.Random(seed)
    pieces = []
    for _ in range(rng.randint(1, 60)):
        body = rng.choice([b'{"type":"session_meta","x":"', b'{"type":"event_msg","payload":{"type":"thread_settings_applied"',
                           b'{"type":"response_item","p":"', b'{"encrypted_content":"', b""])
        body += b"y" * rng.randint(0, 300)
        pieces.append(body + rng.choice([b"\n", b"\r\n"]))
    if rng.random() < 0.5:
        pieces[-1] = pieces[-1].rstrip(b"\r\n")
    data = b"".join(pieces)
    path = tmp_path / "r.jsonl"
    path.write_bytes(data)
    needles = (b'"session_meta"', b'"thread_settings_applied"')
    expected, offset = [], 0
    for number, line in enumerate(data.splitlines(keepends=True), 1):
        if any(n in line for n in needles):
            expected.append((number, offset, line))
        offset += len(line)
    monkeypatch.setattr(csr, "SCAN_BLOCK", rng.randint(7, 97))
    edit = csr.RolloutEdit(path, "t")
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        found = list(csr.iter_marked_lines(handle, needles, digest, edit))
    assert found == expected
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    assert edit.encrypted_reasoning == (b'"encrypted_content"' in data)


def test_latest_backup_is_the_newest_run_even_within_one_second(tmp_path, capsys, monkeypatch):
    home = HomeBuilder(tmp_path / "home").provider_config("proxy")
    home.thread(provider="openai")
    home.index([{"id": "019a0000-0000-7000-8000-00000000dead", "thread_name": "x", "updated_at": "t"}])
    frozen = csr.utc_now()
    monkeypatch.setattr(csr, "utc_now", lambda: frozen)  # both runs get the same folder stamp
    run("repair-provider", "--codex-home", str(home.root), "--from", "openai", "--apply")
    run("rebuild-index", "--codex-home", str(home.root), "--apply")
    _, doc, _ = run("restore", "--codex-home", str(home.root), "--list")
    assert [b["command"] for b in doc["backups"]] == ["repair-provider", "rebuild-index"]
    _, doc, _ = run("restore", "--codex-home", str(home.root), "--latest")
    assert doc["files"] == ["session_index.jsonl"]


def test_repair_provider_on_a_rollout_only_home(tmp_path, capsys):
    """0.100.0 keeps no state DB: the rollouts are the whole record, and the only thing changed."""
    home = HomeBuilder(tmp_path / "home", "0.130.0", with_db=False).provider_config("proxy")
    moved = home.thread(provider="openai")
    kept = home.thread(provider="proxy")
    before = kept.path.read_bytes()
    code, doc, _ = run("repair-provider", "--codex-home", str(home.root), "--from", "openai", "--apply")
    assert code == csr.EXIT_OK and [a["kind"] for a in doc["actions"]] == ["rollout_edit"]
    assert b'"model_provider":"proxy"' in moved.path.read_bytes() and kept.path.read_bytes() == before
    assert not list(home.root.glob("*.sqlite"))
    assert run("repair-provider", "--codex-home", str(home.root), "--from", "openai")[0] == csr.EXIT_OK
    code, doc, _ = run("diagnose", "--codex-home", str(home.root))
    assert code == csr.EXIT_OK and doc["counts"]["visible_by_default"] == 2
    assert run("restore", "--codex-home", str(home.root), "--latest", "--apply")[0] == csr.EXIT_OK
    assert b'"model_provider":"openai"' in moved.path.read_bytes()


def test_expect_plan_applies_exactly_the_reviewed_plan(switched, capsys):
    home, old = switched
    _, dry, _ = run("repair-provider", "--codex-home", str(home.root), "--from", "openai")
    plan_id = dry["plan_id"]
    assert len(plan_id) == 16
    again = run("repair-provider", "--codex-home", str(home.root), "--from", "openai")[1]
    assert again["plan_id"] == plan_id  # the same home gives the same plan
    home.thread(provider="openai")  # something changes the home after the review
    before = hash_tree(home.root)
    code = csr.main(["repair-provider", "--codex-home", str(home.root), "--from", "openai", "--apply",
                     "--expect-plan", plan_id])
    err = capsys.readouterr().err
    assert code == csr.EXIT_REFUSED and "the plan changed since the dry run" in err
    assert hash_tree(home.root) == before
    fresh = run("repair-provider", "--codex-home", str(home.root), "--from", "openai")[1]["plan_id"]
    code, doc, _ = run("repair-provider", "--codex-home", str(home.root), "--from", "openai", "--apply",
                       "--expect-plan", fresh)
    assert code == csr.EXIT_OK and doc["applied"] is True and doc["plan_id"] == fresh
