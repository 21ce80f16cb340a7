"""The DB digests a backup records, and what restore compares them with.

A backup's manifest (and an interrupted run's journal) names each DB's content by a digest:
restore trusts a backup copy, puts a DB back or leaves it alone, and tells the run's own writes
from later ones by comparing digests. So a digest must name the content, not the Python that
took it: a home is often repaired by one `python3` and restored by another (macOS's 3.9, a newer
one from a package manager). Every state DB the real Codex makes has a `sqlite_sequence` table
(migration 0002's AUTOINCREMENT `logs`, dropped in 0023), which CPython's `iterdump()` puts among
the tables in 3.9 and at the end from 3.10: digests of that text differ between them."""

import hashlib
import json
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path
from typing import Dict, List

import pytest

import codex_session_recovery as csr
from homes import SCRIPT, HomeBuilder, db_dump, hash_tree, pythons_here, run_in_process

run = run_in_process  # (exit code, JSON document, stderr)

SEQUENCE_LINES = ('DELETE FROM "sqlite_sequence";', 'INSERT INTO "sqlite_sequence" VALUES(')


def iterdump_layouts(path: Path) -> Dict[str, str]:
    """SHA-256 of the DB's iterdump text in both of CPython's layouts: "inline" (3.9: the
    sqlite_sequence statements where that table falls among the tables in name order) and "end"
    (3.10 to 3.13: just before COMMIT). The digests earlier builds of the tool recorded, each
    under the Python that ran it. Made from this Python's own iterdump, whichever layout it has.
    A DB without sqlite_sequence (the history DB) has one layout."""
    conn = sqlite3.connect(str(path))
    try:
        lines = list(conn.iterdump())
        later = [sql for name, sql in conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND sql NOT NULL "
            "ORDER BY name") if name > "sqlite_sequence" and not name.startswith("sqlite_")]
    finally:
        conn.close()
    sequence = [line for line in lines if line.startswith(SEQUENCE_LINES)]
    rest = [line for line in lines if not line.startswith(SEQUENCE_LINES)]
    if not sequence:
        text = "".join(lines).encode("utf-8", "surrogatepass")
        return dict.fromkeys(("inline", "end"), hashlib.sha256(text).hexdigest())
    inline_at = rest.index(later[0] + ";")
    layouts = {"inline": rest[:inline_at] + sequence + rest[inline_at:],
               "end": rest[:-1] + sequence + rest[-1:]}
    assert rest[-1] == "COMMIT;"
    return {name: hashlib.sha256("".join(text).encode("utf-8", "surrogatepass")).hexdigest()
            for name, text in layouts.items()}


def snapshot(home: Path):
    dbs = {p.name: db_dump(p) for p in home.glob("*.sqlite")}
    files = {k: v for k, v in hash_tree(home).items() if not k.endswith((".sqlite", ".sqlite-wal"))}
    return files, dbs


@pytest.fixture
def repaired(tmp_path):
    """A 0.169.0 home switched to a custom provider, repaired with --apply: (home, its state
    before the repair, the backup folder)."""
    home = HomeBuilder(tmp_path / "home", "0.169.0").provider_config("proxy-gateway")
    home.thread(provider="openai", turns=2)
    home.thread(provider="openai")
    with closing(sqlite3.connect(str(home.root / "state_5.sqlite"))) as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_sequence'"
                            ).fetchone()[0] == 1, "synthetic state DBs have it, as real ones do"
    before = snapshot(home.root)
    code, doc, _ = run("repair-provider", "--codex-home", str(home.root), "--from", "openai",
                       "--apply")
    assert code == csr.EXIT_OK and doc["applied"] is True
    return home, before, Path(doc["backup_dir"])


def rewrite_digests(folder: Path, home: Path, layout: str, complete: bool = True) -> List[str]:
    """The backup's DB digests replaced by `layout`'s iterdump digests, as an earlier build
    under that layout's Python wrote them; for an interrupted run (`complete` False) the state
    after the run is only in the journal. Returns the DB entries' paths."""
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    after = {}
    for entry in manifest["entries"]:
        if entry["kind"] == "sqlite":
            after[entry["path"]] = iterdump_layouts(home / entry["path"])[layout]
            entry["digest_before"] = iterdump_layouts(folder / entry["backup"])[layout]
            entry["digest_after"] = after[entry["path"]] if complete else None
    manifest["complete"] = complete
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    journal = folder / "journal.jsonl"
    records = [json.loads(line) for line in journal.read_text(encoding="utf-8").splitlines()]
    assert {r["path"] for r in records if "digest_after" in r} == set(after)
    for record in records:
        if "digest_after" in record:
            record["digest_after"] = after[record["path"]]
    journal.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return list(after)


