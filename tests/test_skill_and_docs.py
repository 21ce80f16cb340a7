"""The skill's metadata is valid and the documentation cannot drift from the script.

Codex loads SKILL.md and agents/openai.yaml fail-open: a bad field is logged and ignored, so
nothing else would notice. These checks use the standard library only (no YAML parser):
the frontmatter and openai.yaml are kept to the simple subset parsed here.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

import codex_session_recovery as csr
from homes import run_script

ROOT = Path(__file__).resolve().parent.parent
SKILL_NAME = "codex-session-recovery"
ALLOWED_FRONTMATTER_KEYS = {"name", "description", "license", "metadata"}
NAME_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


# -- tiny parsers ---------------------------------------------------------------------------


def _scalar(raw: str) -> str:
    """A YAML scalar as this repository writes them: double-quoted (with \\" and \\\\ escapes),
    single-quoted, or plain."""
    raw = raw.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        return re.sub(r'\\(["\\])', r"\1", raw[1:-1])
    if len(raw) >= 2 and raw[0] == raw[-1] == "'":
        return raw[1:-1].replace("''", "'")
    return raw


def parse_simple_yaml(lines: List[str]) -> Dict[str, object]:
    """Top-level `key: value` pairs, and one level of indented `key: value` under `key:`."""
    data: Dict[str, object] = {}
    parent = None
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = re.match(r"^( *)([A-Za-z0-9_.-]+):(.*)$", line)
        assert match, "line %d is not `key: value`: %r" % (number, line)
        indent, key, value = len(match.group(1)), match.group(2), match.group(3)
        if indent == 0:
            if value.strip():
                data[key] = _scalar(value)
                parent = None
            else:
                data[key] = {}
                parent = key
        else:
            assert parent is not None, "line %d is indented under nothing" % number
            nested = data[parent]
            assert isinstance(nested, dict) and value.strip(), "line %d: nesting too deep" % number
            nested[key] = _scalar(value)
    return data


def read_frontmatter(path: Path) -> Tuple[Dict[str, object], List[str], List[str]]:
    """(fields, raw frontmatter lines, body lines) of a SKILL.md."""
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n"), "SKILL.md must start with a --- line"
    lines = text.split("\n")
    end = lines.index("---", 1)
    raw = lines[1:end]
    return parse_simple_yaml(raw), raw, lines[end + 1:]


def skill_fields() -> Dict[str, object]:
    return read_frontmatter(ROOT / "SKILL.md")[0]


def openai_yaml() -> Tuple[Dict[str, object], List[str]]:
    lines = (ROOT / "agents" / "openai.yaml").read_text(encoding="utf-8").splitlines()
    return parse_simple_yaml(lines), lines


def doc(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


def subcommands() -> Dict[str, argparse.ArgumentParser]:
    parser = csr.build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("build_parser() has no subcommands")


def long_options() -> List[str]:
    parsers = [csr.build_parser()] + list(subcommands().values())
    found = set()
    for parser in parsers:
        for action in parser._actions:
            found.update(o for o in action.option_strings if o.startswith("--"))
    return sorted(found)


def reason_codes() -> List[str]:
    return sorted(set(csr.REASONS) | set(csr.HOME_FINDINGS))


# -- SKILL.md -------------------------------------------------------------------------------


def test_frontmatter_uses_only_allowed_keys():
    fields, raw, _body = read_frontmatter(ROOT / "SKILL.md")
    assert set(fields) <= ALLOWED_FRONTMATTER_KEYS
    assert {"name", "description"} <= set(fields)
    if "metadata" in fields:
        assert isinstance(fields["metadata"], dict)
        assert all(isinstance(v, str) for v in fields["metadata"].values())
    # The description is quoted: an unquoted `: ` silently drops the skill from the list.
    line = next(item for item in raw if item.startswith("description:"))
    assert line.split(":", 1)[1].strip().startswith('"')


def test_name_is_the_skill_name():
    name = skill_fields()["name"]
    assert name == SKILL_NAME
    assert NAME_RE.match(name) and len(name) <= 64
    # The same name the package installs (pyproject's [project] name).
    project = re.search(r'^name\s*=\s*"([^"]+)"', doc("pyproject.toml"), re.M)
    assert project and project.group(1) == name


def test_description_fits_every_loader():
    description = skill_fields()["description"]
    assert isinstance(description, str)
    assert 1 <= len(" ".join(description.split())) <= 1024
    assert "<" not in description and ">" not in description
    # The trigger phrases come first: long skill lists shorten descriptions from the end.
    head = description[:400].lower()
    for phrase in ("disappeared", "resume", "sidebar", "provider"):
        assert phrase in head


def test_body_is_short():
    _fields, _raw, body = read_frontmatter(ROOT / "SKILL.md")
    assert len(body) < 500


# -- agents/openai.yaml ---------------------------------------------------------------------


def test_openai_yaml_interface():
    data, lines = openai_yaml()
    assert set(data) <= {"interface", "policy", "dependencies"}
    interface = data["interface"]
    assert isinstance(interface, dict)
    assert interface.get("display_name") and len(interface["display_name"]) <= 64
    assert 25 <= len(interface.get("short_description", "")) <= 64
    assert "$" + SKILL_NAME in interface.get("default_prompt", "")
    assert len(interface["default_prompt"]) <= 1024
    # Every string value is quoted, keys are not.
    for line in lines:
        key, _, value = line.partition(":")
        if value.strip():
            assert value.strip()[0] in "\"'", line
            assert not key.strip().startswith(("'", '"')), line


# -- links ----------------------------------------------------------------------------------

LINKED_DOCS = ("SKILL.md", "README.md", "README.zh-CN.md", "references/reason-codes.md",
               "references/data-model.md", "references/restore.md", "CONTRIBUTING.md",
               "SECURITY.md")


@pytest.mark.parametrize("name", LINKED_DOCS)
def test_relative_links_resolve(name):
    text = doc(name)
    base = (ROOT / name).parent
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    for target in targets:
        if re.match(r"^[a-z]+:", target):
            continue
        assert (base / target).exists(), "%s links to missing %s" % (name, target)


@pytest.mark.parametrize("name", ["SKILL.md", "README.md", "README.zh-CN.md"])
def test_every_mentioned_reference_exists(name):
    mentioned = set(re.findall(r"references/[A-Za-z0-9_.-]+\.md", doc(name)))
    assert mentioned, "%s points to no reference" % name
    for path in mentioned:
        assert (ROOT / path).is_file(), "%s mentions missing %s" % (name, path)


def test_long_references_have_a_table_of_contents():
    for path in sorted((ROOT / "references").glob("*.md")):
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > 100:
            assert "## Contents" in text, path.name


# -- docs cannot drift from the script ------------------------------------------------------


@pytest.mark.parametrize("name", ["SKILL.md", "README.md"])
def test_docs_name_every_subcommand_and_option(name):
    text = doc(name)
    missing = [c for c in subcommands() if c not in text]
    missing += [o for o in long_options() if o not in text]
    assert not missing, "%s does not mention %s" % (name, ", ".join(missing))


def test_translation_names_every_subcommand():
    text = doc("README.zh-CN.md")
    missing = [c for c in subcommands() if c not in text]
    assert not missing, missing


@pytest.mark.parametrize("name", ["SKILL.md", "references/reason-codes.md"])
def test_docs_explain_every_reason_code(name):
    text = doc(name)
    missing = [code for code in reason_codes() if "`%s`" % code not in text and "### %s" % code not in text]
    assert not missing, "%s does not explain %s" % (name, ", ".join(missing))


def readme_structure(text: str) -> List[Tuple[object, ...]]:
    """What a translation must keep: headings (their level, and their text where it is a
    command or code), list items (their indent), exit-code table rows, the files linked (not
    in-page anchors, which are translated), and every code block line with its comment
    removed (comments are translated too)."""
    found: List[Tuple[object, ...]] = []
    in_code = False
    for line in text.split("\n"):
        if line.strip().startswith("```"):
            found.append(("fence", line.strip() if not in_code else "```"))
            in_code = not in_code
            continue
        if in_code:
            command = re.sub(r"(^|\s)#.*$", "", line).strip()
            if command:
                found.append(("code", command))
            continue
        heading = re.match(r"^(#+) (.*)$", line)
        if heading:
            title = heading.group(2)
            found.append(("heading", len(heading.group(1)),
                          title if re.match(r"^[a-z-]+$|.*`", title) or len(heading.group(1)) == 1 else ""))
        elif re.match(r"^ *- ", line):
            found.append(("item", len(line) - len(line.lstrip())))
        elif re.match(r"^\| \d \|", line):
            found.append(("exit code", line.split("|")[1].strip()))
        found.extend(("link", target) for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", line)
                     if target not in ("README.md", "README.zh-CN.md"))  # each links the other
    return found


def test_translation_keeps_the_structure_and_every_command():
    english, chinese = readme_structure(doc("README.md")), readme_structure(doc("README.zh-CN.md"))
    assert len(english) > 100
    if english != chinese:
        import difflib
        diff = difflib.unified_diff([repr(x) for x in english], [repr(x) for x in chinese], "README.md",
                                    "README.zh-CN.md", lineterm="", n=2)
        raise AssertionError("README.zh-CN.md is out of step with README.md:\n" + "\n".join(diff))


def test_readme_makes_the_skills_folder_before_linking_into_it():
    """A newcomer has no skills folder yet: every `ln -s` into one, the commented alternative
    included, comes after a `mkdir -p` of that folder, in both READMEs."""
    for name in ("README.md", "README.zh-CN.md"):
        made, linked = set(), []
        for line in doc(name).splitlines():
            for command in re.split(r"&&|#|：", line):
                made.update(re.findall(r"mkdir -p (\S+)", command))
                for folder in re.findall(r'ln -s "\$PWD" (\S+)/[^/\s]+', command):
                    assert folder in made, "%s: ln -s into %s before mkdir -p: %s" % (name, folder, line)
                    linked.append(folder)
        assert sorted(set(linked)) == ["~/.agents/skills", "~/.codex/skills"], (name, linked)


def test_readme_says_the_skill_validator_test_needs_pyyaml_and_the_real_codex_tier():
    """pytest is all the README's install line installs; the one test that also needs pyyaml
    runs in the real-Codex tier, and the README says both where it says how to run the tests."""
    import test_skill_real_codex

    assert test_skill_real_codex.pytestmark.name == "realcodex"
    english = next(p for p in doc("README.md").split("\n\n") if "skill validator" in p and "`-m realcodex`" in p)
    assert "pyyaml" in english and "installed release" in english, english
    chinese = next(p for p in doc("README.zh-CN.md").split("\n\n") if "技能校验器" in p and "`-m realcodex`" in p)
    assert "pyyaml" in chinese and "已安装的 Codex 版本" in chinese, chinese


def test_readme_explains_the_crash_tiers_skipped_cases():
    """`-m crash` reports skips; the README says what they are in the words the skip reason
    uses ("not applicable"), and that each was still run with its fault armed."""
    reason = (ROOT / "tests" / "test_crash_injection.py").read_text(encoding="utf-8")
    assert 'pytest.skip("%s never reaches %s: not applicable"' in reason
    english = next(p for p in doc("README.md").split("\n\n") if "`-m crash`" in p)
    for words in ("reports as skipped", "never reaches", "still run with the fault", "not applicable"):
        assert words in english, words
    chinese = next(p for p in doc("README.zh-CN.md").split("\n\n") if "`-m crash`" in p)
    for words in ("跳过", "不会经过的写入点", "启用该故障", "不适用"):
        assert words in chinese, words


def test_readme_gives_the_test_command():
    assert "python3 -m pytest" in doc("README.md")
    assert "python3 -m pytest" in doc("README.zh-CN.md")


def test_docs_give_every_exit_code():
    for name in ("SKILL.md", "README.md"):
        text = doc(name)
        for code in (csr.EXIT_OK, csr.EXIT_FINDINGS, csr.EXIT_USAGE, csr.EXIT_REFUSED, csr.EXIT_APPLY_FAILED):
            assert re.search(r"^\| %d \|" % code, text, re.M), "%s: exit code %d" % (name, code)


def exit_table(text: str) -> List[Tuple[int, str]]:
    """The rows of a Markdown table whose first column is an exit code."""
    return [(int(code), meaning) for code, meaning in re.findall(r"^\| (\d) \| (.+?) \|$", text, re.M)]


def test_every_exit_code_table_is_the_scripts():
    """EXIT_CODES is the one table; every copy of it says the same, word for word."""
    expected = [(code, meaning) for code, meaning in csr.EXIT_CODES]
    assert [code for code, _ in expected] == [csr.EXIT_OK, csr.EXIT_FINDINGS, csr.EXIT_USAGE,
                                              csr.EXIT_REFUSED, csr.EXIT_APPLY_FAILED]
    lines = ["  %d  %s" % row for row in expected]
    docstring = csr.__doc__.split("\n")
    start = docstring.index("Exit codes (every command):") + 1
    assert docstring[start:start + len(lines) + 1] == lines + [""]
    epilog = csr.HELP_EPILOG.split("\n")
    start = epilog.index("exit codes:") + 1
    assert epilog[start:start + len(lines) + 1] == lines + [""]
    for name in ("README.md", "SKILL.md"):
        assert exit_table(doc(name)) == expected, name
    # The translation says the same in Chinese: the same codes, in the same order.
    assert [code for code, _ in exit_table(doc("README.zh-CN.md"))] == [code for code, _ in expected]


def test_skill_commands_are_written_as_they_run():
    """An agent pastes SKILL.md's commands into a shell: no alias a shell does not know."""
    text = doc("SKILL.md")
    assert not re.search(r"`csr\b|^csr\b", text, re.M)
    invocation = "python3 <skill-dir>/scripts/codex_session_recovery.py "
    blocks = re.findall(r"^```bash\n(.*?)^```", text, re.M | re.S)
    assert blocks
    for block in blocks:
        for line in block.splitlines():
            assert line.startswith(invocation), line
    for span in re.findall(r"`([^`]+)`", text):
        words = span.split()
        if words and words[0] in subcommands() and len(words) > 1 and words[1].startswith("-"):
            raise AssertionError("`%s` is not a command a shell runs" % span)


def test_changelog_has_this_version():
    assert "## %s - " % csr.__version__ in doc("CHANGELOG.md")


# -- the script runs on a bare interpreter, from anywhere -----------------------------------


def test_help_runs_from_another_folder_and_names_every_subcommand(tmp_path):
    proc = run_script("--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    out = proc.stdout.decode()
    for name in subcommands():
        assert name in out


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_every_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as done:
        csr.main([name, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) > 3
    parser = subcommands()[name]
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, "%s %s has no help text" % (name, action.option_strings[0])
