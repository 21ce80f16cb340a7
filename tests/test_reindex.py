"""reindex and rebuild-db: the state DB made to agree with the rollouts, or moved aside."""

import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

import codex_session_recovery as csr
from homes import HomeBuilder, db_dump, hash_tree


def row(db_path, thread_id):
    conn = sqlite3.connect(str(db_path))
    conn.row_factory = sqlite3.Row
    try:
        found = conn.execute("SELECT * FROM threads WHERE id=?", (thread_id,)).fetchone()
        return dict(found) if found else None
    finally:
        conn.close()


@pytest.mark.parametrize("release", ["0.171.0", "0.169.0", "0.130.0", "0.120.0"])
def test_reindex_adds_rows_for_unindexed_rollouts(tmp_path, cli, release):
    home = HomeBuilder(tmp_path / "home", release)
    indexed = home.thread()
    restored = home.thread(row=False, user_text="restored from a sync")
    archived = home.thread(row=False, archived=True)
    before = hash_tree(home.root)
    code, doc = cli("reindex", "--codex-home", str(home.root))
    assert code == csr.EXIT_FINDINGS and hash_tree(home.root) == before
    assert sorted(a["thread_id"] for a in doc["actions"]) == sorted([restored.id, archived.id])
    assert all(a["sql"].startswith("INSERT INTO threads") for a in doc["actions"])
    code, doc = cli("reindex", "--codex-home", str(home.root), "--apply")
    assert code == csr.EXIT_OK
    new = row(home.db_path, restored.id)
    reference = row(home.db_path, indexed.id)
    assert set(new) == set(reference)
    assert new["rollout_path"] == str(restored.path) and new["model_provider"] == "openai"
    assert new["source"] == "vscode" and new["cwd"] == "/home/ana/shop" and new["archived"] == 0
    assert new["first_user_message"] == "restored from a sync"
    assert new.get("preview", "restored from a sync") == "restored from a sync"
    assert new["created_at"] == restored.created_ms // 1000
    if "created_at_ms" in new:
        assert new["created_at_ms"] == restored.created_ms
    assert row(home.db_path, archived.id)["archived"] == 1
    assert cli("reindex", "--codex-home", str(home.root))[0] == csr.EXIT_OK
    code, doc = cli("diagnose", "--codex-home", str(home.root))
    assert code == csr.EXIT_OK, doc["findings"]


def test_reindex_fixes_paths_and_archive_flags_and_keeps_missing_rows(tmp_path, cli):
    home = HomeBuilder(tmp_path / "home")
    moved = home.thread()
    new_path = home.root / "archived_sessions" / moved.path.name
    new_path.parent.mkdir(exist_ok=True)
    os.replace(moved.path, new_path)
    flag = home.thread(row_overrides={"archived": 1, "archived_at": 1790000000})
    gone = home.thread()
    gone.path.unlink()
    code, doc = cli("reindex", "--codex-home", str(home.root), "--apply")
    assert code == csr.EXIT_OK
    assert row(home.db_path, moved.id)["rollout_path"] == str(new_path)
    assert row(home.db_path, moved.id)["archived"] == 1
    assert row(home.db_path, flag.id)["archived"] == 0 and row(home.db_path, flag.id)["archived_at"] is None
    assert row(home.db_path, gone.id) is not None
    assert [s["thread_id"] for s in doc["skipped"]] == [gone.id]
    code, doc = cli("reindex", "--codex-home", str(home.root), "--prune-missing", "--apply")
    assert code == csr.EXIT_OK and row(home.db_path, gone.id) is None
    assert cli("reindex", "--codex-home", str(home.root), "--prune-missing")[0] == csr.EXIT_OK


