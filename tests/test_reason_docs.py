"""references/reason-codes.md and SKILL.md say of each reason code what the script's tables say,
word for word (tests/reason_docs.py writes that text; these tests compare it)."""

from __future__ import annotations

import re
from typing import Dict, List

import pytest

import codex_session_recovery as csr
import reason_docs as rd


def sections_by_chapter(text: str) -> Dict[str, List[str]]:
    found: Dict[str, List[str]] = {}
    chapter = ""
    for line in text.split("\n"):
        if line.startswith("## "):
            chapter = line[3:].strip()
        elif line.startswith("### "):
            found.setdefault(chapter, []).append(line[4:].strip())
    return found


def test_both_docs_match_the_scripts_tables():
    for path, text, new, problems in rd.rendered():
        assert problems == [], problems
        assert new == text, "%s differs from the script's tables (python3 tests/reason_docs.py rewrites it):\n%s" % (
            path.name, rd.diff(path, text, new))


def test_every_code_has_one_section_in_its_chapter_and_every_section_names_a_code():
    found = sections_by_chapter(rd.REASON_DOC.read_text(encoding="utf-8"))
    assert sorted(found[rd.PER_THREAD]) == sorted(csr.REASONS)
    assert sorted(found[rd.HOME_WIDE]) == sorted(csr.HOME_FINDINGS)
    assert set(found) - {rd.PER_THREAD, rd.HOME_WIDE} == set(), "### sections outside the two chapters"


def test_every_section_starts_with_the_meaning_and_default_severity_from_the_table():
    text = rd.REASON_DOC.read_text(encoding="utf-8")
    for table in (csr.REASONS, csr.HOME_FINDINGS):
        for code, (severity, meaning) in table.items():
            body = text.split("\n### %s\n\n" % code, 1)[1]
            flat = re.sub(r"\n  ", " ", body.split("\n### ", 1)[0])
            assert flat.startswith("- **Meaning:** %s\n- **Default severity:** `%s`\n" % (rd.markdown(meaning), severity)), code


def test_each_fix_line_comes_from_repairs_or_reason_fixes():
    text = re.sub(r"\n  ", " ", rd.REASON_DOC.read_text(encoding="utf-8"))
    for code in list(csr.REASONS) + list(csr.HOME_FINDINGS):
        section = text.split("\n### %s\n" % code, 1)[1].split("\n### ", 1)[0]
        cures = [r.name for r in csr.REPAIRS if code in r.cures]
        if cures:
            assert "- **Repair:** `%s`," % cures[0] in section, code
        if code in csr.REASON_FIXES:
            label = "Otherwise" if cures else "What to do"
            # `{why}` is what trace fills in for one thread; the doc names where it comes from.
            shown = csr.REASON_FIXES[code].format(why=rd.WHY_SHOWN)
            assert "- **%s:** %s\n" % (label, rd.markdown(shown)) in section, code
        assert cures or code in csr.REASON_FIXES or code in csr.HOME_FINDINGS, code


def test_a_meaning_changed_in_the_script_fails_the_check(monkeypatch):
    monkeypatch.setitem(csr.REASONS, "archived", ("info", "a new meaning of archived"))
    monkeypatch.setitem(csr.HOME_FINDINGS, "index_stale", ("info", "a new meaning | with a bar"))
    docs = {path.name: (text, new, problems) for path, text, new, problems in rd.rendered()}
    text, new, _problems = docs["reason-codes.md"]
    assert new != text
    assert "- **Meaning:** a new meaning of archived\n- **Default severity:** `info`" in new
    assert "  - [index_stale](#index_stale) (info)" in new
    text, new, _problems = docs["SKILL.md"]
    assert "| `archived` | a new meaning of archived |" in new and "a new meaning of archived" not in text
    assert "| `index_stale` | a new meaning \\| with a bar |" in new
    assert rd.main(["--check"]) == 1


def test_a_fix_changed_in_the_script_fails_the_check(monkeypatch):
    monkeypatch.setitem(csr.REASON_FIXES, "no_db_row", "nothing reaches it: {why}")
    _path, text, new, _problems = rd.rendered()[0]
    assert "- **Otherwise:** nothing reaches it: *why* (the finding's `why_no_action`)" in new and new != text


def test_a_code_without_a_section_gets_one_and_a_section_without_a_code_is_reported(monkeypatch):
    monkeypatch.setitem(csr.HOME_FINDINGS, "brand_new_code", ("warning", "something new"))
    monkeypatch.delitem(csr.REASONS, "cwd_moved")
    problems: List[str] = []
    new = rd.render_reason_doc(rd.REASON_DOC.read_text(encoding="utf-8"), problems)
    found = sections_by_chapter(new)
    assert found[rd.HOME_WIDE][-1] == "brand_new_code"
    assert "### brand_new_code\n\n- **Meaning:** something new\n- **Default severity:** `warning`\n\n" in new
    assert "  - [brand_new_code](#brand_new_code)\n" in new
    assert len(problems) == 1 and "`### cwd_moved`" in problems[0]
    assert "### cwd_moved" in new, "a section is never deleted: its prose is kept"


def test_skill_rows_follow_the_tables_and_name_the_repair(monkeypatch):
    text = rd.SKILL_DOC.read_text(encoding="utf-8")
    row = next(line for line in text.split("\n") if line.startswith("| `no_db_row` |"))
    problems: List[str] = []
    new = rd.render_skill(text.replace(row + "\n", ""), problems)
    assert problems == [] and "| `no_db_row` | the rollout has no row in the state DB | " \
        "`python3 <skill-dir>/scripts/codex_session_recovery.py reindex` |" in new
    new = rd.render_skill(text.replace(row, row.replace("reindex", "something")), problems)
    assert len(problems) == 1 and "`no_db_row`" in problems[0] and "`reindex`" in problems[0]


def test_backslashes_and_bars_show_literally():
    assert rd.markdown("a \\\\?\\ b `\\\\?\\`") == "a \\\\\\\\?\\\\ b `\\\\?\\`"
    assert rd.markdown("x | y", cell=True) == "x \\| y"
    assert rd.split_cells("| `a` | x \\| y | z |") == ["`a`", "x \\| y", "z"]


def test_a_severity_is_lowered_only_where_the_table_declares_it_and_the_doc_says_where():
    text = re.sub(r"\n  ", " ", rd.REASON_DOC.read_text(encoding="utf-8"))
    for code, when in csr.SEVERITY_LOWERED.items():
        assert csr.severity_of(code) != "info", "%s is info already: nothing to lower" % code
        assert csr.severity_of(code, lowered=True) == "info"
        section = text.split("\n### %s\n" % code, 1)[1].split("\n### ", 1)[0]
        assert "- **Info where:** %s\n" % rd.markdown(when) in section, code
    undeclared = next(code for code in csr.REASONS if code not in csr.SEVERITY_LOWERED)
    with pytest.raises(KeyError, match="not declared"):
        csr.severity_of(undeclared, lowered=True)


def test_each_home_findings_manual_step_comes_from_its_table_into_the_doc():
    text = re.sub(r"\n  ", " ", rd.REASON_DOC.read_text(encoding="utf-8"))
    assert set(csr.HOME_FINDING_STEPS) <= set(csr.HOME_FINDINGS)
    for code in csr.HOME_FINDING_STEPS:
        section = text.split("\n### %s\n" % code, 1)[1].split("\n### ", 1)[0]
        shown = rd.markdown(rd.home_step(code))
        assert "- **Manual step:** evidence `manual_step`: %s\n" % shown in section, code
    assert "{" not in rd.home_step("legacy_profile") and "PROFILE" in rd.home_step("legacy_profile")
