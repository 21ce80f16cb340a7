"""Start-up: run as a script, the file replaces its process with one importing it, so Python's
bytecode cache serves it and the parsed tree of the file is not held while it runs. Each test
works on a copy of the script in its own folder, so the cache it writes or refuses is its own.
Python 3.9 has no sys.orig_argv: there the script always runs in place (also tested)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pytest

import codex_session_recovery as csr
from homes import HomeBuilder, script_env

SCRIPT = Path(csr.__file__).resolve()
CACHE_NAME = "codex_session_recovery.%s.pyc" % sys.implementation.cache_tag
EXECS = (sys.version_info >= (3, 10) and os.name == "posix"
         and os.path.exists(csr.RUNNING_INTERPRETER))
needs_exec = pytest.mark.skipif(not EXECS, reason="Python 3.9, Windows and systems without "
                                "/proc/self/exe (macOS) run the script in place")


def copy_script(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy2(str(SCRIPT), str(folder / SCRIPT.name)))


def run(script: Path, *args: str, flags: Sequence[str] = (), write_bytecode: bool = True,
        cwd: Optional[Path] = None) -> "subprocess.CompletedProcess[str]":
    env = script_env()
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("PYTHONPYCACHEPREFIX", None)
    if not write_bytecode:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return subprocess.run([sys.executable, *flags, str(script), *args],
                          cwd=str(cwd or script.parent), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=env, text=True,
                          timeout=120)


def loaded_from(result: "subprocess.CompletedProcess[str]", script: Path) -> List[str]:
    """What `python -v` says the script's code was read from, in order: the .py when compiled,
    the cached .pyc when read from it (a run in place compiles the script without a line)."""
    return [line.split(" from ", 1)[1].strip("'") for line in result.stderr.splitlines()
            if line.startswith("# code object from") and "codex_session_recovery" in line]


@needs_exec
def test_the_first_run_writes_the_cache_and_the_next_reads_it(tmp_path):
    script = copy_script(tmp_path / "skill" / "scripts")
    cache = script.parent / "__pycache__" / CACHE_NAME

    first = run(script, "--version", flags=("-v",))
    assert first.returncode == 0, first.stderr
    assert loaded_from(first, script) == [str(script)]  # compiled once more, by the import
    assert cache.is_file()

    second = run(script, "--version", flags=("-v",))
    assert second.returncode == 0, second.stderr
    assert loaded_from(second, script) == [str(cache)]
    assert first.stdout == second.stdout == "%s %s\n" % (csr.TOOL_NAME, csr.__version__)


def test_without_a_cache_that_can_be_kept_the_script_runs_in_place(tmp_path):
    """PYTHONDONTWRITEBYTECODE and no cache: a run through the import would compile the file in
    both processes every time, so the script runs where it is, and writes no cache."""
    script = copy_script(tmp_path / "scripts")
    result = run(script, "--version", flags=("-v",), write_bytecode=False)
    assert result.returncode == 0, result.stderr
    assert loaded_from(result, script) == []
    assert not (script.parent / "__pycache__").exists()


@needs_exec
def test_a_stale_cache_is_never_run(tmp_path):
    """The source changed after its bytecode was cached: where the cache may be rewritten the
    import compiles the new source; where it may not, the script runs in place. Both run the
    new text."""
    script = copy_script(tmp_path / "scripts")
    assert run(script, "--version").returncode == 0
    cache = script.parent / "__pycache__" / CACHE_NAME
    assert cache.is_file()
    text = script.read_text(encoding="utf-8")
    script.write_text(text.replace('__version__ = "%s"' % csr.__version__, '__version__ = "9.9.9"'),
                      encoding="utf-8")
    stat = script.stat()
    os.utime(str(script), (stat.st_atime, stat.st_mtime + 5))

    in_place = run(script, "--version", flags=("-v",), write_bytecode=False)
    assert in_place.stdout == "%s 9.9.9\n" % csr.TOOL_NAME
    assert loaded_from(in_place, script) == []

    rewritten = run(script, "--version", flags=("-v",))
    assert rewritten.stdout == "%s 9.9.9\n" % csr.TOOL_NAME
    assert loaded_from(rewritten, script) == [str(script)]
    assert loaded_from(run(script, "--version", flags=("-v",)), script) == [str(cache)]


@needs_exec
@pytest.mark.parametrize("args, code", [
    (("diagnose", "--json"), csr.EXIT_FINDINGS),
    (("diagnose",), csr.EXIT_FINDINGS),
    (("repair-provider", "--from", "openai", "--to", "proxy", "--json"), csr.EXIT_FINDINGS),
    (("diagnose", "--no-such-option", "--json"), csr.EXIT_USAGE),
    (("trace", "0000", "--json"), csr.EXIT_USAGE),
])
def test_the_same_output_and_exit_code_both_ways(tmp_path, args, code):
    builder = HomeBuilder(tmp_path / "home", "0.169.0").provider_config("proxy")
    builder.thread(provider="openai")
    builder.thread(provider="proxy")
    script = copy_script(tmp_path / "scripts")
    argv = ("--codex-home", str(builder.root)) + args

    # Each way run twice: with -v to see where the code came from, and as a user runs it.
    assert loaded_from(run(script, *argv, flags=("-v",), write_bytecode=False), script) == []
    in_place = run(script, *argv, write_bytecode=False)
    assert run(script, "--version").returncode == 0  # the cache, written
    cache = script.parent / "__pycache__" / CACHE_NAME
    assert loaded_from(run(script, *argv, flags=("-v",)), script) == [str(cache)]
    from_cache = run(script, *argv)

    assert in_place.returncode == from_cache.returncode == code, from_cache.stderr
    assert in_place.stdout == from_cache.stdout
    assert in_place.stderr == from_cache.stderr
    if "--json" in args:
        document = json.loads(from_cache.stdout)
        assert document["exit_code"] == code
        if args[0] == "diagnose" and code == csr.EXIT_FINDINGS:  # Next names this script
            assert str(script) in json.dumps(document.get("next_commands"))


@needs_exec
def test_the_working_folder_does_not_shadow_the_standard_library(tmp_path):
    """A script run puts its own folder first on sys.path, never the working folder; `-c`
    would put the working folder there. Modules named like the standard library's in the
    folder the user runs from stay unread."""
    script = copy_script(tmp_path / "scripts")
    assert run(script, "--version").returncode == 0
    work = tmp_path / "work"
    work.mkdir()
    for name in ("json", "sqlite3", "argparse", "importlib", "hashlib"):
        (work / (name + ".py")).write_text("raise SystemExit('shadowed: %s')\n" % name)
    home = HomeBuilder(tmp_path / "home", "0.169.0")
    home.thread(provider="openai")
    result = run(script, "--codex-home", str(home.root), "diagnose", "--json", flags=("-v",),
                 cwd=work)
    assert "shadowed" not in result.stderr
    assert result.returncode in (csr.EXIT_OK, csr.EXIT_FINDINGS), result.stderr
    assert loaded_from(result, script) == [str(script.parent / "__pycache__" / CACHE_NAME)]


@needs_exec
@pytest.mark.parametrize("flags", [("-I",), ("-S", "-E"), ("-X", "utf8"), ("-W", "error", "-B"),
                                   ("-OO",)])
def test_interpreter_options_are_kept(tmp_path, flags):
    """The options reach the replacing process: -v is among them here (its import lines come
    from that process), and -OO gets a cache of its own."""
    script = copy_script(tmp_path / "scripts")
    run(script, "--version", flags=flags)  # writes the cache these options read, where allowed
    result = run(script, "--help", flags=("-v",) + tuple(flags))
    assert result.returncode == 0, result.stderr
    assert "repair-provider" in result.stdout
    loaded = loaded_from(result, script)
    if "-B" in flags:
        assert loaded == []  # no cache was written for -W error -B: in place
    else:
        assert len(loaded) == 1 and loaded[0].endswith(".pyc")
        assert (".opt-2." in loaded[0]) == ("-OO" in flags)


@pytest.mark.parametrize("words, kept", [
    ([], True), (["-B"], True), (["-X", "utf8"], True), (["-Xutf8"], True),
    (["-W", "error"], True), (["-Werror"], True), (["-I", "-S"], True), (["-OO", "-u"], True),
    (["-X", "frozen_modules=off"], True), (["--check-hash-based-pycs", "always"], True),
    (["-m", "pdb"], False), (["-m", "cProfile"], False), (["-c", "pass"], False), (["-Bc"], False),
    (["-Bm", "trace"], False), (["-"], False), (["--"], False), (["-W"], False), (["x"], False),
    (["--help"], False),
])
def test_only_interpreter_options_are_repeated(words, kept):
    assert (csr._interpreter_options(words) == words) is kept
    if not kept:
        assert csr._interpreter_options(words) is None


def test_the_header_test_wants_this_sources_hash(tmp_path):
    """A cache is current when it is a hash-based pyc checked against its source, with this
    interpreter's magic and this source's hash. A timestamp pyc is not, though its mtime and
    size are the source's (another text may share them); nor an unchecked hash-based one, nor
    one of another text of the same size, nor anything shorter or foreign."""
    import importlib.util
    import py_compile

    def header(mode: "py_compile.PycInvalidationMode", name: str) -> bytes:
        cache = py_compile.compile(str(source), cfile=str(tmp_path / name), doraise=True,
                                   invalidation_mode=mode)
        return Path(cache).read_bytes()[:16]

    source = tmp_path / "m.py"
    source.write_text("x = 1\n")
    modes = py_compile.PycInvalidationMode
    checked = header(modes.CHECKED_HASH, "c.pyc")
    magic = importlib.util.MAGIC_NUMBER
    assert csr._bytecode_header_current(checked, magic, source.read_bytes())
    assert not csr._bytecode_header_current(checked[:15], magic, source.read_bytes())
    assert not csr._bytecode_header_current(b"\0\0\0\0" + checked[4:], magic,
                                            source.read_bytes())
    assert not csr._bytecode_header_current(header(modes.TIMESTAMP, "t.pyc"), magic,
                                            source.read_bytes())
    assert not csr._bytecode_header_current(header(modes.UNCHECKED_HASH, "u.pyc"), magic,
                                            source.read_bytes())
    source.write_text("x = 2\n")  # the same size
    assert not csr._bytecode_header_current(checked, magic, source.read_bytes())



@needs_exec
@pytest.mark.parametrize("damage", ["garbage", "truncated", "not code"])
def test_a_damaged_cache_is_compiled_past_and_replaced(tmp_path, damage):
    """A cache with a current header over bad data (a disk or sync tool's damage): the run
    compiles the source as it would in place, and drops the cache, so the next run rewrites it."""
    import marshal

    script = copy_script(tmp_path / "scripts")
    assert run(script, "--version").returncode == 0
    cache = script.parent / "__pycache__" / CACHE_NAME
    data = cache.read_bytes()
    body = {"garbage": b"\xff\x00garbage", "truncated": data[16:len(data) // 2],
            "not code": marshal.dumps(("a tuple", 1))}[damage]
    cache.write_bytes(data[:16] + body)

    damaged = run(script, "--version")
    assert damaged.returncode == 0, damaged.stderr
    assert damaged.stdout == "%s %s\n" % (csr.TOOL_NAME, csr.__version__)
    assert damaged.stderr == ""
    assert not cache.exists()
    again = run(script, "--version", flags=("-v",))
    assert loaded_from(again, script) == [str(script)] and cache.is_file()
    assert loaded_from(run(script, "--version", flags=("-v",)), script) == [str(cache)]


def banners(result: "subprocess.CompletedProcess[str]") -> int:
    """How many interpreters `python -v` started: 1 in place, 2 through the replacement."""
    return sum(line.startswith("Python %d.%d." % sys.version_info[:2])
               for line in result.stderr.splitlines())


@needs_exec
@pytest.mark.parametrize("obstacle", ["a file", "a dangling link", "a folder at the cache"])
def test_a_cache_that_cannot_be_written_runs_in_place(tmp_path, obstacle):
    """__pycache__ is a file or a link to nothing, or a folder holds the .pyc's name: the import
    could not write the cache, so every run would compile the file in both processes. The
    script runs in place instead, as for an unwritable folder."""
    script = copy_script(tmp_path / "scripts")
    pycache = script.parent / "__pycache__"
    if obstacle == "a file":
        pycache.write_text("not a folder\n")
    elif obstacle == "a dangling link":
        pycache.symlink_to(tmp_path / "nowhere" / "__pycache__")
    else:
        (pycache / CACHE_NAME).mkdir(parents=True)
    for _ in range(2):
        result = run(script, "--version", flags=("-v",))
        assert result.returncode == 0, result.stderr
        assert result.stdout == "%s %s\n" % (csr.TOOL_NAME, csr.__version__)
        assert loaded_from(result, script) == [] and banners(result) == 1


@needs_exec
def test_a_link_to_the_script_caches_beside_the_script(tmp_path):
    """A link in a folder of commands (named without .py, as commands are) runs the script it
    names: the cache is written beside that script, never in the commands' folder, and the run
    says what a run in place says."""
    builder = HomeBuilder(tmp_path / "home", "0.169.0").provider_config("proxy")
    builder.thread(provider="openai")
    script = copy_script(tmp_path / "skill" / "scripts")
    commands = tmp_path / "bin"
    commands.mkdir()
    link = commands / "codex-session-recovery"
    link.symlink_to(script)
    argv = ("--codex-home", str(builder.root), "diagnose", "--json")

    in_place = run(link, *argv, write_bytecode=False)
    first = run(link, *argv, flags=("-v",))
    second = run(link, *argv, flags=("-v",))
    from_cache = run(link, *argv)

    assert sorted(os.listdir(str(commands))) == [link.name]
    cache = script.parent / "__pycache__" / CACHE_NAME
    assert loaded_from(first, link) == [str(script)] and loaded_from(second, link) == [str(cache)]
    assert in_place.returncode == from_cache.returncode == csr.EXIT_FINDINGS, from_cache.stderr
    assert in_place.stdout == from_cache.stdout and in_place.stderr == from_cache.stderr


@needs_exec
def test_a_copy_named_without_py_runs_in_place(tmp_path):
    """A copy installed as a command (`bin/codex-session-recovery`): the import system caches
    only .py files, and would write a .pyc named after the command into the commands' folder."""
    commands = tmp_path / "bin"
    commands.mkdir()
    command = Path(shutil.copy2(str(SCRIPT), str(commands / "codex-session-recovery")))
    for _ in range(2):
        result = run(command, "--version", flags=("-v",))
        assert result.stdout == "%s %s\n" % (csr.TOOL_NAME, csr.__version__), result.stderr
        assert banners(result) == 1
    assert sorted(os.listdir(str(commands))) == [command.name]


@needs_exec
def test_an_interactive_run_after_the_script_sees_the_scripts_names(tmp_path):
    """`python3 -i script ...` (or PYTHONINSPECT) opens a prompt in the script's namespace when
    it ends, after the same traceback of its SystemExit: the script runs in place for it."""
    script = copy_script(tmp_path / "scripts")
    probe = "print([name for name in ('TOOL_NAME', 'loader', 'main') if name in globals()])\n"

    def interactive(flags: Sequence[str],
                    env: Dict[str, str]) -> "subprocess.CompletedProcess[str]":
        full = script_env(env)
        full.pop("PYTHONDONTWRITEBYTECODE", None)
        full.update(env)
        return subprocess.run([sys.executable, *flags, str(script), "--bogus"], input=probe,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=full, timeout=120)

    ways = ((("-i",), {}), ((), {"PYTHONINSPECT": "1"}))
    in_place = [interactive(flags, dict(env, PYTHONDONTWRITEBYTECODE="1")) for flags, env in ways]
    assert "['TOOL_NAME', 'main']" in in_place[0].stdout
    assert run(script, "--version").returncode == 0  # a current cache
    for (flags, env), alone in zip(ways, in_place):
        result = interactive(flags, env)
        assert (result.returncode, result.stdout) == (alone.returncode, alone.stdout)
        assert result.stderr == alone.stderr


@needs_exec
@pytest.mark.skipif(not os.path.exists("/proc/self/exe"),
                    reason="only /proc/self/exe tells which file the running interpreter is")
def test_the_replacement_runs_the_interpreter_that_is_running(tmp_path):
    """sys.executable is looked up from argv[0] on PATH: started as `python3` from another file
    (`exec -a`, a caller's `executable=`, sudo's secure_path), it names some other python3. The
    replacement must not run that one: the script stays in this interpreter."""
    script = copy_script(tmp_path / "scripts")
    assert run(script, "--version").returncode == 0  # a current cache
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    (decoy / "python3").write_text("#!/bin/sh\necho decoy python3 ran\nexit 7\n")
    (decoy / "python3").chmod(0o755)
    env = script_env({"PATH": "%s%s%s" % (decoy, os.pathsep, os.environ.get("PATH", ""))})
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    result = subprocess.run(["python3", str(script), "--version"], executable=sys.executable,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            timeout=120)
    assert "decoy" not in result.stdout
    assert (result.returncode, result.stdout) == (0, "%s %s\n" % (csr.TOOL_NAME, csr.__version__))


@needs_exec
def test_an_edit_keeping_size_and_mtime_runs_the_new_text(tmp_path):
    """A cache is checked against its source's content, not its mtime and size: a new text of
    the same size given the old mtime (cp -p, rsync -t, an unpacked archive, an edit within the
    same second) runs as the new text, also where no cache may be written."""
    script = copy_script(tmp_path / "scripts")
    assert run(script, "--version").returncode == 0
    before = script.stat()
    text = script.read_text(encoding="utf-8")
    script.write_text(text.replace('__version__ = "%s"' % csr.__version__, '__version__ = "9.9.9"'),
                      encoding="utf-8")
    os.utime(str(script), ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (script.stat().st_size, script.stat().st_mtime) == (before.st_size, before.st_mtime)

    for flags, write_bytecode in (((), False), (("-B",), True), ((), True)):
        result = run(script, "--version", flags=flags, write_bytecode=write_bytecode)
        assert result.stdout == "%s 9.9.9\n" % csr.TOOL_NAME, (flags, write_bytecode)
    cache = script.parent / "__pycache__" / CACHE_NAME
    assert loaded_from(run(script, "--version", flags=("-v",)), script) == [str(cache)]


@needs_exec
@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="giving a file to another user needs root")
def test_a_cache_another_user_wrote_is_never_run(tmp_path):
    """A script run in place never read __pycache__; run through the replacement it runs what
    is cached there. Where another user could write that cache (a script in /tmp, whose
    __pycache__ anyone may create first), a .pyc they wrote, with the header of this source,
    must not run: only a cache of this user, of the source's owner or of root is read."""
    import importlib.util
    import marshal

    script = copy_script(tmp_path / "scripts")
    source = script.read_bytes()
    planted = source.replace(b'__version__ = "%s"' % csr.__version__.encode(),
                             b'__version__ = "6.6.6"')
    code = compile(planted, str(script), "exec", dont_inherit=True)
    pycache = script.parent / "__pycache__"
    pycache.mkdir()
    cache = pycache / CACHE_NAME
    cache.write_bytes(importlib.util.MAGIC_NUMBER + (3).to_bytes(4, "little")
                      + importlib.util.source_hash(source) + marshal.dumps(code))
    nobody = 65534
    os.chown(str(pycache), nobody, nobody)
    os.chown(str(cache), nobody, nobody)

    for write_bytecode in (False, True):
        result = run(script, "--version", write_bytecode=write_bytecode)
        assert result.stdout == "%s %s\n" % (csr.TOOL_NAME, csr.__version__), result.stderr


@needs_exec
def test_where_the_running_interpreter_cannot_be_told_the_script_runs_in_place(monkeypatch):
    """The replacement runs sys.executable only when it is the file this process runs (Linux's
    /proc/self/exe); where that cannot be read (macOS, a container without /proc) it would be
    a guess, so the script runs in place."""
    monkeypatch.setattr(sys, "argv", [csr.__file__, "--version"])
    monkeypatch.setattr(sys, "orig_argv", [sys.executable, "-B", csr.__file__, "--version"])
    command = csr._command_as_module()
    if not os.path.exists("/proc/self/exe"):
        assert command is None
        return
    assert command is not None and command[:3] == [sys.executable, "-B", "-c"]
    assert command[-1] == "--version"
    monkeypatch.setattr(csr, "RUNNING_INTERPRETER", "/nonexistent/proc/self/exe")
    assert csr._command_as_module() is None