@pytest.mark.parametrize("complete", [True, False], ids=["complete-run", "interrupted-run"])
@pytest.mark.parametrize("layout", ["inline", "end"])
def test_a_backup_whose_db_digests_any_python_took_restores(repaired, layout, complete):
    home, before, folder = repaired
    paths = rewrite_digests(folder, home.root, layout, complete)
    assert len(set(iterdump_layouts(home.root / "state_5.sqlite").values())) == 2, \
        "the two layouts give different digests, so one of them is not this Python's"
    assert "state_5.sqlite" in paths
    code, doc, _ = run("restore", "--codex-home", str(home.root), str(folder))
    assert code == csr.EXIT_FINDINGS, doc
    assert doc["changed_since_run"] == []
    code, doc, _ = run("restore", "--codex-home", str(home.root), str(folder),
                       "--apply")
    assert code == csr.EXIT_OK, doc
    assert snapshot(home.root) == before


def test_a_backup_copy_matching_no_layout_is_refused(repaired):
    home, _before, folder = repaired
    rewrite_digests(folder, home.root, "end")
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    entry = next(e for e in manifest["entries"] if e["kind"] == "sqlite")
    with closing(sqlite3.connect(str(folder / entry["backup"]))) as conn, conn:
        conn.execute("UPDATE threads SET title = title || '!'")
    untouched = hash_tree(home.root)
    code, doc, _ = run("restore", "--codex-home", str(home.root), str(folder),
                       "--apply")
    assert code == csr.EXIT_REFUSED
    assert "does not match its manifest" in doc["error"]["message"]
    assert hash_tree(home.root) == untouched


def db_with_every_kind_of_value(path: Path, then: str = "") -> None:
    """A sqlite_sequence with rows, a violated foreign key (3.13's iterdump adds a pragma for
    it), a WITHOUT ROWID table, and every SQLite value type; then the SQL `then`."""
    with closing(sqlite3.connect(str(path))) as conn:
        _fill(conn)
        conn.executescript(then)


def _fill(conn: sqlite3.Connection) -> None:
    conn.executescript("""
        CREATE TABLE parent (id INTEGER PRIMARY KEY);
        CREATE TABLE logs (id INTEGER PRIMARY KEY AUTOINCREMENT, text TEXT, blob BLOB,
                           real REAL, big INTEGER, parent INTEGER REFERENCES parent(id));
        CREATE TABLE keyed (k TEXT PRIMARY KEY, v) WITHOUT ROWID;
        CREATE INDEX logs_text ON logs(text);
        CREATE TRIGGER logs_touch AFTER UPDATE ON logs BEGIN SELECT 1; END;
        CREATE VIEW recent AS SELECT * FROM logs;
    """)
    conn.executemany("INSERT INTO logs (text, blob, real, big, parent) VALUES (?, ?, ?, ?, ?)",
                     [("it's \u00e9t\u00e9 \U0001f600", b"\x00\xff", 0.1, 2 ** 62, 7),
                      (None, b"", -1.5e300, -(2 ** 63), None)])
    conn.executemany("INSERT INTO keyed VALUES (?, ?)", [("b", 1), ("a", "x")])
    conn.commit()


def digest_of(path: Path) -> str:
    conn = sqlite3.connect(str(path))
    try:
        return csr.db_digest(conn)
    finally:
        conn.close()


@pytest.mark.parametrize("index", ["", "CREATE INDEX keyed_v ON keyed(v);"],
                         ids=["plain", "covering-index"])
