"""What the records of one thread share with other threads' (diagnose's memory grows with the
threads: benchmarks/README.md has the figures). Structure only: no timed or RSS assertion."""

import hashlib
import io
import json
import os
import sys

import pytest

import codex_session_recovery as csr
from homes import HomeBuilder


def checked_inventory(builder):
    args = csr.build_parser().parse_args(["diagnose", "--codex-home", str(builder.root)])
    inv = csr.build_inventory(args)
    csr.run_checks(inv)
    return inv


def three_moves_planned(tmp_path):
    """A home of three threads of another provider, and its provider move's plan."""
    builder = HomeBuilder(tmp_path / "home", "0.169.0").provider_config("proxy")
    for _ in range(3):
        builder.thread(provider="openai", turns=2)
    inv = checked_inventory(builder)
    args = csr.build_parser().parse_args(["repair-provider", "--codex-home", str(builder.root),
                                          "--from", "openai", "--to", "proxy"])
    plan = csr.plan_provider_repair(inv, args)
    csr.close_plan_readers(inv)
    return builder, inv, plan


def test_threads_alike_share_their_reasons_and_a_thread_without_any_the_empty_tuple(tmp_path):
    builder = HomeBuilder(tmp_path / "home", "0.169.0").provider_config("proxy")
    moved = [builder.thread(provider="openai") for _ in range(3)]
    healthy = builder.thread(provider="proxy")
    inv = checked_inventory(builder)
    views = [inv.threads[t.id] for t in moved]
    assert [r.code for r in views[0].reasons] == ["provider_mismatch"], views[0].reasons
    assert all(v.reasons == views[0].reasons for v in views)
    # One tuple of one Reason for all three, not a list and a Reason each.
    assert all(v.reasons is views[0].reasons for v in views)
    assert type(views[0].reasons) is tuple
    assert inv.threads[healthy.id].reasons is csr.NO_REASONS
    # The tables that found them are dropped with the checks.
    assert not csr._shared_reasons and not csr._shared_reason_tuples


def test_reasons_naming_their_thread_are_its_own_and_equal_values_of_other_types_are_not_merged():
    a = csr.shared_reason("archived", True, {"db_archived": 1}, None)
    b = csr.shared_reason("archived", True, {"db_archived": True}, None)
    c = csr.shared_reason("archived", True, {"db_archived": True}, None)
    assert b is c and a is not b  # 1 == True, but the JSON says 1 or true
    assert json.dumps(a.evidence) == '{"db_archived": 1}'
    assert json.dumps(b.evidence) == '{"db_archived": true}'
    listed = {"line": [1]}  # not hashable: never shared
    code = "user_message_beyond_scan"
    assert csr.shared_reason(code, False, listed, None) is not csr.shared_reason(code, False, listed, None)
    csr.forget_shared_reasons()


def test_records_keep_no_dict_and_share_the_values_threads_have_in_common(tmp_path):
    builder = HomeBuilder(tmp_path / "home", "0.169.0").provider_config("proxy")
    first, second = builder.thread(provider="openai"), builder.thread(provider="openai")
    inv = checked_inventory(builder)
    a, b = inv.threads[first.id], inv.threads[second.id]
    for record in (a, a.primary, a.primary.meta, a.row, a.reasons[0]):
        assert not hasattr(record, "__dict__"), type(record)
    # session_meta: the folder, release, provider and source are one tuple for both rollouts.
    meta_shared = len(csr._META_OWN)
    assert tuple.__getitem__(a.primary.meta, meta_shared) is tuple.__getitem__(b.primary.meta, meta_shared)
    assert a.primary.meta["cwd"] == "/home/ana/shop" and a.primary.meta["id"] == first.id
    # The rows' values other than their own (id, rollout_path, name) likewise.
    assert tuple.__getitem__(a.row, -1) is tuple.__getitem__(b.row, -1)
    assert a.row["model_provider"] == "openai" and a.row["id"] == first.id
    # A thread with one rollout keeps no tuple of files.
    assert a._more_files is None and a.files == (a.primary,)
    # size, mtime and bytes_read read back as they were found.
    stat = first.path.stat()
    assert (a.primary.size, a.primary.mtime) == (stat.st_size, stat.st_mtime)
    deep = csr.scan_rollout(first.path, builder.root, deep=True)
    assert a.primary.bytes_read == deep.bytes_read >= stat.st_size  # read whole, and the tail
    assert a.primary.scanned_to_end is deep.scanned_to_end is False  # it stops at the prompt
    assert a.primary.compressed is False and a.primary.archived_location is False


