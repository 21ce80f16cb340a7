"""Each reason code's meaning, severity and fix in the docs, written from the script's tables.

    python3 tests/reason_docs.py            # rewrite the generated text in both docs
    python3 tests/reason_docs.py --check    # exit 1, with a diff, when a doc differs

The script is the one source. `REASONS` and `HOME_FINDINGS` hold each code's default severity
and one-line meaning (the `message` diagnose prints), `SEVERITY_LOWERED` where a code is info
instead, `REPAIRS` the repairs that cure it, `REASON_FIXES` what trace says to do where no
repair reaches a thread, and `HOME_FINDING_STEPS` a home-wide finding's manual step. From them:

* references/reason-codes.md: every `### code` section starts with generated lines (Meaning,
  Default severity, Info where, Repair and/or What to do or Otherwise, Manual step), up to the
  first line that is not one of them; the hand-written symptom, cause, fingerprint and fix
  below stay as they are. Per-thread codes have their section under "## Per-thread reasons",
  home-wide findings under "## Home-wide findings". The Contents list is generated from the
  headings.
* SKILL.md: in the two tables of reason codes, the Meaning column is the meaning from the
  script; the What-to-do column is written by hand and must name every repair that cures
  the code.

A code with no section (or no row) gets one holding the generated text only; a section or row
that names no code of its chapter is reported, never deleted (its prose is someone's work).

This is a script, not a test: pytest does not collect it. `.ci/run` runs it with --check and
tests/test_skill_and_docs.py compares its rendering with the files.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import textwrap
from pathlib import Path
from typing import Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import codex_session_recovery as csr  # noqa: E402

REASON_DOC = ROOT / "references" / "reason-codes.md"
SKILL_DOC = ROOT / "SKILL.md"
PER_THREAD, HOME_WIDE = "Per-thread reasons", "Home-wide findings"
# How REASON_FIXES' `{why}` (the reason trace fills in for one thread) reads in a doc.
WHY_SHOWN = "*why* (the finding's `why_no_action`)"
GENERATED_LABELS = ("Meaning", "Default severity", "Info where", "Repair", "Otherwise",
                    "What to do", "Manual step")


class Shown(dict):
    """Fills a fix's `{fields}` for a doc: `{why}` as WHY_SHOWN, an evidence field by its name
    in capitals (`[model_providers.PROVIDER]`)."""

    def __missing__(self, key: str) -> str:
        return key.upper()


def reason_fix(code: str) -> str:
    return csr.REASON_FIXES[code].format_map(Shown(why=WHY_SHOWN))


def home_step(code: str) -> str:
    return csr.HOME_FINDING_STEPS[code].format_map(Shown())
WIDTH = 95


def chapters() -> Dict[str, Dict[str, Tuple[str, str]]]:
    return {PER_THREAD: csr.REASONS, HOME_WIDE: csr.HOME_FINDINGS}


def markdown(text: str, cell: bool = False) -> str:
    """Text as Markdown shows it literally: backslashes outside code spans doubled, and in a
    table cell `|` escaped."""
    parts = re.split(r"(`[^`]*`)", text)
    out = [part if part.startswith("`") else part.replace("\\", "\\\\") for part in parts]
    joined = "".join(out)
    return joined.replace("|", "\\|") if cell else joined


def curing_repairs(code: str) -> List[str]:
    return [repair.name for repair in csr.REPAIRS if code in repair.cures]


def generated_items(code: str) -> List[Tuple[str, str]]:
    """(label, text) of one code's generated lines, from the script's tables."""
    severity, meaning = chapters()[PER_THREAD if code in csr.REASONS else HOME_WIDE][code]
    items = [("Meaning", markdown(meaning)), ("Default severity", "`%s`" % severity)]
    if code in csr.SEVERITY_LOWERED:
        items.append(("Info where", markdown(csr.SEVERITY_LOWERED[code])))
    cures = curing_repairs(code)
    if cures:
        items.append(("Repair", "%s, as the line diagnose's Next block prints (a dry run; then `--apply`)"
                      % " or ".join("`%s`" % name for name in cures)))
    if code in csr.REASON_FIXES:
        items.append(("Otherwise" if cures else "What to do", markdown(reason_fix(code))))
    if code in csr.HOME_FINDING_STEPS:
        items.append(("Manual step", "evidence `manual_step`: %s" % markdown(home_step(code))))
    return items


def generated_lines(code: str) -> List[str]:
    lines: List[str] = []
    for label, text in generated_items(code):
        lines.extend(textwrap.wrap("- **%s:** %s" % (label, text), width=WIDTH, subsequent_indent="  ",
                                   break_long_words=False, break_on_hyphens=False))
    return lines


def is_generated_start(line: str) -> bool:
    return any(line.startswith("- **%s:**" % label) for label in GENERATED_LABELS)


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


# -- references/reason-codes.md -------------------------------------------------------------


def split_sections(text: str) -> List[Tuple[str, List[str]]]:
    """(heading line or "" for the preamble, the lines up to the next heading of level 2 or 3)."""
    sections: List[Tuple[str, List[str]]] = [("", [])]
    for line in text.split("\n"):
        if re.match(r"^#{2,3} ", line):
            sections.append((line, []))
        else:
            sections[-1][1].append(line)
    return sections


def refit_section(code: str, body: List[str]) -> List[str]:
    """The section's body with its generated lines (if any) replaced by fresh ones."""
    rest = list(body)
    while rest and not rest[0].strip():
        rest.pop(0)
    if rest and is_generated_start(rest[0]):
        rest.pop(0)
        while rest and (is_generated_start(rest[0]) or rest[0].startswith("  ")):
            rest.pop(0)
    while rest and not rest[0].strip():
        rest.pop(0)
    fresh = [""] + generated_lines(code)
    if not rest:
        return fresh + [""]
    return fresh + ([] if rest[0].startswith("- ") else [""]) + rest