def test_reindex_never_merges_a_duplicate_id(tmp_path, cli):
    home = HomeBuilder(tmp_path / "home")
    thread = home.thread(row=False)
    copy = thread.path.parent.parent / thread.path.name
    shutil.copy(thread.path, copy)
    code, doc = cli("reindex", "--codex-home", str(home.root), "--apply")
    assert code == csr.EXIT_OK and doc["changes"] == 0
    assert "never merged" in doc["skipped"][0]["reason"]
    code, doc = cli("diagnose", "--codex-home", str(home.root))
    assert next(f for f in doc["findings"] if f["code"] == "duplicate_thread_id")["evidence"]["thread_ids"] == [thread.id]


def test_reindex_restores_byte_for_byte(tmp_path, cli):
    home = HomeBuilder(tmp_path / "home", "0.130.0")
    home.thread(row=False)
    dump = db_dump(home.db_path)
    files = {k: v for k, v in hash_tree(home.root).items() if ".sqlite" not in k}
    cli("reindex", "--codex-home", str(home.root), "--apply")
    assert db_dump(home.db_path) != dump
    assert cli("restore", "--codex-home", str(home.root), "--latest", "--apply")[0] == csr.EXIT_OK
    assert db_dump(home.db_path) == dump
    assert {k: v for k, v in hash_tree(home.root).items() if ".sqlite" not in k} == files


def test_rebuild_db_moves_a_corrupt_db_aside_and_keeps_it(tmp_path, cli):
    home = HomeBuilder(tmp_path / "home", "0.169.0")
    thread = home.thread()
    garbage = b"not a database at all " * 200
    home.db_path.write_bytes(garbage)
    code, doc = cli("diagnose", "--codex-home", str(home.root))
    assert any(c.endswith("rebuild-db") for c in doc["next_commands"])
    code, doc = cli("rebuild-db", "--codex-home", str(home.root))
    assert code == csr.EXIT_FINDINGS and doc["plan"]["because"] == ["state_db_unreadable"]
    assert home.db_path.read_bytes() == garbage
    code, doc = cli("rebuild-db", "--codex-home", str(home.root), "--apply")
    assert code == csr.EXIT_OK
    assert not home.db_path.exists()
    kept = Path(doc["backup_dir"]) / "files" / "state_5.sqlite"
    assert kept.read_bytes() == garbage
    assert thread.path.exists()
    code, doc = cli("diagnose", "--codex-home", str(home.root))
    assert doc["state_db"]["live"] is None and doc["counts"]["visible_by_default"] == 1
    assert cli("rebuild-db", "--codex-home", str(home.root))[0] == csr.EXIT_OK
    assert cli("restore", "--codex-home", str(home.root), "--latest", "--apply")[0] == csr.EXIT_OK
    assert home.db_path.read_bytes() == garbage


def test_rebuild_db_saves_db_only_names_first(tmp_path, cli):
    home = HomeBuilder(tmp_path / "home", "0.169.0")
    named = home.thread(row_overrides={"name": "release checklist"})
    conn = sqlite3.connect(str(home.db_path))
    conn.execute("UPDATE backfill_state SET status='running'")
    conn.commit()
    conn.close()
    code, doc = cli("rebuild-db", "--codex-home", str(home.root), "--apply")
    assert code == csr.EXIT_OK and doc["plan"]["because"] == ["backfill_incomplete"]
    entries = [json.loads(l) for l in (home.root / "session_index.jsonl").read_text().splitlines()]
    assert entries == [{"id": named.id, "thread_name": "release checklist", "updated_at": entries[0]["updated_at"]}]


def test_rebuild_db_on_a_healthy_db_does_nothing(tmp_path, cli):
    home = HomeBuilder(tmp_path / "home")
    home.thread()
    assert cli("rebuild-db", "--codex-home", str(home.root), "--apply")[1]["changes"] == 0
    assert home.db_path.exists()