def test_a_long_list_is_written_in_pieces_as_the_same_text(monkeypatch):
    ids = ["019a%04d-0000-7000-8000-000000000000" % n for n in range(5000)]
    doc = {"command": "diagnose", "findings": [{"code": "x", "count": len(ids), "thread_ids": ids}],
           "threads": iter([{"id": ids[0]}]), "next": []}
    for pretty in (False, True):
        writes = []
        out = io.StringIO()
        out.isatty = lambda: pretty
        out.write = lambda text: writes.append(text)
        monkeypatch.setattr(sys, "stdout", out)
        csr.emit_json(dict(doc, threads=iter([{"id": ids[0]}])))
        plain = dict(doc, threads=[{"id": ids[0]}])
        expected = (json.dumps(plain, indent=2) if pretty
                    else json.dumps(plain, separators=(",", ":"))) + "\n"
        assert "".join(writes) == expected
        # No piece holds the whole list of ids (~200 KB): it is written JSON_PIECE_ITEMS at a time.
        assert len(ids) > 4 * csr.JSON_PIECE_ITEMS
        assert max(len(w) for w in writes) < 60 * csr.JSON_PIECE_ITEMS


def test_an_apply_reads_the_home_once_and_only_verify_reads_it_again(tmp_path, monkeypatch,
                                                                      capsys):
    """The repaired home is read again only for --verify, which lists it: an apply without it
    held two inventories at once for nothing (its peak, and a second scan of every rollout)."""
    builder = HomeBuilder(tmp_path / "home", "0.169.0").provider_config("proxy")
    moved = builder.thread(provider="openai")
    reads = []
    real = csr.build_inventory
    monkeypatch.setattr(csr, "build_inventory", lambda args: reads.append(1) or real(args))
    code = csr.main(["repair-provider", "--codex-home", str(builder.root), "--from", "openai",
                     "--to", "proxy", "--apply", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == csr.EXIT_OK and doc["applied"], doc
    assert len(reads) == 1
    assert csr.main(["diagnose", "--codex-home", str(builder.root), "--json"]) == csr.EXIT_OK
    after = json.loads(capsys.readouterr().out)
    assert after["threads"] == [] and after["latest_interactive_thread"]["id"] == moved.id


def test_a_reason_that_names_its_thread_is_shared_and_shows_each_threads_own_value(tmp_path, cli):
    import sqlite3
    builder = HomeBuilder(tmp_path / "home", "0.169.0").provider_config("proxy")
    threads = [builder.thread(provider="proxy") for _ in range(csr.RECENT_WINDOW + 3)]
    copied = threads[:2]  # the oldest: past the window, and without their turns' projection
    history = sqlite3.connect(str(builder.root / "thread_history_1.sqlite"))
    with history:
        for thread in copied:
            history.execute("DELETE FROM thread_turns WHERE thread_id = ?", (thread.id,))
            history.execute("DELETE FROM thread_history_projection_state WHERE thread_id = ?", (thread.id,))
    history.close()
    inv = checked_inventory(builder)
    beyond = [inv.threads[t.id] for t in threads[:3]]
    assert [r.code for r in beyond[2].reasons] == ["beyond_recent_window"]
    # One reason object (and, for the threads with nothing else, one tuple) for every rank.
    assert beyond[0].reasons[-1] is beyond[2].reasons[-1]
    assert beyond[0].reasons is beyond[1].reasons
    assert [r.code for r in beyond[0].reasons] == ["history_projection_missing", "beyond_recent_window"]
    # What diagnose and trace show is each thread's own rank and its own id in the step.
    code, doc = cli("diagnose", "--codex-home", str(builder.root))
    entries = {t["id"]: t for t in doc["threads"]}
    for n, thread in enumerate(threads[:3]):
        entry = entries[thread.id]
        assert entry["rank"] == len(threads) - n
        assert entry["evidence"]["beyond_recent_window"] == {"rank": entry["rank"], "window": csr.RECENT_WINDOW}
    for thread in copied:
        step = entries[thread.id]["evidence"]["history_projection_missing"]["manual_step"]
        assert "`codex resume %s`" % thread.id in step, step
        _code, traced = cli("trace", thread.id, "--codex-home", str(builder.root))
        assert traced["trace"]["evidence"] == entries[thread.id]["evidence"], traced["trace"]


def test_a_plans_changes_share_their_column_names_and_keep_no_dict_per_change(tmp_path):
    """A provider move plans a row change and the projection's offsets per thread: tens of
    thousands in a big home, so each is a few tuples, and reads as the dicts it stands for."""
    builder = HomeBuilder(tmp_path / "home", "0.169.0").provider_config("proxy")
    moved = [builder.thread(provider="openai", turns=2) for _ in range(2)]
    inv = checked_inventory(builder)
    args = csr.build_parser().parse_args(["repair-provider", "--codex-home", str(builder.root),
                                          "--from", "openai", "--to", "proxy"])
    plan = csr.plan_provider_repair(inv, args)
    csr.close_plan_readers(inv)
    shifts = [c for c in plan.sql if c.table != "threads"]
    rows = [c for c in plan.sql if c.table == "threads"]
    assert len(rows) == 2 and len(shifts) >= 2, plan.sql
    assert rows[0].key == {"id": moved[0].id} or rows[0].key == {"id": moved[1].id}
    assert rows[0].values == {"model_provider": "proxy"} and rows[0].expect == {"model_provider": "openai"}
    for change in plan.sql:
        assert not hasattr(change, "__dict__")
        assert not any(isinstance(value, dict) for value in (change._shape, change._data))
    same_shape = [c for c in shifts if c.table == shifts[0].table]
    assert all(c._shape is same_shape[0]._shape for c in same_shape)
    # The thread's id in a projection key is the edit's own string, not one per row read.
    edits = {e.thread_id: e for e in plan.rollout_edits}
    assert all(c.key["thread_id"] is edits[c.thread_id].thread_id for c in shifts)
    # Each edited line is (line number, field) until shown.
    assert all(type(change) is tuple for e in plan.rollout_edits for change in e.changes)
    shown = plan.rollout_edits[0].as_json(builder.root)["changes"]
    assert shown[0] == {"line": 1, "field": "model_provider"}, shown
    assert [change["field"] for change in shown[1:]] == ["model_provider_id"] * (len(shown) - 1), shown


def test_a_planned_rollout_edit_keeps_what_it_read_and_changes_packed_and_reads_them_back(tmp_path):
    """A provider move plans one rollout edit per thread: what it read (size, mtime, identity,
    digest) and the lines it changes are packed bytes, the path is the inventory's own string,
    and a rollout with nothing carried over shares the empty tuple."""
    import hashlib
    import os
    builder = HomeBuilder(tmp_path / "home", "0.169.0").provider_config("proxy")
    moved = builder.thread(provider="openai", turns=3)
    inv = checked_inventory(builder)
    args = csr.build_parser().parse_args(["repair-provider", "--codex-home", str(builder.root),
                                          "--from", "openai", "--to", "proxy"])
    plan = csr.plan_provider_repair(inv, args)
    csr.close_plan_readers(inv)
    [edit] = plan.rollout_edits
    assert edit._path is inv.threads[moved.id].primary.file
    for name in csr.RolloutEdit.__slots__:
        assert not isinstance(getattr(edit, name), (list, dict)), name
    assert type(edit._stamp) is bytes and type(edit._edited) is bytes
    assert edit.kept_verbatim is ()
    stat = os.stat(edit._path)
    digest = hashlib.sha256(moved.path.read_bytes()).hexdigest()
    assert edit.fingerprint == (stat.st_size, stat.st_mtime_ns, digest)
    assert edit.identity == csr.stat_identity(stat)
    # Read back, the packed lines are what the file holds: each replacement lies in its line,
    # and the line with the new bytes in place is the line the rewrite writes.
    data = moved.path.read_bytes()
    assert len(edit.changes) == len(edit.replacements) == len(edit.lines) >= 2
    for (line_start, length), (start, span, new) in zip(edit.lines, edit.replacements):
        assert line_start <= start and start + span <= line_start + length
        raw = data[line_start:line_start + length]
        assert b'"openai"' in raw and b'"proxy"' in csr.spliced_line(line_start, raw, edit.line_spans()[line_start][1])
    # Before a read, an edit says so rather than inventing a file.
    fresh = csr.RolloutEdit(moved.path, moved.id)
    assert fresh.fingerprint == (0, 0, "") and fresh.identity is None and fresh.changes == []


def test_changes_of_one_shape_share_db_table_and_operation_and_touched_files_are_made_lazily(
        tmp_path):
    builder, inv, plan = three_moves_planned(tmp_path)
    assert set(csr.SqlChange.__slots__) == {"_shape", "_data", "thread_id"}
    rows = [c for c in plan.sql if c.table == "threads"]
    assert len(rows) == 3 and all(c._shape is rows[0]._shape for c in rows)
    assert rows[0].op == "update" and rows[0].db.name.startswith("state_")
    touched = plan.touched_files()
    assert iter(touched) is touched  # a generator, not a list of a Path per rollout
    assert sorted(touched) == sorted(e.target for e in plan.rollout_edits)


def test_an_edit_of_many_lines_reads_back_in_file_order_with_its_offsets_shifted(tmp_path):
    path = tmp_path / "rollout.jsonl"
    lines = [b'{"type":"event_msg","payload":{"model_provider":"a","n":%d}}\n' % n
             for n in range(2000)]
    path.write_bytes(b"".join(lines))
    edit = csr.plan_rollout_edit(
        path, "t", lambda raw: (raw.replace(b'"a"', b'"bb"'), "model_provider"),
        needles=(b"model_provider",))
    assert [n for n, _f in edit.changes] == list(range(1, 2001))
    offsets = [start for start, _length in edit.lines]
    assert offsets == sorted(offsets) and offsets[1] == len(lines[0])
    assert sum(d for _s, _l, d in edit.deltas) == 2000
    assert edit.shifter()(len(lines[0])) == len(lines[0]) + 1


def test_the_backup_manifest_is_written_an_entry_at_a_time_as_the_same_text(tmp_path):
    """A provider apply at 100,000 threads writes a manifest of ~50,000 actions and entries:
    held as one text, its items' texts and their joins at once, it was the apply's peak."""
    actions = [{"kind": "sql_update", "n": n, "path": "a\u00e9\\b"} for n in range(5000)]
    manifest = {"tool": csr.TOOL_NAME, "complete": False, "entries": [], "actions": actions,
                "argv": ["repair-provider", "--apply"]}
    pieces = list(csr.manifest_pieces(manifest))
    text = "".join(pieces)
    assert json.loads(text) == manifest
    lines = text.splitlines()
    assert lines[0] == "{" and lines[-1] == "}" and lines[3] == '  "entries": [],'
    # One action a line, as before: readable, and diffable between two backups.
    assert lines[4] == '  "actions": [' and lines[5] == "    " + json.dumps(actions[0]) + ","
    assert sum(line.startswith('    {"kind"') for line in lines) == len(actions)
    assert max(len(piece) for piece in pieces) < 200
    csr.write_manifest(tmp_path, manifest)
    assert (tmp_path / "manifest.json").read_text(encoding="utf-8") == text
    empty = {"entries": []}
    assert "".join(csr.manifest_pieces(empty)) == '{\n  "entries": []\n}\n'


def test_the_backup_manifest_writes_the_plans_actions_and_rows_from_the_plan(tmp_path, monkeypatch,
                                                                            capsys):
    """At 100,000 threads the actions as dicts and the touched rows held for the whole apply,
    with the copies' Paths and the written states, were ~45 MB: the manifest is written from the
    plan each time instead, as the same text, before the first write and when the run completes."""
    builder, inv, plan = three_moves_planned(tmp_path)
    expected_actions = plan.actions_json(builder.root)
    expected_rows = {}
    for change in plan.sql:
        keys = expected_rows.setdefault(change.db.name, {}).setdefault(change.table, [])
        if change.key not in keys:
            keys.append(change.key)
    written, held = [], []
    real = csr.write_manifest

    def recording(folder, manifest):
        held.append((type(manifest["actions"]),
                     [type(r) for e in manifest["entries"] if e["kind"] == "sqlite"
                      for r in e["rows"].values()]))
        real(folder, manifest)
        written.append((folder / "manifest.json").read_text(encoding="utf-8"))

    monkeypatch.setattr(csr, "write_manifest", recording)
    found, states = [], []
    real_copies, real_finish = csr.backup_copies, csr.finish_manifest
    monkeypatch.setattr(csr, "backup_copies", lambda *a: found.append(real_copies(*a)) or found[0])
    monkeypatch.setattr(csr, "finish_manifest",
                        lambda *a: states.append(bytes(found[0].files._written)) or real_finish(*a))
    code = csr.main(["repair-provider", "--codex-home", str(builder.root), "--from", "openai",
                     "--to", "proxy", "--apply", "--json"])
    assert code == csr.EXIT_OK and json.loads(capsys.readouterr().out)["applied"]
    # Held for the whole rewrite: the copies by their place among the backup's packed entries,
    # and what each rollout became, packed.
    edited = [e.path for e in plan.rollout_edits]
    assert len(found[0]) == 3 and all(found[0][path].is_file() for path in edited)
    assert all(type(at) is int for at in found[0]._copies.values())
    # Each copy with its bytes' digest with the edits, which the rewrite does not take again.
    assert all(len(found[0].reference(path)[1]) == 64 for path in edited)
    files = found[0].files
    assert type(files._facts) is bytearray
    # What each replaced rollout became, packed with its entry: known for the three edited ones.
    size = csr._COPIED_WRITTEN.size
    assert len(states[0]) == size * len(files)
    known = [files.names[at] for at in range(len(files)) if states[0][at * size]]
    assert sorted(known) == sorted(csr.display_path(path, builder.root) for path in edited)
    finished = {e["path"]: e for e in json.loads(written[-1])["entries"]}
    assert sorted(files.names) == sorted(p for p, e in finished.items() if e["kind"] == "file")
    for path in edited:
        entry = finished[csr.display_path(path, builder.root)]
        assert entry["sha256_after"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert entry["sha256_after"] != entry["sha256_before"]
    assert len(written) == 2  # before the first write, and complete
    for (actions_type, row_types), text in zip(held, written):
        assert actions_type is not list and row_types and list not in row_types
        manifest = json.loads(text)
        assert manifest["actions"] == expected_actions
        rows = {e["path"]: e["rows"] for e in manifest["entries"] if e["kind"] == "sqlite"}
        assert rows == expected_rows and len(rows) >= 2
        assert len(rows[inv.live_db.path.name]["threads"]) == 3
        # The same layout as a manifest of lists: one key, entry or action a line.
        assert text == "".join(csr.manifest_pieces(manifest))
    assert [json.loads(t)["complete"] for t in written] == [False, True]


def test_the_completed_manifest_copies_the_plans_actions_and_rows_from_the_first_write(
        tmp_path, monkeypatch, capsys):
    """The plan does not change once made: the manifest written when the run completes copies
    the actions' and rows' text from the one written before the first write (proven by its
    SHA-256) instead of making them from the plan again, and reads the same."""
    builder, _inv, plan = three_moves_planned(tmp_path)
    expected_actions = plan.actions_json(builder.root)
    made = []
    real_actions, real_keys = csr.Plan.iter_actions_json, csr._touched_keys
    monkeypatch.setattr(csr.Plan, "iter_actions_json",
                        lambda self, *a, **k: made.append("actions") or real_actions(self, *a, **k))
    monkeypatch.setattr(csr, "_touched_keys", lambda *a: made.append("rows") or real_keys(*a))
    writes = []
    real = csr.write_manifest

    def recording(folder, manifest):
        before = len(made)
        real(folder, manifest)
        writes.append((made[before:], (folder / "manifest.json").read_text(encoding="utf-8")))

    monkeypatch.setattr(csr, "write_manifest", recording)
    code = csr.main(["repair-provider", "--codex-home", str(builder.root), "--from", "openai",
                     "--to", "proxy", "--apply", "--json"])
    assert code == csr.EXIT_OK and json.loads(capsys.readouterr().out)["applied"]
    (first_made, first), (second_made, second) = writes
    assert first_made.count("actions") == 1 and first_made.count("rows") >= 2
    assert second_made == []
    for text in (first, second):
        manifest = json.loads(text)
        assert manifest["actions"] == expected_actions
        assert text == "".join(csr.manifest_pieces(manifest))
    assert json.loads(second)["complete"] is True
    assert second.split('"actions": ')[1] == first.split('"actions": ')[1]


def test_a_fixed_list_is_made_again_where_the_last_manifest_no_longer_holds_it(tmp_path):
    made = []
    actions = csr.Streamed(lambda: made.append("actions") or iter([{"n": n} for n in range(300)]),
                           fixed=True)
    rows = csr.Streamed(lambda: made.append("rows") or iter([{"id": "a"}, {"id": "b"}]), fixed=True)
    manifest = {"tool": csr.TOOL_NAME, "complete": False,
                "entries": [{"kind": "sqlite", "rows": {"threads": rows}}], "actions": actions}
    expected = {"tool": csr.TOOL_NAME, "complete": False,
                "entries": [{"kind": "sqlite", "rows": {"threads": [{"id": "a"}, {"id": "b"}]}}],
                "actions": [{"n": n} for n in range(300)]}
    path = tmp_path / "manifest.json"

    def write_and_read():
        del made[:]
        csr.write_manifest(tmp_path, manifest)
        text = path.read_text(encoding="utf-8")
        expected["complete"] = manifest["complete"]
        assert json.loads(text) == expected
        return sorted(made), text

    assert write_and_read()[0] == ["actions", "rows"]
    manifest["complete"] = True
    kept, text = write_and_read()
    assert kept == [] and text == "".join(csr.manifest_pieces(manifest))
    # One byte of the actions changed since (same length): they are made again, not copied.
    path.write_text(text.replace('{"n": 217}', '{"n": 317}'), encoding="utf-8")
    assert write_and_read()[0] == ["actions"]
    # Made again, they are copied next time; also where the entries before them grew.
    manifest["entries"].insert(0, {"kind": "file", "path": "sessions/x.jsonl" * 20})
    expected["entries"].insert(0, manifest["entries"][0])
    assert write_and_read()[0] == []
    path.write_text(text[:200], encoding="utf-8")  # cut short
    assert write_and_read()[0] == ["actions", "rows"]
    path.unlink()
    assert write_and_read()[0] == ["actions", "rows"]
    # The same text behind a link in its place: a link is not followed.
    os.replace(str(path), str(tmp_path / "elsewhere.json"))
    os.symlink(str(tmp_path / "elsewhere.json"), str(path))
    assert write_and_read()[0] == ["actions", "rows"]


def test_a_fixed_list_is_copied_only_into_the_form_it_was_written_in(tmp_path):
    """A list inside an entry is written on one line, one at the top level a line per item:
    the same fixed list in both places gets each place's own text, never the other's."""
    shared = csr.Streamed(lambda: iter([{"id": "a"}, {"id": "b"}]), fixed=True)
    manifest = {"complete": False, "entries": [{"kind": "sqlite", "rows": {"threads": shared}}],
                "actions": shared}
    for complete in (False, True, True):
        manifest["complete"] = complete
        csr.write_manifest(tmp_path, manifest)
        text = (tmp_path / "manifest.json").read_text(encoding="utf-8")
        assert text == "".join(csr.manifest_pieces(manifest))


def test_a_fixed_list_is_copied_in_small_reads_of_one_buffer(tmp_path, monkeypatch):
    """The copy reads the last manifest a small buffer at a time (the list's text is ~14.5 MB at
    100,000 threads); a list many buffers long, ending mid-buffer, is copied whole."""
    monkeypatch.setattr(csr, "MANIFEST_COPY_CHUNK", 7)
    made = []
    actions = csr.Streamed(lambda: made.append(1) or iter([{"n": n, "t": "é" * n} for n in range(40)]),
                           fixed=True)
    manifest = {"complete": False, "actions": actions}
    csr.write_manifest(tmp_path, manifest)
    manifest["complete"] = True
    csr.write_manifest(tmp_path, manifest)
    assert len(made) == 1
    assert (tmp_path / "manifest.json").read_text(encoding="utf-8") == "".join(
        csr.manifest_pieces(manifest))


def test_a_manifest_in_place_of_a_folder_leaves_no_descriptor_open(tmp_path):
    """The copy of a fixed list reads the last manifest; where a folder stands in its place the
    write fails as before (nothing can replace a folder), and every descriptor it opened is
    closed again."""
    fds = "/proc/self/fd"
    if not os.path.isdir(fds):
        pytest.skip("no /proc/self/fd to count descriptors with")
    actions = csr.Streamed(lambda: iter([{"n": n} for n in range(50)]), fixed=True)
    manifest = {"complete": False, "actions": actions}
    csr.write_manifest(tmp_path, manifest)
    (tmp_path / "manifest.json").unlink()
    (tmp_path / "manifest.json").mkdir()
    before = len(os.listdir(fds))
    for _ in range(5):
        with pytest.raises(OSError):
            csr.write_manifest(tmp_path, manifest)
    assert len(os.listdir(fds)) == before


def test_the_text_report_of_a_plan_reads_its_actions_once_without_holding_them(tmp_path, monkeypatch, capsys):
    """The text a repair prints names ten actions (all with --verbose) and counts the rest: it
    reads them once, as --json does, and never makes the whole list (at 100,000 threads ~42,000
    dicts, +24 MB over the apply's peak). Its text is the text the whole list gives."""
    from homes import switched_home

    home, _ = switched_home(tmp_path / "home", turns=(1,) * 14)
    argv = ["repair-provider", "--codex-home", str(home.root), "--from", "openai"]
    real_render = csr.render_plan_text
    for flags in ([], ["--verbose"]):
        assert csr.main(argv + flags + ["--json"]) == csr.EXIT_FINDINGS
        listed = json.loads(capsys.readouterr().out)["actions"]
        assert len(listed) > 10
        rendered = []
        with monkeypatch.context() as patch:
            patch.setattr(csr.Plan, "actions_json", lambda *a, **k: pytest.fail("the whole list"))
            patch.setattr(csr, "render_plan_text",
                          lambda doc, verbose: rendered.append(dict(doc)) or real_render(doc, verbose))
            assert csr.main(argv + flags) == csr.EXIT_FINDINGS
        text = capsys.readouterr().out
        assert not isinstance(rendered[0]["actions"], list)
        assert text == real_render(dict(rendered[0], actions=listed), bool(flags)) + "\n"
        assert ("… %d more" % (len(listed) - 10) in text) is not bool(flags)


def test_the_backup_entries_of_files_read_back_as_the_dicts_the_manifest_shows(tmp_path):
    """Kept packed for the whole apply (see above); each reads back as its dict, also a file
    that did not exist and one outside the home, whose copy is not at files/<its name>."""
    inside, outside = tmp_path / "a.jsonl", tmp_path / "b.txt"
    inside.write_bytes(b"12345")
    outside.write_bytes(b"")
    os.chmod(str(inside), 0o640)
    files = csr.CopiedFiles()
    digest = hashlib.sha256(b"12345").hexdigest()
    files.add("sessions/a.jsonl", os.path.join("files", "sessions/a.jsonl"), inside.stat(), digest)
    files.add("sessions/gone.jsonl", os.path.join("files", "sessions/gone.jsonl"), None, None)
    outside_copy = os.path.join("files", "_outside", "x", "b.txt")
    files.add(str(outside), outside_copy, outside.stat(), hashlib.sha256(b"").hexdigest())
    assert files.edited_digest(0) is None
    files.add("sessions/c.jsonl", os.path.join("files", "sessions/c.jsonl"), inside.stat(), digest,
              "cd" * 32)
    assert files.edited_digest(3) == "cd" * 32  # the rewrite's, not the manifest's
    assert "cd" * 32 not in json.dumps(list(files))
    files.set_after(0, "ab" * 32)
    files.set_after(1, None)
    shown = list(files)
    assert shown[0] == {"path": "sessions/a.jsonl", "kind": "file", "existed": True,
                        "backup": os.path.join("files", "sessions/a.jsonl"), "size": 5,
                        "mode": 0o640, "mtime_ns": inside.stat().st_mtime_ns,
                        "sha256_before": digest, "sha256_after": "ab" * 32}
    assert shown[1] == {"path": "sessions/gone.jsonl", "kind": "file", "existed": False,
                        "backup": None, "size": None, "mode": None, "mtime_ns": None,
                        "sha256_before": None, "sha256_after": None}
    assert shown[2]["backup"] == outside_copy and shown[2]["size"] == 0
    assert shown[2]["sha256_before"] == hashlib.sha256(b"").hexdigest()
    assert shown[2]["sha256_after"] is None  # not set: the run did not complete
    # With nothing in them, the entries and a Streamed list are written as empty lists.
    empty = {"entries": csr.ManifestEntries(), "actions": csr.Streamed(lambda: iter(()))}
    assert "".join(csr.manifest_pieces(empty)) == '{\n  "entries": [],\n  "actions": []\n}\n'


def test_a_written_rollouts_digest_is_reused_only_while_it_is_the_file_the_run_wrote(tmp_path):
    """finish_manifest takes a replaced rollout's SHA-256 from its packed entry, not from a second
    pass, but only while the file is the one written: a line appended since (a session resumed
    between the replace and the manifest) or another file in its place is hashed as it is."""
    files = csr.CopiedFiles()
    paths = [tmp_path / name for name in ("a.jsonl", "b.jsonl", "c.jsonl", "d.jsonl")]
    for path in paths:
        path.write_bytes(b'{"x":1}\n')
        files.add(path.name, os.path.join("files", path.name), path.stat(), "00" * 32)
    assert files.written_digest(0, paths[0]) is None  # nothing written yet
    for at, path in enumerate(paths[:3]):
        made = path.stat()
        files.set_written(at, (made.st_dev, made.st_ino), made.st_size, made.st_mtime_ns,
                          "%02x" % at * 32)
    assert files.written_digest(0, paths[0]) == "00" * 32
    written = paths[1].stat()
    with open(str(paths[1]), "ab") as handle:
        handle.write(b'{"appended":true}\n')
    os.utime(str(paths[1]), ns=(written.st_atime_ns, written.st_mtime_ns))  # only the size moved
    assert files.written_digest(1, paths[1]) is None  # grew since
    written = paths[2].stat()
    replacement = tmp_path / "other"
    replacement.write_bytes(paths[2].read_bytes())
    os.utime(str(replacement), ns=(written.st_atime_ns, written.st_mtime_ns))
    os.replace(str(replacement), str(paths[2]))  # same size and mtime: only the inode moved
    assert files.written_digest(2, paths[2]) is None  # another inode in its place
    assert files.written_digest(3, paths[3]) is None  # never written by the run
    paths[0].unlink()
    assert files.written_digest(0, paths[0]) is None