def contents(sections: List[Tuple[str, List[str]]]) -> List[str]:
    lines = [""]
    for heading, _body in sections:
        level, _space, title = heading.partition(" ")
        if level == "##" and title != "Contents":
            lines.append("- [%s](#%s)" % (title, slug(title)))
        elif level == "###":
            severity = (csr.REASONS.get(title) or csr.HOME_FINDINGS.get(title) or ("",))[0]
            lines.append("  - [%s](#%s)%s" % (title, slug(title), " (info)" if severity == "info" else ""))
    return lines + [""]


def render_reason_doc(text: str, problems: List[str]) -> str:
    sections = split_sections(text)
    chapter: Optional[str] = None
    out: List[Tuple[str, List[str]]] = []
    seen: Dict[str, List[str]] = {PER_THREAD: [], HOME_WIDE: []}
    for index, (heading, body) in enumerate(sections):
        if heading.startswith("## "):
            if chapter in seen:
                out.extend(missing_sections(chapter, seen[chapter]))
            chapter = heading[3:].strip()
        elif heading.startswith("### "):
            code = heading[4:].strip()
            codes = chapters().get(chapter or "")
            if codes is None or code not in codes:
                problems.append("references/reason-codes.md: `### %s` (under %s) names no %s code of the "
                                "script; rename or remove it by hand" % (code, chapter, "such" if codes is None
                                                                         else chapter.lower()))
            else:
                seen[chapter].append(code)
                body = refit_section(code, body)
        out.append((heading, body))
    if chapter in seen:
        out.extend(missing_sections(chapter, seen[chapter]))
    for name, codes in chapters().items():
        if not any(h == "## " + name for h, _b in out):
            problems.append("references/reason-codes.md has no `## %s` chapter" % name)
    out = [(h, contents(out) if h == "## Contents" else b) for h, b in out]
    lines: List[str] = []
    for heading, body in out:
        lines.extend(([heading] if heading else []) + body)
    return "\n".join(lines)