def test_migration_checksum_drift_and_newer_schema(tmp_path, cli):
    home = HomeBuilder(tmp_path / "home", "0.130.0")
    home.thread()
    conn = sqlite3.connect(str(home.db_path))
    conn.execute("UPDATE _sqlx_migrations SET checksum = x'54bbd6f4aa' WHERE version = 1")
    conn.execute("INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time) "
                 "VALUES (65, 'future', '2027-01-01', 1, x'00', 1)")
    conn.commit()
    conn.close()
    code, doc = cli("diagnose", "--codex-home", str(home.root))
    codes = {f["code"]: f for f in doc["findings"]}
    assert codes["migration_checksum_drift"]["evidence"]["versions"] == [1]
    assert codes["schema_newer"]["evidence"]["schema_version"] == 65
    assert code == csr.EXIT_FINDINGS


def test_copied_home_rows_pointing_into_the_old_home_are_repointed(tmp_path, cli):
    old = HomeBuilder(tmp_path / "old")
    thread = old.thread()
    new_root = tmp_path / "new"
    shutil.copytree(old.root, new_root)
    code, doc = cli("diagnose", "--codex-home", str(new_root))
    entry = next(t for t in doc["threads"] if t["id"] == thread.id)
    assert entry["reasons"] == ["rollout_path_stale"] and entry["evidence"]["rollout_path_stale"]["outside_home"]
    assert cli("reindex", "--codex-home", str(new_root), "--apply")[0] == csr.EXIT_OK
    copied = new_root / thread.path.relative_to(old.root)
    assert row(new_root / "state_5.sqlite", thread.id)["rollout_path"] == str(copied)
    assert cli("diagnose", "--codex-home", str(new_root))[0] == csr.EXIT_OK


def test_reindex_indexes_a_rollout_with_a_torn_last_line_and_leaves_it_as_it_is(tmp_path, cli):
    """A rollout cut by a crash, with no row: reindex builds its row from the readable lines and
    writes no byte of the file."""
    home = HomeBuilder(tmp_path / "home", "0.171.0")
    torn = home.thread(row=False, user_text="cut off mid-answer")
    with open(str(torn.path), "ab") as handle:
        handle.write(b'{"timestamp":"2026-09-21T00:00:00.000Z","type":"response_item","payload":{"ty')
    data = torn.path.read_bytes()
    code, doc = cli("reindex", "--codex-home", str(home.root), "--apply")
    assert code == csr.EXIT_OK and doc["changes"] == 1
    assert row(home.db_path, torn.id)["preview"] == "cut off mid-answer"
    assert torn.path.read_bytes() == data
    code, doc = cli("diagnose", "--codex-home", str(home.root))
    damage = next(f for f in doc["findings"] if f["code"] == "rollout_unreadable")
    assert damage["severity"] == "info" and code == csr.EXIT_OK


def test_copied_in_rollouts_get_the_resume_step_not_the_sqlite_home_advice(tmp_path, cli):
    """0.169.0+: a rollout copied in from another machine has no rows in the home's history
    projection (and no other projection has them): the finding names the resume that rebuilds
    them, per thread; a moved sqlite_home (the home's own projection has the rows) keeps the
    sqlite_home advice."""
    home = HomeBuilder(tmp_path / "home", "0.171.0")
    home.thread()
    copied = home.thread(row=False, user_text="made on the other laptop")
    conn = sqlite3.connect(str(home.root / "thread_history_1.sqlite"))
    for table in ("thread_turns", "thread_history_projection_state"):
        conn.execute("DELETE FROM %s WHERE thread_id = ?" % table, (copied.id,))
    conn.commit()
    conn.close()
    code, doc = cli("diagnose", "--codex-home", str(home.root), "--verbose")
    assert code == csr.EXIT_FINDINGS
    entry = next(t for t in doc["threads"] if t["id"] == copied.id)
    evidence = entry["evidence"]["history_projection_missing"]
    assert evidence["elsewhere"] is False
    assert "codex resume %s" % copied.id in evidence["manual_step"] and "sqlite_home" not in evidence["manual_step"]
    assert csr.projection_manual_step(copied.id, True).startswith("point sqlite_home back")
