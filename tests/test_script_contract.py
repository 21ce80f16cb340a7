"""The script's own contract: standard library only, Python 3.9 syntax, runnable bare."""

import ast
import re
import sys
from pathlib import Path
from typing import List

import pytest

import codex_session_recovery as csr
from homes import run_script

SCRIPT = Path(csr.__file__).resolve()


def imported_modules():
    tree = ast.parse(SCRIPT.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]


@pytest.mark.skipif(sys.version_info < (3, 10), reason="sys.stdlib_module_names arrived in 3.10")
def test_imports_only_the_standard_library():
    # tomllib joined the standard library in 3.11; the script imports it in a try and falls back.
    later_stdlib = {"tomllib"}
    outside = sorted({m for m in imported_modules()
                      if m not in sys.stdlib_module_names and m not in later_stdlib and m != "__future__"})
    assert outside == []


def test_parses_as_python_3_9():
    # feature_version rejects syntax newer than 3.9 (match statements, except*, PEP 695 …)
    ast.parse(SCRIPT.read_text(encoding="utf-8"), feature_version=(3, 9))


def test_tomllib_is_optional():
    # 3.9 and 3.10 have no tomllib: the script must fall back to its own reader.
    source = SCRIPT.read_text(encoding="utf-8")
    assert "import tomllib as _tomllib" in source and "_tomllib = None" in source


def test_bare_help_from_another_folder(tmp_path):
    result = run_script("--help", cwd=tmp_path, python_flags=("-S", "-E"))
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    for command in ("diagnose", "repair-provider", "repair-user-events", "repair-ui-state", "rebuild-index",
                    "reindex", "rebuild-db", "trace", "report", "restore"):
        assert command in out
    assert "exit codes:" in out and "--apply" in out


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as caught:
        csr.main(["repair-everything"])
    assert caught.value.code == csr.EXIT_USAGE
    assert "invalid choice" in capsys.readouterr().err
    assert csr.main([]) == csr.EXIT_USAGE


def section_banners() -> List[str]:
    """The title of each `# ----` banner of the script, in order: its first words, up to the
    first colon, full stop, comma or parenthesis."""
    titles, inside = [], False
    for line in SCRIPT.read_text(encoding="utf-8").split("\n"):
        if re.match(r"^# -{20,}$", line):
            inside = not inside
            first_line = True
            continue
        if inside and first_line:
            titles.append(re.match(r"[^:.,(]+", line[2:]).group(0).strip())
            first_line = False
    assert not inside, "a banner is not closed"
    return titles


def test_the_docstrings_map_lists_every_section_in_order():
    docstring = csr.__doc__.split("\n")
    start = next(i for i, line in enumerate(docstring) if "each section opens with a `# ----` banner:" in line) + 1
    listed = []
    for line in docstring[start:]:
        if not line.startswith("  "):
            break
        listed.append(line.strip().split(":")[0])
    banners = section_banners()
    assert len(banners) > 15
    assert listed == banners



def module_constants(tree: ast.Module) -> dict:
    """Each name a module-level assignment binds -> the line of its first assignment."""
    defined: dict = {}
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, ast.AnnAssign) else []
        for target in targets:
            for name in ast.walk(target):
                if isinstance(name, ast.Name):
                    defined.setdefault(name.id, node.lineno)
    return defined


def local_names(function: ast.AST) -> set:
    """The names a function binds itself (parameters and assignments, not `global` ones)."""
    bound = {a.arg for a in ast.walk(function) if isinstance(a, ast.arg)}
    bound |= {n.id for n in ast.walk(function)
              if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)}
    declared = {name for n in ast.walk(function) if isinstance(n, ast.Global) for name in n.names}
    return bound - declared


def test_every_constant_is_defined_above_its_first_use():
    # The file reads top to bottom: a name used in a statement, function or class above the
    # line that defines it sends the reader forward. The constants go at the top, or in the
    # earliest section that uses them.
    tree = ast.parse(SCRIPT.read_text(encoding="utf-8"))
    defined = module_constants(tree)
    early = set()
    for node in tree.body:
        shadowed = local_names(node) if isinstance(node, (ast.FunctionDef, ast.ClassDef)) else set()
        for name in ast.walk(node):
            if not isinstance(name, ast.Name) or not isinstance(name.ctx, ast.Load):
                continue
            if name.id in shadowed or node.lineno >= defined.get(name.id, 0):
                continue
            early.add("%s (line %d, defined on line %d)" % (name.id, name.lineno, defined[name.id]))
    assert sorted(early) == []


def test_every_line_of_the_script_fits_in_100_columns():
    """The file is read as a book, on a screen or a printed page: no line runs past column 100."""
    long = [n for n, line in enumerate(SCRIPT.read_text(encoding="utf-8").splitlines(), 1)
            if len(line) > 100]
    assert long == [], "lines longer than 100 characters: %s" % long[:20]