def test_the_digest_is_the_json_of_the_schema_and_each_tables_rows(tmp_path, monkeypatch, index):
    """Its definition, which backups keep: it does not depend on how many rows are read at a
    time, nor on the query planner (SQLite reads a WITHOUT ROWID table through an index that
    covers it, in that index's order, when nothing orders it)."""
    db = tmp_path / "a.sqlite"
    db_with_every_kind_of_value(db, index)
    encode = json.JSONEncoder(separators=(",", ":"), default=lambda b: {"blob": b.hex()}).encode
    expected = hashlib.sha256()
    with closing(sqlite3.connect(str(db))) as conn:
        schema = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master "
                              "ORDER BY type, name, tbl_name, sql").fetchall()
        expected.update(encode(schema).encode("ascii"))
        for name in ("keyed", "logs", "parent", "sqlite_sequence"):  # the tables, by name
            order = " ORDER BY k" if name == "keyed" else " ORDER BY rowid"  # keyed: no rowid
            rows = conn.execute('SELECT * FROM "%s"%s' % (name, order)).fetchall()
            expected.update((encode(name) + encode(rows)).encode("ascii"))
    assert digest_of(db) == csr.DB_DIGEST_SCHEME + expected.hexdigest()
    for batch in (1, 2, 3, 1000):
        monkeypatch.setattr(csr, "DIGEST_BATCH_ROWS", batch)
        assert digest_of(db) == csr.DB_DIGEST_SCHEME + expected.hexdigest(), batch


def test_the_digest_names_the_content(tmp_path):
    db = tmp_path / "a.sqlite"
    db_with_every_kind_of_value(db)
    first = digest_of(db)
    assert digest_of(db) == first
    copy = tmp_path / "copy.sqlite"
    with closing(sqlite3.connect(str(db))) as source, closing(sqlite3.connect(str(copy))) as dest:
        source.backup(dest)
    assert digest_of(copy) == first, "the same content in another file"
    changes = [
        "UPDATE logs SET real = 0.1000000000000001 WHERE id = 1",
        "UPDATE logs SET blob = x'00fe' WHERE id = 1",
        "UPDATE logs SET text = 'x' WHERE id = 2",
        "UPDATE keyed SET v = '1' WHERE k = 'b'",  # the same digits as text, not an integer
        "DELETE FROM sqlite_sequence",
        "CREATE INDEX keyed_v ON keyed(v)",
    ]
    seen = {first}
    for sql in changes:
        target = tmp_path / ("changed-%d.sqlite" % len(seen))
        with closing(sqlite3.connect(str(db))) as source, \
                closing(sqlite3.connect(str(target))) as dest:
            source.backup(dest)
        with closing(sqlite3.connect(str(target))) as conn, conn:
            conn.execute(sql)
        digest = digest_of(target)
        assert digest not in seen, sql
        seen.add(digest)


# Where 3.9's iterdump put sqlite_sequence depends on what follows it in name order.
AFTER_SEQUENCE = {
    "nothing": "",
    "a table": "CREATE TABLE threads (id TEXT PRIMARY KEY); INSERT INTO threads VALUES ('t');",
    "sqlite_stat1": "ANALYZE;",
}


@pytest.mark.parametrize("after", list(AFTER_SEQUENCE))
def test_the_digest_is_the_same_under_every_python_on_this_machine(tmp_path, after):
    """And every digest an earlier build recorded under any of them (a bare SHA-256 of that
    Python's iterdump text) is one this Python still recognises."""
    pythons = pythons_here()
    if len(pythons) < 2:
        pytest.skip("fewer than two Python 3.9-3.13 interpreters here")
    db = tmp_path / "a.sqlite"
    db_with_every_kind_of_value(db, AFTER_SEQUENCE[after])
    probe = ("import hashlib, importlib.util, sqlite3, sys\n"
             "spec = importlib.util.spec_from_file_location('csr', sys.argv[1])\n"
             "csr = importlib.util.module_from_spec(spec); spec.loader.exec_module(csr)\n"
             "conn = sqlite3.connect(sys.argv[2])\n"
             "text = ''.join(conn.iterdump()).encode('utf-8', 'surrogatepass')\n"
             "print(csr.db_digest(conn), hashlib.sha256(text).hexdigest())\n")
    digests, legacy = {}, {}
    for python in pythons:
        done = subprocess.run([python, "-c", probe, str(SCRIPT), str(db)], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        digests[python], legacy[python] = done.stdout.split()
    assert len(set(digests.values())) == 1, digests
    assert digests[pythons[0]] == digest_of(db)
    assert len(set(legacy.values())) >= 2, "the interpreters here lay iterdump out differently"
    with closing(sqlite3.connect(str(db))) as conn:
        known = csr.legacy_db_digests(conn)
    assert set(legacy.values()) <= known, (legacy, known)
    assert all(csr.DbContent(db).matches(old) for old in legacy.values())
    assert not csr.DbContent(db).matches("0" * 64)