def missing_sections(chapter: str, seen: List[str]) -> List[Tuple[str, List[str]]]:
    """A section, holding the generated lines only, for each code of the chapter without one."""
    return [("### " + code, [""] + generated_lines(code) + [""]) for code in chapters()[chapter] if code not in seen]


# -- SKILL.md -------------------------------------------------------------------------------

ROW_RE = re.compile(r"^\| `([A-Za-z0-9_]+)` \| ")


def split_cells(row: str) -> List[str]:
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", row.strip())[1:-1]]


def render_skill(text: str, problems: List[str]) -> str:
    lines = text.split("\n")
    out: List[str] = []
    table: List[str] = []
    for line in lines + [""]:
        if line.startswith("|"):
            table.append(line)
            continue
        if table:
            out.extend(refit_table(table, problems))
            table = []
        out.append(line)
    return "\n".join(out[:-1])


def refit_table(table: List[str], problems: List[str]) -> List[str]:
    """A table of codes with each Meaning cell from the script, and a row for each code of its
    chapter that lacks one. Any other table is returned as it is."""
    codes = [m.group(1) for m in map(ROW_RE.match, table) if m]
    if not codes or split_cells(table[0])[:2] != ["Code", "Meaning"]:
        return table
    chapter = PER_THREAD if codes[0] in csr.REASONS else HOME_WIDE
    known = chapters()[chapter]
    out = []
    for row in table:
        match = ROW_RE.match(row)
        if not match:
            out.append(row)
            continue
        code, cells = match.group(1), split_cells(row)
        if code not in known or len(cells) != 3:
            problems.append("SKILL.md: the row of `%s` is not a row of a %s code (code, meaning, what to do); "
                            "fix or remove it by hand" % (code, chapter.lower()))
            out.append(row)
            continue
        missing = [name for name in curing_repairs(code) if name not in cells[2]]
        if missing:
            problems.append("SKILL.md: the row of `%s` does not name %s, which cures it" % (
                code, ", ".join("`%s`" % name for name in missing)))
        out.append("| `%s` | %s | %s |" % (code, markdown(known[code][1], cell=True), cells[2]))
    for code in known:
        if code not in codes:
            cures = curing_repairs(code)
            todo = ("`python3 <skill-dir>/scripts/codex_session_recovery.py %s`" % cures[0] if cures else
                    markdown(reason_fix(code), cell=True) if code in csr.REASON_FIXES
                    else markdown(home_step(code), cell=True) if code in csr.HOME_FINDING_STEPS
                    else "see references/reason-codes.md")
            out.append("| `%s` | %s | %s |" % (code, markdown(known[code][1], cell=True), todo))
    return out


# -- both -----------------------------------------------------------------------------------

DOCS = ((REASON_DOC, render_reason_doc), (SKILL_DOC, render_skill))


def rendered() -> List[Tuple[Path, str, str, List[str]]]:
    """(path, text on disk, text as generated, problems) for each doc."""
    result = []
    for path, render in DOCS:
        problems: List[str] = []
        text = path.read_text(encoding="utf-8")
        result.append((path, text, render(text, problems), problems))
    return result


def diff(path: Path, old: str, new: str) -> str:
    name = str(path.relative_to(ROOT))
    return "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True), name, name + " (generated)"))


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a doc differs")
    args = parser.parse_args(argv)
    failed = False
    for path, text, new, problems in rendered():
        for problem in problems:
            print(problem)
        failed = failed or bool(problems)
        if new == text:
            continue
        if args.check:
            print(diff(path, text, new))
            failed = True
        else:
            path.write_text(new, encoding="utf-8")
            print("rewrote the generated text in %s" % path.relative_to(ROOT))
    if args.check:
        print("reason docs: %s" % ("differ from the script's tables (python3 tests/reason_docs.py rewrites them)"
                                   if failed else "match the script's tables"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
