#!/usr/bin/env python3
# /// script
# requires-python = ">=3.9"
# dependencies = []
# ///
"""codex-session-recovery: find out why local Codex conversations vanished, and bring them back.

Codex (the CLI, Codex Desktop and the IDE extension) keeps every conversation as a rollout file
(`CODEX_HOME/sessions/YYYY/MM/DD/rollout-*.jsonl`) and lists it through a SQLite index
(`state_5.sqlite`). When the index and the files disagree with the current configuration, a
conversation disappears from the lists although every byte of it is still on disk. This tool
explains why, thread by thread, and repairs the metadata that hides it.

Safety contract:
  * Reads only, unless `--apply` is given. A dry run prints the plan and changes no byte.
  * `--apply` backs up every file it will change first, under
    CODEX_HOME/recovery-backups/<UTC timestamp>-<command>/, then writes.
  * Refuses while Codex is using the home, unless `--force` (which never implies `--apply`).
  * Never opens auth.json, API keys, tokens or cookies.

Exit codes (every command):
  0  clean, nothing to do, or the apply succeeded
  1  findings, changes pending in a dry run, or (with --verify) Codex lists otherwise than predicted
  2  usage error
  3  refused by a safety check (the message names the override, if any)
  4  apply failed (the output says whether the automatic restore worked)

The file reads top to bottom, and each section opens with a `# ----` banner:
  Start-up: the script runs from its cached bytecode
  Errors: each expected failure carries its exit code
  TOML: config.toml's reader (the standard library's where there is one)
  Small helpers
  Configuration and discovery: which home, which provider, which state DB
  Reading SQLite: read-only, columns discovered at run time
  Reading rollouts: streamed and bounded
  Other state: session_index.jsonl, Desktop's state, history projections
  The inventory: everything read from one home, joined by thread id
  Checks: pure functions from the inventory to reasons and findings
  Summaries and suggestions
  Plans: what a repair would change, computed without writing
  Import: another home's conversations, read without writing a byte there
  The table of repairs: one entry per repair
  Compatibility: judged by what a plan touches
  Safety: preflight refusals, each naming its override
  Backups and restore
  Apply: the one place that writes
  Live writers: no line a running session appends is lost
  Verification with the user's Codex: on a private scratch copy
  Rendering: one JSON document under --json, short text otherwise
  Commands
  Argument parser: shared options before and after the subcommand; then main()
"""

from __future__ import annotations

import os
import sys

# ---------------------------------------------------------------------------------------------
# Start-up: the script runs from its cached bytecode
# ---------------------------------------------------------------------------------------------
# `python3 codex_session_recovery.py` compiles the whole file on every run, and CPython keeps
# the file's parsed tree alive until the script returns: ~16 MB, a quarter of diagnose's peak at
# 10,000 threads. Python caches bytecode for imported modules only. So before it imports
# anything else, the script replaces its process (same process id, descriptors, environment and
# interpreter options) with one that imports this file as a module: the import system reads the
# bytecode cached in __pycache__ beside it (writing it on the first run, as for any import, but
# checked by the source's hash, not its mtime and size, and read only if this user, the source's
# owner or root wrote it) and frees the tree as soon as the code is compiled. What is saved is
# memory, not time: the first process has compiled the file before its first line runs, and the
# second interpreter costs ~0.04 s more. Where the replacement cannot be exact (Windows, Python
# 3.9 without sys.orig_argv, an interpreter option not recognised, -i, a sys.executable that is
# not this interpreter or a system that cannot say which it is, as macOS, a file not named .py,
# a cache that would be compiled again on every run), the script runs in place, as before.
# Through a link, the file linked to is cached.

_RUN_AS_MODULE = """\
import os
import sys
argv0, path, path0 = sys.argv[1:4]
sys.argv[0:4] = [argv0]
if path0 and sys.path[:1] == [""]:
    sys.path[0] = path0
from importlib.machinery import SourceFileLoader
from importlib.util import module_from_spec, source_hash, spec_from_loader
CHECKED_HASH = (3).to_bytes(4, "little")  # PEP 552 flags: hash-based, checked against the source


# The cache is trusted by the source's hash, never by its mtime and size (a new text of the same
# size with the old mtime would run the old code): read only when it holds this source's hash,
# written with that hash; and only when this user, the source's owner or root wrote it.
class Loader(SourceFileLoader):
    def get_data(self, path):
        if path == self.path:
            return super().get_data(path)
        with open(path, "rb") as handle:
            owner = os.fstat(handle.fileno()).st_uid
            if owner not in (0, os.geteuid(), os.stat(self.path).st_uid):
                raise OSError("bytecode another user wrote")  # so the loader compiles the source
            data = handle.read()
        if data[4:16] != CHECKED_HASH + self.source_hash():
            raise OSError("not this source's bytecode")
        return data

    def set_data(self, path, data, *, _mode=0o666):
        data = data[:4] + CHECKED_HASH + self.source_hash() + data[16:]
        super().set_data(path, data, _mode=_mode)

    def source_hash(self):
        return source_hash(super().get_data(self.path))


loader = Loader("codex_session_recovery", os.path.realpath(path))
module = module_from_spec(spec_from_loader(loader.name, loader))
module.__file__ = path  # as run, through any link (the Next lines name it)
sys.modules[loader.name] = module
try:
    code = loader.get_code(loader.name)
except (ImportError, EOFError, TypeError, ValueError):
    # A damaged cache (a valid header over bad data): the source, compiled; the cache goes,
    # so that the next run writes it again.
    code = compile(loader.get_data(loader.path), loader.path, "exec", dont_inherit=True)
    if not sys.dont_write_bytecode:
        try:
            os.unlink(module.__cached__)
        except OSError:
            pass
exec(code, module.__dict__)
raise SystemExit(module.main())
"""

RUNNING_INTERPRETER = "/proc/self/exe"  # Linux: the file this process runs

# Interpreter options whose value is the next word (`-W error`); every other option recognised
# is one word. `-c` and `-m` name what runs, so a command line holding them is not a script run.
_OPTIONS_WITH_VALUE = ("-W", "-X", "--check-hash-based-pycs")


def run_from_cached_bytecode() -> None:
    """Replace this process with the same run importing this file, when that is exact and the
    bytecode will not be compiled on every run; return (run in place) otherwise."""
    command = _command_as_module()
    if command is not None and _cached_bytecode_usable(os.path.realpath(__file__)):
        try:
            os.execv(sys.executable, command)
        except OSError:
            pass  # not replaced: the run goes on in place


def _command_as_module() -> Optional[List[str]]:
    """The interpreter's own command line with the script replaced by _RUN_AS_MODULE, or None."""
    original = getattr(sys, "orig_argv", None)  # Python 3.10+
    if (os.name != "posix" or not original or not sys.executable or not sys.argv[0]
            or sys.flags.inspect):  # -i: a prompt in the script's namespace when it ends
        return None
    # sys.executable is argv[0] looked up on PATH: started as `python3` from another file
    # (`exec -a`, sudo's secure_path) it names some other interpreter, which must not run. Where
    # the running one cannot be told (no /proc: macOS, a container without it), in place.
    if not os.path.exists(RUNNING_INTERPRETER) or (os.path.realpath(sys.executable)
                                                   != os.path.realpath(RUNNING_INTERPRETER)):
        return None
    script_at = len(original) - len(sys.argv)
    if script_at < 1 or original[script_at:] != sys.argv:
        return None
    if os.path.abspath(sys.argv[0]) != os.path.abspath(__file__):
        return None
    options = _interpreter_options(original[1:script_at])
    if options is None:
        return None
    # The script's folder heads sys.path where `-c` would put the working folder ("") instead;
    # both are left out alike by -I and -P.
    path0 = sys.path[0] if sys.path else ""
    return ([original[0]] + options + ["-c", _RUN_AS_MODULE, sys.argv[0], os.path.abspath(__file__),
                                       path0] + sys.argv[1:])


def _interpreter_options(words: List[str]) -> Optional[List[str]]:
    """`words` when they are interpreter options only (none naming another thing to run)."""
    at = 0
    while at < len(words):
        word = words[at]
        if word in _OPTIONS_WITH_VALUE:
            at += 2
        elif word.startswith(("-W", "-X")) or (
                word.startswith("-") and word not in ("-", "--") and not word.startswith("--")
                and not set(word[1:]) & set("cm")):
            at += 1
        else:
            return None
    return list(words) if at == len(words) else None


def _cached_bytecode_usable(path: str) -> bool:
    """The bytecode Python caches for `path` is current, or may be written now (the import that
    follows writes it). A cache that is stale and cannot be written would have the file compiled
    in both processes on every run."""
    if not path.endswith(".py"):  # the import system caches .py files only
        return False
    try:
        from importlib.util import MAGIC_NUMBER, cache_from_source
        cache = cache_from_source(path)
        with open(path, "rb") as handle:
            source = handle.read()
            owners = (0, os.geteuid(), os.fstat(handle.fileno()).st_uid)
    except (ImportError, NotImplementedError, OSError, ValueError):
        return False
    try:
        with open(cache, "rb") as handle:  # read only if this user, the source's owner or root
            header = handle.read(16) if os.fstat(handle.fileno()).st_uid in owners else b""
    except OSError:
        header = b""
    if _bytecode_header_current(header, MAGIC_NUMBER, source):
        return True
    folder = _nearest_folder(cache)
    return (not sys.dont_write_bytecode and folder is not None and not os.path.isdir(cache)
            and os.access(folder, os.W_OK))


def _bytecode_header_current(header: bytes, magic: bytes, source: bytes) -> bool:
    """The cached .pyc is the one _RUN_AS_MODULE reads (PEP 552): this interpreter's magic, the
    flags of a hash-based pyc checked against its source, and this source's hash. A timestamp
    pyc (an ordinary import's) is not: its mtime and size may match another text."""
    from importlib.util import source_hash

    return (len(header) >= 16 and header[:4] == magic
            and header[4:16] == (3).to_bytes(4, "little") + source_hash(source))


def _nearest_folder(path: str) -> Optional[str]:
    """The closest existing folder above `path` (the import system creates the rest), or None
    when what exists there first is no folder (a file, a link to nothing)."""
    folder = os.path.dirname(path)
    while folder and not os.path.lexists(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    folder = folder or "."
    return folder if os.path.isdir(folder) else None


if __name__ == "__main__":
    run_from_cached_bytecode()

import argparse  # noqa: E402  (after the start-up, which runs before any other import)
import array
import bisect
import collections.abc
import contextlib
import datetime as _dt
import hashlib
import json
import json.scanner
import re
import shutil
import sqlite3
import struct
import subprocess
import tempfile
from pathlib import Path
from stat import S_ISLNK, S_ISREG
from typing import (Any, Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence,
                    Tuple)

try:  # Python 3.11+
    import tomllib as _tomllib  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - exercised on 3.9/3.10
    _tomllib = None

__version__ = "0.1.0"
TOOL_NAME = "codex-session-recovery"

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_APPLY_FAILED = 4
# The one exit-code table. --help prints it; tests compare the module docstring, README.md,
# README.zh-CN.md and SKILL.md against it line by line.
EXIT_CODES = (
    (EXIT_OK, "clean, nothing to do, or the apply succeeded"),
    (EXIT_FINDINGS,
     "findings, changes pending in a dry run, or (with --verify) Codex lists otherwise than "
     "predicted"),
    (EXIT_USAGE, "usage error"),
    (EXIT_REFUSED, "refused by a safety check (the message names the override, if any)"),
    (EXIT_APPLY_FAILED, "apply failed (the output says whether the automatic restore worked)"),
)

# Sources that a default Codex listing shows (`thread/list` with no `sourceKinds`, the
# `codex resume` picker, the Desktop sidebar). Everything else is hidden by design.
INTERACTIVE_SOURCES = ("cli", "vscode", '{"custom":"atlas"}', '{"custom":"chatgpt"}')
# Providers Codex knows without a `[model_providers.X]` table.
BUILTIN_PROVIDERS = ("openai", "ollama", "lmstudio", "amazon-bedrock", "oss")
DEFAULT_PROVIDER = "openai"
# CODEX-COMPAT: Codex treats a timestamp below this as seconds, above it as milliseconds.
MILLIS_THRESHOLD = 1_577_836_800_000
# CODEX-COMPAT: the filesystem lister reads 10 head records plus 200 more looking for a
# user message; a thread whose first user message sits later is missing from file listings.
HEAD_SCAN_LINES = 210
# A rollout line longer than this is not parsed (it is skipped, and reported), so one
# pathological line cannot exhaust memory.
MAX_LINE_BYTES = 32 * 1024 * 1024
READ_CHUNK = 1024 * 1024
# The end of a rollout read for a torn last line or NUL padding (check_tail, _scan_head).
TAIL_BYTES = 4096
# CODEX-COMPAT: the listers look for the event form of the first user message (0.120.0 and
# 0.130.0: event_msg/user_message; 0.169.0+: item_completed), which follows the prompt's
# role=user response_item that may have been the tool's evidence.
USER_EVENT_MARKERS = (b'"user_message"', b'"item_completed"', b'"thread_goal_updated"')

# Names the tool gives what it leaves in a home. Up here because every chapter meets them:
# the rollout reader and the inventory find a killed run's temp files by TEMP_MARKER, the
# checks, plans, safety and commands find the backups under BACKUP_DIR_NAME.
TEMP_MARKER = ".csr-tmp-"
BACKUP_DIR_NAME = "recovery-backups"
# The largest manifest.json a restore reads (read_manifest).
MAX_MANIFEST_BYTES = 256 * 1024 * 1024

ROLLOUT_NAME_RE = re.compile(
    r"^rollout-(?P<stamp>\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2})-"
    r"(?P<uuid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})"
    r"(?P<suffix>\.jsonl(?:\.zst)?)$"
)
STATE_DB_RE = re.compile(r"^state(?:_(\d+))?\.sqlite$")

# Text a user never typed: Codex injects these as role=user messages around a turn.
SYNTHETIC_USER_PREFIXES = (
    "<environment_context",
    "<user_instructions",
    "# AGENTS.md instructions",
    "<INSTRUCTIONS>",
    "<turn_aborted",
    "<user_shell_command",
    "<subagent_notification",
    "<permissions instructions",
    "<collaboration_mode",
    "<skills_instructions",
    "<apps_instructions",
    "<model_switch",
)
USER_REQUEST_MARKER = "## My request for Codex:"
ATTACHMENT_MARKER = "# Files mentioned by the user:"
# CODEX-COMPAT: Desktop's sidebar loads one recent window of about 50 threads per view.
RECENT_WINDOW = 50


# ---------------------------------------------------------------------------------------------
# Errors: each expected failure carries its exit code; main() prints one line for it.
# ---------------------------------------------------------------------------------------------


class ToolError(Exception):
    exit_code = EXIT_FINDINGS
    label = "error"


class UsageError(ToolError):
    exit_code = EXIT_USAGE


class RefusedError(ToolError):
    """A safety check said no. The message names the reason and, where one exists, the override."""

    exit_code = EXIT_REFUSED
    label = "refused"


class ApplyError(ToolError):
    exit_code = EXIT_APPLY_FAILED
    label = "apply failed"


# ---------------------------------------------------------------------------------------------
# TOML: the standard library's reader where present (3.11+), otherwise a small reader for the
# subset config.toml uses. Either way a parse error becomes a finding, never a traceback.
# ---------------------------------------------------------------------------------------------


class TomlError(ValueError):
    pass


def parse_toml(text: str) -> Dict[str, Any]:
    if _tomllib is not None:
        try:
            return _tomllib.loads(text)
        except _tomllib.TOMLDecodeError as exc:
            raise TomlError(str(exc)) from None
    return parse_toml_subset(text)


class _TomlSubsetReader:
    """Reads tables, dotted keys, strings (basic, literal, multi-line), integers, floats,
    booleans, arrays and inline tables, with comments. Enough for Codex's config.toml."""

    _BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
    _NUMBER = re.compile(r"[+-]?(?:0x[0-9A-Fa-f_]+|0o[0-7_]+|0b[01_]+"
                         r"|[0-9_]+(?:\.[0-9_]+)?(?:[eE][+-]?[0-9_]+)?|inf|nan)")
    _ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}

    def __init__(self, text: str) -> None:
        self.text = text.replace("\r\n", "\n")
        self.pos = 0
        self.root: Dict[str, Any] = {}

    def error(self, message: str) -> TomlError:
        line = self.text.count("\n", 0, self.pos) + 1
        return TomlError("%s (line %d)" % (message, line))

    def peek(self, n: int = 1) -> str:
        return self.text[self.pos:self.pos + n]

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t":
            self.pos += 1

    def skip_blank_and_comments(self) -> None:
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch in " \t\n":
                self.pos += 1
            elif ch == "#":
                end = self.text.find("\n", self.pos)
                self.pos = len(self.text) if end < 0 else end
            else:
                return

    def end_of_line(self) -> None:
        self.skip_space()
        if self.peek() == "#":
            end = self.text.find("\n", self.pos)
            self.pos = len(self.text) if end < 0 else end
        if self.pos < len(self.text) and self.peek() != "\n":
            raise self.error("unexpected text after value")

    def parse(self) -> Dict[str, Any]:
        current = self.root
        while True:
            self.skip_blank_and_comments()
            if self.pos >= len(self.text):
                return self.root
            if self.peek(2) == "[[":
                self.pos += 2
                path = self.key_path()
                if self.peek(2) != "]]":
                    raise self.error("expected ]]")
                self.pos += 2
                parent = self.descend(self.root, path[:-1])
                items = parent.setdefault(path[-1], [])
                if not isinstance(items, list):
                    raise self.error("key %r is not an array of tables" % path[-1])
                current = {}
                items.append(current)
            elif self.peek() == "[":
                self.pos += 1
                path = self.key_path()
                if self.peek() != "]":
                    raise self.error("expected ]")
                self.pos += 1
                current = self.descend(self.root, path)
            else:
                self.key_value(current)
            self.end_of_line()

    def descend(self, table: Dict[str, Any], path: List[str]) -> Dict[str, Any]:
        for part in path:
            node = table.setdefault(part, {})
            if isinstance(node, list) and node and isinstance(node[-1], dict):
                node = node[-1]
            if not isinstance(node, dict):
                raise self.error("key %r is not a table" % part)
            table = node
        return table

    def key_path(self) -> List[str]:
        parts = []
        while True:
            self.skip_space()
            ch = self.peek()
            if ch == '"':
                parts.append(self.basic_string())
            elif ch == "'":
                parts.append(self.literal_string())
            else:
                match = self._BARE_KEY.match(self.text, self.pos)
                if not match:
                    raise self.error("expected a key")
                parts.append(match.group(0))
                self.pos = match.end()
            self.skip_space()
            if self.peek() != ".":
                return parts
            self.pos += 1

    def key_value(self, table: Dict[str, Any]) -> None:
        path = self.key_path()
        if self.peek() != "=":
            raise self.error("expected =")
        self.pos += 1
        self.skip_space()
        value = self.value()
        target = self.descend(table, path[:-1])
        if path[-1] in target:
            raise self.error("duplicate key %r" % path[-1])
        target[path[-1]] = value

    def value(self) -> Any:
        ch = self.peek()
        if self.peek(3) == '"""':
            return self.multiline_basic_string()
        if self.peek(3) == "'''":
            return self.multiline_literal_string()
        if ch == '"':
            return self.basic_string()
        if ch == "'":
            return self.literal_string()
        if ch == "[":
            return self.array()
        if ch == "{":
            return self.inline_table()
        for word, result in (("true", True), ("false", False)):
            if self.text.startswith(word, self.pos):
                self.pos += len(word)
                return result
        match = self._NUMBER.match(self.text, self.pos)
        if match and match.group(0):
            self.pos = match.end()
            raw = match.group(0).replace("_", "")
            try:
                if raw.lstrip("+-").startswith(("0x", "0o", "0b")):
                    return int(raw, 0)
                if any(c in raw for c in ".eE") or raw.lstrip("+-") in ("inf", "nan"):
                    return float(raw)
                return int(raw)
            except ValueError:
                raise self.error("bad number %r" % raw) from None
        raise self.error("unsupported value")

    def basic_string(self) -> str:
        self.pos += 1
        out = []
        while True:
            if self.pos >= len(self.text) or self.peek() == "\n":
                raise self.error("unterminated string")
            if self.text[self.pos] == '"':
                self.pos += 1
                return "".join(out)
            self.take_char(out)

    def take_char(self, out: List[str]) -> None:
        """One character of a basic string into `out`, an escape sequence decoded."""
        if self.text[self.pos] == "\\":
            out.append(self.escape())
        else:
            out.append(self.text[self.pos])
            self.pos += 1

    def escape(self) -> str:
        code = self.text[self.pos + 1:self.pos + 2]
        if code in self._ESCAPES:
            self.pos += 2
            return self._ESCAPES[code]
        if code in ("u", "U"):
            width = 4 if code == "u" else 8
            digits = self.text[self.pos + 2:self.pos + 2 + width]
            try:
                char = chr(int(digits, 16))
            except ValueError:
                raise self.error("bad unicode escape") from None
            self.pos += 2 + width
            return char
        raise self.error("bad escape \\%s" % code)

    def literal_string(self) -> str:
        end = self.text.find("'", self.pos + 1)
        newline = self.text.find("\n", self.pos + 1)
        if end < 0 or (0 <= newline < end):
            raise self.error("unterminated string")
        value = self.text[self.pos + 1:end]
        self.pos = end + 1
        return value

    def multiline_basic_string(self) -> str:
        self.pos += 3
        if self.peek() == "\n":
            self.pos += 1
        out = []
        while True:
            if self.pos >= len(self.text):
                raise self.error("unterminated string")
            if self.peek(3) == '"""':
                self.pos += 3
                return "".join(out)
            if self.text[self.pos:self.pos + 2] in ("\\\n", "\\ ", "\\\t"):
                # A line-ending backslash: the white space after it is not part of the value.
                self.pos += 1
                while self.pos < len(self.text) and self.text[self.pos] in " \t\n":
                    self.pos += 1
            else:
                self.take_char(out)

    def multiline_literal_string(self) -> str:
        end = self.text.find("'''", self.pos + 3)
        if end < 0:
            raise self.error("unterminated string")
        value = self.text[self.pos + 3:end]
        self.pos = end + 3
        return value[1:] if value.startswith("\n") else value

    def array(self) -> List[Any]:
        self.pos += 1
        items = []
        while True:
            self.skip_blank_and_comments()
            if self.peek() == "]":
                self.pos += 1
                return items
            items.append(self.value())
            self.skip_blank_and_comments()
            if self.peek() == ",":
                self.pos += 1
            elif self.peek() != "]":
                raise self.error("expected , or ] in array")

    def inline_table(self) -> Dict[str, Any]:
        self.pos += 1
        table: Dict[str, Any] = {}
        self.skip_space()
        if self.peek() == "}":
            self.pos += 1
            return table
        while True:
            self.key_value(table)
            self.skip_space()
            if self.peek() == ",":
                self.pos += 1
                self.skip_space()
            elif self.peek() == "}":
                self.pos += 1
                return table
            else:
                raise self.error("expected , or } in inline table")


def parse_toml_subset(text: str) -> Dict[str, Any]:
    return _TomlSubsetReader(text).parse()


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------


def utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def to_millis(value: Any) -> Optional[int]:
    """A Codex timestamp in seconds or milliseconds, as milliseconds (Codex's own rule)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        return None
    value = int(value)
    return value * 1000 if value < MILLIS_THRESHOLD else value


def iso_from_millis(millis: Optional[int]) -> Optional[str]:
    if millis is None:
        return None
    try:
        stamp = _dt.datetime.fromtimestamp(millis / 1000, _dt.timezone.utc)
    except (OverflowError, ValueError, OSError):
        return None  # a stored value past year 9999: no date to show
    if stamp.year < 1000:  # strftime's %Y pads such years by platform: left to it
        return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
    # The same text as strftime's, formatted directly: written once per listed thread.
    return "%d-%02d-%02dT%02d:%02d:%02dZ" % (stamp.year, stamp.month, stamp.day, stamp.hour,
                                            stamp.minute, stamp.second)


def decode_source(raw: Any) -> str:
    """`threads.source` holds a bare string (`cli`) or JSON text (`{"subagent":"review"}`);
    a rollout holds the same value as JSON. Return the canonical stored form."""
    if raw is None:
        return "vscode"  # CODEX-COMPAT: Codex's default when a rollout names no source.
    if isinstance(raw, str):
        text = raw.strip()
        if text.startswith(("{", "[", '"')):
            try:
                raw = json.loads(text)
            except ValueError:
                return text
        else:
            return text
    if isinstance(raw, str):
        return raw
    return json.dumps(raw, separators=(",", ":"), sort_keys=True)


def source_kind(source: str) -> str:
    """A short family name for counting: cli, vscode, exec, mcp, subagent, custom:x, …"""
    if source.startswith("{"):
        try:
            value = json.loads(source)
        except ValueError:
            return "unknown"
        if isinstance(value, dict) and value:
            key = sorted(value)[0]
            inner = value[key]
            if key == "custom" and isinstance(inner, str):
                return "custom:" + inner
            return key
        return "unknown"
    return source or "unknown"


def is_interactive(source: str) -> bool:
    return source in INTERACTIVE_SOURCES


def is_synthetic_user_text(text: str) -> bool:
    return text.lstrip().startswith(SYNTHETIC_USER_PREFIXES)


def strip_request_marker(text: str) -> str:
    # CODEX-COMPAT: Codex strips everything up to and including this marker for previews.
    index = text.find(USER_REQUEST_MARKER)
    return text[index + len(USER_REQUEST_MARKER):].strip() if index >= 0 else text.strip()


def inside_home(path: str, home: Path) -> bool:
    """is_within for an absolute path string; the common case (under the home as spelled) by
    string prefix, without a Path object."""
    prefix = str(home)
    if path.startswith(prefix) and path[len(prefix):len(prefix) + 1] in (os.sep, "/", ""):
        return True
    return is_within(Path(path), home)


def is_within(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


WINDOWS_PATH_RE = re.compile(r"^(?:\\\\\?\\(?:UNC\\)?)?(?:[A-Za-z]:[\\/]|\\\\)")


def is_windows_path(text: str) -> bool:
    """`C:\\…`, `\\\\?\\C:\\…`, `\\\\server\\share\\…`: a path Windows Codex wrote."""
    return bool(WINDOWS_PATH_RE.match(text))


def home_relative_tail(stored: str) -> Optional[str]:
    """The part of a stored rollout path from `sessions/` or `archived_sessions/` on, with `/`
    separators, whichever system wrote it. Lets a home written by Windows Codex be read from
    WSL or a copy on another machine: the same file, under another spelling."""
    text = stored.replace("\\", "/")
    for marker in ("/archived_sessions/", "/sessions/"):
        index = text.rfind(marker)
        if index >= 0:
            return text[index + 1:]
    return None


def folder_key(text: str) -> Optional[Tuple[str, List[str], bool]]:
    """A project folder as (root, components, windows), whichever system spelled it, so that
    `C:\\Users\\ana\\p`, `\\\\?\\C:\\Users\\ana\\p`, `c:/Users/ana/p` and `/mnt/c/Users/ana/p`
    compare equal (component by component; Windows ones case-insensitively). None for a
    relative or empty path."""
    text = (text or "").strip()
    if text.startswith("\\\\?\\UNC\\"):
        text = "\\\\" + text[8:]
    elif text.startswith("\\\\?\\"):
        text = text[4:]
    drive = re.match(r"^([A-Za-z]):(?:[\\/]|$)", text) or re.match(r"^/mnt/([A-Za-z])(?:/|$)", text)
    if drive:
        rest = text[drive.end():]
        return "drive:" + drive.group(1).lower(), [p for p in re.split(r"[\\/]", rest) if p], True
    if text.startswith("\\\\"):
        parts = [p for p in re.split(r"[\\/]", text[2:]) if p]
        if len(parts) < 2:
            return None
        return "unc:%s\\%s" % (parts[0].lower(), parts[1].lower()), parts[2:], True
    if text.startswith("/"):
        return "/", [p for p in text.split("/") if p], False
    return None


def move_covers(outer: Dict[str, Any], move: Dict[str, Any]) -> bool:
    """Does the folder move `outer` already take `move`'s folder to where it was found?"""
    remapped = remap_folder(move["cwd"], outer["cwd"], outer["found"])
    return remapped is not None and os.path.realpath(remapped) == move["found"]


def remap_folder(stored: str, old: str, new: str) -> Optional[str]:
    """`stored` moved from under `old` to under `new`, or None when it is not under `old`.
    Matches whole components (`/a/b` covers `/a/b` and `/a/b/c`, not `/a/bc`); the result is
    spelled the way `new` is (its separator), the part below `old` kept as stored."""
    have, frm = folder_key(stored), folder_key(old)
    if have is None or frm is None or have[0] != frm[0]:
        return None
    fold = (lambda parts: [p.casefold() for p in parts]) if frm[2] else (lambda parts: parts)
    if fold(have[1][:len(frm[1])]) != fold(frm[1]) or len(have[1]) < len(frm[1]):
        return None
    rest = have[1][len(frm[1]):]
    windows = folder_key(new) is not None and folder_key(new)[2] and not new.startswith("/")
    sep = "\\" if windows else "/"
    base = new.rstrip("\\/") or new[:1]
    if re.match(r"^[A-Za-z]:$", base):
        base += sep
    if not rest:
        return base
    return base + ("" if base.endswith(sep) else sep) + sep.join(rest)


def same_rollout(stored: str, info: "RolloutInfo") -> bool:
    """Whether a row's rollout_path names this file: the same path, or (for a path another
    system wrote, e.g. `C:\\Users\\ana\\.codex\\sessions\\…`) the same place in the home."""
    if stored == info.file:
        return True
    if os.path.normcase(os.path.abspath(stored)) == os.path.normcase(os.path.abspath(info.file)):
        return True
    if is_windows_path(stored) and os.name != "nt":
        return home_relative_tail(stored) == info.rel.replace("\\", "/")
    return False


# How every user file is opened for reading: never blocking, never a terminal, not inherited.
READ_ONLY_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) \
    | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def open_regular_fd(path: Any, extra_flags: int = 0) -> Tuple[int, os.stat_result]:
    """(descriptor, fstat) of `path` opened read-only, only if it is a regular file: O_NONBLOCK
    so a FIFO cannot block the open, and fstat on the opened descriptor (not the name) so
    nothing can be swapped in. Anything else raises NotRegularFile, which carries its fstat."""
    fd = os.open(str(path), READ_ONLY_FLAGS | extra_flags)
    try:
        stat = os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise
    if not S_ISREG(stat.st_mode):
        os.close(fd)
        raise NotRegularFile("%s is not a regular file" % path, stat)
    return fd, stat


def open_regular(path: Path, extra_flags: int = 0) -> Any:
    """open_regular_fd as a blocking binary file object."""
    return open_regular_with_stat(path, extra_flags)[0]


def open_regular_with_stat(path: Path, extra_flags: int = 0) -> Tuple[Any, os.stat_result]:
    """open_regular, with the fstat it was opened with."""
    fd, stat = open_regular_fd(path, extra_flags)
    try:
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return open(fd, "rb"), stat


class NotRegularFile(OSError):
    def __init__(self, message: str, stat: Optional[os.stat_result] = None) -> None:
        super().__init__(message)
        self.stat = stat


MAX_CONFIG_BYTES = 16 * 1024 * 1024  # config.toml, NAME.config.toml
MAX_STATE_BYTES = 256 * 1024 * 1024  # .codex-global-state.json (large with prompt history)


def read_small_file(path: Path, limit: int) -> bytes:
    """A whole file that is meant to be small, read only if it is a regular file and only up to
    `limit` bytes: a FIFO or /dev/zero in its place is an error, never a hang or a MemoryError."""
    parts, size = [], 0
    with open_regular(path) as handle:
        # In chunks: read(limit) would set aside `limit` bytes even for a small file.
        for chunk in iter(lambda: handle.read(READ_CHUNK), b""):
            size += len(chunk)
            if size > limit:
                raise OSError("%s is larger than %d MiB" % (path.name, limit >> 20))
            parts.append(chunk)
    return b"".join(parts)


def json_text_bytes(text: str) -> bytes:
    """JSON text as UTF-8. A lone surrogate (JSON allows "\\ud800"; UTF-8 cannot hold it) can
    only sit inside a string, where its backslash escape is the same JSON value."""
    return text.encode("utf-8", "backslashreplace")


def short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


# ---------------------------------------------------------------------------------------------
# Configuration and discovery: which home, which provider, which state DB.
# ---------------------------------------------------------------------------------------------


# What a newcomer without ~/.codex needs to hear: where to point the tool, and what to look for.
HOME_HINT = ("give --codex-home PATH or set CODEX_HOME to the folder Codex keeps its conversations "
             "in (it holds sessions/, state_5.sqlite and config.toml; the default is ~/.codex)")


def resolve_codex_home(flag: Optional[str], environ: Dict[str, str]) -> Tuple[Path, str]:
    """The home and where the answer came from. A symlinked home is allowed (Codex resolves it
    too); the returned path is the resolved one so every stored path compares equal."""
    if flag is not None and not flag.strip():
        # An empty value is a mistake (an unset shell variable), not a request for the default:
        # falling back would read, and with --apply write, a home the user did not name.
        raise UsageError("--codex-home: empty path")
    if flag:
        raw, origin = flag, "--codex-home"
    elif environ.get("CODEX_HOME"):
        raw, origin = environ["CODEX_HOME"], "CODEX_HOME"
    else:
        raw, origin = str(Path.home() / ".codex"), "default"
    path = Path(raw).expanduser()
    if not path.exists():
        raise UsageError("Codex home %s (from %s) does not exist; %s" % (path, origin, HOME_HINT))
    if not path.is_dir():
        raise UsageError("Codex home %s (from %s) is not a directory; %s"
                         % (path, origin, HOME_HINT))
    return path.resolve(), origin


class Config:
    """What config.toml says about providers, as far as listing goes."""

    def __init__(self) -> None:
        self.provider = DEFAULT_PROVIDER
        self.provider_source = "the default: config.toml names no model_provider"
        self.provider_is_default = True
        self.profile: Optional[str] = None
        self.configured_providers: List[str] = []
        self.sqlite_home: Optional[str] = None
        self.problems: List[Dict[str, Any]] = []
        self.files_read: List[str] = []
        # What the files say, before a release decides what counts (see resolve()).
        self.top_provider: Optional[str] = None
        # top-level profile = NAME, its provider
        self.legacy: Optional[Tuple[str, Optional[str]]] = None
        # --profile NAME, provider, origin
        self.requested: Optional[Tuple[str, Optional[str], str]] = None
        self.release: Tuple[int, ...] = ()
        self.surface: Optional[str] = None
        self.surfaces: Dict[str, Dict[str, Any]] = {}
        # config.toml exists but does not parse: Codex will not start, and which provider it
        # would make active cannot be told (not "the default").
        self.provider_unknown = False

    def set_provider(self, provider: str, origin: str) -> None:
        self.provider, self.provider_source, self.provider_is_default = provider, origin, False

    def resolve(self, release: Tuple[int, ...], surface: Optional[str] = None) -> None:
        """The active provider as the release that reads the home resolves it, per surface:
        `cli` is `codex` (with `--profile` when given), `app` is the app-server Desktop and
        the IDE run, which takes no `--profile`. `surface` picks the one the verdicts use;
        without it they use the CLI's (the same as the app's unless --profile says otherwise)."""
        self.release, self.surface = release, surface
        app = self._base_resolution(release)
        cli = app
        if self.requested is not None:
            name, provider, origin = self.requested
            cli = (provider, origin) if provider else app
        self.surfaces = {"cli": {"provider": cli[0] or DEFAULT_PROVIDER, "source": cli[1]},
                         "app": {"provider": app[0] or DEFAULT_PROVIDER, "source": app[1]}}
        chosen = app if surface == "app" else cli
        unknown = self.provider_source if self.provider_unknown else None  # load_config said why
        self.provider = DEFAULT_PROVIDER
        self.provider_source = "the default: config.toml names no model_provider"
        self.provider_is_default = True
        if chosen[0]:
            self.set_provider(chosen[0], chosen[1])
        if unknown:
            self.provider_source = unknown
        self.profile = (self.requested[0] if self.requested and surface != "app" else
                        self.legacy[0] if self.legacy and legacy_profile_accepted(release)
                        else None)

    def _base_resolution(self, release: Tuple[int, ...]) -> Tuple[Optional[str], str]:
        # CODEX-COMPAT: 0.120.0 and 0.130.0 follow a top-level `profile = NAME` in the CLI and
        # the app-server; 0.169.0 ignores it (listing as under the top-level provider) and
        # refuses to start a thread while it is there.
        if self.legacy and self.legacy[1] and legacy_profile_accepted(release):
            return self.legacy[1], 'config.toml profile = "%s"' % self.legacy[0]
        if self.top_provider:
            return self.top_provider, "config.toml model_provider"
        return None, "the default: config.toml names no model_provider"

    @property
    def surfaces_disagree(self) -> bool:
        return self.surfaces["cli"]["provider"] != self.surfaces["app"]["provider"]

    def knows_provider(self, provider: str) -> bool:
        return provider in BUILTIN_PROVIDERS or provider in self.configured_providers

    def as_json(self) -> Dict[str, Any]:
        return {
            "active_provider": None if self.provider_unknown else self.provider,
            "provider_source": self.provider_source,
            "profile": self.profile,
            "surface": self.surface,
            "surfaces": self.surfaces,
            "configured_providers": sorted(self.configured_providers),
            "sqlite_home": self.sqlite_home,
            "files_read": self.files_read,
        }


def _read_toml_file(path: Path, config: Config) -> Optional[Dict[str, Any]]:
    try:
        data = read_small_file(path, MAX_CONFIG_BYTES)
    except FileNotFoundError:
        return None
    except OSError as exc:
        config.problems.append({"code": "config_unreadable", "path": str(path), "error": str(exc)})
        return None
    config.files_read.append(path.name)
    try:
        text = data.decode("utf-8-sig")
        return parse_toml(text)
    except (UnicodeDecodeError, TomlError) as exc:
        config.problems.append({"code": "config_unparsable", "path": str(path),
                                "error": short(str(exc), 200)})
        return None


SURFACE_NAMES = {"cli": "the codex command line (--profile)",
                 "app": "Codex Desktop and the IDE (app-server)"}


def legacy_profile_accepted(release: Tuple[int, ...]) -> bool:
    """CODEX-COMPAT: a top-level `profile = NAME` works in 0.120.0 and 0.130.0 (measured, CLI
    and app-server) and is rejected by 0.169.0 (measured); releases in between are taken to
    follow the older behaviour. An unknown release is taken to accept it, as most did."""
    return not release or release < (0, 169, 0)


def load_config(home: Path, profile: Optional[str], release: Tuple[int, ...] = (),
                surface: Optional[str] = None) -> Config:
    """Read what decides the active provider; Config.resolve() then applies the rules of the
    release that reads the home (the inventory calls it again once it knows that release):

    * `--profile NAME`: `NAME.config.toml` layered over config.toml (0.169.0); older
      releases read `[profiles.NAME]` instead.
    * CODEX-COMPAT: up to 0.130.0 (measured) a top-level `profile = "NAME"` selects
      `[profiles.NAME]`; 0.169.0 ignores it and refuses to start with it. Both are reported.
    * then top-level `model_provider`, then `openai`.
    """
    config = Config()
    base = _read_toml_file(home / "config.toml", config) or {}
    if any(p["code"] in ("config_unparsable", "config_unreadable") for p in config.problems):
        config.provider_unknown = True
        verb = "parsed" if config.problems[0]["code"] == "config_unparsable" else "read"
        config.provider_source = ("unknown: config.toml cannot be %s, and Codex will not start "
                                  "with it" % verb)
    providers = base.get("model_providers")
    if isinstance(providers, dict):
        config.configured_providers.extend(k for k, v in providers.items() if isinstance(v, dict))
    sqlite_home = base.get("sqlite_home")
    if isinstance(sqlite_home, str) and sqlite_home:
        config.sqlite_home = sqlite_home
    top = base.get("model_provider")
    if isinstance(top, str) and top:
        config.top_provider = top
    elif top is not None:
        config.problems.append({"code": "config_unparsable", "path": str(home / "config.toml"),
                                "error": "model_provider is not a string"})
    profiles = base.get("profiles") if isinstance(base.get("profiles"), dict) else {}
    legacy = base.get("profile")
    if isinstance(legacy, str) and legacy:
        config.problems.append({"code": "legacy_profile", "path": str(home / "config.toml"),
                                "profile": legacy})
        config.legacy = (legacy, _profile_table_provider(profiles, legacy))
    if profile:
        layered = _read_toml_file(home / ("%s.config.toml" % profile), config)
        if layered is not None:
            extra = layered.get("model_providers")
            if isinstance(extra, dict):
                config.configured_providers.extend(k for k, v in extra.items()
                                                   if isinstance(v, dict))
            chosen = layered.get("model_provider")
            config.requested = (profile, chosen if isinstance(chosen, str) and chosen else None,
                                "%s.config.toml model_provider" % profile)
            if isinstance(layered.get("sqlite_home"), str):
                config.sqlite_home = layered["sqlite_home"]
        elif isinstance(profiles.get(profile), dict):
            config.requested = (profile, _profile_table_provider(profiles, profile),
                                "[profiles.%s] (--profile)" % profile)
        else:
            config.requested = (profile, None, "")
            config.problems.append({"code": "profile_missing", "profile": profile,
                                    "path": str(home / ("%s.config.toml" % profile))})
    config.configured_providers = sorted(set(config.configured_providers))
    config.resolve(release, surface)
    return config


def _profile_table_provider(profiles: Dict[str, Any], name: str) -> Optional[str]:
    table = profiles.get(name)
    chosen = table.get("model_provider") if isinstance(table, dict) else None
    return chosen if isinstance(chosen, str) and chosen else None


class StateDb:
    """One state_*.sqlite file and what we learned opening it."""

    def __init__(self, path: Path, origin: str) -> None:
        self.path = path
        self.origin = origin
        self.file_version = 0
        match = STATE_DB_RE.match(path.name)
        if match and match.group(1):
            self.file_version = int(match.group(1))
        self.schema_version: Optional[int] = None
        self.columns: List[str] = []
        self.column_info: List[Tuple[Any, ...]] = []
        self.checksum_drift: List[int] = []
        self.integrity: Optional[str] = None
        self.error: Optional[str] = None
        self.last_write = self._last_write()

    def _last_write(self) -> float:
        times = []
        for suffix in ("", "-wal"):
            try:
                times.append(os.stat(str(self.path) + suffix).st_mtime)
            except OSError:
                pass
        return max(times) if times else 0.0

    def sort_key(self) -> Tuple[int, int, float]:
        return (self.file_version, self.schema_version or 0, self.last_write)

    def as_json(self, home: Path) -> Dict[str, Any]:
        return {
            "path": display_path(self.path, home),
            "origin": self.origin,
            "schema_version": self.schema_version,
            "thread_columns": len(self.columns),
            "last_write": iso_from_millis(int(self.last_write * 1000)) if self.last_write else None,
            "error": self.error,
        }


def display_path(path: Path, home: Path) -> str:
    """Paths inside the home are shown relative to it; others in full. (String work: this runs
    once per rollout, and pathlib's relative_to is slow at tens of thousands of files.)"""
    text, prefix = str(path), str(home)
    if text.startswith(prefix) and text[len(prefix):len(prefix) + 1] in (os.sep, "/"):
        return text[len(prefix) + 1:]
    return text


def sqlite_home_dirs(home: Path, config: Config, environ: Dict[str, str]) -> List[Tuple[Path, str]]:
    """Where Codex may keep its state DB: explicit settings first (they win when present)."""
    dirs: List[Tuple[Path, str]] = []
    if config.sqlite_home:
        dirs.append((_resolve_setting_path(config.sqlite_home), "config sqlite_home"))
    if environ.get("CODEX_SQLITE_HOME"):
        dirs.append((_resolve_setting_path(environ["CODEX_SQLITE_HOME"]), "CODEX_SQLITE_HOME"))
    dirs.append((home / "sqlite", "CODEX_HOME/sqlite"))
    dirs.append((home, "CODEX_HOME"))
    return dirs


def _resolve_setting_path(raw: str) -> Path:
    path = Path(raw).expanduser()
    return path if path.is_absolute() else (Path.cwd() / path)


def find_state_dbs(home: Path, config: Config, environ: Dict[str, str]) -> List[StateDb]:
    found: List[StateDb] = []
    seen = set()
    for folder, origin in sqlite_home_dirs(home, config, environ):
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            continue
        for name in names:
            path = folder / name
            if not STATE_DB_RE.match(name) or not path.is_file():
                continue
            key = os.path.realpath(path)
            if key in seen:
                continue
            seen.add(key)
            found.append(StateDb(path, origin))
    return found


def pick_live_db(dbs: List[StateDb]) -> Tuple[Optional[StateDb], str]:
    """The DB Codex reads. An explicit `sqlite_home` / CODEX_SQLITE_HOME wins; otherwise the
    newest file-name version, then the newest schema, then the most recent write."""
    if not dbs:
        return None, "no state DB found (rollout-only home)"
    explicit = [d for d in dbs
                if d.origin in ("config sqlite_home", "CODEX_SQLITE_HOME") and d.error is None]
    pool = explicit or [d for d in dbs if d.error is None] or dbs
    live = max(pool, key=lambda d: d.sort_key())
    if explicit:
        return live, "named by %s" % live.origin
    if len(dbs) == 1:
        return live, "only state DB"
    return live, "newest file version, then schema version, then last write"


# ---------------------------------------------------------------------------------------------
# Reading SQLite. Always read-only (URI mode=ro): a read never checkpoints the user's WAL.
# Columns are discovered at run time: 0.120.0 has 25 thread columns, 0.130.0 28, 0.169.0 43.
# ---------------------------------------------------------------------------------------------

# The thread columns the tool reads, when they exist. Text columns that may hold message text
# are read as "is it non-empty" so no conversation text is held in memory.
_ROW_PLAIN_COLUMNS = (
    "id", "rollout_path", "created_at", "updated_at", "created_at_ms", "updated_at_ms",
    "recency_at_ms", "source", "model_provider", "cwd", "archived", "archived_at",
    "has_user_event", "cli_version", "thread_source", "history_mode", "name",
)
_ROW_PRESENCE_COLUMNS = ("first_user_message", "preview", "title")
# Of the plain columns, those the checks and plans read: every row of the inventory keeps only
# these (trace reads the whole row again), and when the thread was last active.
_ROW_KEPT_COLUMNS = ("id", "rollout_path", "source", "model_provider", "cwd", "archived",
                     "has_user_event",
                     "cli_version", "history_mode", "name")
_ROW_RECENCY_COLUMNS = ("recency_at_ms", "updated_at_ms", "updated_at")  # the first one set counts
_ROW_SHARED_COLUMNS = ("source", "model_provider", "cli_version", "history_mode", "thread_source",
                       "cwd")
# The columns whose values are each row's own; the rest (a source, a provider, a folder, a
# release, flags) repeat across thousands of rows and are kept as one tuple they share, when
# each value is a str, an int or NULL (a REAL would be equal to an int and print otherwise).
_ROW_OWN_COLUMNS = ("id", "rollout_path", "name")
_ROW_SHAREABLE_TYPES = (str, int, type(None))


def open_db_readonly(path: Path) -> sqlite3.Connection:
    """Open a state DB for reading without creating or changing any file beside it.

    A `mode=ro` open of a WAL database creates an empty `-wal` when none exists, so with no
    `-wal` (every page is in the main file) the DB is opened `immutable`, which creates
    nothing. When the folder cannot take the `-shm` index SQLite needs (a read-only home),
    a private copy is read instead."""
    wal = Path(str(path) + "-wal")
    if has_hot_journal(path):
        # immutable=1 would ignore the journal and read half-written pages as "malformed"; a
        # read-only open cannot roll it back. SQLite rolls it back on a private copy instead.
        try:
            conn = _open_private_copy(path)
        except OSError as exc:
            raise sqlite3.OperationalError("unable to read %s: %s"
                                           % (path.name, exc.strerror or exc)) from None
        conn.row_factory = sqlite3.Row
        return conn
    query = "?mode=ro" if wal.exists() else "?mode=ro&immutable=1"
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + query, uri=True, timeout=5.0)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError as exc:
        if "unable to open" not in str(exc) and "readonly" not in str(exc):
            raise
        try:
            conn = _open_private_copy(path)
        except OSError as again:  # a directory or a FIFO named like a DB
            raise sqlite3.OperationalError("unable to open %s: %s"
                                           % (path.name, again.strerror or again)) from None
    conn.row_factory = sqlite3.Row
    return conn


@contextlib.contextmanager
def readonly_db(path: Path) -> Iterator[sqlite3.Connection]:
    """open_db_readonly for a `with` block: the connection is closed however the block ends
    (sqlite3's own `with` only commits)."""
    conn = open_db_readonly(path)
    try:
        yield conn
    finally:
        conn.close()


JOURNAL_MAGIC = b"\xd9\xd5\x05\xf9\x20\xa1\x63\xd7"


def has_hot_journal(path: Path) -> bool:
    """A rollback journal left by a crash mid-transaction (a non-WAL DB): it exists and its
    header is not zeroed (a committed PERSIST journal has a zeroed header, TRUNCATE none)."""
    try:
        with open_regular(Path(str(path) + "-journal")) as handle:
            return handle.read(len(JOURNAL_MAGIC)) == JOURNAL_MAGIC
    except OSError:
        return False


def _open_private_copy(path: Path) -> sqlite3.Connection:
    folder = Path(tempfile.mkdtemp(prefix="csr-read-"))
    for suffix in ("", "-wal", "-journal"):
        source = Path(str(path) + suffix)
        if source.exists():
            shutil.copyfile(str(source), str(folder / (path.name + suffix)))
    copy = sqlite3.connect(str(folder / path.name), timeout=5.0)
    conn = sqlite3.connect(":memory:")
    try:
        copy.backup(conn)
    finally:
        copy.close()
        # Nothing of the user's DB is left on disk outside the home.
        shutil.rmtree(str(folder), ignore_errors=True)
    return conn


def table_columns(conn: sqlite3.Connection, table: str) -> List[str]:
    return [row[1] for row in conn.execute("PRAGMA table_info(%s)" % table)]


def table_exists(conn: sqlite3.Connection, table: str) -> bool:
    query = "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?"
    return conn.execute(query, (table,)).fetchone() is not None


def schema_version(conn: sqlite3.Connection) -> Optional[int]:
    if not table_exists(conn, "_sqlx_migrations"):
        return None
    value = conn.execute("SELECT max(version) FROM _sqlx_migrations").fetchone()[0]
    return int(value) if value is not None else None


# CODEX-COMPAT: the first 12 hex digits of each state DB migration's SHA-384 checksum, as the
# real releases 0.120.0, 0.130.0, 0.169.0 and 0.171.0 recorded them (identical in all four;
# 63 "session model ids" and 64 "thread listing indexes" are 0.171.0's). Builds that
# embed the migration files with CRLF line endings (Windows) record other checksums, and a build
# with LF files then refuses the DB ("migration N was previously applied but has been modified").
MIGRATION_CHECKSUMS = dict(
    (int(v), c) for v, c in (item.split(":") for item in (
        "1:627ef19164c9,2:521b72cbc04c,3:e58a2862bdb6,4:8adc251366e4,5:1ac64f85e083,"
        "6:a203fc4b597e,7:7e35a464df6d,8:aa3f287f7a44,9:8b469360777e,10:8adaf1365f8e,"
        "11:31ececbd07f0,12:0012a213ed25,13:05526a0900a8,14:4d2fbb2442c5,15:0eece6db59c9,"
        "16:4768f743e981,17:4cbdb2edfebf,18:a4363003bc44,19:3884c02f080f,20:07673f4859f7,"
        "21:ea1aebe4f5a1,22:160fe01b757d,23:e6c748a9a182,24:e92aa526b1f3,25:d6fb51d79941,"
        "26:6c62a325d3b9,27:d84dca6a039e,28:ef44adaa291e,29:e9ec76f97dbf,30:80c1cdacd452,"
        "31:943675a9b3dc,32:3c01d615c5e3,33:4904aae354e3,34:d6fea739c76e,35:d7b56acb07c9,"
        "36:6381f7bb4c36,37:f6a5ab0db36b,38:e7778522cbe5,39:c217b3d14c08,40:a7a99674f90a,"
        "41:0dc734dbe4cb,42:cfdc4fd47328,43:605128e722bd,44:5d29223bd1ca,45:a7fadc8caea8,"
        "46:63addf6115c3,47:1ae117e4ab40,48:9d298333f752,49:faf45c392bb8,50:d2802e96f5fc,"
        "51:23360a03a7fc,52:071e96313d40,53:e86ef7ccbcc8,54:e62a9977d99c,55:6daadc5527b3,"
        "56:5de44fac5505,57:729562c57bfa,58:68467af3ce1f,59:4297dffb4fb3,60:d7f0cf0a69fa,"
        "61:4a8337048bb9,62:dab8b7c8390f,63:dffdc4b9759f,64:a6862d0af07f").split(",")))
# CODEX-COMPAT: builds of mid-June 2026 applied the recency migration (39) as version 38.
MIGRATION_ALIASES = {38: (MIGRATION_CHECKSUMS[39],)}
# The newest state DB migration of a release this tool was checked against.
NEWEST_CHECKED_SCHEMA = max(MIGRATION_CHECKSUMS)

# CODEX-COMPAT: the declared type of every column a repair reads as a key or guard, or writes,
# in the tables it writes, as the real releases 0.120.0-0.171.0 created them. No column
# changed type across those releases; columns only came with releases, and planners use only
# the ones present. With the triggers below, this is what compatibility is judged by: a newer
# schema on which everything a plan touches still has this shape is written to (and said so);
# one where it does not is refused. The version number alone decides nothing.
def _column_types(text: str, integers: str, booleans: str = "") -> Dict[str, str]:
    """Every column of `text` is TEXT unless listed in `integers` or `booleans`."""
    kinds = dict.fromkeys(integers.split(), "INTEGER")
    kinds.update(dict.fromkeys(booleans.split(), "BOOLEAN"))
    return {c: kinds.get(c, "TEXT") for c in text.split()}


KNOWN_COLUMN_TYPES: Dict[str, Dict[str, str]] = {
    "threads": _column_types(
        "id rollout_path created_at updated_at source model_provider cwd title sandbox_policy "
        "approval_mode tokens_used has_user_event archived archived_at git_sha git_branch "
        "git_origin_url cli_version first_user_message agent_nickname agent_role memory_mode model "
        "reasoning_effort agent_path created_at_ms updated_at_ms thread_source preview recency_at "
        "recency_at_ms history_mode name is_pinned thread_section_id section_position "
        "section_entered_at_ms project_id originator daybreak_enabled creator_user_id "
        "creator_account_id attached_thread_parent_id",
        integers="created_at updated_at tokens_used has_user_event archived archived_at "
                 "created_at_ms updated_at_ms recency_at recency_at_ms is_pinned section_position "
                 "section_entered_at_ms",
        booleans="daybreak_enabled"),
    # The history projection, every column: import copies a thread's rows whole (0.169.0 and
    # 0.171.0 have the same columns in these tables).
    "thread_turns": _column_types(
        "thread_id turn_id rollout_ordinal status error_json started_at completed_at duration_ms "
        "first_user_item_id final_agent_item_id rollout_byte_offset rollout_end_ordinal "
        "rollout_end_byte_offset root_turn_id",
        integers="rollout_ordinal started_at completed_at duration_ms rollout_byte_offset "
                 "rollout_end_ordinal rollout_end_byte_offset"),
    "thread_history_projection_state": _column_types("thread_id next_rollout_byte_offset "
                                                     "next_rollout_ordinal",
                                                     integers="next_rollout_byte_offset "
                                                              "next_rollout_ordinal"),
    "thread_items": _column_types(
        "thread_id turn_id item_id rollout_ordinal created_at_ms item_json item_type "
        "updated_at_ordinal started_at_ms completed_at_ms",
        integers="rollout_ordinal created_at_ms updated_at_ordinal started_at_ms completed_at_ms"),
    "thread_realtime_items": _column_types("thread_id item_id rollout_ordinal created_at_ms "
                                           "item_type item_json",
                                           integers="rollout_ordinal created_at_ms"),
}
# CODEX-COMPAT: triggers on those tables in 0.130.0-0.171.0 (0.120.0 has none): name and the
# first 12 hex digits of the SHA-256 of their SQL with whitespace collapsed. A trigger can make
# a guarded one-row UPDATE change other rows or tables, so a new or changed one is a change of
# shape.
KNOWN_TRIGGERS = {
    "threads_created_at_ms_after_insert": "586126949b44",
    "threads_updated_at_ms_after_insert": "6f880f1cc919",
    "threads_created_at_ms_after_update": "5a54826b36da",
    "threads_updated_at_ms_after_update": "9de2de92b354",
    "threads_recency_at_after_insert": "44e9dd026465",
    "thread_realtime_items_projection_cleanup": "8d92986886e4",
}


def probe_state_db(db: StateDb) -> None:
    """Fill in schema facts; a DB that cannot be read gets `error` set, never an exception."""
    try:
        with readonly_db(db.path) as conn:
            db.schema_version = schema_version(conn)
            db.column_info = [tuple(r) for r in conn.execute("PRAGMA table_info(threads)")]
            db.columns = [c[1] for c in db.column_info]
            if not db.columns:
                db.error = "no threads table"
            db.checksum_drift = migration_checksum_drift(conn)
            check = conn.execute("PRAGMA quick_check(1)").fetchone()
            db.integrity = check[0] if check else None
    except sqlite3.Error as exc:
        db.error = str(exc)


def migration_checksum_drift(conn: sqlite3.Connection) -> List[int]:
    if not table_exists(conn, "_sqlx_migrations"):
        return []
    drift = []
    for version, checksum in conn.execute("SELECT version, checksum FROM _sqlx_migrations"):
        known = MIGRATION_CHECKSUMS.get(int(version))
        if known is None or not isinstance(checksum, bytes):
            continue
        prefix = checksum.hex()[:12]
        if prefix != known and prefix not in MIGRATION_ALIASES.get(int(version), ()):
            drift.append(int(version))
    return drift


# One string for each thread id and each value many records hold (a folder, a release), while
# an inventory is built: the key, the row and the rollout share it. Not sys.intern, whose table
# lives as long as the strings do (~40 bytes a thread at 100,000); this one is emptied when the
# inventory is built (forget_shared_strings).
_shared_strings: Dict[str, str] = {}


def shared_str(text: str) -> str:
    return _shared_strings.setdefault(text, text)


def forget_shared_strings() -> None:
    _shared_strings.clear()


def read_thread_rows(db: StateDb) -> Dict[str, "Row"]:
    """Every threads row by lowercased id: the columns the checks and plans read, the presence
    of each text column, and when the thread was last active (Row.updated_ms)."""
    select, names = _row_select(_ROW_KEPT_COLUMNS, set(db.columns))
    kept = len(select)
    select += [c for c in _ROW_RECENCY_COLUMNS if c in db.columns]
    own = [n for n, name in enumerate(names) if name in _ROW_OWN_COLUMNS]
    shared = [n for n, name in enumerate(names) if name not in _ROW_OWN_COLUMNS]
    row_type = Row.of_columns(names, own, shared)
    rows = {}
    table: Dict[Tuple[Any, ...], Tuple[Any, ...]] = {}
    for key, values in _thread_row_values(db, select):
        common = tuple([values[n] for n in shared])
        if all(type(v) in _ROW_SHAREABLE_TYPES for v in common):
            common = table.setdefault(common, common)
        rows[key] = row_type(tuple([values[n] for n in own])
                             + (first_millis(values[kept:]), common))
    return rows


def read_full_thread_row(db: StateDb, thread_id: str) -> Optional[Dict[str, Any]]:
    """The row of one thread with every column the tool knows (what trace shows), as
    read_thread_rows would have found it (the last of the rows whose id lowercases alike)."""
    select, names = _row_select(_ROW_PLAIN_COLUMNS, set(db.columns))
    found = None
    for _key, values in _thread_row_values(db, select, thread_id):
        found = values
    return None if found is None else dict(zip(names, found))


def _row_select(plain: Sequence[str], columns: set) -> Tuple[List[str], List[str]]:
    """The SELECT expressions and the names of their values, built side by side: the plain
    columns as they are, each text column as has_<column> (is it non-empty)."""
    names = [c for c in plain if c in columns]
    select = list(names)
    for column in _ROW_PRESENCE_COLUMNS:
        if column in columns:
            select.append("(%s <> '') AS has_%s" % (column, column))
            names.append("has_" + column)
    return select, names


def _thread_row_values(db: StateDb, select: List[str],
                       thread_id: Optional[str] = None) -> Iterator[Tuple[str, Tuple[Any, ...]]]:
    """(lowercased id, values) of the threads rows, in the table's order."""
    conn = open_db_readonly(db.path)
    try:
        conn.row_factory = None
        query = "SELECT %s FROM threads" % ", ".join(select)
        cursor = (conn.execute(query + " WHERE lower(id) = ?", (thread_id,)) if thread_id
                  else conn.execute(query))
        # Values thousands of rows share (a source, a provider, a release, a project folder)
        # are kept once; the id is one string for the key and the row.
        shared = [n for n, c in enumerate(select) if c in _ROW_SHARED_COLUMNS]
        at_id = select.index("id")
        for raw in cursor:
            values = [_text(v) if isinstance(v, bytes) else v for v in raw]
            for n in shared:
                if type(values[n]) is str:
                    values[n] = shared_str(values[n])
            key = shared_str(str(values[at_id]).lower())
            if values[at_id] == key:
                values[at_id] = key
            yield key, tuple(values)
    finally:
        conn.close()


def first_millis(values: Sequence[Any]) -> Optional[int]:
    """The first of these timestamps that is set, as milliseconds."""
    for value in values:
        millis = to_millis(value)
        if millis:
            return millis
    return None


class Row(tuple):
    """One threads row: a tuple of its own values (_ROW_OWN_COLUMNS), updated_ms (when the
    thread was last active by the row, _ROW_RECENCY_COLUMNS, or None), and the tuple of its
    other values, often shared with other rows. The column index every row of one DB shares is
    on its class (a dict per row costs several times as much, and an index beside each tuple a
    second object per row, at tens of thousands of threads). Reads like a dict."""

    __slots__ = ()
    # column -> (position in the row, position in the shared tuple or None)
    _index: Dict[str, Tuple[int, Optional[int]]] = {}
    _updated_at = 0

    @classmethod
    def of_columns(cls, names: List[str], own: List[int], shared: List[int]) -> type:
        at = {n: (place, None) for place, n in enumerate(own)}
        at.update({n: (len(own) + 1, place) for place, n in enumerate(shared)})
        index = {name: at[n] for n, name in enumerate(names)}
        return type("Row", (cls,), {"__slots__": (), "_index": index, "_updated_at": len(own)})

    def get(self, key: str, default: Any = None) -> Any:
        at = self._index.get(key)
        if at is None:
            return default
        value = tuple.__getitem__(self, at[0])
        return value if at[1] is None else value[at[1]]

    def __getitem__(self, key: str) -> Any:  # type: ignore[override]
        at = self._index[key]
        value = tuple.__getitem__(self, at[0])
        return value if at[1] is None else value[at[1]]

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def keys(self) -> List[str]:
        return list(self._index)

    @property
    def updated_ms(self) -> Optional[int]:
        return tuple.__getitem__(self, self._updated_at)


def _text(value: bytes) -> str:
    """A BLOB where Codex keeps text (a damaged or hand-edited row), read as text."""
    return value.decode("utf-8", "replace")


def read_backfill_state(db: StateDb) -> Optional[Dict[str, Any]]:
    try:
        with readonly_db(db.path) as conn:
            if not table_exists(conn, "backfill_state"):
                return None
            row = conn.execute("SELECT * FROM backfill_state WHERE id = 1").fetchone()
            return dict(row) if row else None
    except sqlite3.Error:
        return None


# ---------------------------------------------------------------------------------------------
# Reading rollouts. Streams, bounded: the first line (session_meta, ~21 KB in 0.169.0), then
# only as far as the first real user message. A bad line becomes a problem code on the file.
# ---------------------------------------------------------------------------------------------


# What RolloutInfo.meta holds until a session_meta line is read; never written to.
EMPTY_META: Dict[str, Any] = {}
# RolloutInfo's packed fields.
_COMPRESSED, _ARCHIVED_LOCATION, _SCANNED_TO_END = 1, 2, 4
_LOW64, _LOW128 = (1 << 64) - 1, (1 << 128) - 1
_DOUBLE = struct.Struct("<d")


class RolloutInfo:
    """What the head of one rollout file says."""

    # One of these per rollout stays in memory for the whole run: no per-object dict, the path
    # as a plain str (a Path object per file costs time and memory at tens of thousands).
    # Three flags are one int (_flags), and size, mtime and bytes_read one int (_sizes): three
    # objects and three slots each are ~70 bytes a rollout more.
    __slots__ = ("file", "rel_at", "name_uuid", "_flags", "meta", "meta_lines",
                 "evidence_kind", "evidence_line", "evidence_text", "problems",
                 "_sizes", "offset_faults")

    def __init__(self, path: Any, home: Path, stat: Any = None) -> None:
        self.file = str(path)
        rel = display_path(self.file, home)
        self.rel_at = len(self.file) - len(rel)  # rel is a suffix of file: kept as its offset
        name = os.path.basename(self.file)
        match = ROLLOUT_NAME_RE.match(name)
        self.name_uuid = shared_str(match.group("uuid").lower()) if match else None
        self._flags = ((_COMPRESSED if name.endswith(".zst") else 0)
                       | (_ARCHIVED_LOCATION if rel.replace("\\", "/").startswith(
                           "archived_sessions/") else 0))
        self.meta: Any = EMPTY_META
        self.meta_lines = 0
        self.evidence_kind: Optional[str] = None
        self.evidence_line: Optional[int] = None
        self.evidence_text: Optional[str] = None
        self.problems: List[str] = []
        self._sizes = 0  # mtime's bits, size << 64, bytes_read << 128
        self.offset_faults: Optional[Tuple[int, int, int]] = None  # see check_offsets
        # stat=False: the caller fills size and mtime in (from the fstat of its descriptor).
        self.set_stat(_stat_or_none(self.file) if stat is None else stat)

    @property
    def rel(self) -> str:
        """The path as shown: relative to the home when inside it."""
        return self.file[self.rel_at:]

    def set_stat(self, stat: Any) -> None:
        size, mtime = (stat.st_size, stat.st_mtime) if stat else (0, 0.0)
        bits = int.from_bytes(_DOUBLE.pack(mtime), "little")
        self._sizes = (self._sizes >> 128 << 128) | (size << 64) | bits

    @property
    def size(self) -> int:
        return (self._sizes >> 64) & _LOW64

    @property
    def mtime(self) -> float:
        return _DOUBLE.unpack((self._sizes & _LOW64).to_bytes(8, "little"))[0]

    @property
    def bytes_read(self) -> int:
        """How many bytes of the file the scan read (what the benchmarks count)."""
        return self._sizes >> 128

    @bytes_read.setter
    def bytes_read(self, count: int) -> None:
        self._sizes = (self._sizes & _LOW128) | (count << 128)

    @property
    def compressed(self) -> bool:
        return bool(self._flags & _COMPRESSED)

    @property
    def archived_location(self) -> bool:
        return bool(self._flags & _ARCHIVED_LOCATION)

    @property
    def scanned_to_end(self) -> bool:
        return bool(self._flags & _SCANNED_TO_END)

    @scanned_to_end.setter
    def scanned_to_end(self, value: bool) -> None:
        self._flags = (self._flags | _SCANNED_TO_END) if value else (
            self._flags & ~_SCANNED_TO_END)

    @property
    def path(self) -> Path:
        return Path(self.file)

    @property
    def thread_id(self) -> Optional[str]:
        if self.name_uuid:
            # The file name is the thread's own UUID (a fork may carry its parent's id), and
            # equal to the session_meta id lowercased otherwise: the name's string, one for all
            # that hold the id, not a new lowercased copy on each read.
            return self.name_uuid
        meta_id = self.meta.get("id")
        return meta_id.lower() if isinstance(meta_id, str) and meta_id else None

    @property
    def provider(self) -> Optional[str]:
        value = self.meta.get("model_provider")
        return value if isinstance(value, str) and value else None

    @property
    def source(self) -> Optional[str]:
        if not self.meta:
            return None
        # Meta keeps it decoded already (decode_source is idempotent)
        value = self.meta.get("source")
        return value if value is not None else decode_source(None)

    @property
    def has_evidence(self) -> bool:
        return self.evidence_kind is not None


def iter_rollout_files(home: Path, temps: Optional[List[Path]] = None,
                       errors: Optional[List[str]] = None,
                       tops: Sequence[str] = ("sessions", "archived_sessions")) -> Iterator[Path]:
    """Every rollout under sessions/ (any depth: pre-July-2025 files are flat) and
    archived_sessions/, as Path objects (see iter_rollout_entries)."""
    for path, _is_file in iter_rollout_entries(home, temps, errors, tops):
        yield Path(path)


def iter_rollout_entries(home: Path, temps: Optional[List[Path]] = None,
                         errors: Optional[List[str]] = None,
                         tops: Sequence[str] = ("sessions", "archived_sessions"),
                         links: Optional[Dict[str, str]] = None) -> Iterator[Tuple[str, bool]]:
    """(path, is a regular file) of every rollout under sessions/ and archived_sessions/, in
    sorted order. Symlinked folders are read (a synced tree may be linked in); writes through
    them are refused later, in preflight. One os.scandir per folder: the entry's type comes with
    the listing, so a FIFO or device named like a rollout is known without opening it. A
    rollout that is a symbolic link, or lies in a linked folder below sessions/ (or
    archived_sessions/) itself, goes into `links`, mapped to that link."""
    for top in tops:
        root = os.path.join(str(home), top)
        if not os.path.isdir(root):
            continue
        seen: set = set()
        # Linked folders wait until every real folder has been walked: a link to a folder the
        # walk reaches anyway (a sibling day) is then a second way in, and skipped as seen;
        # Codex, which skips links, sees that folder's rollouts only where they really are.
        deferred: List[Tuple[str, str]] = []
        yield from _walk_rollouts(root, seen, temps, errors, links, None, deferred)
        while deferred:
            folder, via = deferred.pop(0)
            yield from _walk_rollouts(folder, seen, temps, errors, links, via, deferred)


def _walk_rollouts(folder: str, seen: set, temps: Optional[List[Path]], errors: Optional[List[str]],
                   links: Optional[Dict[str, str]] = None, via: Optional[str] = None,
                   deferred: Optional[List[Tuple[str, str]]] = None) -> Iterator[Tuple[str, bool]]:
    real = os.path.realpath(folder)
    if real in seen:  # a link loop, or two links to one folder
        return
    seen.add(real)
    try:
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda e: e.name)
    except OSError as exc:
        if errors is not None:  # as os.walk's onerror: the folder that could not be listed
            errors.append(exc.filename or str(exc))
        return
    folders = []
    for entry in entries:
        name = entry.name
        if _entry_is_dir(entry):
            folders.append((entry.path, via or (entry.path if entry.is_symlink() else None)))
        elif name.startswith("rollout-") and (name.endswith(".jsonl")
                                              or name.endswith(".jsonl.zst")):
            if links is not None and (via or entry.is_symlink()):
                links[entry.path] = via or entry.path
            yield entry.path, _entry_is_file(entry)
        elif temps is not None and TEMP_MARKER in name:
            temps.append(Path(entry.path))
    for sub, sub_via in folders:  # os.walk's order: a folder's files, then its subfolders, sorted
        if sub_via and not via and deferred is not None:
            deferred.append((sub, sub_via))
            continue
        yield from _walk_rollouts(sub, seen, temps, errors, links, sub_via, deferred)


def _entry_is_file(entry: Any) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False


def _entry_is_dir(entry: Any) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def read_line_bounded(handle: Any) -> Tuple[bytes, bool]:
    """One line, at most MAX_LINE_BYTES. Returns (line, oversized); an oversized line is
    drained chunk by chunk and returned empty."""
    line = handle.readline(MAX_LINE_BYTES)
    if len(line) < MAX_LINE_BYTES or line.endswith(b"\n"):
        return line, False
    while True:
        chunk = handle.readline(READ_CHUNK)
        if not chunk or chunk.endswith(b"\n"):
            return b"", True


def parse_rollout_line(raw: bytes, line_no: int, problems: List[str],
                       decode: Any = json.loads) -> Optional[Dict[str, Any]]:
    if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
        problems.append("bom")
        raw = raw[3:]
    if b"\x00" in raw:
        problems.append("nul_bytes")
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        problems.append("invalid_utf8")
        return None
    text = text.strip()
    if not text:
        return None
    try:
        record = decode(text)
    except ValueError:
        problems.append("torn_line" if not raw.endswith(b"\n") else "bad_json")
        return None
    return record if isinstance(record, dict) else None


def user_text_of(record: Dict[str, Any]) -> Optional[Tuple[str, str]]:
    """(kind, text) when this rollout line is something a person typed, else None.

    CODEX-COMPAT: releases up to ~0.130 write `event_msg/user_message`; 0.169.0 writes
    `event_msg/item_completed` with a UserMessage item and no user_message; all write the
    prompt as a role=user `response_item`, next to synthetic role=user context blocks."""
    payload = record.get("payload")
    if not isinstance(payload, dict):
        return None
    kind = record.get("type")
    ptype = payload.get("type")
    if kind == "event_msg" and ptype == "user_message":
        raw_text = payload.get("message") if isinstance(payload.get("message"), str) else ""
        images = bool(payload.get("images") or payload.get("local_images"))
        return classify_user_text(raw_text, "user_message", images)
    if kind == "event_msg" and ptype == "item_completed":
        item = payload.get("item")
        item_type = str(item.get("type", "")).lower() if isinstance(item, dict) else ""
        if item_type in ("usermessage", "user_message"):
            return classify_user_text(_content_text(item.get("content")), "item_completed", False)
        return None
    if kind == "event_msg" and ptype == "thread_goal_updated":
        goal = payload.get("goal")
        objective = goal.get("objective") if isinstance(goal, dict) else None
        return ("goal", objective) if isinstance(objective, str) and objective.strip() else None
    if kind == "response_item" and ptype == "message" and payload.get("role") == "user":
        return classify_user_text(_content_text(payload.get("content")), "response_item", False)
    return None


def classify_user_text(raw_text: str, kind: str, images: bool) -> Optional[Tuple[str, str]]:
    """What Codex makes of a user message for previews: the text after "## My request for
    Codex:", `[Image]` for an image alone, nothing for synthetic context blocks."""
    if not raw_text.strip() and not images:
        return None
    if is_synthetic_user_text(raw_text):
        return None
    text = strip_request_marker(raw_text)
    if text:
        return (kind, text)
    if images or raw_text.strip() == "[Image]":
        return (kind, "[Image]")
    if ATTACHMENT_MARKER in raw_text:
        # CODEX-COMPAT: a large paste becomes an attachment and the request section is left
        # empty, so Codex derives an empty preview (0.169.0 and 0.120.0 then hide the thread;
        # 0.130.0 still lists it: measured).
        return ("attachment", short(raw_text.split(ATTACHMENT_MARKER, 1)[1], 200) or "[Attachment]")
    return None


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content.strip()
    parts = []
    if isinstance(content, list):
        for piece in content:
            if isinstance(piece, dict):
                text = piece.get("text")
                if isinstance(text, str):
                    parts.append(text)
                elif piece.get("type") in ("input_image", "image", "localImage", "local_image"):
                    parts.append("[Image]")
    return "\n".join(parts).strip()


def scan_rollout(path: Any, home: Path, deep: bool = False, is_file: Optional[bool] = None,
                 keep_text: bool = True,
                 projection: Optional[Dict[str, Sequence[int]]] = None) -> RolloutInfo:
    """Read the head of a rollout: its own session_meta and the first real user message, and
    the last bytes (a torn or NUL-padded tail). The same facts as scan_rollout_deep, found with
    less work: one os.read of the head (most rollouts' heads, many whole files, fit in it), the
    tail from the same buffer when it holds the end, and the instructions in session_meta
    (~20 KB, identical in every rollout of one release) matched instead of decoded again.
    Without keep_text the snippet of the first message is dropped (only --verbose shows it).
    With `projection` (read_projection_offsets), the thread's offsets are checked on the same
    descriptor (check_offsets)."""
    if deep:
        info = scan_rollout_deep(Path(path), home, projection)
    else:
        info = _scan_fast(path, home, is_file, projection)
    if not keep_text:
        info.evidence_text = None
    return info


def _finished(info: RolloutInfo) -> RolloutInfo:
    info.problems = tuple(sorted(set(info.problems)))  # () for most files: shared, no list each
    return info


def _scan_fast(path: Any, home: Path, is_file: Optional[bool],
               projection: Optional[Dict[str, Sequence[int]]] = None) -> RolloutInfo:
    info = RolloutInfo(path, home, stat=False)
    if info.compressed:
        info.set_stat(_stat_or_none(info.file))
        info.problems.append("compressed")  # zstd is not in the standard library
        return _finished(info)
    fd, stat = (None, None) if is_file is False else open_regular_readonly(info.file)
    if fd is None:
        _describe_unopened(info, stat)
        return _finished(info)
    try:
        info.set_stat(stat)
        if info.size == 0:
            info.problems.append("empty_file")
            info.scanned_to_end = True
        else:
            _scan_head(info, HeadReader(fd, info.size))
            check_offsets(info, fd, projection)
    finally:
        os.close(fd)
    return _finished(info)


def _stat_or_none(path: str) -> Optional[os.stat_result]:
    try:
        return os.stat(path)
    except OSError:
        return None


def _describe_unopened(info: RolloutInfo, stat: Optional[os.stat_result]) -> None:
    """A rollout that was not read: not a regular file (a FIFO or device named like a rollout,
    a dangling link), or a regular file that cannot be opened."""
    stat = stat or _stat_or_none(info.file)
    info.set_stat(stat)
    if stat is None or not S_ISREG(stat.st_mode):
        info.problems.append("not_a_file")
    elif stat.st_size == 0:
        info.problems.append("empty_file")
        info.scanned_to_end = True
    else:
        info.problems.append("unreadable")



def open_regular_readonly(path: str) -> Tuple[Optional[int], Optional[os.stat_result]]:
    """open_regular_fd without exceptions: (None, its fstat) if `path` opened as something
    other than a regular file, (None, None) if it did not open."""
    try:
        return open_regular_fd(path)
    except NotRegularFile as exc:
        return None, exc.stat
    except (OSError, ValueError):
        return None, None


# CODEX-COMPAT: the listers read on past the prompt's response_item to the event form of the
# first user message (USER_EVENT_MARKERS; the next line or two); a line on the way that is not
# UTF-8 stops them, and the thread is not listed (measured 0.130.0 and 0.171.0). Looked for in
# a bounded window after the prompt, read with pread (the scan's position does not move)
# or taken from the head's buffer.
EVENT_LOOKAHEAD_BYTES = 64 * 1024
HEAD_READ = 32 * 1024  # one read: a 0.169.0 head up to the first prompt is ~25-45 KB


class HeadReader:
    """Lines of an open rollout with read_line_bounded's contract (at most MAX_LINE_BYTES per
    line; an oversized line is skipped and reported), read from the descriptor in bounded
    chunks: HEAD_READ first, then twice as much each time, up to READ_CHUNK (most heads need
    one read; a long one is not read a megabyte at a time from the start)."""

    __slots__ = ("fd", "size", "buf", "pos", "total", "eof", "step")

    def __init__(self, fd: int, size: int) -> None:
        self.fd, self.size = fd, size
        self.buf, self.pos, self.total, self.eof = b"", 0, 0, False
        self.step = HEAD_READ
        self.buf = self._read(HEAD_READ)

    def _next_chunk(self) -> bytes:
        self.step = min(READ_CHUNK, self.step * 2)
        return self._read(self.step)

    def _read(self, count: int) -> bytes:
        if self.eof:
            return b""
        chunk = os.read(self.fd, count)
        self.total += len(chunk)
        # A short read of a regular file is its end; a network file system may return short
        # reads before it, so the size fstat gave must be reached too.
        if not chunk or (len(chunk) < count and self.total >= self.size):
            self.eof = True
        return chunk

    def tell(self) -> int:
        return self.total - len(self.buf) + self.pos

    def next_line(self) -> Tuple[bytes, bool]:
        buf, pos = self.buf, self.pos
        end = buf.find(b"\n", pos)
        if end >= 0:
            self.pos = end + 1
            return (buf[pos:end + 1], False) if end + 1 - pos <= MAX_LINE_BYTES else (b"", True)
        pieces, held = [buf[pos:]], len(buf) - pos
        self.buf, self.pos = b"", 0
        while held < MAX_LINE_BYTES:
            if self.eof:
                return b"".join(pieces), False
            chunk = self._next_chunk()
            end = chunk.find(b"\n")
            if end >= 0:
                self.buf, self.pos = chunk, end + 1
                if held + end + 1 > MAX_LINE_BYTES:
                    return b"", True
                pieces.append(chunk[:end + 1])
                return b"".join(pieces), False
            pieces.append(chunk)
            held += len(chunk)
        return self._skip_rest_of_line()

    def _skip_rest_of_line(self) -> Tuple[bytes, bool]:
        while True:
            chunk = self._next_chunk()
            end = chunk.find(b"\n")
            if end >= 0 or not chunk:
                self.buf, self.pos = chunk, end + 1 if end >= 0 else 0
                return b"", True

    def held(self, start: int, count: Optional[int] = None) -> Optional[bytes]:
        """The `count` bytes from `start` (all to the end without a count; fewer at the end of
        the file) when the buffer already holds them, else None."""
        at = self.total - len(self.buf)
        if start < at or not (self.eof or (count is not None and self.total - start >= count)):
            return None
        return self.buf[start - at:] if count is None else self.buf[start - at:start - at + count]

    def tail(self, start: int) -> bytes:
        """The bytes from `start` to the end: from the buffer when it holds them."""
        held = self.held(start)
        if held is not None:
            return held
        os.lseek(self.fd, start, os.SEEK_SET)
        parts = []
        while True:
            chunk = os.read(self.fd, READ_CHUNK)
            if not chunk:
                return b"".join(parts)
            parts.append(chunk)


def _scan_head(info: RolloutInfo, reader: HeadReader) -> None:
    """The head loop over a HeadReader, with decode_record for json.loads; then the tail from
    the same descriptor."""
    read_on = scan_head_lines(info, reader.next_line, decode_record)
    info.bytes_read = head_end = reader.tell()
    if not info.scanned_to_end:
        start = max(info.bytes_read, info.size - TAIL_BYTES)
        tail = reader.tail(start)
        info.bytes_read += len(tail)
        _tail_problems(tail, info)
    if read_on:
        check_lines_to_user_event(info, reader.fd, head_end,
                                  reader.held(head_end, EVENT_LOOKAHEAD_BYTES))


# session_meta carries the model's instructions (~20 KB in 0.169.0), the same text in every
# rollout one release writes. Once decoded and found to be one well-formed JSON value, that
# exact text is recognised by comparison in the next lines and stands in as "" for the decoder:
# a line is valid JSON with it if and only if it is valid with "" there (the key is an object
# key, so the value sits where any value may), and the instructions are never read.
INSTRUCTIONS_KEY = '"base_instructions":'
_known_instructions: List[str] = []
_scan_json = json.scanner.make_scanner(json.JSONDecoder())


def decode_record(text: str) -> Any:
    """json.loads(text) for a stripped line (no surrounding whitespace), raising ValueError
    exactly when json.loads would, with the known instructions matched, not decoded."""
    at = text.find(INSTRUCTIONS_KEY)
    if at <= 0 or text[at - 1] not in "{,":
        return _decode_whole(text)
    start = at + len(INSTRUCTIONS_KEY)
    for known in _known_instructions:
        if text.startswith(known, start):
            record = _decode_whole(text[:start] + '""' + text[start + len(known):])
            payload = record.get("payload") if isinstance(record, dict) else None
            if isinstance(payload, dict) and payload.get("base_instructions") == "":
                return record
            break  # the match was not the payload's own key: decode the line as it is
    record = _decode_whole(text)
    _learn_instructions(text, start)
    return record


def _decode_whole(text: str) -> Any:
    try:
        value, end = _scan_json(text, 0)
    except StopIteration as exc:
        raise ValueError("Expecting value") from exc
    if end != len(text):
        raise ValueError("Extra data")
    return value


def _learn_instructions(text: str, start: int) -> None:
    if len(_known_instructions) >= 8 or text[start:start + 1] not in ('{', '"'):
        return  # only self-delimiting values (an object or a string) can be matched by text
    try:
        _value, end = _scan_json(text, start)
    except (StopIteration, ValueError):
        return
    if end - start >= 1024:
        _known_instructions.append(text[start:end])


def scan_rollout_deep(path: Path, home: Path,
                      projection: Optional[Dict[str, Sequence[int]]] = None) -> RolloutInfo:
    """Read the head of a rollout: its own session_meta and the first real user message, with
    buffered readline and json.loads, every line decoded in full. The reference reader:
    `--deep` uses it, and the tests hold scan_rollout to it, fact for fact."""
    return _finished(_scan_deep(RolloutInfo(path, home), path, projection))


def _scan_deep(info: RolloutInfo, path: Path,
               projection: Optional[Dict[str, Sequence[int]]] = None) -> RolloutInfo:
    """The reading loop of scan_rollout_deep."""
    if info.compressed:
        info.problems.append("compressed")  # zstd is not in the standard library
        return info
    if not path.is_file():
        info.problems.append("not_a_file")  # a FIFO or device named like a rollout: never opened
        return info
    if info.size == 0:
        info.problems.append("empty_file")
        info.scanned_to_end = True
        return info
    try:
        handle = open_regular(path)
    except OSError:
        info.problems.append("unreadable")
        return info
    with handle:
        read_on = scan_head_lines(info, lambda: read_line_bounded(handle), json.loads)
        info.bytes_read = head_end = handle.tell()
        if not info.scanned_to_end:
            check_tail(handle, info)
        if read_on:
            check_lines_to_user_event(info, handle.fileno(), head_end)
        check_offsets(info, handle.fileno(), projection)
    return info


def scan_head_lines(info: RolloutInfo, next_line: Any, decode: Any) -> bool:
    """The head loop both readers share: line by line (`next_line()` gives (bytes, oversized),
    b"" at the end) up to the first real user message, recording the own session_meta, later
    session_meta lines and every problem met. True when the listers read on from there to the
    message's event form (check_lines_to_user_event). The readers differ in how they read lines
    and decode JSON, which is what the fast/deep equality tests hold to each other."""
    line_no = 0
    problems = info.problems
    while True:
        raw, oversized = next_line()
        if not raw and not oversized:
            info.scanned_to_end = True
            break
        line_no += 1
        if oversized:
            problems.append("oversized_line")
            continue
        record = parse_rollout_line(raw, line_no, problems, decode)
        if record is None:
            continue
        if line_no == 1:
            _take_first_line(info, record)
        elif record.get("type") == "session_meta":
            info.meta_lines += 1
        found = user_text_of(record)
        if found:
            info.evidence_kind, text = found
            info.evidence_line = line_no
            info.evidence_text = short(text, 200)
            return not any(marker in raw for marker in USER_EVENT_MARKERS)
    return False


def check_lines_to_user_event(info: RolloutInfo, fd: int, offset: int,
                              window: Optional[bytes] = None) -> None:
    """The whole lines after the first user message, up to its event form, within the window
    (read here unless the caller's buffer holds it): a line that is not UTF-8 among them is
    recorded as the listers would meet it."""
    if window is None:
        try:
            window = os.pread(fd, EVENT_LOOKAHEAD_BYTES, offset)
        except OSError:
            return
    info.bytes_read += len(window)
    # Line by line from the start, not split whole: the event form is nearly always the next
    # line, and splitting the whole window cost ~15 us a rollout. A last piece with no line
    # ending may be cut by the window: it is not judged.
    start = 0
    while True:
        end = window.find(b"\n", start)
        if end < 0:
            return
        raw = window[start:end]
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            info.problems.append("invalid_utf8")
            return
        if any(marker in raw for marker in USER_EVENT_MARKERS):
            return
        start = end + 1


def check_tail(handle: Any, info: RolloutInfo) -> None:
    """A torn last line (a crash mid-append) or NUL padding (a sync tool pre-allocating)
    sits at the very end, past the head scan; reading the last 4 KB finds it in O(1)."""
    start = max(info.bytes_read, info.size - TAIL_BYTES)
    handle.seek(start)
    tail = handle.read()
    info.bytes_read += len(tail)
    _tail_problems(tail, info)


def _tail_problems(tail: bytes, info: RolloutInfo) -> None:
    if b"\x00" in tail:
        info.problems.append("nul_bytes")
    if tail and not tail.endswith(b"\n"):
        info.problems.append("torn_line")


META_KEYS = ("id", "cwd", "originator", "cli_version", "source", "thread_source",
             "model_provider", "history_mode", "forked_from_id")
# Each rollout's own value (its id); the others (a folder, a release, a provider, a source, and
# the parent of a fork, which most rollouts lack) are the same for thousands of rollouts, and are
# kept as one tuple they all share. (When it began is read again where a row is built.)
_META_OWN = ("id",)
_META_SHARED = tuple(k for k in META_KEYS if k not in _META_OWN)
_META_AT = dict([(k, (n, None)) for n, k in enumerate(_META_OWN)]
                + [(k, (len(_META_OWN), n)) for n, k in enumerate(_META_SHARED)])
_PROVIDER_POSITION = _META_SHARED.index("model_provider")
_SOURCE_POSITION = _META_SHARED.index("source")
_shared_meta_values: Dict[Tuple[Any, ...], Tuple[Any, ...]] = {}


class Meta(tuple):
    """The session_meta fields the tool reads (one per rollout, kept for the whole run): a tuple
    of the rollout's own values and the shared tuple of the rest. Reads like the dict it
    replaces."""

    __slots__ = ()

    def __new__(cls, payload: Dict[str, Any]) -> "Meta":
        shared = [payload.get(key) for key in _META_SHARED]
        if shared[_SOURCE_POSITION] is not None:
            # Kept in its canonical stored form (what RolloutInfo.source returns), not as the
            # decoded JSON value: a subagent's source is an object per rollout otherwise.
            shared[_SOURCE_POSITION] = decode_source(shared[_SOURCE_POSITION])
        if isinstance(shared[_PROVIDER_POSITION], (int, float, list, dict)):
            shared[_PROVIDER_POSITION] = None  # wrong_shape: reported, never used as a provider
        own = [payload.get(key) for key in _META_OWN]
        if type(own[0]) is str:
            own[0] = shared_str(own[0])
        return tuple.__new__(cls, own + [_shared_meta_tuple(shared)])

    def get(self, key: str, default: Any = None) -> Any:
        at = _META_AT.get(key)
        if at is None:
            return default
        value = tuple.__getitem__(self, at[0])
        return value if at[1] is None else value[at[1]]

    def __getitem__(self, key: str) -> Any:  # type: ignore[override]
        at = _META_AT[key]
        value = tuple.__getitem__(self, at[0])
        return value if at[1] is None else value[at[1]]

    def __contains__(self, key: object) -> bool:
        return key in _META_AT

    def keys(self) -> List[str]:  # type: ignore[override]
        return list(META_KEYS)

    def items(self) -> List[Tuple[str, Any]]:
        return [(key, self[key]) for key in META_KEYS]


def _shared_meta_tuple(values: List[Any]) -> Tuple[Any, ...]:
    """One tuple for every rollout with these values. Shared only when each is a str or None:
    other JSON values may be equal without being alike (1 == True == 1.0) or unhashable."""
    shared = tuple(shared_str(v) if type(v) is str else v for v in values)
    if not all(v is None or type(v) is str for v in shared):
        return shared
    return _shared_meta_values.setdefault(shared, shared)


def _take_first_line(info: RolloutInfo, record: Dict[str, Any]) -> None:
    payload = record.get("payload")
    if record.get("type") == "session_meta" and isinstance(payload, dict):
        info.meta = Meta(payload)
        info.meta_lines = 1
        if isinstance(payload.get("model_provider"), (int, float, list, dict)):
            info.problems.append("wrong_shape")
        meta_id = payload.get("id")
        if isinstance(meta_id, str) and info.name_uuid and meta_id.lower() != info.name_uuid:
            info.problems.append("id_mismatch")
    elif "type" not in record and "id" in record and "timestamp" in record:
        info.problems.append("legacy_format")  # pre-Sept-2025 rollouts have no envelope
    else:
        info.problems.append("first_line_not_session_meta")


# ---------------------------------------------------------------------------------------------
# Other state: session_index.jsonl, Desktop's .codex-global-state.json, history projections.
# ---------------------------------------------------------------------------------------------


UTF8_BOM = b"\xef\xbb\xbf"


def read_session_index(home: Path) -> Dict[str, Any]:
    path = home / "session_index.jsonl"
    result: Dict[str, Any] = {"present": path.is_file(), "entries": 0, "bad_lines": 0, "names": {}}
    if not result["present"]:
        return result
    latest: Dict[str, Dict[str, Any]] = {}
    try:
        handle = open_regular(path)
    except OSError as exc:
        # Unreadable is not empty: nothing may be rebuilt from what could not be read.
        result["error"] = exc.strerror or str(exc)
        return result
    with handle:
        for entry in iter_index_lines(handle):
            if entry is None:
                result["bad_lines"] += 1
                continue
            result["entries"] += 1
            keep_naming_entry(latest, entry)
    result["names"] = {thread_id: index_entry_name(entry) for thread_id, entry in latest.items()}
    return result


def iter_index_lines(handle: Any) -> Iterator[Optional[Dict[str, Any]]]:
    """Each non-blank line of an open session_index.jsonl: its entry (a JSON object with a
    string `id`), or None for a line that is not one (too long, not UTF-8 JSON, no id)."""
    first = True
    while True:
        raw, oversized = read_line_bounded(handle)
        if not raw and not oversized:
            return
        if first and raw.startswith(UTF8_BOM):
            raw = raw[len(UTF8_BOM):]  # an editor's byte-order mark: the line is still an entry
        first = False
        if oversized:
            yield None
            continue
        if not raw.strip():
            continue
        try:
            entry = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            yield None
            continue
        yield entry if isinstance(entry, dict) and isinstance(entry.get("id"), str) else None


def index_entry_name(entry: Dict[str, Any]) -> str:
    name = entry.get("thread_name")
    return name if isinstance(name, str) and name.strip() else ""


def keep_naming_entry(latest: Dict[str, Dict[str, Any]], entry: Dict[str, Any]) -> None:
    """Keep, per thread id, the entry that names it: the last non-empty name wins; a thread
    that never has one keeps its first entry."""
    thread_id = entry["id"].lower()
    if index_entry_name(entry) or thread_id not in latest:
        latest[thread_id] = entry


SIDEBAR_KEYS = (
    "sidebar-workspace-filter-v2", "sidebar-collapsed-groups", "sidebar-collapsed-sections-v1",
    "sidebar-organize-mode-v1",
    "electron-sidebar-mode-v1", "thread-sort-key", "sidebar-keep-projects-in-recent-v1",
)
WORKSPACE_KEYS = (
    "electron-saved-workspace-roots", "active-workspace-roots", "thread-workspace-root-hints",
    "projectless-thread-ids", "pinned-thread-ids",
)


GLOBAL_STATE_FILE = ".codex-global-state.json"


def load_global_state(home: Path, **json_options: Any) -> Optional[Tuple[bytes, Any]]:
    """The one reader of Desktop's .codex-global-state.json: its bytes and their JSON value (read
    bounded; json_options go to json.loads), or None when there is no such file. Raises OSError
    when it cannot be read, ValueError when it is not UTF-8 JSON."""
    path = home / GLOBAL_STATE_FILE
    if not path.is_file():
        return None
    raw = read_small_file(path, MAX_STATE_BYTES)
    return raw, json.loads(raw.decode("utf-8"), **json_options)


def read_global_state(home: Path) -> Dict[str, Any]:
    result: Dict[str, Any] = {"present": True, "error": None, "sidebar": {}, "workspace": {}}
    try:
        found = load_global_state(home)
    except (OSError, ValueError) as exc:
        result["error"] = short(str(exc), 120)
        return result
    if found is None:
        result["present"] = False
        return result
    data = found[1]
    if not isinstance(data, dict):
        result["error"] = "not a JSON object"
        return result
    atoms = data.get("electron-persisted-atom-state")
    atoms = atoms if isinstance(atoms, dict) else {}
    for key in SIDEBAR_KEYS:
        if key in atoms:
            result["sidebar"][key] = _summarise_value(atoms[key])
    result["sidebar_reset"] = sorted(sidebar_changes(atoms))
    for key in WORKSPACE_KEYS:
        if key in data:
            result["workspace"][key] = _summarise_value(data[key])
    return result


def _summarise_value(value: Any) -> Any:
    """Keys and counts, never paths or text: the summary may be pasted into an issue."""
    if isinstance(value, (list, dict)):
        return {"count": len(value)}
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    return short(str(value), 40)


def read_projected_ids(path: Path) -> Optional["IdSet"]:
    try:
        with readonly_db(path) as conn:
            if not table_exists(conn, "thread_history_projection_state"):
                return None
            rows = conn.execute("SELECT thread_id FROM thread_history_projection_state")
            return IdSet(shared_str(str(r[0]).lower()) for r in rows)
    except sqlite3.Error:
        return None


class IdSet:
    """A set of thread ids read once and only asked about: a sorted tuple searched by bisection,
    8 bytes an id where a set's table is ~40."""

    __slots__ = ("_ids",)

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self._ids = tuple(sorted(set(ids)))

    def __contains__(self, thread_id: object) -> bool:
        at = bisect.bisect_left(self._ids, thread_id)
        return at < len(self._ids) and self._ids[at] == thread_id

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def __or__(self, other: Iterable[str]) -> "IdSet":
        return IdSet(list(self._ids) + list(other))


def history_projection_files(home: Path, sqlite_folder: Optional[Path] = None) -> List[str]:
    folders = [home] + ([sqlite_folder] if sqlite_folder and sqlite_folder != home else [])
    return sorted(display_path(p, home) for f in folders
                  for p in f.glob("thread_history_*.sqlite") if p.is_file())


# ---------------------------------------------------------------------------------------------
# The inventory: everything read from one home, joined by thread id. Built once per command.
# ---------------------------------------------------------------------------------------------


def parse_version(text: Any) -> Tuple[int, ...]:
    match = re.match(r"^(\d+)\.(\d+)\.(\d+)", text or "") if isinstance(text, str) else None
    return tuple(int(g) for g in match.groups()) if match else ()


NO_REASONS: Tuple[Any, ...] = ()  # shared by every thread nothing hides or flags


class ThreadView:
    """One thread as every layer sees it: its DB row (if any) and its rollout file(s)."""

    __slots__ = ("id", "row", "_more_files", "primary", "index_name", "reasons", "rank")

    def __init__(self, thread_id: str, row: Optional[Dict[str, Any]],
                 files: List[RolloutInfo]) -> None:
        self.id = thread_id
        self.row = row
        # Nearly every thread has one file, its primary: only a thread with more keeps a tuple.
        self._more_files = tuple(files) if len(files) > 1 else None
        self.primary = files[0] if files else None
        self.primary = self._primary_file()
        self.index_name: Optional[str] = None
        # A list while its checks run, a tuple (often shared: settled_reasons) once they end.
        self.reasons: Sequence[Any] = NO_REASONS
        self.rank: Optional[int] = None

    @property
    def files(self) -> Tuple[RolloutInfo, ...]:
        """The thread's rollouts (the primary first only when it is the first found)."""
        if self._more_files is not None:
            return self._more_files
        return () if self.primary is None else (self.primary,)

    def _primary_file(self) -> Optional[RolloutInfo]:
        if not self.files:
            return None
        if self.row and self.row.get("rollout_path"):
            stored = str(self.row["rollout_path"])
            for info in self.files:
                if same_rollout(stored, info):
                    return info
        return self.files[0]

    def row_rollout_exists(self) -> bool:
        """The row's rollout_path names an existing file (in any spelling Codex may have used),
        or one that cannot be checked: only "no such file" proves a conversation gone."""
        return self.row_rollout_state() != "missing"

    def row_rollout_state(self) -> str:
        """"exists", "missing" (ENOENT: proven gone) or "unreadable" (a permission or I/O error)."""
        stored = str((self.row or {}).get("rollout_path") or "")
        if not stored:
            return "missing"
        if any(same_rollout(stored, f) for f in self.files):
            return "exists"
        try:
            found = os.stat(stored)
        except (FileNotFoundError, NotADirectoryError):
            return "missing"
        except (OSError, ValueError):
            return "unreadable" if not is_windows_path(stored) or os.name == "nt" else "missing"
        import stat as _stat
        return "exists" if _stat.S_ISREG(found.st_mode) else "missing"

    @property
    def db_provider(self) -> Optional[str]:
        return (self.row or {}).get("model_provider")

    @property
    def rollout_provider(self) -> Optional[str]:
        return self.primary.provider if self.primary else None

    @property
    def source(self) -> str:
        if self.primary and self.primary.meta:
            return self.primary.source or "vscode"
        return decode_source((self.row or {}).get("source"))

    @property
    def archived(self) -> bool:
        if self.primary is not None:
            return self.primary.archived_location
        return bool((self.row or {}).get("archived"))

    @property
    def has_evidence(self) -> bool:
        if self.primary is not None and self.primary.has_evidence:
            return True
        row = self.row or {}
        return bool(row.get("has_first_user_message") or row.get("has_preview"))

    @property
    def updated_ms(self) -> Optional[int]:
        if self.row is not None and self.row.updated_ms:
            return self.row.updated_ms
        return int(self.primary.mtime * 1000) if self.primary and self.primary.mtime else None

    @property
    def hidden(self) -> bool:
        return any(r.hides for r in self.reasons)


class _Progress:
    """Progress on stderr, only on a terminal, only without --json, only once a scan has run
    for a second: anxious users of big homes see it move; pipes and agents see nothing."""

    enabled = False

    def __call__(self, items: Iterable[Any], label: str) -> Iterator[Any]:
        import time
        start = last = time.monotonic()
        count = 0
        for item in items:
            count += 1
            now = time.monotonic()
            if self.enabled and now - start > 1.0 and now - last > 0.25:
                sys.stderr.write("\r%s: %d" % (label, count))
                sys.stderr.flush()
                last = now
            yield item
        if self.enabled and last != start:
            sys.stderr.write("\r%s: %d, done\n" % (label, count))


progress = _Progress()


class ThreadRows(collections.abc.Mapping):
    """The threads rows by lowercased id, read through the threads' views (each holds its own
    row), as read_thread_rows returned them."""

    def __init__(self, threads: Dict[str, ThreadView], count: int) -> None:
        self._threads, self._count = threads, count

    def __getitem__(self, thread_id: str) -> Any:
        view = self._threads[thread_id]
        if view.row is None:
            raise KeyError(thread_id)
        return view.row

    def __iter__(self) -> Iterator[str]:
        return (thread_id for thread_id, view in self._threads.items() if view.row is not None)

    def __len__(self) -> int:
        return self._count


class Inventory:
    def __init__(self, home: Path, home_origin: str, config: Config, environ: Dict[str, str],
                 deep: bool = False, keep_text: bool = True) -> None:
        self.home = home
        self.home_origin = home_origin
        self.config = config
        self.dbs = find_state_dbs(home, config, environ)
        for db in self.dbs:
            probe_state_db(db)
        self.live_db, self.live_reason = pick_live_db(self.dbs)
        self.rows: Dict[str, Dict[str, Any]] = {}
        self.db_error: Optional[str] = None
        self.backfill: Optional[Dict[str, Any]] = None
        if self.live_db is not None and self.live_db.error is None:
            try:
                self.rows = read_thread_rows(self.live_db)
            except sqlite3.Error as exc:
                self.db_error = str(exc)
            self.backfill = read_backfill_state(self.live_db)
        elif self.live_db is not None:
            self.db_error = self.live_db.error
        self.temp_files: List[Path] = [home / n
                                       for n in sorted(os.listdir(str(home))) if TEMP_MARKER in n]
        self.unreadable_folders: List[str] = []
        # rollout -> the symbolic link it is, or is reached through (Codex's file listing skips
        # them)
        self.linked_rollouts: Dict[str, str] = {}
        self.dangling_links: set = set()  # linked rollouts whose target does not exist
        # A rollout's path string is the one its row already holds, when they are spelled alike.
        paths = {p: p for p in (r.get("rollout_path") for r in self.rows.values())
                 if isinstance(p, str)}
        projection = read_projection_offsets(history_db_path(self))
        entries = iter_rollout_entries(home, self.temp_files, self.unreadable_folders,
                                       links=self.linked_rollouts)
        self.rollouts = [scan_rollout(paths.get(path, path), home, deep, is_file, keep_text,
                                      projection)
                         for path, is_file in progress(entries, "reading rollouts")]
        del paths, projection
        _shared_meta_values.clear()  # the rollouts hold what they share; the table is done
        self.dangling_links = {p for p in self.linked_rollouts if not os.path.exists(p)}
        self.index = read_session_index(home)
        self.global_state = read_global_state(home)
        self.projections = history_projection_files(home, self.live_db.path.parent if self.live_db
                                                    else None)
        self.threads = self._join()
        self.written_release = self._newest_release()
        # Every row is its thread's view's now: a second dict of them is ~40 bytes a thread.
        self.rows = ThreadRows(self.threads, len(self.rows))
        self.reader = reader_release(self.written_release, environ)
        # Every release-dependent verdict follows the release that reads the home next.
        self.release = self.reader["version"]
        self.config.resolve(self.reader["version"], self.config.surface)
        self.scope: Dict[str, Any] = {"sources": ["cli", "vscode"], "include_archived": False,
                                      "include_empty": False}
        self.projected_ids, self.other_projected_ids = self._projected_ids()
        self.misaligned_offsets = misaligned_projection_offsets(self)
        # Which of the threads' project folders exist on this machine is a fact read from the
        # disk, like the files: gathered here, so the checks only read the inventory.
        self.folder_moves = detect_folder_moves(self)
        forget_shared_strings()

    def _projected_ids(self) -> Tuple[Optional[IdSet], IdSet]:
        """Threads that have rows in the history projection Codex uses (beside the live DB),
        and in any other projection of the home (a sqlite_home that moved)."""
        live_path = history_db_path(self)
        other = IdSet()
        for candidate in sorted(self.home.glob("thread_history_*.sqlite")):
            if candidate != live_path:
                other |= read_projected_ids(candidate) or ()
        return (read_projected_ids(live_path) if live_path else None), other

    def _join(self) -> Dict[str, ThreadView]:
        """A view per thread id, in id order: the rows' ids and the rollouts, each sorted by
        thread id, walked side by side (a dict of the rollouts by id would be ~5 MB more at
        100,000 threads, at the moment the inventory is largest)."""
        files = sorted((i for i in self.rollouts if i.thread_id), key=lambda i: i.thread_id)
        row_ids = sorted(self.rows)
        names = self.index["names"]
        threads = {}
        at_row = at_file = 0
        while at_row < len(row_ids) or at_file < len(files):
            if at_row < len(row_ids) and (at_file == len(files)
                                          or row_ids[at_row] <= files[at_file].thread_id):
                thread_id = row_ids[at_row]
                at_row += 1
            else:
                thread_id = files[at_file].thread_id
            first = at_file
            while at_file < len(files) and files[at_file].thread_id == thread_id:
                at_file += 1
            view = ThreadView(thread_id, self.rows.get(thread_id),
                              self._shown_files(files[first:at_file]))
            view.index_name = names.get(thread_id)
            threads[thread_id] = view
        return threads

    def _shown_files(self, infos: List[RolloutInfo]) -> List[RolloutInfo]:
        """A thread's rollouts, in the order they were found. Codex's file listing skips links:
        where a thread also has a rollout that is no link, a link to it (or to a copy of it) is
        not a second copy Codex could show."""
        if len(infos) < 2:
            return infos
        real = [i for i in infos if i.file not in self.linked_rollouts]
        return real if real and len(real) < len(infos) else infos

    def _newest_release(self) -> Tuple[int, ...]:
        # Each release once (a handful of strings), not a tuple per row and per rollout.
        texts = [r.get("cli_version") for r in self.rows.values()]
        texts += [i.meta.get("cli_version") for i in self.rollouts]
        # Only a string names a release (JSON may hold a list there, which is not hashable).
        versions = [parse_version(t) for t in {t for t in texts if isinstance(t, str)}]
        return max((v for v in versions if v), default=())

    @property
    def has_db(self) -> bool:
        return self.live_db is not None and self.db_error is None

    def gate_column(self) -> Optional[str]:
        """The column whose emptiness hides a thread from DB listings, by schema."""
        if not self.has_db:
            return None
        columns = self.live_db.columns
        for column in ("preview", "first_user_message", "has_user_event"):
            if column in columns:
                return column
        return None

    def gate_blank(self, row: Dict[str, Any]) -> bool:
        """Whether `row` leaves the gate column blank (or there is none). Text columns are read
        as has_<column> (never the text); has_user_event is a flag itself."""
        gate = self.gate_column()
        return not gate or not row.get(gate if gate == "has_user_event" else "has_" + gate)


def build_inventory(args: argparse.Namespace,
                    environ: Optional[Dict[str, str]] = None) -> Inventory:
    environ = dict(os.environ if environ is None else environ)
    home, origin = resolve_codex_home(getattr(args, "codex_home", None), environ)
    config = load_config(home, getattr(args, "profile", None),
                         surface=getattr(args, "surface", None))
    inv = Inventory(home, origin, config, environ, deep=bool(getattr(args, "deep", False)),
                    keep_text=bool(getattr(args, "verbose", False)))
    inv.scope = {"sources": scope_sources(args),
                 "include_archived": bool(getattr(args, "include_archived", False)),
                 "include_empty": bool(getattr(args, "include_empty", False))}
    return inv


def codex_on_path(environ: Dict[str, str]) -> Optional[Tuple[str, Tuple[int, ...]]]:
    """The `codex` a shell would run, and its release (`codex --version`), if there is one.
    Running it is read-only: `--version` opens no home."""
    found = shutil.which("codex", path=environ.get("PATH"))
    if not found:
        return None
    try:
        proc = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=10,
                              stdin=subprocess.DEVNULL,
                              env={"PATH": environ.get("PATH", ""), "NO_COLOR": "1"})
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"(\d+\.\d+\.\d+)", proc.stdout or "")
    return (found, parse_version(match.group(1))) if match else None


def reader_release(written: Tuple[int, ...], environ: Dict[str, str]) -> Dict[str, Any]:
    """Which Codex release reads this home next: the newest that wrote it (rollouts' and rows'
    cli_version), or the `codex` on PATH when that one is newer (it migrates the home when it
    starts; a release never goes back to an older schema)."""
    on_path = codex_on_path(environ)
    version, basis = written, "the newest release that wrote it, by cli_version"
    if on_path and on_path[1] and on_path[1] > written:
        version, basis = on_path[1], "the codex on PATH (%s)" % on_path[0]
    if not version:
        basis = "unknown: nothing in the home names a release and no codex is on PATH"
    return {"version": version, "basis": basis, "written_by": ".".join(map(str, written)) or None,
            "on_path": None if not on_path
            else {"path": on_path[0], "version": ".".join(map(str, on_path[1])) or None}}


def detect_folder_moves(inv: Inventory) -> Dict[str, Dict[str, Any]]:
    """Thread folders that do not exist on this machine while exactly one folder with the
    longest same tail does (`/Users/ana/src/shop` gone, `/home/ana/projects/shop` here), each with
    the remap-cwd options that move its threads. Looked for among the folders of this home's
    other threads and their parents, the user's home and the current folder: no disk-wide search."""
    cwds = sorted({thread_cwd(v) for v in inv.threads.values()} - {""})
    worktrees = str(inv.home / "worktrees")
    existing = [c for c in cwds if folder_key(c) and os.path.isdir(c)]
    missing = [c for c in cwds
               if folder_key(c) and c not in existing and not c.startswith(worktrees)]
    if not missing:
        return {}
    bases = set()
    try:
        here = [os.getcwd()]
    except OSError:
        here = []
    for folder in existing + [str(Path.home())] + here:
        path = Path(folder)
        bases.update(str(p) for p in [path] + list(path.parents) if str(p) != path.anchor)
    children: Dict[str, set] = {}

    def has_child(base: str, name: str) -> bool:
        # One listing per folder, however many threads ask: a set lookup, not a stat each.
        if base not in children:
            try:
                children[base] = set(os.listdir(base))
            except OSError:
                children[base] = set()
        return name in children[base]

    moves: Dict[str, Dict[str, Any]] = {}
    for cwd in missing:
        parts = folder_key(cwd)[1]
        tails: Dict[str, int] = {}
        candidates = set(existing)
        for base in bases:
            candidates.update(os.path.join(base, *parts[-k:])
                              for k in range(1, min(3, len(parts)) + 1)
                              if has_child(base, parts[-k]))
        for candidate in candidates:
            tail = common_tail(parts, (folder_key(candidate) or ("", [], False))[1])
            if tail and os.path.isdir(candidate):
                real = os.path.realpath(candidate)
                tails[real] = max(tails.get(real, 0), tail)
        if not tails:
            continue
        best = max(tails.values())
        winners = sorted(c for c, t in tails.items() if t == best)
        if len(winners) == 1:
            moves[cwd] = {"cwd": cwd, "found": winners[0],
                          "remap": "--from %s --to %s"
                          % (_shell_quote(cwd), _shell_quote(winners[0]))}
        else:
            moves[cwd] = {"cwd": cwd, "candidates": winners[:5],
                          "remap": "--from %s --to NEW_FOLDER (one of the candidates)"
                          % _shell_quote(cwd)}
    return moves


# ---------------------------------------------------------------------------------------------
# Checks: pure functions from the inventory to reasons and findings, each with a stable code.
# ---------------------------------------------------------------------------------------------

# code -> (default severity, one-line meaning). The meaning is the finding's message;
# tests/reason_docs.py writes both, word for word, into references/reason-codes.md and SKILL.md.
REASONS: Dict[str, Tuple[str, str]] = {
    "provider_mismatch": ("warning", "recorded under a provider other than the active one"),
    "user_event_missing": ("warning",
                           "the DB row's preview/first message is blank although the rollout has a "
                           "user message (hides it from every list in 0.120-era Codex; newer Codex "
                           "still leaves it out of DB-only listings and shows no preview)"),
    "rollout_missing": ("info", "the DB row points at a rollout file that does not exist: the "
                                "conversation was deleted, nothing is left to recover (reindex "
                                "--prune-missing removes the row)"),
    "rollout_inaccessible": ("warning",
                             "the DB row's rollout cannot be checked (a permission or I/O error): "
                             "unreadable is not missing, so the row is never pruned"),
    "rollout_path_stale": ("warning",
                           "the DB row's rollout_path is wrong; the file exists elsewhere in the "
                           "home"),
    "no_db_row": ("warning", "the rollout has no row in the state DB"),
    "rollout_not_indexable": ("info", "a file named like a rollout that is no conversation Codex "
                                      "can read: no readable session_meta (not JSON, a FIFO, a "
                                      "device, a dangling link), or a link out of the home to such "
                                      "a file; nothing to recover"),
    "archive_flag_mismatch": ("warning",
                              "the DB archived flag disagrees with where the file lives"),
    "rollout_is_link": ("warning",
                        "the rollout is a symbolic link, or lies in a linked folder under "
                        "sessions/: Codex's file listing skips links, so the thread is left out of "
                        "the default list (0.130.0 and newer; 0.120.0 lists it once it has a DB "
                        "row) although it opens by id"),
    "source_filtered": ("info", "non-interactive source (exec, mcp, subagent…): hidden from "
                                "default lists by design"),
    "archived": ("info", "archived: shown only in the Archived view"),
    "no_user_content": ("info", "no user message anywhere: Codex lists only threads with one"),
    "attachment_only_prompt": ("warning",
                               "the first prompt was only an attachment (a large paste): Codex "
                               "derives an empty preview"),
    "head_line_not_utf8": ("info", "a line before the first user message is not UTF-8: Codex's "
                                   "file listing cannot read the head, so 0.130.0 and newer leave "
                                   "the thread out of the default list (0.120.0 lists it from its "
                                   "DB row; it opens by id on 0.169.0 and newer); its bytes are "
                                   "the conversation's, and no repair edits them"),
    "user_message_beyond_scan": ("info", "the first user message lies past the head lines Codex's "
                                         "file listing reads (10 + 200)"),
    "beyond_recent_window": ("info", "listed, but past the ~50 most recent threads Desktop's "
                                     "sidebar loads; scroll, search or pin it"),
    "history_projection_missing": ("warning",
                                   "a paginated thread has no rows in the history projection "
                                   "beside the live DB: it is listed, but opens with no turns "
                                   "until Codex rebuilds them (0.169.0+: a rollout copied in from "
                                   "another machine, or a sqlite_home that moved)"),
    "cwd_unmatchable": ("info", "the stored cwd cannot match a project folder (\\\\?\\ prefix, "
                                "trailing separator, /mnt/C, removed worktree); use `codex resume "
                                "--all`"),
    "cwd_moved": ("warning",
                  "the thread's project folder does not exist here, but a folder with the same "
                  "name does: the project moved, and Codex lists the thread only under the old "
                  "path (`codex resume --last` run in the new folder does not find it)"),
}

HOME_FINDINGS: Dict[str, Tuple[str, str]] = {
    "multiple_state_dbs": ("warning", "more than one state DB exists; only one is live"),
    "state_db_unreadable": ("error", "the live state DB cannot be read"),
    "backfill_incomplete": ("warning",
                            "the state DB backfill is not complete; Codex may ignore the DB"),
    "state_db_corrupt": ("error", "the live state DB fails SQLite's integrity check"),
    "schema_newer": ("warning",
                     "the state DB was migrated by a Codex newer than any release this tool was "
                     "checked against; repairs write where what they touch kept its shape (an "
                     "older Codex on this home fails)"),
    "migration_checksum_drift": ("error", "migration checksums differ from the released ones "
                                          "(Windows CRLF vs LF builds): Codex refuses the DB"),
    "config_unparsable": ("error", "config.toml cannot be parsed; Codex will not start with it"),
    "config_unreadable": ("error", "config.toml cannot be read"),
    "legacy_profile": ("warning",
                       "top-level `profile =` is rejected by recent Codex releases (0.169.0)"),
    "surfaces_disagree": ("warning",
                          "the `codex` command line (with --profile) and Desktop/the IDE (the "
                          "app-server, which takes no --profile) list different providers: moving "
                          "threads to one hides them from the other"),
    "profile_missing": ("error", "the named profile exists neither as NAME.config.toml nor as "
                                 "[profiles.NAME]"),
    "active_provider_not_configured": ("error", "the provider config.toml makes active is defined "
                                                "nowhere; Codex lists nothing and cannot start a "
                                                "thread"),
    "provider_not_configured": ("warning",
                                "threads use a provider that config.toml does not define; resuming "
                                "them fails"),
    "rollout_unreadable": ("warning", "rollout files with unreadable lines or an unknown layout"),
    "index_stale": ("warning", "session_index.jsonl names threads whose rollout no longer exists"),
    "index_bad_lines": ("warning", "session_index.jsonl has lines that are not index entries"),
    "index_unreadable": ("warning",
                         "session_index.jsonl cannot be read (a permission or I/O error)"),
    "ui_state_unreadable": ("warning", ".codex-global-state.json is not a JSON object"),
    "sidebar_filtered": ("warning",
                         "Desktop's sidebar is narrowed (collapsed groups or sections, a workspace "
                         "filter, a non-recent sort)"),
    "index_missing_names": ("warning",
                            "threads named in the state DB have no session_index.jsonl entry; "
                            "`codex exec resume NAME` cannot find them"),
    "leftover_temp_files": ("info", "copies left by an interrupted run of this tool (the originals "
                                    "are intact)"),
    "partial_backups": ("info", "backup folders without a manifest, left by a run killed before it "
                                "wrote anything"),
    "duplicate_thread_id": ("warning", "one thread id is carried by more than one rollout file"),
    "sessions_folder_unreadable": ("warning",
                                   "folders under sessions/ or archived_sessions/ cannot be listed "
                                   "(permissions, I/O errors): their conversations are not seen"),
    "history_offsets_misaligned": ("error", "history projection offsets (thread_history_1.sqlite) "
                                            "do not fall on line starts of the rollout: Codex "
                                            "reads those turns from the wrong bytes"),
}

# What to do about a home-wide finding where no repair is the whole answer: code -> the step,
# its {fields} filled from the finding's evidence. check_home puts it in the evidence as
# `manual_step` (what diagnose shows); tests/reason_docs.py writes it into the docs.
HOME_FINDING_STEPS: Dict[str, str] = {
    "surfaces_disagree":
        "ask which app the user opens these conversations in, then run diagnose again with "
        "--surface cli (the `codex` command line with --profile {profile}) or --surface app "
        "(Codex Desktop or the IDE extension)",
    "state_db_unreadable":
        "rebuild-db moves the DB aside (kept in recovery-backups/); Codex rebuilds it from the "
        "rollouts at its next start",
    "schema_newer":
        "what the repairs touch changed shape, so their writes are refused unless --force: use a "
        "release of this tool checked against this Codex",
    "migration_checksum_drift":
        "use one Codex build (all Windows or all WSL/Linux) for this home, or run rebuild-db",
    "backfill_incomplete":
        "a backfill still within its 15-minute lease may be running: start Codex once and let it "
        "finish; a stale one (stale: true) is what rebuild-db is for",
    "active_provider_not_configured":
        "add [model_providers.{provider}] to config.toml: Codex cannot start a thread without it",
    "provider_not_configured":
        "add a [model_providers.{provider}] table to config.toml, or move the threads with "
        "repair-provider",
    "legacy_profile":
        'remove the line `profile = "{profile}"` from config.toml; to keep using the profile, '
        "move its [profiles.{profile}] table into {profile}.config.toml and start Codex with "
        "--profile {profile}",
    "index_unreadable":
        "fix the file's permissions (or the disk); rebuild-index leaves it alone until then",
    "partial_backups":
        "the next --apply of any repair removes them (they hold no change to the home)",
    "leftover_temp_files": "the next --apply of any repair removes them",
    "sessions_folder_unreadable":
        "fix the folders' permissions (or the disk); until then reindex --prune-missing prunes "
        "nothing",
    "history_offsets_misaligned":
        "run the repair-provider command again (an interrupted run leaves them): it realigns them "
        "from each line's ordinal",
}

# Severity means action: a finding is a warning only where something can be done about it (a
# repair that plans a change, or a precise manual step). REASONS and HOME_FINDINGS hold each
# code's default; this table is the one way a finding drops to info: code -> when. The check
# that finds it says so (severity_of); tests/reason_docs.py writes `when` into the docs.
SEVERITY_LOWERED: Dict[str, str] = {
    "provider_mismatch": "repair-provider, run with diagnose's scope, would not move the thread "
                         "(its `why_no_action` says why)",
    "rollout_is_link": "the link points at a file that is not on this machine",
    "attachment_only_prompt": "the release reading the home lists the thread anyway",
    "schema_newer": "what the repairs read and write kept the shape of the releases checked",
    "legacy_profile": "the release reading the home accepts a top-level `profile =`",
    "provider_not_configured": "only threads hidden by design (exec, archived, empty) use it",
    "rollout_unreadable": "every problem is one Codex reads past, a line that is not UTF-8 (named "
                          "per thread, head_line_not_utf8) or a file that holds nothing",
}


def severity_of(code: str, lowered: bool = False) -> str:
    """The code's default severity, or info where its check found nothing to act on; only a
    code SEVERITY_LOWERED declares may be lowered."""
    if not lowered:
        return (REASONS.get(code) or HOME_FINDINGS[code])[0]
    if code not in SEVERITY_LOWERED:
        raise KeyError("%s is lowered to info but not declared in SEVERITY_LOWERED" % code)
    return "info"


class Reason(tuple):
    """Why one thread is hidden or worth a look: a code, whether it hides the thread, and the
    evidence, and its severity with the check's why. Read like the dict it stands for
    (reason["code"]); one tuple (the fields, then the evidence's values) instead of a dict,
    since most threads carry a reason or two and a home has tens of thousands."""

    __slots__ = ()
    _key_tuples: Dict[Tuple[str, ...], Tuple[str, ...]] = {}  # one per call site, shared
    FIELDS = ("code", "hides", "evidence", "severity", "why")

    def __new__(cls, code: str, hides: bool, evidence: Dict[str, Any],
                why_no_action: Optional[str] = None) -> "Reason":
        keys = tuple(evidence)
        keys = cls._key_tuples.setdefault(keys, keys)
        # Whether there is something to do, and if not why: from the check (severity_of).
        severity = severity_of(code, why_no_action is not None)
        return tuple.__new__(cls, (code, hides, keys, severity, why_no_action)
                             + tuple(evidence.values()))

    code = property(lambda self: tuple.__getitem__(self, 0))
    hides = property(lambda self: tuple.__getitem__(self, 1))
    _keys = property(lambda self: tuple.__getitem__(self, 2))
    severity = property(lambda self: tuple.__getitem__(self, 3))
    why = property(lambda self: tuple.__getitem__(self, 4))
    _values = property(lambda self: tuple.__getitem__(self, slice(5, None)))

    @property
    def evidence(self) -> Dict[str, Any]:
        """A new dict on each read: evidence is a record of the check, not something to edit."""
        return dict(zip(self._keys, self._values))

    def evidence_of(self, view: "ThreadView") -> Dict[str, Any]:
        """The evidence as shown for `view`: each ThreadFact read from it."""
        return {key: value.read(view) if type(value) is ThreadFact else value
                for key, value in zip(self._keys, self._values)}

    @property
    def has_evidence(self) -> bool:
        return tuple.__len__(self) > 5  # the evidence's values follow the five fields

    def __getitem__(self, key: str) -> Any:
        if key not in self.FIELDS:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in self.FIELDS else default

    def as_dict(self) -> Dict[str, Any]:
        return {"code": self.code, "hides": self.hides, "evidence": self.evidence}

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Reason):
            other = other.as_dict()
        return self.as_dict() == other

    def __ne__(self, other: object) -> bool:  # a tuple's own would compare the tuples
        return not self == other

    __hash__ = None  # type: ignore[assignment]  # as a dict's: equal to one

    def __repr__(self) -> str:
        return "Reason(%r, %r, %r)" % (self.code, self.hides, self.evidence)


class ThreadFact:
    """An evidence value that is the thread's own (its rank; a step that names its id), read
    from the thread when the evidence is shown (Reason.evidence_of). The reason that holds it
    stays equal across threads, so one object serves them all: a reason of its own per thread
    is ~200 bytes, and at 100,000 threads most are past Desktop's recent window."""

    __slots__ = ("name", "read")

    def __init__(self, name: str, read: Callable[["ThreadView"], Any]) -> None:
        self.name, self.read = name, read

    def __repr__(self) -> str:
        return "<the thread's %s>" % self.name


THREAD_RANK = ThreadFact("rank", lambda view: view.rank)
# history_projection_missing's step (projection_manual_step), which names the thread's id.
PROJECTION_STEPS = {elsewhere: ThreadFact("manual step", lambda view, elsewhere=elsewhere:
                                          projection_manual_step(view.id, elsewhere))
                    for elsewhere in (False, True)}


# Most reasons repeat across threads (one source, one provider pair, one archive state): while
# the checks run, equal reasons are one object, and equal sets of them one tuple. The tables are
# bounded per code (a code whose evidence names the thread, like a rank or a file, stops being
# shared after that many variants) and dropped when the checks end.
SHARED_VARIANTS_PER_CODE = 64
_shared_reasons: Dict[Tuple[Any, ...], "Reason"] = {}
_shared_reason_tuples: Dict[Tuple[int, ...], Tuple["Reason", ...]] = {}
_variants_per_code: Dict[str, int] = {}
_shared_reason_ids: set = set()  # id() of each reason in _shared_reasons (alive while it is)


def add_reason(view: ThreadView, code: str, hides: bool, why_no_action: Optional[str] = None,
               **evidence: Any) -> None:
    """A reason on the thread; `why_no_action`, when the check finds nothing to act on, lowers
    it to info (SEVERITY_LOWERED)."""
    _append_reason(view, shared_reason(code, hides, evidence, why_no_action))


def _append_reason(view: ThreadView, reason: "Reason") -> None:
    if view.reasons is NO_REASONS:  # the shared empty tuple: the thread's first reason
        view.reasons = []
    view.reasons.append(reason)


def shared_reason(code: str, hides: bool, evidence: Dict[str, Any],
                  why_no_action: Optional[str]) -> "Reason":
    """Reason(...), or the equal one an earlier thread already holds."""
    key = reason_key(code, hides, why_no_action, tuple(evidence), tuple(evidence.values()))
    if key is None:
        return Reason(code, hides, evidence, why_no_action)
    found = _shared_reasons.get(key)
    if found is not None:
        return found
    reason = Reason(code, hides, evidence, why_no_action)
    variants = _variants_per_code.get(code, 0)
    if variants < SHARED_VARIANTS_PER_CODE:
        _variants_per_code[code] = variants + 1
        _shared_reasons[key] = reason
        _shared_reason_ids.add(id(reason))
    return reason


# Only values that are equal exactly when their JSON is equal (1 == True == 1.0, 0.0 == -0.0).
# A ThreadFact is equal only to itself.
_SHAREABLE_TYPES = frozenset((str, bool, int, type(None), ThreadFact))


def reason_key(code: str, hides: bool, why: Optional[str], keys: Tuple[str, ...],
               values: Tuple[Any, ...]) -> Optional[Tuple[Any, ...]]:
    """The key of a reason's table entry: its fields, its evidence and the type of each value;
    None when a value is of another type (a list, a dict, a float), which is not shared."""
    kinds = tuple(map(type, values))
    if not _SHAREABLE_TYPES.issuperset(kinds):
        return None
    return (code, type(hides), hides, why, keys, values, kinds)


def settled_reasons(reasons: Sequence["Reason"]) -> Tuple["Reason", ...]:
    """A thread's reasons once its checks are done: a tuple, shared with every thread that
    holds the same shared reasons (the tuple keeps them alive, so their ids stay theirs)."""
    if not reasons:
        return NO_REASONS
    key = tuple(map(id, reasons))
    found = _shared_reason_tuples.get(key)
    if found is not None:
        return found
    settled = tuple(reasons)
    if _shared_reason_ids.issuperset(key):
        _shared_reason_tuples[key] = settled
    return settled


def forget_shared_reasons() -> None:
    _shared_reasons.clear()
    _shared_reason_tuples.clear()
    _variants_per_code.clear()
    _shared_reason_ids.clear()


def user_event_gate_hides(release: Tuple[int, ...]) -> bool:
    # CODEX-COMPAT: measured with the real Codex: 0.120.0 hides a thread whose
    # first_user_message is blank; 0.130.0 and 0.169.0 re-derive it from the rollout when
    # listing, so a blank column there is stale metadata, not a hiding reason.
    return not release or release < (0, 130, 0)


def attachment_prompt_hides(release: Tuple[int, ...], gate_blank: bool) -> bool:
    # CODEX-COMPAT: measured: a thread whose first prompt is only an attachment wrapper is
    # hidden by 0.120.0 (until its first_user_message is filled: repair-user-events) and by
    # 0.169.0 (which re-derives the preview from the rollout, so no DB edit helps); 0.130.0
    # lists it anyway.
    if (0, 130, 0) <= release < (0, 131, 0):
        return False
    return gate_blank or preview_rederived(release)


def preview_rederived(release: Tuple[int, ...]) -> bool:
    # CODEX-COMPAT: measured: 0.169.0 derives the preview from the rollout when listing.
    return bool(release) and release >= (0, 131, 0)


def beyond_scan_hides(release: Tuple[int, ...]) -> bool:
    # CODEX-COMPAT: measured with --verify (a real rollout whose first user message was pushed
    # 230 lines down, its DB row intact): 0.130.0, 0.169.0 and 0.171.0 leave the thread out
    # of the default thread/list; 0.120.0 lists it.
    return not release or release >= (0, 130, 0)


def file_listing_skip_hides(release: Tuple[int, ...], has_row: bool) -> bool:
    """Whether a thread that Codex's file listing skips is left out of the default list.
    CODEX-COMPAT: measured (tests/test_real_codex_odd_files.py) for two such threads: a rollout
    that is a symbolic link or lies in a linked day or month folder (a linked sessions/ itself
    is followed), and a line that is not UTF-8 before the first user message (after it, the
    listing never reads that far). 0.130.0, 0.169.0 and 0.171.0 leave them out with or without a
    DB row; 0.120.0 lists them from their row; 0.100.0 keeps no rows and leaves them out. Every
    release from 0.169.0 opens them by id (0.130.0 cannot read the second kind at all)."""
    return not has_row or not release or release >= (0, 130, 0)


# The manual steps' commands use only POSIX cp/mv/rm options (macOS has no GNU cp): `cp -p`
# follows a linked source file, `cp -pRH` a linked source folder named on the command line,
# and `mv` replaces the link itself, never what it points to. Every thread of a linked folder
# carries the same step: once done, it does nothing (`test ! -L`).
LINKED_ROLLOUT_COMMAND = ("test ! -L {link} || "
                          "{{ cp -p {link} {link}.copy && mv {link}.copy {link}; }}")
LINKED_FOLDER_COMMAND = ("test ! -L {link} || "
                         "{{ cp -pRH {link} {link}.copy && rm {link} && mv {link}.copy {link}; }}")


def link_replacement_step(link: str, folder: bool) -> Tuple[str, str]:
    """(shell command, manual step) that replace a link by what it points to. The command is
    built first, with the path shell-quoted; the prose quotes it whole."""
    command = (LINKED_FOLDER_COMMAND if folder else LINKED_ROLLOUT_COMMAND).format(
        link=_shell_quote(os.path.abspath(link)))
    what = ("the linked folder by a copy of the folder it points to" if folder
            else "the link by the file it points to")
    return command, "replace %s, keeping the name (`%s`), then diagnose again" % (what, command)


def check_thread(view: ThreadView, inv: Inventory) -> None:
    active = inv.config.provider
    row = view.row
    # CODEX-COMPAT: the folder decides (measured on 0.120.0-0.169.0): a row archived in the DB
    # whose file is in sessions/ is listed, and Codex resets the flag.
    if view.archived:
        add_reason(view, "archived", True, db_archived=bool(row and row.get("archived")),
                   in_archived_sessions=bool(view.primary and view.primary.archived_location))
    if (row is not None and view.primary is not None
            and bool(row.get("archived")) != view.primary.archived_location):
        add_reason(view, "archive_flag_mismatch", False, db_archived=bool(row.get("archived")),
                   file=view.primary.rel)
    if not is_interactive(view.source):
        add_reason(view, "source_filtered", True, source=view.source)
    rollout_provider = view.rollout_provider or (DEFAULT_PROVIDER
                                                 if view.primary and view.primary.meta else None)
    providers = {p for p in (view.db_provider, rollout_provider) if p}
    if providers and providers != {active} and not inv.config.provider_unknown:
        add_reason(view, "provider_mismatch", True, why_no_action=provider_move_blocker(view, inv),
                   db=view.db_provider, rollout=view.rollout_provider, active=active)
    if not view.has_evidence and (view.primary is None or view.primary.scanned_to_end):
        add_reason(view, "no_user_content", True)
    gate = inv.gate_column()
    # An attachment-only first prompt on a release that derives previews from the rollout has a
    # blank preview by right: that is attachment_only_prompt's business, not a stale column.
    derived_blank = (view.primary is not None and view.primary.evidence_kind == "attachment"
                     and preview_rederived(inv.release))
    if (row is not None and gate and view.primary is not None and view.primary.has_evidence
            and not derived_blank):
        if inv.gate_blank(row):
            add_reason(view, "user_event_missing", user_event_gate_hides(inv.release), column=gate,
                       evidence_kind=view.primary.evidence_kind,
                       evidence_line=view.primary.evidence_line)
    if view.primary is not None and "invalid_utf8" in view.primary.problems and view.has_evidence:
        add_reason(view, "head_line_not_utf8",
                   file_listing_skip_hides(inv.release, row is not None),
                   file=view.primary.rel)
    if view.primary is not None and (view.primary.evidence_line or 0) > HEAD_SCAN_LINES:
        add_reason(view, "user_message_beyond_scan", beyond_scan_hides(inv.release),
                   line=view.primary.evidence_line,
                   window=HEAD_SCAN_LINES)
    if view.primary is not None and view.primary.evidence_kind == "attachment":
        hides = attachment_prompt_hides(inv.release, row is None or inv.gate_blank(row))
        add_reason(view, "attachment_only_prompt", hides,
                   why_no_action=None if hides else "this release lists it anyway")
    cwd_problem = cwd_spelling_problem(str((row or {}).get("cwd")
                                           or (view.primary.meta.get("cwd") if view.primary
                                               else "") or ""), inv.home)
    if cwd_problem:
        add_reason(view, "cwd_unmatchable", False, problem=cwd_problem)
    moved = inv.folder_moves.get(thread_cwd(view))
    if moved:
        add_reason(view, "cwd_moved", False, **moved)
    paginated = (row or {}).get("history_mode") == "paginated" or (
        view.primary is not None and view.primary.meta.get("history_mode") == "paginated")
    if (paginated and inv.projected_ids is not None and view.id not in inv.projected_ids
            and view.files):
        elsewhere = view.id in inv.other_projected_ids
        add_reason(view, "history_projection_missing", False, elsewhere=elsewhere,
                   manual_step=PROJECTION_STEPS[elsewhere])
    if row is not None:
        path = str(row.get("rollout_path") or "")
        state = view.row_rollout_state()
        exists = state == "exists"
        # A copied or moved home keeps rows that point into the old one: the file Codex would
        # read is not this home's.
        elsewhere = (exists and not is_windows_path(path)
                     and not inside_home(os.path.abspath(path), inv.home)
                     and not any(os.path.realpath(path) == os.path.realpath(f.file)
                                 for f in view.files))
        if (not exists or elsewhere) and view.files:
            # CODEX-COMPAT: measured with --verify on 0.120.0, 0.130.0, 0.169.0 and 0.171.0: a row
            # whose rollout_path names no file is still listed by default when the file is in
            # sessions/ (the listing's file scan finds it and repairs the row); in
            # archived_sessions/ it is hidden as archived. Stale metadata, not a hiding reason.
            add_reason(view, "rollout_path_stale", False, rollout_path=path,
                       found=view.files[0].rel,
                       outside_home=elsewhere)
        elif state == "unreadable":
            add_reason(view, "rollout_inaccessible", False, rollout_path=path)
        elif not exists:
            add_reason(view, "rollout_missing", True, rollout_path=path)
    elif inv.has_db and view.files:
        blocker = index_blocker(view.files[0], inv.home)
        if blocker == "links_outside_home" and view.files[0].meta:
            pass  # a real rollout linked in from outside: rollout_is_link below says what to do
        elif blocker:
            # Codex lists a file-only thread from its session_meta; without one it lists nothing,
            # and a link leading out of the home it does not list either (measured 0.120.0-0.171.0,
            # tests/test_real_codex_odd_files.py); reindex must not invent a row for any of them.
            add_reason(view, "rollout_not_indexable", True, file=view.files[0].rel,
                       why=blocker,
                       manual_step="nothing to repair automatically: move the file out of "
                                   "sessions/ if it is not a conversation, or put the real rollout "
                                   "in its place")
        else:
            add_reason(view, "no_db_row", False, file=view.files[0].rel)
    link = inv.linked_rollouts.get(view.primary.file) if view.primary is not None else None
    not_indexable = any(r.code == "rollout_not_indexable" for r in view.reasons)
    if link and view.primary.file in inv.dangling_links and not not_indexable:
        # Nothing of the conversation is on this disk: put the file back, or drop the link.
        add_reason(view, "rollout_is_link", True, why_no_action="the file the link points at is "
                   "not on this machine: nothing here to recover", file=view.primary.rel,
                   link=display_path(link, inv.home),
                   target_missing=True,
                   manual_step="the link points at %s, which does not exist here: put that "
                               "file back (from the synced folder or a backup), or remove the link"
                   % _shell_quote(
                       os.readlink(link) if os.path.islink(link) else link))
    elif link and not not_indexable and view.primary.file not in inv.dangling_links:
        # `command` is the step's shell line alone, which an agent runs as it is.
        command, step = link_replacement_step(link, folder=link != view.primary.file)
        add_reason(view, "rollout_is_link", file_listing_skip_hides(inv.release, row is not None),
                   file=view.primary.rel, link=display_path(link, inv.home), manual_step=step,
                   command=command)


def index_blocker(info: "RolloutInfo", home: Path) -> Optional[str]:
    """Why a rollout without a DB row cannot get one: a link that leads out of the home (its
    content is not this home's to index), or no session_meta read from it (not a regular file,
    not JSON, no session_meta first). Compressed and legacy rollouts keep their own codes."""
    if os.path.islink(info.file) and not inside_home(os.path.realpath(info.file), home):
        return "links_outside_home"
    if info.meta or set(info.problems) & {"compressed", "legacy_format"}:
        return None
    for code in ("not_a_file", "unreadable", "empty_file", "first_line_not_session_meta"):
        if code in info.problems:
            return code
    return "no_session_meta"


def thread_cwd(view: ThreadView) -> str:
    """The folder a thread belongs to: the row's (what listings filter on), else its rollout's."""
    return str((view.row or {}).get("cwd")
               or (view.primary.meta.get("cwd") if view.primary else "") or "")


def projection_manual_step(thread_id: str, elsewhere: bool) -> str:
    """What brings the turns of a paginated thread back, by why the projection lacks them."""
    if elsewhere:
        return ("point sqlite_home back at the folder whose thread_history_1.sqlite has this "
                "thread's rows (the home's own copy has them)")
    # CODEX-COMPAT: measured on 0.169.0 and 0.171.0: a rollout copied in from another machine
    # (or made before the history DB) is listed, but thread/read returns no turns until one
    # thread/resume rebuilds the projection from the rollout; the resume leaves the rollout
    # byte for byte as it was, and no message needs to be sent. No row this tool could write
    # does it: Codex builds the row itself when it lists, and a `legacy` history_mode on a
    # rollout that says `paginated` makes thread/read fail ("list_turns is not supported yet").
    # Rewriting the rollout's own history_mode to `legacy` does make 0.169.0 read them, but it
    # changes how Codex keeps that thread from then on; the resume changes nothing but the
    # projection, so it is the step named here. (Measured through the app-server, which
    # Desktop and the IDE run; the CLI's `codex resume` was not driven.)
    return ("resume the thread once in Codex 0.169.0 or newer (`codex resume %s`, or open it to "
            "continue it): Codex rebuilds its turns from the rollout; nothing needs to be sent, "
            "and the rollout is not changed"
            % thread_id)


def cwd_spelling_problem(cwd: str, home: Path) -> Optional[str]:
    """Why a project view cannot match this cwd to the folder the user opened, if it can't."""
    if not cwd:
        return None
    if cwd.startswith("\\\\?\\"):
        return "windows_verbatim_prefix"  # \\?\C:\… never equals a saved C:\… root
    if len(cwd) > 1 and cwd.endswith(("/", "\\")) and not re.match(r"^[A-Za-z]:\\$", cwd):
        return "trailing_separator"
    if re.match(r"^/mnt/[A-Z]/", cwd):
        return "wsl_drive_case"  # WSL stores /mnt/c lower-case
    worktrees = os.path.join(str(home), "worktrees") + os.sep
    if cwd.startswith(worktrees) and not os.path.isdir(cwd):
        return "worktree_gone"
    return None


def common_tail(left: List[str], right: List[str]) -> int:
    """How many trailing path components two folders share (case-insensitively: a moved
    Windows folder may come back with other capitals)."""
    count = 0
    shortest = min(len(left), len(right))
    while count < shortest and left[-1 - count].casefold() == right[-1 - count].casefold():
        count += 1
    return count


def rank_threads(inv: Inventory) -> None:
    """Each listable thread's place in the recent order Desktop loads (newest first)."""
    listable = [v for v in inv.threads.values() if not v.hidden]
    listable.sort(key=lambda v: -(v.updated_ms or 0))
    beyond = shared_reason("beyond_recent_window", False,
                           {"rank": THREAD_RANK, "window": RECENT_WINDOW}, None)
    for rank, view in enumerate(listable, 1):
        view.rank = rank
        if rank > RECENT_WINDOW:
            view.reasons = settled_reasons(tuple(view.reasons) + (beyond,))


BACKFILL_LEASE_SECONDS = 900  # CODEX-COMPAT: Codex's backfill lease


def backfill_stale(backfill: Dict[str, Any]) -> bool:
    updated = to_millis(backfill.get("updated_at"))
    age_ms = None if updated is None else utc_now().timestamp() * 1000 - updated
    return age_ms is None or age_ms > BACKFILL_LEASE_SECONDS * 1000


# Here, above check_home, which reports them; the plans read them after it.
# Damage confined to lines a repair does not edit: a torn last line (a crash mid-append), NUL
# padding, a line that is not JSON or not UTF-8, one too long to parse. A repair carries those
# bytes over verbatim and refuses only when the line it would edit is one of them.
# CODEX-COMPAT: 0.120.0, 0.130.0, 0.169.0 and 0.171.0 list, read and continue a thread whose
# last line is torn (0.169.0 and 0.171.0, on resume, end the fragment with a newline, then append).
CARRIED_PROBLEMS = ("torn_line", "nul_bytes", "bad_json", "invalid_utf8", "oversized_line")
# CODEX-COMPAT: of those, what 0.169.0 and 0.171.0 read past (the thread is listed, reads and
# continues; measured): a torn last line, NUL padding or a line of NULs, a line that is not
# JSON. A line that is not UTF-8 still reads and continues, but keeps the thread out of the
# default listing (measured; 0.130.0 and 0.120.0 cannot read such a thread at all); an
# oversized line was not measured.
READ_PAST_PROBLEMS = ("torn_line", "nul_bytes", "bad_json")


def carried_problems(info: "RolloutInfo") -> Tuple[str, ...]:
    """The rollout's damage a repair carries over verbatim (the shared empty tuple for most)."""
    # `or ()`: Python 3.9 makes a new empty tuple from an empty generator, not the shared one.
    return tuple(p for p in info.problems if p in CARRIED_PROBLEMS) or ()


def check_home(inv: Inventory) -> List[Dict[str, Any]]:
    findings: List[Dict[str, Any]] = []

    def add(code: str, lowered: bool = False, step: bool = True,
            fill: Optional[Dict[str, Any]] = None, **evidence: Any) -> None:
        """One finding; `step` False where the code's manual step does not apply (a note says
        why), `fill` the step's fields that are not evidence."""
        if step and code in HOME_FINDING_STEPS:
            evidence["manual_step"] = HOME_FINDING_STEPS[code].format(**evidence, **(fill or {}))
        findings.append({"code": code, "severity": severity_of(code, lowered),
                         "message": HOME_FINDINGS[code][1], "evidence": evidence})

    for problem in inv.config.problems:
        evidence = {k: v for k, v in problem.items() if k != "code"}
        accepted = problem["code"] == "legacy_profile" and legacy_profile_verdict(evidence, inv)
        add(problem["code"], accepted, step=not accepted, **evidence)
    if inv.config.surfaces_disagree and inv.config.surface is None:
        add("surfaces_disagree", fill={"profile": inv.config.requested[0]},
            cli=inv.config.surfaces["cli"], app=inv.config.surfaces["app"],
            release=".".join(map(str, inv.reader["version"])) or None)
    if len(inv.dbs) > 1:
        add("multiple_state_dbs",
            live=display_path(inv.live_db.path, inv.home) if inv.live_db else None,
            others=[display_path(d.path, inv.home) for d in inv.dbs if d is not inv.live_db])
    if inv.db_error:
        add("state_db_unreadable", path=display_path(inv.live_db.path, inv.home),
            error=short(inv.db_error, 160))
    live = inv.live_db
    if live is not None and live.error is None:
        if live.integrity not in (None, "ok"):
            add("state_db_corrupt", path=display_path(live.path, inv.home),
                quick_check=short(str(live.integrity), 160))
        if (live.schema_version or 0) > NEWEST_CHECKED_SCHEMA:
            compat = schema_compatibility(inv) or {"unchanged": False, "changed": [],
                                                   "unchecked_migrations": []}
            if compat["unchanged"]:
                # Nothing to do about it: information, not a warning.
                add("schema_newer", True, step=False, schema_version=live.schema_version,
                    known_max=NEWEST_CHECKED_SCHEMA, migrations=compat["unchecked_migrations"],
                    unchanged=True,
                    note="what the repairs read and write has the shape of the releases checked: "
                         "they write as usual; an older Codex cannot open this home, so run the "
                         "newest one everywhere it is used")
            else:
                add("schema_newer", schema_version=live.schema_version,
                    known_max=NEWEST_CHECKED_SCHEMA,
                    migrations=compat["unchecked_migrations"], unchanged=False,
                    changed=compat["changed"][:10])
        if live.checksum_drift:
            add("migration_checksum_drift", versions=live.checksum_drift[:10],
                count=len(live.checksum_drift),
                crlf=1 in live.checksum_drift)
    if inv.backfill and inv.backfill.get("status") not in (None, "complete"):
        add("backfill_incomplete", status=inv.backfill.get("status"),
            last_watermark=inv.backfill.get("last_watermark"), stale=backfill_stale(inv.backfill))
    if not inv.config.provider_unknown and not inv.config.knows_provider(inv.config.provider):
        add("active_provider_not_configured", provider=inv.config.provider)
    used: Dict[str, List[bool]] = {}
    for view in inv.threads.values():
        listed = in_scope(view, inv.scope["sources"], inv.scope["include_archived"],
                          inv.scope["include_empty"])
        for provider in {view.db_provider, view.rollout_provider}:
            if provider and not inv.config.knows_provider(provider):
                used.setdefault(provider, []).append(listed)
    for provider, listed in sorted(used.items()):
        # Only threads hidden by design (exec, archived, empty) carrying it: nothing to do.
        add("provider_not_configured", not any(listed), provider=provider, threads=len(listed),
            in_scope=sum(listed))
    damaged = [i for i in inv.rollouts if i.problems]
    if damaged:
        counts: Dict[str, int] = {}
        for info in damaged:
            for problem in info.problems:
                counts[problem] = counts.get(problem, 0) + 1
        carried_only = all(set(i.problems) <= set(CARRIED_PROBLEMS) for i in damaged)
        read_past = all(set(i.problems) <= set(READ_PAST_PROBLEMS) for i in damaged)
        # A line that is not UTF-8 is named per thread (head_line_not_utf8), where it hides one;
        # a FIFO, device or dangling link named like a rollout, or an empty file, holds nothing.
        nothing_to_do = all(set(i.problems) <= set(READ_PAST_PROBLEMS)
                            | {"invalid_utf8", "not_a_file", "empty_file"}
                            for i in damaged)
        if read_past:
            note = ("Codex skips these lines and still lists, reads and continues the thread; "
                    "repairs edit only the lines they name and copy these bytes as they are")
        elif carried_only:
            note = ("repairs copy these bytes as they are, but a line that is not UTF-8 before the "
                    "first user message keeps its thread out of Codex's default list "
                    "(head_line_not_utf8; it still opens by id on 0.169.0 and newer: `codex resume "
                    "ID`)")
        else:
            note = "repairs leave a rollout with these problems as it is"
        # Damage Codex reads past, or that no repair may touch, which repairs carry: information.
        add("rollout_unreadable", nothing_to_do, files=len(damaged), problems=counts,
            examples=[{"path": i.rel, "problems": i.problems} for i in damaged[:5]],
            kept_verbatim=carried_only, note=note)
    stale = index_stale_ids(inv)
    if stale:
        add("index_stale", entries=len(stale), thread_ids=stale)
    unnamed = index_missing_name_ids(inv)
    if unnamed:
        add("index_missing_names", thread_ids=unnamed)
    if inv.index["bad_lines"]:
        add("index_bad_lines", lines=inv.index["bad_lines"])
    if inv.index.get("error"):
        add("index_unreadable", error=inv.index["error"])
    if inv.global_state["error"]:
        add("ui_state_unreadable", error=inv.global_state["error"])
    if inv.global_state.get("sidebar_reset"):
        add("sidebar_filtered", keys=inv.global_state["sidebar_reset"])
    partial = ([b["name"] for b in list_backups(inv.home) if b["partial"]]
               if (inv.home / BACKUP_DIR_NAME).is_dir() else [])
    if partial:
        add("partial_backups", folders=partial[:10], count=len(partial))
    if inv.temp_files:
        add("leftover_temp_files", files=[display_path(p, inv.home) for p in inv.temp_files[:10]],
            count=len(inv.temp_files))
    dupes = sorted(v.id for v in inv.threads.values() if len(v.files) > 1)
    if dupes:
        add("duplicate_thread_id", thread_ids=dupes)
    if inv.unreadable_folders:
        add("sessions_folder_unreadable",
            folders=[display_path(Path(p), inv.home) for p in inv.unreadable_folders[:10]],
            count=len(inv.unreadable_folders))
    if inv.misaligned_offsets:
        add("history_offsets_misaligned", thread_ids=sorted(inv.misaligned_offsets),
            offsets=sum(e["off_line_start"] for e in inv.misaligned_offsets.values()))
    return findings


def provider_move_blocker(view: ThreadView, inv: Inventory) -> Optional[str]:
    """Why repair-provider, run with diagnose's scope, would not move this thread (None: it
    would)."""
    scope = inv.scope
    if inv.config.surfaces_disagree and inv.config.surface is None:
        return ("the codex CLI and Desktop/the IDE list different providers: choose one with "
                "--surface")
    if not in_scope(view, scope["sources"], scope["include_archived"], scope["include_empty"]):
        return "outside the repair scope (by design: %s)" % (
            "archived" if view.archived else "no user message" if not view.has_evidence else
            "source %s" % source_kind(view.source))
    if provider_to_move(view, inv.config.provider) is None:
        return "nothing to move"
    return provider_repair_lasting_blocker(view, inv)


def legacy_profile_verdict(evidence: Dict[str, Any], inv: Inventory) -> bool:
    """A top-level `profile =` is a warning only where the release reading the home rejects it:
    whether it accepts it (the evidence gets the release, and then a note)."""
    release = inv.reader["version"]
    evidence["release"] = ".".join(map(str, release)) or None
    if release and legacy_profile_accepted(release):
        evidence["note"] = "this release follows it; 0.169.0 and later reject it"
        return True
    return False


def run_checks(inv: Inventory) -> List[Dict[str, Any]]:
    """Per-thread reasons aggregated into findings per code and severity (the ones to act on
    first), then the home-level findings."""
    forget_shared_reasons()
    try:
        for view in inv.threads.values():
            view.reasons = NO_REASONS
            check_thread(view, inv)
            # Settled at once: a list per thread until the last check ends is ~90 bytes each.
            view.reasons = settled_reasons(view.reasons)
        rank_threads(inv)
    finally:
        forget_shared_reasons()
    findings = []
    # (code, severity) -> the ids in thread order, each once, and the whys: one pass, and no
    # record per thread beyond its id (the list is the finding's own).
    grouped: Dict[Tuple[str, str], Tuple[List[str], set]] = {}
    for view in inv.threads.values():
        for reason in view.reasons:
            ids, whys = grouped.setdefault((reason.code, reason.severity), ([], set()))
            if not ids or ids[-1] != view.id:
                ids.append(view.id)
                if reason.why:
                    whys.add(reason.why)
    for code, (_severity, message) in REASONS.items():
        for severity in ("error", "warning", "info"):
            ids, whys = grouped.get((code, severity), ((), ()))
            if not ids:
                continue
            finding = {"code": code, "severity": severity, "message": message,
                       "count": len(ids), "thread_ids": ids}
            if whys:
                finding["why_no_action"] = sorted(whys)
            findings.append(finding)
    return findings + check_home(inv)


def exit_code_for(findings: List[Dict[str, Any]]) -> int:
    return EXIT_FINDINGS if any(f["severity"] in ("warning", "error")
                                for f in findings) else EXIT_OK


# ---------------------------------------------------------------------------------------------
# Summaries and suggestions (pure).
# ---------------------------------------------------------------------------------------------


def count_by(values: Iterable[str]) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def latest_interactive_thread(inv: Inventory) -> Optional[ThreadView]:
    candidates = [v for v in inv.threads.values()
                  if is_interactive(v.source) and not v.archived and v.has_evidence
                  and v.updated_ms]
    return max(candidates, key=lambda v: v.updated_ms or 0) if candidates else None


def summarise(inv: Inventory) -> Dict[str, Any]:
    views = list(inv.threads.values())
    return {
        "threads": len(views),
        "db_rows": len(inv.rows),
        "rollout_files": len(inv.rollouts),
        "visible_by_default": sum(1 for v in views if not v.hidden),
        "hidden": sum(1 for v in views if v.hidden),
        "archived": sum(1 for v in views if v.archived),
        "by_source": count_by(source_kind(v.source) for v in views),
        "by_provider": count_by((v.rollout_provider or v.db_provider or "(none)") for v in views),
        "by_provider_db": count_by(v.db_provider for v in views if v.db_provider),
        "by_provider_rollout": count_by(v.rollout_provider or "(none)"
                                        for v in views if v.primary and v.primary.meta),
    }


def in_scope(view: ThreadView, sources: Sequence[str], include_archived: bool,
             include_empty: bool) -> bool:
    """The threads a repair touches by default: the sources Codex lists, not archived, with a
    user message. Options widen it; nothing narrows it silently."""
    if "any" not in sources and source_kind(view.source) not in sources:
        return False
    if view.archived and not include_archived:
        return False
    return include_empty or view.has_evidence


def provider_candidates(inv: Inventory) -> Dict[str, List[str]]:
    """Threads hidden by provider that repair-provider would move with diagnose's scope
    (run_checks decided it: their provider_mismatch is a warning), by the provider they carry."""
    groups: Dict[str, List[str]] = {}
    for view in inv.threads.values():
        if not any(r["code"] == "provider_mismatch" and r.get("severity") == "warning"
                   for r in view.reasons):
            continue
        carried = provider_to_move(view, inv.config.provider)
        if carried is not None:
            groups.setdefault(carried, []).append(view.id)
    return groups


def provider_to_move(view: ThreadView, active: str) -> Optional[str]:
    """The provider repair-provider --from would name for this thread: the rollout's (what
    Codex re-derives rows from), else the row's, when it is not the active one."""
    rollout = carried_rollout_provider(view)
    for provider in (rollout, view.db_provider):
        # An empty value is a value (Codex lists such a thread under no provider): it is moved
        # with `--from ''`, not reported as the default's.
        if provider is not None and provider != active:
            return provider
    return None


def carried_rollout_provider(view: ThreadView) -> Optional[str]:
    """The provider the rollout's session_meta carries: "" when empty, the default when the key
    is absent (CODEX-COMPAT: older releases wrote none), None without a session_meta."""
    if view.primary is None or not view.primary.meta:
        return None
    value = view.primary.meta.get("model_provider")
    return value if isinstance(value, str) else DEFAULT_PROVIDER


def scope_sources(args: argparse.Namespace) -> List[str]:
    chosen = getattr(args, "source", None) or ["cli", "vscode"]
    return list(chosen)


def command_prefix_argv() -> List[str]:
    """How to run this tool again: the script's real path (a skill runs it from anywhere), or
    the console-script name when installed."""
    if program_name() == "codex_session_recovery.py":
        return ["python3", os.path.abspath(__file__)]
    return [TOOL_NAME]


def _shell_quote(text: str) -> str:
    return text if re.match(r"^[\w@%+=:,./-]+$", text) else "'" + text.replace("'", "'\"'\"'") + "'"


def shell_line(argv: Sequence[str]) -> str:
    """One argv as a POSIX shell line that runs exactly it (shlex.split gives it back)."""
    return " ".join(_shell_quote(str(a)) for a in argv)


def verdict_options(inv: Inventory) -> List[str]:
    """The options that made this run's verdicts, spelled so another command reaches the same
    ones: the absolute home (a relative one breaks from another folder), the profile and the
    surface."""
    argv = ["--codex-home", str(inv.home)]
    if inv.config.requested is not None:
        argv += ["--profile", inv.config.requested[0]]
    if inv.config.surface:
        argv += ["--surface", inv.config.surface]
    return argv


def scope_options(scope: Dict[str, Any]) -> List[str]:
    argv: List[str] = []
    if list(scope["sources"]) != ["cli", "vscode"]:
        for kind in scope["sources"]:
            argv += ["--source", kind]
    if scope["include_archived"]:
        argv.append("--include-archived")
    if scope["include_empty"]:
        argv.append("--include-empty")
    return argv


def actionable_codes(findings: List[Dict[str, Any]]) -> set:
    return {f["code"] for f in findings if f["severity"] in ("warning", "error")}


def repair_lines(inv: Inventory, findings: List[Dict[str, Any]],
                 view: Optional[ThreadView] = None) -> List[Dict[str, Any]]:
    """The commands to run next, from the table of repairs, in the order their dependencies
    need (a repair that needs another's result comes after it); each is complete (home,
    profile, surface, scope, providers) so it runs verbatim. With `view`: only what cures
    that one thread."""
    prefix = command_prefix_argv() + verdict_options(inv)
    lines = []
    for repair in repairs_in_order():
        for tail in repair.next_args(inv, findings, view):
            argv = prefix + [repair.name] + tail
            lines.append({"repair": repair.name, "argv": argv, "command": shell_line(argv)})
    return lines


def remap_cwd_next_args(inv: Inventory, findings: List[Dict[str, Any]],
                        view: Optional[ThreadView]) -> List[List[str]]:
    """The remap-cwd argument tails to run: for one thread, its own move; for the home, one
    `--from OLD --to NEW` per moved project folder, where a subfolder that the move of its
    parent already covers gets no line of its own. None where the new folder is ambiguous."""
    if view is not None:
        moved = next((r["evidence"] for r in view.reasons if r["code"] == "cwd_moved"), {})
        return [["--from", moved["cwd"], "--to", moved["found"]]] if "found" in moved else []
    moves = [m for m in inv.folder_moves.values() if "found" in m]
    kept = [m for m in moves if not any(o is not m and move_covers(o, m) for o in moves)]
    return [["--from", m["cwd"], "--to", m["found"]] for m in sorted(kept, key=lambda m: m["cwd"])]


def thread_entry(view: ThreadView, verbose: bool) -> Dict[str, Any]:
    # Written once per listed thread (tens of thousands in a big home): the reasons' slots are
    # read directly, not through the dict-like reading the checks use.
    reasons = view.reasons
    entry: Dict[str, Any] = {
        "id": view.id,
        "hidden": any(r.hides for r in reasons),
        "reasons": [r.code for r in reasons],
        "evidence": {r.code: r.evidence_of(view) for r in reasons if r.has_evidence},
        "source": view.source,
        "provider": {"db": view.db_provider, "rollout": view.rollout_provider},
        "archived": view.archived,
        "has_db_row": view.row is not None,
        "rollout": view.primary.rel if view.primary else None,
        "updated_at": iso_from_millis(view.updated_ms),
        "user_message_line": view.primary.evidence_line if view.primary else None,
        "rank": view.rank,
    }
    if view.index_name:
        entry["name"] = view.index_name if verbose else "(named)"
    if verbose and view.primary and view.primary.evidence_text:
        entry["first_user_message"] = view.primary.evidence_text
    return entry


# ---------------------------------------------------------------------------------------------
# Plans: what a repair would change, computed without writing. Every repair builds a Plan of
# rollout edits, guarded SQL updates and whole-file writes; apply_plan() is the one writer.
# ---------------------------------------------------------------------------------------------

# A rollout edit's file as read, packed in one bytes object: size, mtime_ns, st_dev, st_ino
# (st_dev and st_ino as unsigned 64-bit patterns), then the SHA-256. Four ints, two tuples and a
# hex string are ~360 bytes an edit; this is ~100, and a provider move plans one per thread.
_EDIT_STAMP = struct.Struct("<QqQQ32s")
# Each edited line, packed the same way: its number, offset and length, the changed span's
# offset and length, and how many new bytes follow this header in place of the span.
_EDITED_LINE = struct.Struct("<QQQQQQ")


def stat_identity(stat: Any) -> Tuple[int, int]:
    """(st_dev, st_ino) as a rollout edit keeps them (st_dev can be negative on some systems)."""
    return (stat.st_dev & _LOW64, stat.st_ino & _LOW64)


class RolloutEdit:
    """Line edits to one rollout, planned from a full streaming read of it. `fingerprint` is
    (size, mtime_ns, sha256) at planning time: the writer refuses to replace a file that no
    longer matches, so a line appended by a live session is never lost.

    `target`, when given, is where the edited copy goes instead of replacing `path` (import
    copies a rollout of another home, never writing there); `target_fingerprint` is the
    (size, mtime_ns) the target must still have, or None when it must not exist yet."""

    # A provider move plans one per thread it moves: no dict per edit, its paths kept as strings
    # (a Path holds each component, its text and its parts again: ~450 bytes), and what it read
    # and changes packed in bytes (_stamp, _edited), read back as tuples when asked for.
    __slots__ = ("_path", "thread_id", "_target", "target_fingerprint", "_stamp", "_edited",
                 "_fields", "encrypted_reasoning", "skip_reason", "kept_verbatim")

    def __init__(self, path: Any, thread_id: str, target: Optional[Path] = None) -> None:
        self._path = str(path)  # a str given (the inventory's) is kept, not copied
        self.thread_id = thread_id
        self._target = None if target is None or Path(target) == Path(self._path) else str(target)
        self.target_fingerprint: Optional[Tuple[int, int]] = None
        self._stamp: Optional[bytes] = None
        # The edited lines (_EDITED_LINE headers, each followed by its new bytes) and the field
        # each changed, in the order found; offsets are into the file as planned. A span is the
        # bytes of a line that differ, not the whole line (a session_meta line is ~21 KB; its
        # provider is a few bytes), so a plan of thousands of edits stays small.
        self._edited = b""
        self._fields: Tuple[str, ...] = ()
        self.encrypted_reasoning = False
        self.skip_reason: Optional[str] = None
        # Damage the read found in lines this edit does not touch; they are copied as they are.
        self.kept_verbatim: Sequence[str] = ()

    @property
    def path(self) -> Path:
        """The rollout read (a new Path on each read, as `target`)."""
        return Path(self._path)

    @property
    def target(self) -> Path:
        """Where the edited copy goes: the rollout itself, or import's place for it."""
        return Path(self._path if self._target is None else self._target)

    @property
    def in_place(self) -> bool:
        """Whether the edit rewrites the rollout it read (not a copy of it elsewhere)."""
        return self._target is None

    def record_read(self, stat: Any, sha256: bytes) -> None:
        """What the planning read saw: the file's stat (taken after the read) and its digest."""
        self._stamp = _EDIT_STAMP.pack(stat.st_size, stat.st_mtime_ns,
                                       *stat_identity(stat), sha256)

    @property
    def fingerprint(self) -> Tuple[int, int, str]:
        """(size, mtime_ns, SHA-256 hex) of the file as planned; (0, 0, "") before it is read."""
        if self._stamp is None:
            return (0, 0, "")
        size, mtime_ns, _dev, _ino, digest = _EDIT_STAMP.unpack(self._stamp)
        return (size, mtime_ns, digest.hex())

    @property
    def identity(self) -> Optional[Tuple[int, int]]:
        """stat_identity() of the file that was read: a file replaced since is not this one."""
        if self._stamp is None:
            return None
        return _EDIT_STAMP.unpack(self._stamp)[2:4]

    @staticmethod
    def packed_line(line_no: int, offset: int, raw: bytes, new_raw: bytes) -> bytes:
        """Line `line_no` (at `offset`, old bytes `raw`) becoming `new_raw`, as set_lines takes it:
        the whole lines are not kept."""
        start, length, new = changed_span(offset, raw, new_raw)
        return _EDITED_LINE.pack(line_no, offset, len(raw), start, length, len(new)) + new

    def set_lines(self, packed: List[bytes], fields: List[str]) -> None:
        """The edited lines (packed_line()s, in file order) and the field each changes, set once
        when the read is done (joined once: appending to bytes copies them every time)."""
        self._edited, self._fields = b"".join(packed), tuple(fields) or ()

    def _edited_lines(self) -> Iterator[Tuple[int, int, int, int, int, bytes]]:
        """(line number, line offset, line length, span offset, span length, new bytes)."""
        data, at = self._edited, 0
        while at < len(data):
            line_no, offset, length, start, span, count = _EDITED_LINE.unpack_from(data, at)
            at += _EDITED_LINE.size
            yield line_no, offset, length, start, span, data[at:at + count]
            at += count

    @property
    def changes(self) -> List[Tuple[int, str]]:
        """(line number, field) of each edited line."""
        return [(line[0], field) for line, field in zip(self._edited_lines(), self._fields)]

    @property
    def replacements(self) -> List[Tuple[int, int, bytes]]:
        """(byte offset, length, new bytes) of each changed span."""
        return [line[3:] for line in self._edited_lines()]

    @property
    def lines(self) -> List[Tuple[int, int]]:
        """(byte offset, length) of the whole line each replacement lies in, in the same order."""
        return [line[1:3] for line in self._edited_lines()]

    @property
    def deltas(self) -> List[Tuple[int, int, int]]:
        return [(start, length, len(new) - length) for start, length,
                new in self.replacements if len(new) != length]

    def line_spans(self) -> Dict[int, Tuple[int, List[Tuple[int, int, bytes]]]]:
        """line offset -> (its old length, the replacements inside it)."""
        found: Dict[int, Tuple[int, List[Tuple[int, int, bytes]]]] = {}
        for _line_no, offset, length, start, span, new in self._edited_lines():
            found.setdefault(offset, (length, []))[1].append((start, span, new))
        return found

    def shifter(self) -> Callable[[int], int]:
        """shift(offset): where a byte offset into the old file lands in the new one (offsets
        are line starts), with the edit's deltas unpacked once for all the offsets it is given."""
        deltas = self.deltas

        def shift(offset: int) -> int:
            return offset + sum(delta for start, length, delta in deltas
                                if start + length <= offset)
        return shift

    def as_json(self, home: Path) -> Dict[str, Any]:
        target = self.target
        doc = {"kind": "rollout_edit", "thread_id": self.thread_id,
               "path": display_path(target, home),
               "changes": [{"line": line, "field": field} for line, field in self.changes],
               "bytes_delta": sum(d for _s, _l, d in self.deltas)}
        if self._target is not None:
            doc.update({"kind": "rollout_copy", "from": str(self.path),
                        "replaces": self.target_fingerprint is not None})
        if self.kept_verbatim:
            doc["kept_verbatim"] = list(self.kept_verbatim)
        return doc


TEXT_COLUMNS = ("title", "first_user_message", "preview", "name")


def spliced_line(start: int, raw: bytes, spans: List[Tuple[int, int, bytes]]) -> bytes:
    """The line at byte `start` (its old bytes `raw`) as the rewrite writes it: `spans`
    ((offset, length, new bytes) inside it, from RolloutEdit.line_spans()) replaced."""
    out, position = [], start
    for offset, length, new in sorted(spans):
        out.append(raw[position - start:offset - start])
        out.append(new)
        position = offset + length
    out.append(raw[position - start:])
    return b"".join(out)


class SqlChange:
    """One guarded change of one row (UPDATE by default; INSERT or DELETE by `op`): it must
    touch exactly one row, or the apply fails and everything is restored."""

    # A provider move plans one or more per thread it moves (its row, its projection's offsets):
    # tens of thousands in a big home. So the DB, table, operation and the column names of
    # `key`, `values` and `expect` are one tuple every change of the same shape shares, and the
    # values one tuple of its own: three dicts a change are ~500 bytes more. Each reads as a new
    # dict.
    __slots__ = ("_shape", "_data", "thread_id")
    _shapes: Dict[Tuple[Any, ...], Tuple[Any, ...]] = {}

    def __init__(self, db: Path, table: str, key: Dict[str, Any], values: Dict[str, Any],
                 expect: Optional[Dict[str, Any]] = None, thread_id: Optional[str] = None,
                 op: str = "update") -> None:
        expect = expect or {}
        shape = (db, table, op, tuple(key), tuple(values), tuple(expect))
        self._shape = SqlChange._shapes.setdefault(shape, shape)  # names come from the code
        self._data = tuple(key.values()) + tuple(values.values()) + tuple(expect.values())
        self.thread_id = thread_id

    @property
    def db(self) -> Path:
        return self._shape[0]

    @property
    def table(self) -> str:
        return self._shape[1]

    @property
    def op(self) -> str:
        return self._shape[2]

    def _part(self, part: int) -> Dict[str, Any]:
        names = self._shape[3:]
        start = sum(len(columns) for columns in names[:part])
        return dict(zip(names[part], self._data[start:start + len(names[part])]))

    @property
    def key(self) -> Dict[str, Any]:
        """The columns that name the row (a new dict on each read, as `values` and `expect`)."""
        return self._part(0)

    @property
    def values(self) -> Dict[str, Any]:
        return self._part(1)

    @property
    def expect(self) -> Dict[str, Any]:
        return self._part(2)

    def statement(self) -> Tuple[str, List[Any]]:
        if self.op == "insert":
            key, values = self.key, self.values
            names = list(key) + [c for c in values if c not in key]
            params = [key.get(c, values.get(c)) for c in names]
            return ("INSERT INTO %s (%s) VALUES (%s)"
                    % (self.table, ", ".join(names), ", ".join("?" * len(names))),
                    params)
        where = dict(self.key)
        where.update(self.expect)
        clauses = " AND ".join("%s IS ?" % c for c in where)
        if self.op == "delete":
            return ("DELETE FROM %s WHERE %s" % (self.table, clauses), list(where.values()))
        values = self.values
        sets = ", ".join("%s = ?" % c for c in values)
        return ("UPDATE %s SET %s WHERE %s" % (self.table, sets, clauses),
                list(values.values()) + list(where.values()))

    def as_json(self, home: Path, verbose: bool = True) -> Dict[str, Any]:
        sql, params = self.statement()
        if not verbose:
            # Columns that hold the user's own words are shown by size only (--verbose shows them).
            values = self.values
            hidden = {values.get(c) for c in TEXT_COLUMNS if isinstance(values.get(c), str)}
            params = ["<%d chars>" % len(p) if isinstance(p, str) and p in hidden and p else p
                      for p in params]
        return {"kind": "sql", "op": self.op, "db": display_path(self.db, home),
                "table": self.table,
                "thread_id": self.thread_id, "sql": sql, "params": params}


class FileWrite:
    """A small file (index, UI state) replaced whole, atomically."""

    def __init__(self, path: Path, data: bytes, summary: Dict[str, Any]) -> None:
        self.path, self.data, self.summary = path, data, summary

    def as_json(self, home: Path) -> Dict[str, Any]:
        return {"kind": "file_write", "path": display_path(self.path, home),
                "summary": self.summary}


class Plan:
    def __init__(self, command: str) -> None:
        self.command = command
        self.rollout_edits: List[RolloutEdit] = []
        self.sql: List[SqlChange] = []
        self.file_writes: List[FileWrite] = []
        self.moves: List[Path] = []  # files moved whole into the backup folder (never deleted)
        self.restores: List["RestoreAction"] = []  # entries of a verified backup to put back
        self.warnings: List[str] = []
        self.skipped: List[Dict[str, Any]] = []
        self.notes: Dict[str, Any] = {}
        # What the planner found and will not change (import's conflicts): exit code 1.
        self.findings: List[Dict[str, Any]] = []

    @property
    def change_count(self) -> int:
        return (len(self.rollout_edits) + len(self.sql) + len(self.file_writes) + len(self.moves)
                + len(self.restores))

    def touched_dbs(self) -> List[Path]:
        return sorted({c.db for c in self.sql}
                      | {r.target for r in self.restores if r.kind == "restore_db"}, key=str)

    def touched_files(self) -> Iterator[Path]:
        """Each file the plan writes, made one at a time: a Path for every rollout of a provider
        move at once is ~450 bytes a thread."""
        return (path for path, _edit in self.touched_files_and_edits())

    def touched_files_and_edits(self) -> Iterator[Tuple[Path, Optional["RolloutEdit"]]]:
        """The same, each with the edit that rewrites it in place (None for any other write)."""
        yield from ((e.target, e if e.in_place else None) for e in self.rollout_edits)
        yield from ((w.path, None) for w in self.file_writes)
        yield from ((path, None) for path in self.moves)
        yield from ((r.target, None) for r in self.restores if r.kind != "restore_db")

    def plan_id(self, home: Path) -> str:
        """A digest of exactly what would change: the dry run prints it, and `--apply
        --expect-plan ID` refuses unless the plan it computes again is that same plan."""
        # The digest of json.dumps({"command", "notes", "actions"}, sort_keys=True), taken
        # action by action: the same bytes, without the whole document in memory at once.
        def dumps(value: Any) -> bytes:
            return json.dumps(value, sort_keys=True, default=str).encode("utf-8")

        digest = hashlib.sha256(b'{"actions": [')
        for n, action in enumerate(self.iter_actions_json(home)):
            digest.update((b", " if n else b"") + dumps(action))
        digest.update(b'], "command": ' + dumps(self.command) + b', "notes": ' + dumps(self.notes)
                      + b"}")
        return digest.hexdigest()[:16]

    def actions_json(self, home: Path, verbose: bool = True) -> List[Dict[str, Any]]:
        return list(self.iter_actions_json(home, verbose))

    def iter_actions_json(self, home: Path, verbose: bool = True) -> Iterator[Dict[str, Any]]:
        for edit in self.rollout_edits:
            yield edit.as_json(home)
        for change in self.sql:
            yield change.as_json(home, verbose)
        for write in self.file_writes:
            yield write.as_json(home)
        for path in self.moves:
            yield {"kind": "move_to_backup", "path": display_path(path, home)}
        for restore in self.restores:
            yield restore.as_json(home)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open_regular(path) as handle:
        for chunk in iter(lambda: handle.read(READ_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def replace_json_value(raw: bytes, key: str, old: str, new: str) -> Optional[bytes]:
    """Change one string value in a raw JSON line, keeping every other byte. Returns None
    unless the key/value pair occurs exactly once (escaped text inside strings cannot match:
    its quotes are preceded by a backslash)."""
    pattern = re.compile(
        b'"' + re.escape(key.encode()) + b'"(\\s*):(\\s*)' + re.escape(json.dumps(old).encode()))
    matches = pattern.findall(raw)
    if len(matches) != 1:
        return None
    return pattern.sub(lambda m: b'"' + key.encode() + b'"' + m.group(1) + b":" + m.group(2)
                       + json.dumps(new).encode(), raw, count=1)


def split_line_ending(raw: bytes) -> Tuple[bytes, bytes]:
    for ending in (b"\r\n", b"\n"):
        if raw.endswith(ending):
            return raw[:-len(ending)], ending
    return raw, b""


# The lines Codex reads a thread's provider from: the repairs edit them, listing reads them.
PROVIDER_LINE_MARKERS = (b'"session_meta"', b'"thread_settings_applied"')


def provider_line_edit(raw: bytes, thread_id: str, old: str,
                       new: str) -> Optional[Tuple[bytes, str]]:
    """The rewritten line and the field changed, or None when the line is not about the
    thread's provider. Lines Codex reads the provider from (measured on 0.169.0):
    the thread's own `session_meta` lines, and `thread_settings_applied` events."""
    if not any(marker in raw for marker in PROVIDER_LINE_MARKERS):
        return None
    body, ending = split_line_ending(raw)
    try:
        record = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        if ending and json.dumps(old).encode() in body:
            # A damaged line that may be one to edit: refuse rather than leave it stale. A torn
            # last fragment (no line ending) is no record to Codex: it is carried as it is.
            raise PlanError("%s: a line naming provider %s cannot be read; the rollout is left as "
                            "it is"
                            % (thread_id, old)) from None
        return None
    payload = record.get("payload") if isinstance(record, dict) else None
    if not isinstance(payload, dict):
        return None
    if record.get("type") == "session_meta":
        # A fork's copy of its parent's session_meta carries another id: Codex ignores it.
        if str(payload.get("id", "")).lower() != thread_id or payload.get("model_provider") != old:
            return None
        field, target = "model_provider", payload
    elif record.get("type") == "event_msg" and payload.get("type") == "thread_settings_applied":
        settings = payload.get("thread_settings")
        if not isinstance(settings, dict) or settings.get("model_provider_id") != old:
            return None
        field, target = "model_provider_id", settings
    else:
        return None
    edited = replace_json_value(body, field, old, new)
    if edited is None:
        raise PlanError("%s: the %s value is not where it is expected" % (thread_id, field))
    target[field] = new
    if json.loads(edited.decode("utf-8")) != record:
        raise PlanError("%s: editing %s would change more than that field" % (thread_id, field))
    return edited + ending, field


class PlanError(ValueError):
    """A thread whose files do not look as the repair expects: it is skipped and reported."""


def plan_rollout_edit(path: Any, thread_id: str, line_edit: Any,
                      needles: Sequence[bytes] = PROVIDER_LINE_MARKERS,
                      target: Optional[Path] = None) -> RolloutEdit:
    """Read the whole rollout (`path`, a Path or the inventory's str) as a stream and record
    the edits `line_edit` makes to the lines that contain one of `needles` (only those can
    change). Nothing is written here."""
    edit = RolloutEdit(path, thread_id, target)
    digest = hashlib.sha256()
    packed: List[bytes] = []
    fields: List[str] = []
    with open_regular(path) as handle:
        for line_no, offset, raw in iter_marked_lines(handle, needles, digest, edit):
            result = line_edit(raw)
            if result is not None:
                new_raw, field = result
                packed.append(RolloutEdit.packed_line(line_no, offset, raw, new_raw))
                fields.append(field)
    edit.set_lines(packed, fields)
    edit.record_read(os.stat(edit._path), digest.digest())
    return edit


def changed_span(offset: int, old: bytes, new: bytes) -> Tuple[int, int, bytes]:
    """The replacement of line `old` (at file offset `offset`) by `new`, reduced to the bytes
    that differ: (offset of the first differing byte, how many old bytes go, the new bytes in
    their place). Prefix and suffix are found by halving with slice comparisons (memcmp), not a
    loop over bytes."""
    limit = min(len(old), len(new))
    low, high = 0, limit  # the common prefix is at least low, at most high
    while low < high:
        mid = (low + high + 1) // 2
        if old[:mid] == new[:mid]:
            low = mid
        else:
            high = mid - 1
    prefix = low
    low, high = 0, limit - prefix
    while low < high:
        mid = (low + high + 1) // 2
        if old[len(old) - mid:] == new[len(new) - mid:]:
            low = mid
        else:
            high = mid - 1
    suffix = low
    if prefix == 0 and len(old) - suffix == 0 and suffix:
        # A pure insertion at the line's start: take one old byte into the span, so the line
        # still starts where it did for shift() (which moves offsets past a span's end).
        suffix -= 1
    return offset + prefix, len(old) - prefix - suffix, new[prefix:len(new) - suffix]


SCAN_BLOCK = READ_CHUNK


def iter_marked_lines(handle: Any, needles: Sequence[bytes], digest: Any,
                      edit: RolloutEdit) -> Iterator[Tuple[int, int, bytes]]:
    """(line number, byte offset, raw line) of every line holding one of `needles`, found by
    searching large blocks rather than reading line by line (a rollout can be gigabytes).
    Every byte read is hashed; a line longer than MAX_LINE_BYTES is refused."""
    carry, offset_base, lines_base = b"", 0, 0
    while True:
        block = handle.read(SCAN_BLOCK)
        digest.update(block)
        buf = carry + block
        end = buf.rfind(b"\n") + 1 if block else len(buf)
        if block and end == 0:
            if len(buf) > MAX_LINE_BYTES:
                raise PlanError("%s has a line longer than %d MiB"
                                % (edit.path.name, MAX_LINE_BYTES >> 20))
            carry = buf
            continue
        if not edit.encrypted_reasoning and buf.find(b'"encrypted_content"', 0, end) != -1:
            edit.encrypted_reasoning = True
        starts = set()
        for needle in needles:
            hit = buf.find(needle, 0, end)
            while hit != -1:
                starts.add(buf.rfind(b"\n", 0, hit) + 1)
                stop = buf.find(b"\n", hit, end)
                hit = -1 if stop == -1 else buf.find(needle, stop + 1, end)
        previous, counted = 0, lines_base
        for start in sorted(starts):
            counted += buf.count(b"\n", previous, start)
            previous = start
            stop = buf.find(b"\n", start, end)
            yield counted + 1, offset_base + start, buf[start:(end if stop == -1 else stop + 1)]
        # The rest of the block from the last line counted: each byte is counted once.
        lines_base = counted + buf.count(b"\n", previous, end)
        offset_base += end
        carry = buf[end:]
        if not block:
            return


def history_db_path(inv: "Inventory") -> Optional[Path]:
    """0.169.0's history projection lives beside the state DB: in the home, or in `sqlite_home`
    when one is set (measured: Codex moves every DB there)."""
    folders = [inv.live_db.path.parent] if inv.live_db is not None else []
    folders.append(inv.home)
    for folder in folders:
        found = sorted(folder.glob("thread_history_*.sqlite"))
        if found:
            return found[-1]
    return None


def plan_projection_shift(inv: "Inventory", edit: RolloutEdit) -> List[SqlChange]:
    """0.169.0's paginated-history projection stores byte offsets into the rollout. When a
    rewrite changes line lengths, every later offset moves by the same amount: keep them true."""
    if not edit.deltas:
        return []
    reader = projection_offsets(inv)
    if reader is None:
        return []
    changes: List[SqlChange] = []
    shift = edit.shifter()
    for table, keys, present, row in reader.rows(edit.thread_id):
        old = {c: row[c] for c in present if isinstance(row[c], int)}
        new = {c: shift(v) for c, v in old.items()}
        new = {c: v for c, v in new.items() if v != old[c]}
        if new:
            # The thread's id is the edit's string, not a copy from each row.
            key = {k: edit.thread_id if k == "thread_id" and row[k] == edit.thread_id else row[k]
                   for k in keys}
            changes.append(SqlChange(reader.db_path, table, key, new,
                                     expect={c: old[c] for c in new}, thread_id=edit.thread_id))
    return changes


class ProjectionOffsets:
    """The byte offsets the history projection stores, read through one connection for a whole
    plan (a connection, a folder listing and four schema queries per thread cost seconds at a
    few thousand threads). Read-only; closed by run_repair once the plan is made."""

    OFFSET_COLUMNS = {
        "thread_turns": (("thread_id", "turn_id"),
                         ("rollout_byte_offset", "rollout_end_byte_offset")),
        "thread_history_projection_state": (("thread_id",), ("next_rollout_byte_offset",)),
    }

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self.conn: Optional[sqlite3.Connection] = open_db_readonly(db_path)
        self.queries: List[Tuple[str, Tuple[str, ...], List[str], str]] = []
        for table, (keys, columns) in self.OFFSET_COLUMNS.items():
            if not table_exists(self.conn, table):
                continue
            present = [c for c in columns if c in table_columns(self.conn, table)]
            if present:
                query = "SELECT %s FROM %s WHERE thread_id = ?" % (
                    ", ".join(keys + tuple(present)), table)
                self.queries.append((table, keys, present, query))

    def rows(self, thread_id: str) -> Iterator[Tuple[str, Tuple[str, ...], List[str], Any]]:
        if self.conn is None:
            self.conn = open_db_readonly(self.db_path)
        for table, keys, present, query in self.queries:
            for row in self.conn.execute(query, (thread_id,)):
                yield table, keys, present, row

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def projection_offsets(inv: "Inventory") -> Optional[ProjectionOffsets]:
    """The inventory's ProjectionOffsets, opened on first use; None without a projection DB.
    A projection that cannot be read raises PlanError for every thread that needs it: its
    offsets cannot be kept true, so the rollout is not rewritten."""
    if not hasattr(inv, "_projection_offsets"):
        db_path = history_db_path(inv)
        try:
            inv._projection_offsets = ProjectionOffsets(db_path) if db_path is not None else None
        except sqlite3.Error as exc:
            inv._projection_offsets = PlanError("%s cannot be read (%s); the rollout is left as it "
                                                "is"
                                                % (db_path.name, short(str(exc), 80)))
    if isinstance(inv._projection_offsets, PlanError):
        raise PlanError(str(inv._projection_offsets))
    return inv._projection_offsets


def close_plan_readers(inv: "Inventory") -> None:
    reader = getattr(inv, "_projection_offsets", None)
    if isinstance(reader, ProjectionOffsets):
        reader.close()


PROJECTION_OFFSETS = {
    # table: (key columns, (ordinal column, offset column, which end of that line))
    "thread_turns": (("thread_id", "turn_id"), (("rollout_ordinal", "rollout_byte_offset", "start"),
                                                ("rollout_end_ordinal", "rollout_end_byte_offset",
                                                 "end"))),
    "thread_history_projection_state": (("thread_id",),
                                        (("next_rollout_ordinal", "next_rollout_byte_offset",
                                                           "next"),)),
}


def read_projection_rows(db_path: Path, thread_id: Optional[str] = None
                         ) -> Dict[str, List[Tuple[str, Dict[str, Any]]]]:
    """thread id -> [(table, row)] of the offset-bearing rows of the history projection."""
    found: Dict[str, List[Tuple[str, Dict[str, Any]]]] = {}
    with readonly_db(db_path) as conn:
        for table, (keys, triples) in PROJECTION_OFFSETS.items():
            if not table_exists(conn, table):
                continue
            columns = set(table_columns(conn, table))
            present = [c for triple in triples for c in triple[:2] if c in columns]
            if not any(t[1] in columns for t in triples):
                continue
            query = "SELECT %s FROM %s" % (", ".join(keys + tuple(present)), table)
            rows = (conn.execute(query + " WHERE thread_id = ?", (thread_id,)) if thread_id
                    else conn.execute(query))
            for row in rows:
                found.setdefault(str(row["thread_id"]).lower(), []).append((table, dict(row)))
    return found


def read_projection_offsets(db_path: Optional[Path]) -> Dict[str, Sequence[int]]:
    """thread id -> the distinct byte offsets its projection rows hold, sorted: the offset
    columns alone, an array of 64-bit ints per thread (every Inventory reads them while it
    scans the rollouts; rows as dicts cost ~2 KB a thread, a list or tuple of ints ~150 bytes
    more than the array), keyed by the id string the rows already hold. Empty without a
    projection or when it cannot be read."""
    if db_path is None:
        return {}
    found: Dict[str, Any] = {}
    try:
        conn = open_db_readonly(db_path)
        try:
            for table, (_keys, triples) in PROJECTION_OFFSETS.items():
                if not table_exists(conn, table):
                    continue
                columns = set(table_columns(conn, table))
                present = [t[1] for t in triples if t[1] in columns]
                if not present:
                    continue
                for row in conn.execute("SELECT thread_id, %s FROM %s"
                                        % (", ".join(present), table)):
                    thread_id = str(row[0]).lower()
                    offsets = found.get(thread_id)
                    if offsets is None:
                        offsets = found[shared_str(thread_id)] = array.array("q")
                    offsets.extend(v for v in tuple(row)[1:] if isinstance(v, int))
        finally:
            conn.close()
    except sqlite3.Error:
        return {}
    for thread_id in [t for t, offsets in found.items() if not offsets]:
        del found[thread_id]
    for thread_id, offsets in found.items():
        found[thread_id] = array.array("q", sorted(set(offsets)))
    return found


def misaligned_projection_offsets(inv: "Inventory") -> Dict[str, Dict[str, Any]]:
    """Threads whose projection offsets are not line starts of their rollout (a byte before each
    must be a newline), e.g. after a run was killed between replacing a rollout and updating
    the projection. The head scan checked them on the descriptor it had open (check_offsets):
    one read of a page per offset at most, cheap at any rollout size."""
    found: Dict[str, Dict[str, Any]] = {}
    for thread_id, view in inv.threads.items():
        faults = view.primary.offset_faults if view.primary is not None else None
        if faults:
            found[thread_id] = {"offsets": faults[0], "off_line_start": faults[1],
                                "first": faults[2]}
    return found


def check_offsets(info: "RolloutInfo", fd: int,
                  projection: Optional[Dict[str, Sequence[int]]]) -> None:
    """Set info.offset_faults ((offsets, how many are off a line start, the first of those)) when
    the projection's offsets for this rollout's thread are not all line starts. A torn last
    line leaves every earlier line where it was; other damage makes the ordinals of the lines
    uncertain, and such a rollout is left to the user (not checked)."""
    offsets = projection.get(info.thread_id) if projection else None
    if not offsets or any(p != "torn_line" for p in info.problems):
        return
    try:
        bad = offsets_off_line_starts(fd, info.size, offsets, "torn_line" in info.problems)
    except OSError:
        return
    if bad:
        info.offset_faults = (len(offsets), len(bad), bad[0])


PAGE_READ = 4096  # offsets_off_line_starts reads a page at a time


def offsets_off_line_starts(fd: int, size: int, offsets: Sequence[int],
                            torn: bool = False) -> List[int]:
    """The offsets (sorted) that are not line starts of the open file. With a torn last line,
    offsets past the start of the fragment describe the bytes the crash cut: no line is there
    to point at, Codex reads every complete turn regardless (measured 0.169.0, 0.171.0), and no
    repair can put them right. The byte before each offset is read with its page, once."""
    bad = []
    limit = fragment_start(fd, size) if torn else size
    page_at, page = -1, b""
    for offset in offsets:
        if torn and offset > limit:
            continue
        if offset < 0 or offset > size:
            bad.append(offset)
        elif offset > 0:
            at = (offset - 1) // PAGE_READ * PAGE_READ
            if at != page_at:
                page_at, page = at, read_at(fd, at, PAGE_READ)
            if page[offset - 1 - at:offset - at] != b"\n":
                bad.append(offset)
    return bad


def read_at(fd: int, offset: int, count: int) -> bytes:
    """Up to `count` bytes at `offset` (os.pread where the platform has it)."""
    if hasattr(os, "pread"):
        return os.pread(fd, count, offset)
    os.lseek(fd, offset, os.SEEK_SET)
    return os.read(fd, count)


def fragment_start(fd: int, size: int) -> int:
    """Where the unterminated last line begins: just after the last newline (0 if none)."""
    end = size
    while end > 0:
        start = max(0, end - READ_CHUNK)
        found = read_at(fd, start, end - start).rfind(b"\n")
        if found >= 0:
            return start + found + 1
        end = start
    return 0


def ordinal_line_spans(path: Path) -> Dict[int, Tuple[int, int]]:
    """ordinal -> (start, end) byte offsets of its line. CODEX-COMPAT 0.169.0 writes `ordinal` on
    every line (the line's index); a line without one counts by its index."""
    spans: Dict[int, Tuple[int, int]] = {}
    offset = 0
    with open_regular(path) as handle:
        for index, raw in enumerate(iter(lambda: handle.readline(MAX_LINE_BYTES), b"")):
            ordinal = index
            try:
                record = json.loads(raw.decode("utf-8"))
                if isinstance(record, dict) and isinstance(record.get("ordinal"), int):
                    ordinal = record["ordinal"]
            except (UnicodeDecodeError, ValueError):
                pass
            spans.setdefault(ordinal, (offset, offset + len(raw)))
            offset += len(raw)
    return spans


def plan_offset_realignment(inv: "Inventory", plan: "Plan", busy_ids: set) -> None:
    """SQL that puts every misaligned projection offset back on the line its ordinal names."""
    db_path = history_db_path(inv)
    for thread_id in sorted(inv.misaligned_offsets):
        if thread_id in busy_ids:
            continue
        view = inv.threads[thread_id]
        try:
            spans = ordinal_line_spans(view.primary.path)
            rows = read_projection_rows(db_path, thread_id).get(thread_id, [])
        except (OSError, sqlite3.Error) as exc:
            plan.skipped.append({"thread_id": thread_id,
                                 "reason": "history offsets not realigned: %s"
                                 % short(str(exc), 120)})
            continue
        changes, missing = [], []
        for table, row in rows:
            keys, triples = PROJECTION_OFFSETS[table]
            new, old = {}, {}
            for ordinal_column, offset_column, end in triples:
                ordinal, offset = row.get(ordinal_column), row.get(offset_column)
                if not isinstance(ordinal, int) or not isinstance(offset, int):
                    continue
                lookup = ordinal - 1 if end == "next" else ordinal
                if lookup < 0:
                    want = 0
                elif lookup in spans:
                    want = spans[lookup][0 if end == "start" else 1]
                else:
                    missing.append(ordinal)
                    continue
                if want != offset:
                    new[offset_column], old[offset_column] = want, offset
            if new:
                changes.append(SqlChange(db_path, table, {k: row[k] for k in keys}, new, expect=old,
                                         thread_id=thread_id))
        if missing:
            plan.skipped.append({"thread_id": thread_id,
                                 "reason": "history offsets not realigned: ordinal(s) %s are "
                                           "not lines of the rollout"
                                 % ", ".join(map(str, sorted(set(missing))[:5]))})
            continue
        plan.sql.extend(changes)


def resolve_target_provider(inv: Inventory, requested: str,
                            source_provider: str) -> Tuple[str, str]:
    """`--to auto`: the provider config.toml makes active; when config names none, the provider
    of the latest interactive thread (the one Desktop was last used with), said so."""
    if requested != "auto":
        return requested, "--to"
    broken = [p["code"]
              for p in inv.config.problems
              if p["code"] in ("config_unparsable", "config_unreadable",
                                                                       "profile_missing")]
    if broken:
        raise refuse("--to auto cannot tell the active provider (%s); fix config.toml, or name the "
                     "provider with --to PROVIDER" % ", ".join(broken), None)
    if not inv.config.provider_is_default:
        return inv.config.provider, inv.config.provider_source
    latest = latest_interactive_thread(inv)
    carried = (latest.rollout_provider or latest.db_provider) if latest else None
    if carried and carried != source_provider:
        return carried, "latest interactive thread %s (config.toml names no provider)" % latest.id
    return DEFAULT_PROVIDER, "default (config.toml names no provider)"


def check_provider_option(option: str, value: str, allow_empty: bool) -> None:
    """A provider name is one line of printable text. `--to ""` would write an empty provider
    into every rollout (a thread Codex then lists under no provider); `--from ""` is allowed:
    it names the threads that already carry an empty value, so they can be moved back."""
    if not value and not allow_empty:
        raise UsageError("%s: empty provider name" % option)
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise UsageError("%s: the provider name contains a control character (%r)"
                         % (option, value[:60]))


def plan_provider_repair(inv: Inventory, args: argparse.Namespace) -> Plan:
    check_provider_option("--from", args.from_provider, allow_empty=True)
    check_provider_option("--to", args.to, allow_empty=False)
    plan = Plan("repair-provider")
    config = inv.config
    if config.surfaces_disagree and config.surface is None:
        raise UsageError("on Codex %s the codex CLI (--profile %s) lists provider %s but Desktop "
                         "and the IDE (app-server, no --profile) list %s: moving threads to one "
                         "hides them from the other. Ask which app is used and add --surface cli "
                         "or --surface app" % (
                             ".".join(map(str, inv.reader["version"])) or "(unknown release)",
                             config.requested[0],
                             config.surfaces["cli"]["provider"],
                             config.surfaces["app"]["provider"]))
    target, target_source = resolve_target_provider(inv, args.to, args.from_provider)
    plan.notes.update({"from": args.from_provider, "to": target, "to_source": target_source,
                       "scope": {"sources": scope_sources(args),
                                 "include_archived": args.include_archived,
                                 "include_empty": args.include_empty}})
    if target == args.from_provider:
        raise UsageError("--from and --to name the same provider (%s); nothing would move" % target)
    if not inv.config.knows_provider(target):
        plan.warnings.append("provider %s is not defined in config.toml; Codex cannot resume "
                             "threads moved to it until it is" % target)
    if config.surfaces_disagree:
        other = "app" if config.surface == "cli" else "cli"
        plan.warnings.append("moving threads for %s (which uses %s): %s uses %s, and there the "
                             "moved threads drop out of provider-filtered lists and cannot be "
                             "resumed" % (
            SURFACE_NAMES[config.surface], config.surfaces[config.surface]["provider"],
            SURFACE_NAMES[other],
            config.surfaces[other]["provider"]))
    encrypted = 0
    for view in inv.threads.values():
        if args.from_provider not in (view.db_provider, view.rollout_provider) and not (
                args.from_provider == "" and carried_rollout_provider(view) == ""):
            continue
        if not in_scope(view, scope_sources(args), args.include_archived, args.include_empty):
            continue
        if skipped_as_blocked(plan, view, inv):
            continue
        try:
            if view.primary is not None:
                edit = provider_rollout_edit(view.primary.file, view.id, args.from_provider, target)
                encrypted += int(edit.encrypted_reasoning)
                edit.kept_verbatim = carried_problems(view.primary)
                if edit.changes:
                    plan.rollout_edits.append(edit)
                    plan.sql.extend(plan_projection_shift(inv, edit))
        except (OSError, PlanError) as exc:
            plan.skipped.append({"thread_id": view.id, "reason": short(str(exc), 160)})
            continue
        if view.row is not None and view.db_provider == args.from_provider:
            plan.sql.append(SqlChange(inv.live_db.path, "threads", {"id": view.id},
                                      {"model_provider": target},
                                      expect={"model_provider": args.from_provider},
                                      thread_id=view.id))
    # A run killed between replacing a rollout and updating the projection left offsets behind.
    plan_offset_realignment(inv, plan, {e.thread_id for e in plan.rollout_edits})
    if encrypted:
        plan.warnings.append("%d moved thread(s) carry encrypted reasoning (encrypted_content); it "
                             "may not verify under another provider or account, and resuming can "
                             "fail until the original provider is configured again" % encrypted)
    plan.notes["threads"] = len({e.thread_id for e in plan.rollout_edits}
                                | {c.thread_id for c in plan.sql})
    return plan


def provider_rollout_edit(path: Any, thread_id: str, old: Optional[str], new: Optional[str],
                          target: Optional[Path] = None) -> RolloutEdit:
    """The provider move of one rollout (in place, or into `target`); with no `new`, an
    unchanged copy, still read whole and fingerprinted."""
    if old is None or new is None or old == new:
        return plan_rollout_edit(path, thread_id, lambda raw: None, PROVIDER_LINE_MARKERS, target)
    return plan_rollout_edit(path, thread_id,
                             lambda raw: provider_line_edit(raw, thread_id, old, new),
                             PROVIDER_LINE_MARKERS, target)


def skipped_as_blocked(plan: Plan, view: ThreadView, inv: Inventory) -> bool:
    """Whether a rollout-rewriting repair must leave this thread alone; if so it is listed
    under the plan's `skipped` with the reason."""
    reason = provider_repair_blocker(view, inv)
    if reason:
        plan.skipped.append({"thread_id": view.id, "reason": reason})
    return bool(reason)


def provider_repair_blocker(view: ThreadView, inv: Inventory) -> Optional[str]:
    blocker = provider_repair_lasting_blocker(view, inv)
    if blocker is None and any(r["code"] == "rollout_path_stale" for r in view.reasons):
        return "the DB row's rollout_path does not point at this home's rollout; run reindex first"
    return blocker


def provider_repair_lasting_blocker(view: ThreadView, inv: Inventory) -> Optional[str]:
    """What keeps repair-provider from a thread even after the repairs it runs after (reindex)."""
    if view.primary is None:
        # Codex re-derives the provider from the rollout: a DB-only edit would be reverted.
        return "no rollout file found for this thread; nothing durable to change"
    blocking = [p for p in view.primary.problems if p not in CARRIED_PROBLEMS]
    if blocking:
        return "rollout has unreadable parts (%s); it is left as it is" % ", ".join(blocking)
    if not view.primary.meta:
        # The line to edit is the unreadable one: a partial edit would leave Codex a mixed record.
        return "its session_meta line cannot be read; it is left as it is"
    if len(view.files) > 1:
        return ("thread id carried by %d rollout files; resolve the duplicate first"
                % len(view.files))
    if view.primary.file in inv.linked_rollouts:
        # Writes never go through a link (the rollout is one, or lies in a linked folder);
        # replacing the link is the user's choice (rollout_is_link's manual step).
        return ("its rollout is a symbolic link (rollout_is_link): replace it by the file it "
                "points to first")
    return None


CWD_LINE_MARKERS = (b'"session_meta"', b'"turn_context"', b'"thread_settings_applied"')


def cwd_fields(record: Dict[str, Any], thread_id: str) -> List[Tuple[Any, Any]]:
    """(container, key) of each place a rollout line records the thread's folder, where Codex
    reads it (measured on 0.169.0): the thread's own `session_meta` (`cwd`,
    `runtime_workspace_roots`), every `turn_context` and `thread_settings_applied` event.
    Text the model saw (<environment_context>) is conversation and is never rewritten."""
    payload = record.get("payload")
    if not isinstance(payload, dict):
        return []
    kind = record.get("type")
    if kind == "session_meta":
        if str(payload.get("id", "")).lower() != thread_id:
            return []  # a fork's copy of its parent's session_meta: Codex ignores it
        holder = payload
    elif kind == "turn_context":
        holder = payload
    elif kind == "event_msg" and payload.get("type") == "thread_settings_applied":
        holder = payload.get("thread_settings")
        if not isinstance(holder, dict):
            return []
    else:
        return []
    fields: List[Tuple[Any, Any]] = []
    if isinstance(holder.get("cwd"), str):
        fields.append((holder, "cwd"))
    roots = holder.get("runtime_workspace_roots")
    if isinstance(roots, list):
        fields.extend((roots, n) for n, value in enumerate(roots) if isinstance(value, str))
    return fields


def cwd_line_edit(raw: bytes, thread_id: str, old: str, new: str) -> Optional[Tuple[bytes, str]]:
    """The line with its folder fields moved from under `old` to under `new`, every other byte
    kept; None when it records no folder under `old`."""
    if not any(marker in raw for marker in CWD_LINE_MARKERS):
        return None
    body, ending = split_line_ending(raw)
    try:
        record = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    moves: Dict[str, Tuple[str, int]] = {}
    for container, key in cwd_fields(record, thread_id):
        value = container[key]
        moved = remap_folder(value, old, new)
        if moved is not None and moved != value:
            container[key] = moved
            previous = moves.get(value, (moved, 0))
            moves[value] = (moved, previous[1] + 1)
    if not moves:
        return None
    edited = body
    for value, (moved, count) in moves.items():
        edited = replace_string_tokens(edited, value, moved, count, thread_id)
    if json.loads(edited.decode("utf-8")) != record:
        raise PlanError("%s: moving the folder would change more than its folder fields"
                        % thread_id)
    return edited + ending, "cwd"


def replace_string_tokens(body: bytes, old: str, new: str, count: int, thread_id: str) -> bytes:
    """Replace the JSON string `old` with `new` where it occurs as a whole string value,
    which must be exactly `count` times, in whichever escaping the writer used."""
    for ascii_only in (False, True):
        token = json.dumps(old, ensure_ascii=ascii_only).encode("utf-8")
        if body.count(token) == count:
            return body.replace(token, json.dumps(new, ensure_ascii=ascii_only).encode("utf-8"))
    raise PlanError("%s: the folder %s is not where it is expected" % (thread_id, short(old, 60)))


def canonical_target_folder(new: str) -> str:
    """CODEX-COMPAT: Codex stores a cwd canonicalised when the folder exists (`/tmp` becomes
    `/private/tmp` on macOS), and matches listings against that exact text."""
    key = folder_key(new)
    if key is not None and not (key[2] and os.name != "nt") and os.path.isdir(new):
        return os.path.realpath(new)
    return new.rstrip("\\/") or new


# Desktop keys that hold project folders (as values, list items or object keys).
WORKSPACE_ROOT_KEYS = ("electron-saved-workspace-roots", "active-workspace-roots", "project-order",
                       "electron-workspace-root-labels", "thread-workspace-root-hints",
                       "local-projects",
                       "thread-project-assignments")


def remap_json_folders(value: Any, old: str, new: str) -> Any:
    """`value` with every string that is a folder under `old` moved under `new`; a list keeps
    one copy of each item, an object keeps the entry already at the new folder."""
    if isinstance(value, str):
        moved = remap_folder(value, old, new)
        return value if moved is None else moved
    if isinstance(value, list):
        out: List[Any] = []
        for item in value:
            moved = remap_json_folders(item, old, new)
            if not (isinstance(moved, str) and moved in out):
                out.append(moved)
        return out
    if isinstance(value, dict):
        result: Dict[str, Any] = {}
        for key, item in value.items():
            target = remap_json_folders(key, old, new)
            if target in result and target != key:
                continue
            result[target] = remap_json_folders(item, old, new)
        return result
    return value


def plan_workspace_roots_remap(home: Path, old: str, new: str,
                               skipped: List[Dict[str, Any]]) -> Optional[FileWrite]:
    try:
        found = load_global_state(home, parse_float=finite_float, parse_constant=no_constant)
    except (OSError, NonFiniteNumber) as exc:
        # Written back, 1e999 would become `Infinity`, which is not JSON: Desktop could not read it.
        skipped.append({"path": GLOBAL_STATE_FILE,
                        "reason": "%s %s; its workspace roots are left as they are" % (
            "it holds the number" if isinstance(exc, NonFiniteNumber) else "cannot be read:",
            short(str(exc), 100))})
        return None
    except ValueError:
        return None
    if found is None:
        return None
    raw, data = found
    if not isinstance(data, dict):
        return None
    changed = []
    for key in WORKSPACE_ROOT_KEYS:
        if key in data:
            moved = remap_json_folders(data[key], old, new)
            if moved != data[key]:
                data[key] = moved
                changed.append(key)
    if not changed:
        return None
    indent = 2 if b"\n " in raw else None
    text = json.dumps(data, indent=indent, separators=(",", ": ") if indent else (",", ":"),
                      ensure_ascii=False,
                      allow_nan=False)
    return FileWrite(home / GLOBAL_STATE_FILE,
                     json_text_bytes(text) + (b"\n" if raw.endswith(b"\n") else b""),
                     {"remapped": changed})


def plan_cwd_remap(inv: Inventory, args: argparse.Namespace) -> Plan:
    """Move threads from one project folder to another wherever Codex reads the folder: the
    row's cwd, the rollout's session_meta / turn_context / thread_settings_applied lines
    (byte-exact value edits, history offsets kept true) and Desktop's workspace roots."""
    plan = Plan("remap-cwd")
    old, new = args.from_folder, args.to_folder
    if folder_key(old) is None or folder_key(new) is None:
        raise UsageError("--from and --to must be absolute folders (C:\\..., \\\\?\\C:\\..., "
                         "/mnt/c/... or /...)")
    new = canonical_target_folder(new)
    if remap_folder(new, old, new) is not None:
        # Also a folder inside --from: a second run would move the threads again, and again.
        raise UsageError("--to (%s) is --from or lies inside it; a remap must move threads out of "
                         "--from" % new)
    plan.notes.update({"from": old, "to": new, "folders": {}})
    for view in inv.threads.values():
        row_cwd = str((view.row or {}).get("cwd") or "")
        meta_cwd = str(view.primary.meta.get("cwd") or "") if view.primary else ""
        targets = {c: remap_folder(c, old, new) for c in (row_cwd, meta_cwd) if c}
        targets = {c: t for c, t in targets.items() if t is not None and t != c}
        if not targets:
            continue
        if skipped_as_blocked(plan, view, inv):
            continue
        try:
            edit = plan_rollout_edit(view.primary.path, view.id, lambda raw, v=view: cwd_line_edit(
                raw, v.id, old, new), CWD_LINE_MARKERS)
        except (OSError, PlanError) as exc:
            plan.skipped.append({"thread_id": view.id, "reason": short(str(exc), 160)})
            continue
        edit.kept_verbatim = carried_problems(view.primary)
        if edit.changes:
            plan.rollout_edits.append(edit)
            plan.sql.extend(plan_projection_shift(inv, edit))
        if row_cwd in targets:
            plan.sql.append(SqlChange(inv.live_db.path, "threads", {"id": view.id},
                                      {"cwd": targets[row_cwd]},
                                      expect={"cwd": row_cwd}, thread_id=view.id))
        shown = row_cwd if row_cwd in targets else meta_cwd
        plan.notes["folders"][view.id] = "%s -> %s" % (shown, targets[shown])
    roots = plan_workspace_roots_remap(inv.home, old, new, plan.skipped)
    if roots is not None:
        plan.file_writes.append(roots)
    plan.notes["threads"] = len(plan.notes["folders"])
    return plan


def full_first_user_text(path: Path) -> Optional[str]:
    """The complete first user message of a rollout, read as a stream up to that line."""
    return first_user_text_and_start(path)[0]


def first_user_text_and_start(path: Path) -> Tuple[Optional[str], Optional[int]]:
    """full_first_user_text, and when the session_meta on the first line says the rollout
    began (milliseconds), from the same read: a row built from a rollout needs both, and the
    inventory does not keep the time (~70 bytes a thread)."""
    started = None
    with open_regular(path) as handle:
        line_no = 0
        for raw in iter(lambda: handle.readline(MAX_LINE_BYTES), b""):
            line_no += 1
            record = parse_rollout_line(raw, line_no, [])
            payload = record.get("payload") if record and line_no == 1 else None
            if record and record.get("type") == "session_meta" and isinstance(payload, dict):
                started = iso_to_millis(payload.get("timestamp"))
            found = user_text_of(record) if record else None
            if found:
                return found[1], started
    return None, started


def plan_user_events_repair(inv: Inventory, args: argparse.Namespace) -> Plan:
    plan = Plan("repair-user-events")
    columns = set(inv.live_db.columns) if inv.has_db else set()
    for view in inv.threads.values():
        reason = next((r for r in view.reasons if r["code"] == "user_event_missing"), None)
        if reason is None or view.primary is None:
            continue
        if view.primary.evidence_kind == "attachment" and preview_rederived(inv.release):
            plan.skipped.append({"thread_id": view.id,
                                 "reason": "its first prompt is only an attachment and this Codex "
                                           "derives the preview from the rollout, so no DB edit "
                                           "shows it: pin the thread, or open it by id and send "
                                           "one message"})
            continue
        try:
            text = full_first_user_text(view.primary.path)
        except OSError as exc:
            plan.skipped.append({"thread_id": view.id, "reason": str(exc)})
            continue
        if not text:
            continue
        values: Dict[str, Any] = {}
        if "has_user_event" in columns and not view.row.get("has_user_event"):
            values["has_user_event"] = 1
        for column in ("first_user_message", "preview", "title"):
            if column in columns and not view.row.get("has_" + column):
                values[column] = text
        if values:
            plan.sql.append(SqlChange(inv.live_db.path, "threads", {"id": view.id}, values,
                                      thread_id=view.id))
    plan.notes["threads"] = len(plan.sql)
    return plan


# Desktop sidebar keys and the values that show every thread: all workspaces, the recent
# (updated_at) ordering, nothing collapsed. Only keys already present are touched.
SIDEBAR_RESET = {
    "sidebar-workspace-filter-v2": "all",
    "sidebar-collapsed-groups": {},
    "sidebar-collapsed-sections-v1": {},
    "thread-sort-key": "updated_at",
}


class NonFiniteNumber(ValueError):
    pass


def finite_float(text: str) -> float:
    """json.loads reads 1e999 as inf, and json.dumps would write it as `Infinity` (not JSON)."""
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise NonFiniteNumber(text)
    return value


def no_constant(text: str) -> Any:
    raise NonFiniteNumber(text)  # NaN, Infinity, -Infinity: not JSON


def sidebar_changes(atoms: Dict[str, Any]) -> Dict[str, Tuple[Any, Any]]:
    return {k: (atoms[k], v) for k, v in SIDEBAR_RESET.items() if k in atoms and atoms[k] != v}


def plan_ui_state_repair(inv: Inventory, args: argparse.Namespace) -> Plan:
    plan = Plan("repair-ui-state")
    path = inv.home / GLOBAL_STATE_FILE
    try:
        found = load_global_state(inv.home, parse_float=finite_float, parse_constant=no_constant)
    except OSError as exc:
        plan.skipped.append({"path": path.name,
                             "reason": "cannot be read (%s); it is left as it is"
                             % short(str(exc), 100)})
        return plan
    except NonFiniteNumber as exc:
        plan.skipped.append({"path": path.name,
                             "reason": "it holds the number %s, which JSON cannot write back "
                                       "unchanged; it is left as it is" % short(str(exc), 40)})
        return plan
    except ValueError:
        plan.skipped.append({"path": path.name,
                             "reason": "not JSON; Codex Desktop rewrites it on its next exit"})
        return plan
    if found is None:
        return plan
    raw, data = found
    atoms = data.get("electron-persisted-atom-state") if isinstance(data, dict) else None
    if not isinstance(atoms, dict):
        return plan
    changes = sidebar_changes(atoms)
    if not changes:
        return plan
    for key, (_old, new) in changes.items():
        atoms[key] = new
    indent = 2 if b"\n " in raw else None
    separators = (",", ": ") if indent else (",", ":")
    text = json.dumps(data, indent=indent, separators=separators, ensure_ascii=False,
                      allow_nan=False)
    data_out = json_text_bytes(text) + (b"\n" if raw.endswith(b"\n") else b"")
    plan.file_writes.append(FileWrite(path, data_out, {"reset": sorted(changes)}))
    return plan


def index_stale_ids(inv: Inventory) -> List[str]:
    """Index entries provably stale: no rollout with that id anywhere in the home, and no DB
    row whose rollout_path exists. Anything less certain is kept."""
    stale = []
    for thread_id in inv.index["names"]:
        view = inv.threads.get(thread_id)
        if view is not None and (view.files or view.row_rollout_exists()):
            continue
        stale.append(thread_id)
    return sorted(stale)


def index_missing_name_ids(inv: Inventory) -> List[str]:
    """Threads named in the DB (0.169.0 keeps paginated threads' names there) that the index
    lacks: `codex exec resume NAME` reads only the index."""
    return sorted(v.id for v in inv.threads.values()
                  if v.row and v.row.get("name") and v.id not in inv.index["names"] and v.files)


def plan_index_rebuild(inv: Inventory, args: argparse.Namespace) -> Plan:
    plan = Plan("rebuild-index")
    path = inv.home / "session_index.jsonl"
    if inv.index.get("error"):
        plan.skipped.append({"path": path.name,
                             "reason": "cannot be read (%s); it is left as it is"
                             % inv.index["error"]})
        return plan
    stale = set(index_stale_ids(inv))
    missing = index_missing_name_ids(inv)
    if not stale and not missing and not inv.index["bad_lines"]:
        return plan
    latest: Dict[str, Dict[str, Any]] = {}
    if path.is_file():
        with open_regular(path) as handle:
            for entry in iter_index_lines(handle):
                if entry is not None and entry["id"].lower() not in stale:
                    keep_naming_entry(latest, entry)
    for thread_id in missing:
        view = inv.threads[thread_id]
        latest[thread_id] = {"id": thread_id, "thread_name": view.row["name"],
                             "updated_at": iso_from_millis(view.updated_ms)}
    ordered = sorted(latest.values(), key=lambda e: str(e.get("updated_at") or ""))
    data = b"".join(json_text_bytes(json.dumps(e, separators=(",", ":"), ensure_ascii=False))
                    + b"\n" for e in ordered)
    plan.file_writes.append(FileWrite(path, data, {
        "entries_before": inv.index["entries"], "entries_after": len(ordered),
        "dropped_stale": len(stale),
        "dropped_bad_lines": inv.index["bad_lines"], "added_from_db_names": len(missing)}))
    return plan


def plan_reindex(inv: Inventory, args: argparse.Namespace) -> Plan:
    """Make the state DB agree with the rollouts on disk: rows for rollouts that have none,
    rollout_path and archived flag where the file says otherwise, and (only with
    --prune-missing) no rows for conversations whose file is gone."""
    plan = Plan("reindex")
    if not inv.has_db:
        plan.skipped.append({"path": "state DB",
                             "reason": "no readable state DB: Codex lists rollouts directly; "
                                       "see rebuild-db for a damaged one"})
        return plan
    db = inv.live_db
    for view in inv.threads.values():
        codes = {r["code"] for r in view.reasons}
        if len(view.files) > 1 and codes & {"no_db_row", "rollout_path_stale"}:
            plan.skipped.append({"thread_id": view.id,
                                 "reason": "carried by %d rollout files (%s); never merged "
                                           "blindly: keep the one to use"
                                 % (len(view.files), ", ".join(f.rel for f in view.files))})
            continue
        if "no_db_row" in codes:
            blocker = set(view.primary.problems) & {"id_mismatch", "legacy_format", "compressed",
                                                    "unreadable",
                                                    "first_line_not_session_meta", "empty_file",
                                                    "not_a_file"}
            blocker |= {index_blocker(view.primary, inv.home)} - {None}
            if blocker:
                plan.skipped.append({"thread_id": view.id,
                                     "reason": "rollout cannot be indexed: %s"
                                     % ", ".join(sorted(blocker))})
                continue
            plan.sql.append(SqlChange(db.path, "threads", {"id": view.id},
                                      row_from_rollout(view, inv),
                                      thread_id=view.id, op="insert"))
        elif "rollout_path_stale" in codes:
            found = view.files[0]
            values = {"rollout_path": found.file}
            values.update(archive_values(found, view.row, set(db.columns)))
            plan.sql.append(SqlChange(db.path, "threads", {"id": view.id}, values,
                                      thread_id=view.id))
        elif "archive_flag_mismatch" in codes:
            values = archive_values(view.primary, view.row, set(db.columns))
            if values:
                plan.sql.append(SqlChange(db.path, "threads", {"id": view.id}, values,
                                          thread_id=view.id))
        elif "rollout_missing" in codes:
            if args.prune_missing and inv.unreadable_folders:
                plan.skipped.append({"thread_id": view.id,
                                     "reason": "not pruned: %d folder(s) under sessions/ "
                                               "cannot be read, so no rollout can be proven gone"
                                     % len(inv.unreadable_folders)})
            elif args.prune_missing:
                plan.sql.append(SqlChange(db.path, "threads", {"id": view.id}, {},
                                          thread_id=view.id, op="delete"))
            else:
                plan.skipped.append({"thread_id": view.id,
                                     "reason": "its rollout is gone; the row is kept "
                                               "(--prune-missing removes it; Codex drops such rows "
                                               "itself when listing)"})
    plan.notes["threads"] = len(plan.sql)
    # A run killed between replacing a rollout and updating the history projection left offsets
    # that no longer agree with the rollout: the projection is an index of the rollouts too.
    plan_offset_realignment(inv, plan, set())
    return plan


def archive_values(info: RolloutInfo, row: Optional[Dict[str, Any]],
                   columns: set) -> Dict[str, Any]:
    """The archived flag follows the file's folder, as Codex's own reconcile does."""
    archived = int(info.archived_location)
    if row is not None and int(bool(row.get("archived"))) == archived:
        return {}
    values: Dict[str, Any] = {"archived": archived}
    if "archived_at" in columns:
        values["archived_at"] = int(info.mtime) if archived else None
    return values


def row_from_rollout(view: ThreadView, inv: Inventory) -> Dict[str, Any]:
    """A threads row built the way Codex's backfill builds one: identity and origin from the
    session_meta, timestamps from it and from the file's mtime, text from the first user message."""
    info = view.primary
    meta = info.meta
    text, started = first_user_text_and_start(info.path)
    text = text or ""
    created_ms = started or int(info.mtime * 1000)
    updated_ms = int(info.mtime * 1000)
    # CODEX-COMPAT: an absent provider means the default
    provider = info.provider or inv.config.provider
    values: Dict[str, Any] = {
        "rollout_path": info.file, "created_at": created_ms // 1000,
        "updated_at": updated_ms // 1000,
        "created_at_ms": created_ms, "updated_at_ms": updated_ms, "recency_at": updated_ms // 1000,
        "recency_at_ms": updated_ms, "source": info.source or "vscode", "model_provider": provider,
        "cwd": str(meta.get("cwd") or ""), "title": text, "first_user_message": text,
        "preview": text,
        "cli_version": str(meta.get("cli_version") or ""),
        "thread_source": meta.get("thread_source"),
        "history_mode": meta.get("history_mode") or "legacy", "originator": meta.get("originator"),
        "archived": int(info.archived_location),
        "archived_at": int(info.mtime) if info.archived_location else None,
        "has_user_event": 1 if text and inv.gate_column() == "has_user_event" else 0,
    }
    columns = {c[1]: c for c in inv.live_db.column_info}
    row = {k: v for k, v in values.items() if k in columns and k != "id"}
    for name, (_cid, _name, ctype, notnull, default, _pk) in ((c[1], c)
                                                              for c in inv.live_db.column_info):
        if name in row or name == "id" or not notnull or default is not None:
            continue
        # NOT NULL with no default: a neutral value
        row[name] = 0 if "INT" in str(ctype).upper() else ""
    return row


def iso_to_millis(text: Any) -> Optional[int]:
    if not isinstance(text, str):
        return None
    match = re.match(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?Z?$",
                     text.strip())
    if not match:
        return None
    parts = [int(g) for g in match.groups()[:6]]
    fraction = (match.group(7) or "0")[:3].ljust(3, "0")
    try:
        stamp = _dt.datetime(*parts, tzinfo=_dt.timezone.utc)
    except ValueError:
        return None  # month 13, second 99: not a time; the file's mtime is used instead
    return int(stamp.timestamp()) * 1000 + int(fraction)


REBUILD_REASONS = ("state_db_unreadable", "state_db_corrupt", "migration_checksum_drift",
                   "backfill_incomplete")


def plan_rebuild_db(inv: Inventory, args: argparse.Namespace) -> Plan:
    """For a state DB Codex cannot use: move it (with its -wal and -shm) into the backup folder,
    so Codex creates a fresh one and rebuilds it from the rollouts, the durable record, at its
    next start. Thread names that live only in the DB are first added to session_index.jsonl."""
    plan = Plan("rebuild-db")
    db = inv.live_db
    reasons = [f["code"] for f in check_home(inv) if f["code"] in REBUILD_REASONS
               and (f["code"] != "backfill_incomplete" or f["evidence"].get("stale"))]
    if db is None or not reasons:
        return plan
    plan.notes.update({"db": display_path(db.path, inv.home), "because": reasons,
                       "after": "start Codex once: it rebuilds the DB from the rollouts (archive "
                                "flags follow the folders; pins and DB-only settings are not "
                                "rebuilt)"})
    if inv.has_db:
        plan.file_writes.extend(plan_index_rebuild(inv, args).file_writes)
    # A DB never leaves without its -journal: a hot one holds the pages a crash left half-written.
    plan.moves = [Path(str(db.path) + suffix) for suffix in ("", "-wal", "-shm", "-journal")
                  if Path(str(db.path) + suffix).exists()]
    return plan


# ---------------------------------------------------------------------------------------------
# Import: the conversations of another home (a copy, a backup, an old machine's .codex, or only
# its sessions/), read without writing a byte there and without opening its credentials or its
# config.toml (which may hold a bearer token). Identity is the thread id.
# ---------------------------------------------------------------------------------------------

# Rollouts import cannot take as they are: nothing to build a row from, or no thread id.
IMPORT_BLOCKERS = ("compressed", "unreadable", "not_a_file", "empty_file", "legacy_format",
                   "first_line_not_session_meta", "id_mismatch")
# The 0.169.0 history projection: the rows a paginated thread needs to open with its turns.
PROJECTION_TABLES = ("thread_turns", "thread_items", "thread_realtime_items",
                     "thread_history_projection_state")
COPIED_OFFSET_COLUMNS = ("rollout_byte_offset", "rollout_end_byte_offset",
                         "next_rollout_byte_offset")


def open_db_snapshot(path: Path) -> sqlite3.Connection:
    """Read a DB of another home creating no file beside it, not even the -shm a read-only
    open makes: immutable when every page is in the main file, else a private in-memory copy
    (an immutable open would miss the pages still in the -wal)."""
    if Path(str(path) + "-wal").exists():
        conn = _open_private_copy(path)
    else:
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro&immutable=1", uri=True,
                               timeout=5.0)
    conn.row_factory = sqlite3.Row
    return conn


class OtherHome:
    """What import reads from the other home: its rollouts, the thread names of its
    session_index.jsonl and state DB, and its history projection. Nothing else is opened."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.warnings: List[str] = []
        self.sessions_only = not any((root / top).is_dir()
                                     for top in ("sessions", "archived_sessions"))
        if self.sessions_only:
            # A bare sessions/ (or archived_sessions/) folder: its files are placed by their names.
            self.base = root.parent
            files = iter_rollout_files(root.parent, tops=(root.name,))
        else:
            self.base = root
            files = iter_rollout_files(root)
        self.rollouts = [scan_rollout(path, self.base)
                         for path in progress(files, "reading the other home")]
        try:
            index = read_session_index(root) if not self.sessions_only else {"names": {}}
        except OSError as exc:
            self.warnings.append("the other home's session_index.jsonl cannot be read (%s)"
                                 % short(str(exc), 100))
            index = {"names": {}}
        self.index_names: Dict[str, str] = {k: v for k, v in index["names"].items() if v}
        self.db_names = self._db_names()
        self.history_db = self._newest(["thread_history_*.sqlite"])
        self._history: Optional[sqlite3.Connection] = None

    def _newest(self, patterns: List[str]) -> Optional[Path]:
        found = [p for folder in (self.root, self.root / "sqlite") for pattern in patterns
                 for p in folder.glob(pattern) if p.is_file()]
        return max(found, key=lambda p: (p.name, p.stat().st_mtime)) if found else None

    def _db_names(self) -> Dict[str, str]:
        dbs = [p for folder in (self.root, self.root / "sqlite") if folder.is_dir()
               for p in sorted(folder.iterdir()) if STATE_DB_RE.match(p.name) and p.is_file()]
        if not dbs:
            return {}
        db = max(dbs, key=lambda p: StateDb(p, "import").sort_key())
        try:
            conn = open_db_snapshot(db)
            try:
                if "name" not in table_columns(conn, "threads"):
                    return {}
                return {str(r[0]).lower(): r[1] for r in conn.execute(
                    "SELECT id, name FROM threads WHERE name IS NOT NULL AND name <> ''")}
            finally:
                conn.close()
        except sqlite3.Error as exc:
            self.warnings.append("the other home's state DB cannot be read (%s); thread names come "
                                 "from its session_index.jsonl only" % short(str(exc), 100))
            return {}

    def name_of(self, thread_id: str) -> Optional[str]:
        return self.index_names.get(thread_id) or self.db_names.get(thread_id)

    def projection_rows(self, thread_id: str) -> Dict[str, List[Dict[str, Any]]]:
        if self.history_db is None:
            return {}
        if self._history is None:
            self._history = open_db_snapshot(self.history_db)
        rows = {}
        for table in PROJECTION_TABLES:
            if table_exists(self._history, table):
                rows[table] = [dict(r) for r in self._history.execute(
                    "SELECT * FROM %s WHERE thread_id = ?" % table, (thread_id,))]
        return rows

    def close(self) -> None:
        if self._history is not None:
            self._history.close()
            self._history = None


def import_destination(info: RolloutInfo) -> Optional[str]:
    """Where Codex keeps this rollout (home-relative): archived_sessions/NAME, or
    sessions/YYYY/MM/DD/NAME from the date in its name (as Codex's unarchive places it)."""
    match = ROLLOUT_NAME_RE.match(info.path.name)
    if not match:
        return None
    if info.archived_location:
        return "archived_sessions/" + info.path.name
    stamp = match.group("stamp")
    return "sessions/%s/%s/%s/%s" % (stamp[:4], stamp[5:7], stamp[8:10], info.path.name)


def strip_rewritable_fields(record: Any) -> Any:
    """A rollout line without the fields this tool rewrites (provider and folder): two copies of
    one conversation, one of them moved by repair-provider or remap-cwd, compare equal."""
    if not isinstance(record, dict) or not isinstance(record.get("payload"), dict):
        return record
    payload = record["payload"]
    settings = payload.get("type") == "thread_settings_applied"
    holder = payload.get("thread_settings") if settings else payload
    if isinstance(holder, dict) and record.get("type") in ("session_meta", "turn_context",
                                                           "event_msg"):
        for key in ("model_provider", "model_provider_id", "cwd", "runtime_workspace_roots"):
            holder.pop(key, None)
    return record


def compare_rollouts(ours: Path, theirs: Path) -> str:
    """How two copies of one thread relate: `identical`; `ours_longer` / `theirs_longer` (one is
    a byte prefix of the other: the same conversation, one copy further along); `equivalent` /
    `ours_further` / `theirs_further` (the same, line for line, apart from the provider and folder
    fields this tool rewrites); else `conflict`."""
    ours_size, theirs_size = ours.stat().st_size, theirs.stat().st_size
    with open(str(ours), "rb") as left, open(str(theirs), "rb") as right:
        remaining = min(ours_size, theirs_size)
        while remaining > 0:
            a, b = left.read(min(READ_CHUNK, remaining)), right.read(min(READ_CHUNK, remaining))
            if a != b or not a:
                break
            remaining -= len(a)
        if remaining == 0:
            if ours_size == theirs_size:
                return "identical"
            return "ours_longer" if ours_size > theirs_size else "theirs_longer"
    with open(str(ours), "rb") as left, open(str(theirs), "rb") as right:
        while True:
            a, b = left.readline(MAX_LINE_BYTES), right.readline(MAX_LINE_BYTES)
            if not a or not b:
                return "equivalent" if a == b else ("ours_further" if a else "theirs_further")
            if a == b:
                continue
            try:
                same = (strip_rewritable_fields(json.loads(a))
                        == strip_rewritable_fields(json.loads(b)))
            except ValueError:
                same = False
            if not same:
                return "conflict"


IMPORT_VERDICTS = {
    "identical": "already here, byte for byte",
    "equivalent": "already here (this home's copy differs only in provider or folder fields)",
    "ours_longer": "already here, and this home's copy is further along: kept",
    "ours_further": "already here, and this home's copy is further along: kept",
}


def plan_import(inv: Inventory, args: argparse.Namespace) -> Plan:
    """Bring the conversations of another home that this one lacks: each rollout copied to
    where Codex keeps it, a row built the way reindex builds one, the thread's history
    projection and its name. A thread this home has is compared byte by byte, never merged."""
    plan = Plan("import")
    other_root = Path(args.from_home).expanduser()
    if not other_root.is_dir():
        raise UsageError("--from %s is not a folder" % other_root)
    other_root = other_root.resolve()
    if is_within(other_root, inv.home) or is_within(inv.home, other_root):
        raise UsageError("--from %s is this home or overlaps it; name another home (a copy, a "
                         "backup, an old machine's .codex or its sessions/ folder)" % other_root)
    target, target_source = resolve_target_provider(inv, args.to, "") if args.to else (None, None)
    other = OtherHome(other_root)
    plan.warnings.extend(other.warnings)
    plan.notes.update({"from": str(other_root), "to_provider": target, "counts": {}})
    if target_source:
        plan.notes["to_source"] = target_source
    if target and not inv.config.knows_provider(target):
        plan.warnings.append("provider %s is not defined in config.toml; Codex cannot resume "
                             "threads moved to it until it is" % target)
    names: Dict[str, str] = {}
    counts: Dict[str, int] = {}
    carriers: Dict[str, List[RolloutInfo]] = {}
    for info in other.rollouts:
        if info.thread_id:
            carriers.setdefault(info.thread_id, []).append(info)
    try:
        for info in sorted(other.rollouts, key=lambda i: i.rel):
            if len(carriers.get(info.thread_id or "", [])) > 1:
                # Never merged blindly: which of the other home's copies is the thread is the user's
                # call.
                if info is carriers[info.thread_id][0]:
                    import_conflict(plan, info.thread_id, info, [],
                                    "the other home carries the thread in %d files "
                                    "(%s)" % (len(carriers[info.thread_id]),
                                              ", ".join(i.rel for i in carriers[info.thread_id])))
                counts["conflict"] = counts.get("conflict", 0) + 1
                continue
            verdict = import_one(inv, plan, other, info, target)
            counts[verdict] = counts.get(verdict, 0) + 1
            name = other.name_of(info.thread_id) if info.thread_id else None
            if (name and verdict not in ("skipped", "conflict")
                    and not inv.index["names"].get(info.thread_id)):
                names[info.thread_id] = name
    finally:
        other.close()
    plan.warnings.extend(w for w in other.warnings if w not in plan.warnings)
    index = plan_index_names(inv, names, other)
    if index is not None:
        plan.file_writes.append(index)
    plan.notes["counts"] = counts
    plan.notes["threads"] = len({e.thread_id for e in plan.rollout_edits})
    return plan


def import_one(inv: Inventory, plan: Plan, other: OtherHome, info: RolloutInfo,
               target: Optional[str]) -> str:
    """Plan one rollout of the other home; returns what became of it."""
    thread_id = info.thread_id
    blocker = set(info.problems) & set(IMPORT_BLOCKERS)
    destination = import_destination(info)
    if not thread_id or blocker or destination is None:
        plan.skipped.append({"thread_id": thread_id, "path": str(info.path),
                             "reason": "not imported: %s" % (
            ", ".join(sorted(blocker)) if blocker else "not a rollout file name Codex uses")})
        return "skipped"
    carried = info.provider or DEFAULT_PROVIDER
    view = inv.threads.get(thread_id)
    ours = view.files if view else []
    try:
        if len(ours) > 1:
            return import_conflict(plan, thread_id, info, ours,
                                   "this home carries the thread in %d files" % len(ours))
        if ours:
            verdict = compare_rollouts(ours[0].path, info.path)
            if verdict in IMPORT_VERDICTS:
                return verdict
            if verdict != "theirs_longer":
                return import_conflict(plan, thread_id, info, ours, {
                    "conflict": "the two copies differ (not one a continuation of the other)",
                    "theirs_further": "the other copy is further along, but this home's copy was "
                                      "moved to another provider or folder since"}[verdict])
            # The same conversation, further along there: the longer copy replaces this home's,
            # which the backup keeps.
            edit = provider_rollout_edit(info.path, thread_id, carried, target, ours[0].path)
            stat = ours[0].path.stat()
            edit.target_fingerprint = (stat.st_size, stat.st_mtime_ns)
            plan.rollout_edits.append(edit)
            plan.sql.extend(plan_projection_shift(inv, edit))
            if view.row is not None and target and view.db_provider != target and edit.changes:
                plan.sql.append(SqlChange(inv.live_db.path, "threads", {"id": thread_id},
                                          {"model_provider": target},
                                          expect={"model_provider": view.db_provider},
                                          thread_id=thread_id))
            return "longer_there"
        path = inv.home / destination
        if path.exists():
            return import_conflict(plan, thread_id, info, [],
                                   "%s exists here and is not this thread's rollout"
                                   % destination)
        edit = provider_rollout_edit(info.path, thread_id, carried, target, path)
        edit.kept_verbatim = carried_problems(info)
    except (OSError, PlanError) as exc:
        plan.skipped.append({"thread_id": thread_id, "reason": short(str(exc), 160)})
        return "skipped"
    plan.rollout_edits.append(edit)
    if inv.has_db:
        plan.sql.extend(import_rows(inv, other, info, view, edit, target))
    return "imported"


def import_conflict(plan: Plan, thread_id: str, info: RolloutInfo, ours: List[RolloutInfo],
                    why: str) -> str:
    plan.findings.append({"code": "import_conflict", "thread_id": thread_id,
                          "message": why + "; neither was changed",
                          "this_home": [i.rel for i in ours], "other_home": str(info.path)})
    return "conflict"


def import_rows(inv: Inventory, other: OtherHome, info: RolloutInfo, view: Optional[ThreadView],
                edit: RolloutEdit, target: Optional[str]) -> List[SqlChange]:
    """The state DB row of an imported thread (reindex's builder, pointed at the copy) and,
    for a paginated thread, its history projection rows (offsets moved with the copy's edits)."""
    db = inv.live_db
    if view is not None and view.row is not None:
        # A row whose rollout was lost here: point it at the copy.
        values = {"rollout_path": str(edit.target)}
        values.update(archive_values(info, view.row, set(db.columns)))
        return [SqlChange(db.path, "threads", {"id": info.thread_id}, values,
                          thread_id=info.thread_id)]
    row = row_from_rollout(ThreadView(info.thread_id, None, [info]), inv)
    row["rollout_path"] = str(edit.target)
    if target and "model_provider" in row:
        row["model_provider"] = target
    name = other.name_of(info.thread_id)
    if name and "name" in set(db.columns):
        row["name"] = name
    changes = [SqlChange(db.path, "threads", {"id": info.thread_id}, row, thread_id=info.thread_id,
                         op="insert")]
    if info.meta.get("history_mode") == "paginated":
        changes.extend(import_projection(inv, other, info.thread_id, edit))
    return changes


def import_projection(inv: Inventory, other: OtherHome, thread_id: str,
                      edit: RolloutEdit) -> List[SqlChange]:
    """CODEX-COMPAT: 0.169.0 opens a paginated thread from its history projection; with no
    rows there it lists the thread but shows no turns (measured), so they come along."""
    rows = other.projection_rows(thread_id)
    dest = history_db_path(inv)
    if not any(rows.values()):
        return []
    if dest is None:
        other.warnings.append("this home has no thread_history_*.sqlite: imported paginated "
                              "threads list, but a 0.169-era Codex shows their turns only after "
                              "one `codex resume ID`")
        return []
    shift = edit.shifter()
    with readonly_db(dest) as conn:
        changes = []
        for table in PROJECTION_TABLES:
            if not rows.get(table) or not table_exists(conn, table):
                continue
            info = list(conn.execute("PRAGMA table_info(%s)" % table))
            columns = [c[1] for c in info]
            keys = [c[1] for c in sorted(info, key=lambda c: c[5]) if c[5]] or columns
            if conn.execute("SELECT 1 FROM %s WHERE thread_id = ?" % table,
                            (thread_id,)).fetchone():
                # this home has projection rows of its own for the thread: Codex keeps them
                return []
            for row in rows[table]:
                values = {c: row[c] for c in columns if c in row}
                for column in COPIED_OFFSET_COLUMNS:
                    if isinstance(values.get(column), int):
                        values[column] = shift(values[column])
                key = {k: values.pop(k) for k in keys}
                changes.append(SqlChange(dest, table, key, values, thread_id=thread_id,
                                         op="insert"))
        return changes


def plan_index_names(inv: Inventory, names: Dict[str, str],
                     other: OtherHome) -> Optional[FileWrite]:
    """session_index.jsonl with the imported threads' names appended (the lines already there
    are kept byte for byte): `codex exec resume NAME` reads only the index."""
    if not names:
        return None
    path = inv.home / "session_index.jsonl"
    existing = path.read_bytes() if path.is_file() else b""
    if existing and not existing.endswith(b"\n"):
        existing += b"\n"
    added = b""
    mtimes = {i.thread_id: i.mtime for i in other.rollouts if i.thread_id in names}
    for thread_id in sorted(names):
        view_time = mtimes.get(thread_id)
        entry = {"id": thread_id, "thread_name": names[thread_id],
                 "updated_at": iso_from_millis(int(view_time * 1000)) if view_time else None}
        text = json.dumps(entry, separators=(",", ":"), ensure_ascii=False)
        added += text.encode("utf-8") + b"\n"
    return FileWrite(path, existing + added, {"names_added": len(names)})


# ---------------------------------------------------------------------------------------------
# The table of repairs. The parser, diagnose's Next block, trace's fix lines and preflight all
# read it: adding a repair is adding one entry.
# ---------------------------------------------------------------------------------------------


class Repair:
    """One repair: its command name, planner, help, extra options, the reason codes it cures,
    the repairs that must run before it, and how it spells its next command line."""

    def __init__(self, name: str, planner: Any, summary: str, description: str, *,
                 cures: Sequence[str] = (), after: Sequence[str] = (), options: Any = None,
                 next_args: Any = None, desktop_must_quit: bool = False) -> None:
        self.name, self.planner = name, planner
        self.summary, self.description = summary, description
        self.cures, self.after, self.options = tuple(cures), tuple(after), options
        self.desktop_must_quit = desktop_must_quit
        self._next_args = next_args

    def next_args(self, inv: Inventory, findings: List[Dict[str, Any]],
                  view: Optional[ThreadView]) -> List[List[str]]:
        """The argument tails of the lines to run (after the command name), one per line;
        none when this repair would plan nothing."""
        if self._next_args is not None:
            return self._next_args(inv, findings, view)
        codes = ({r["code"] for r in view.reasons if r["severity"] != "info"} if view is not None
                 else actionable_codes(findings))
        return [[]] if codes & set(self.cures) else []


def provider_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="from_provider", required=True, metavar="PROVIDER",
                        help="the provider the hidden threads carry (see diagnose)")
    parser.add_argument("--to", default="auto", metavar="PROVIDER|auto",
                        help="target provider; `auto` (default) is the one config.toml makes "
                             "active")
    _scope_options(parser)


def provider_next_args(inv: Inventory, findings: List[Dict[str, Any]],
                       view: Optional[ThreadView]) -> List[List[str]]:
    """`--from P --to ACTIVE` per provider to move, with the scope diagnose judged in; for one
    thread, the scope that reaches it (its source, archived, empty)."""
    if view is None:
        return [["--from", provider, "--to", inv.config.provider] + scope_options(inv.scope)
                for provider in sorted(provider_candidates(inv))]
    provider = provider_to_move(view, inv.config.provider)
    undecided = inv.config.surfaces_disagree and inv.config.surface is None
    if provider is None or undecided or provider_repair_lasting_blocker(view, inv):
        return []
    scope = {"sources": ["cli", "vscode"] if source_kind(view.source) in ("cli", "vscode")
             else [source_kind(view.source)],
             "include_archived": view.archived, "include_empty": not view.has_evidence}
    return [["--from", provider, "--to", inv.config.provider] + scope_options(scope)]


def import_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="from_home", required=True, metavar="OTHER_HOME",
                        help="the other home (or its sessions/ folder); it is only read")
    parser.add_argument("--to", default=None, metavar="PROVIDER|auto",
                        help="also move the imported threads to this provider (`auto`: the one "
                             "config.toml makes active), as repair-provider would")


def remap_cwd_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="from_folder", required=True, metavar="OLD_PREFIX",
                        help="the folder the threads were recorded in (or a parent of it)")
    parser.add_argument("--to", dest="to_folder", required=True, metavar="NEW_PREFIX",
                        help="where that folder is now")


def reindex_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prune-missing", action="store_true",
                        help="also delete rows whose rollout file no longer exists")


def rebuild_db_next_args(inv: Inventory, findings: List[Dict[str, Any]],
                         view: Optional[ThreadView]) -> List[List[str]]:
    wanted = [f for f in findings if f["code"] in REBUILD_REASONS
              and (f["code"] != "backfill_incomplete" or f["evidence"].get("stale"))]
    return [[]] if wanted and view is None else []


REPAIRS: Tuple[Repair, ...] = (
    Repair("repair-provider", plan_provider_repair,
           "move threads recorded under one provider to another (rollouts and state DB together)",
           "Rewrite model_provider in each matching thread's own session_meta lines and "
           "thread_settings_applied events, and in its state DB row, so Codex lists it under the "
           "active provider. Every other byte of every line stays as it was.",
           # A row pointing into another home is skipped until reindex repoints it.
           cures=("provider_mismatch",), after=("rebuild-db", "reindex"),
           options=provider_options, next_args=provider_next_args),
    Repair("repair-user-events", plan_user_events_repair,
           "fill a blank preview/first message from the rollout's first user message (state DB "
           "only)",
           "For rows whose listing column is blank although the rollout has a real user message, "
           "set has_user_event and fill the blank first_user_message, preview and title. Never "
           "rewrites rollouts.",
           cures=("user_event_missing",), after=("rebuild-db", "reindex")),
    Repair("repair-ui-state", plan_ui_state_repair,
           "reset Desktop's sidebar filters (all workspaces, recent order, nothing collapsed)",
           "Reset the sidebar keys of .codex-global-state.json that hide threads; unknown keys "
           "stay as they are. Refuses while Codex Desktop runs: it rewrites the file when it "
           "exits.",
           cures=("sidebar_filtered",), desktop_must_quit=True),
    Repair("rebuild-index", plan_index_rebuild,
           "rewrite session_index.jsonl without stale entries, keeping every thread name",
           "Drop entries whose rollout no longer exists and lines that are not entries, keep the "
           "last non-empty name of each thread, and add names the state DB has that the index "
           "lacks.",
           cures=("index_stale", "index_bad_lines", "index_missing_names"),
           after=("rebuild-db", "reindex")),
    Repair("reindex", plan_reindex,
           "make the state DB agree with the rollouts: add missing rows, fix paths and archive "
           "flags",
           "Insert a row for each rollout the DB lacks (built from its session_meta and first user "
           "message), point stale rollout_path values at the file that exists, and set the "
           "archived flag from the file's folder. A thread id carried by two files is reported, "
           "never merged. Rows whose rollout is gone are kept unless --prune-missing.",
           cures=("no_db_row", "rollout_path_stale", "archive_flag_mismatch",
                  "history_offsets_misaligned"),
           after=("rebuild-db",),
           options=reindex_options),
    Repair("rebuild-db", plan_rebuild_db,
           "move a damaged state DB aside so Codex rebuilds it from the rollouts",
           "Only when the DB is unreadable, corrupt, has foreign migration checksums or a stuck "
           "backfill: save DB-only thread names into session_index.jsonl, then move the DB and its "
           "-wal/-shm into the backup folder (never deleted). Codex rebuilds the DB at its next "
           "start.",
           cures=REBUILD_REASONS, next_args=rebuild_db_next_args),
    # Next never names import: only the user knows where another home is, and it cures no
    # code diagnose can see, so the table's rule (a line per cured code) gives it no line.
    Repair("import", plan_import,
           "bring in the conversations of another home (a copy, a backup, an old machine's .codex) "
           "this one lacks",
           "Copy each rollout of OTHER_HOME (a Codex home, or only its sessions/ folder) that this "
           "home lacks to where Codex keeps it, add its state DB row (built as reindex builds "
           "one), its history projection and its name. A thread id both homes have is compared: "
           "identical copies are skipped; when one copy is a byte prefix of the other the longer "
           "is kept (the shorter stays in the backup); anything else is reported as a conflict and "
           "neither is changed. OTHER_HOME is only read: its DBs are opened immutable or copied, "
           "and its auth.json and config.toml are never opened.",
           after=("rebuild-db",), options=import_options),
    Repair("remap-cwd", plan_cwd_remap,
           "move threads to the new path of a project folder that moved (another machine, user or "
           "mount)",
           "For every thread whose folder is OLD_PREFIX or lies under it (whole path components; "
           "Windows, \\\\?\\ and WSL /mnt/c spellings compare equal), rewrite the folder where "
           "Codex reads it: the state DB row's cwd, the cwd in session_meta, turn_context and "
           "thread_settings_applied lines (byte-exact, history offsets kept true), and Desktop's "
           "workspace roots in .codex-global-state.json. The dry run lists each thread's old and "
           "new folder.",
           cures=("cwd_moved",), after=("rebuild-db", "reindex"), options=remap_cwd_options,
           next_args=remap_cwd_next_args),
)
REPAIR_BY_NAME = {r.name: r for r in REPAIRS}


def repairs_in_order() -> List[Repair]:
    """REPAIRS in table order, each preceded by the ones it names in `after` (depth first)."""
    done: List[Repair] = []

    def place(repair: Repair, path: Tuple[str, ...]) -> None:
        if repair in done or repair.name in path:
            return
        for name in repair.after:
            if name in REPAIR_BY_NAME:
                place(REPAIR_BY_NAME[name], path + (repair.name,))
        done.append(repair)

    for repair in REPAIRS:
        place(repair, ())
    return done


# ---------------------------------------------------------------------------------------------
# Compatibility, judged by what a plan touches: the tables, columns, types and triggers it
# reads as keys and guards or writes, and the released migrations' checksums. A schema newer
# than any release checked is written to when all of that is unchanged, and the output says so.
# ---------------------------------------------------------------------------------------------


def plan_touches(plan: Plan) -> Dict[Path, Dict[str, set]]:
    """DB -> table -> the columns the plan's SQL names (keys, guards, values)."""
    touched: Dict[Path, Dict[str, set]] = {}
    for change in plan.sql:
        columns = touched.setdefault(change.db, {}).setdefault(change.table, set())
        columns.update(change.key, change.expect, change.values)
    return touched


def repairs_touch(inv: Inventory) -> Dict[Path, Dict[str, set]]:
    """What any repair may touch in this home's DBs: the known columns each known table has."""
    touched: Dict[Path, Dict[str, set]] = {}
    if inv.live_db is not None:
        known = set(KNOWN_COLUMN_TYPES["threads"])
        touched[inv.live_db.path] = {"threads": set(inv.live_db.columns) & known}
    history = history_db_path(inv)
    if history is not None:
        try:
            with readonly_db(history) as conn:
                touched[history] = {t: set(table_columns(conn, t)) & set(KNOWN_COLUMN_TYPES[t])
                                    for t in ("thread_turns", "thread_history_projection_state")}
        except sqlite3.Error:
            touched[history] = {}
    return touched


def trigger_digest(sql: str) -> str:
    return hashlib.sha256(" ".join(str(sql).split()).encode("utf-8")).hexdigest()[:12]


def shape_changes(db: Path, tables: Dict[str, set]) -> List[str]:
    """How the named tables and columns of `db` differ from the shape the checked releases made."""
    changes: List[str] = []
    try:
        with readonly_db(db) as conn:
            for table, columns in sorted(tables.items()):
                known = KNOWN_COLUMN_TYPES.get(table, {})
                live = {row[1]: str(row[2] or "").upper()
                        for row in conn.execute("PRAGMA table_info(%s)" % table)}
                if not live:
                    changes.append("table %s is missing" % table)
                    continue
                for column in sorted(columns):
                    if column not in known:
                        changes.append("%s.%s is not a column of the releases checked"
                                       % (table, column))
                    elif column not in live:
                        changes.append("%s.%s is missing" % (table, column))
                    elif live[column] != known[column]:
                        changes.append("%s.%s is %s, was %s"
                                       % (table, column, live[column] or "untyped", known[column]))
                for name, sql in conn.execute("SELECT name, sql FROM sqlite_master WHERE type = "
                                              "'trigger' AND tbl_name = ?",
                                              (table,)):
                    if KNOWN_TRIGGERS.get(name) != trigger_digest(sql):
                        changes.append("trigger %s on %s is %s"
                                       % (name, table,
                                          "changed" if name in KNOWN_TRIGGERS else "new"))
    except sqlite3.Error as exc:
        # Also when it cannot be opened: then this is the only line.
        changes.append("%s cannot be read (%s)" % (db.name, short(str(exc), 80)))
    return changes


def applied_migrations(db: StateDb) -> Dict[int, str]:
    """Version -> description of every migration recorded in the state DB."""
    try:
        with readonly_db(db.path) as conn:
            if not table_exists(conn, "_sqlx_migrations"):
                return {}
            return {int(v): str(d)
                    for v, d in conn.execute("SELECT version, description FROM _sqlx_migrations")}
    except (sqlite3.Error, ValueError, TypeError):
        return {}


def schema_compatibility(inv: Inventory, plan: Optional[Plan] = None) -> Optional[Dict[str, Any]]:
    """Whether what `plan` touches (without a plan: what any repair may touch) has the shape it
    has in the releases this tool was checked against. None without a readable state DB."""
    live = inv.live_db
    if live is None or live.error is not None:
        return None
    touched = plan_touches(plan) if plan is not None else repairs_touch(inv)
    migrations = applied_migrations(live)
    newer = (live.schema_version or 0) > NEWEST_CHECKED_SCHEMA
    changed: List[str] = []
    for db, tables in sorted(touched.items(), key=lambda kv: str(kv[0])):
        if newer and NEWEST_CHECKED_SCHEMA in migrations:
            # Planners leave out columns a schema lacks (older releases had fewer). Past the
            # newest release checked, a known column that is gone was dropped or renamed, and a
            # plan built without it (offsets not shifted, say) would be incomplete.
            tables = {t: set(cs) | set(KNOWN_COLUMN_TYPES.get(t, {})) for t, cs in tables.items()}
        changed.extend(shape_changes(db, tables))
    if live.path in touched and live.checksum_drift:
        changed.append("released migration(s) %s carry other checksums"
                       % ", ".join(map(str, live.checksum_drift[:5])))
    return {"schema_version": live.schema_version, "newest_checked": NEWEST_CHECKED_SCHEMA,
            "newer": newer,
            "unchecked_migrations": ["%d %s" % (v, d)
                                     for v, d in sorted(migrations.items())
                                     if v > NEWEST_CHECKED_SCHEMA],
            "touches": sorted("%s.%s" % (t, c) for tables in touched.values()
                              for t, cs in tables.items() for c in cs)
            if plan is not None else sorted(t for tables in touched.values() for t in tables),
            "changed": changed, "unchanged": not changed}


def compatibility_line(compat: Optional[Dict[str, Any]]) -> Optional[str]:
    """The sentence a newer or changed schema earns in the output; None when there is nothing to
    say."""
    if not compat or (not compat["newer"] and compat["unchanged"]):
        return None
    version = "state DB schema %s" % compat["schema_version"]
    if compat["newer"]:
        version += " (newer than %d, the newest checked: %s)" % (
            compat["newest_checked"],
            "; ".join(compat["unchecked_migrations"]) or "unknown migrations")
    if compat["unchanged"]:
        return "%s; what this touches is unchanged, so writing is safe" % version
    return "%s; what this touches changed shape: %s" % (version, "; ".join(compat["changed"][:5]))


# ---------------------------------------------------------------------------------------------
# Safety: preflight refusals, all through one helper, each naming its override (if any).
# ---------------------------------------------------------------------------------------------


def refuse(reason: str, override: Optional[str]) -> RefusedError:
    if override:
        tail = " If you want to proceed anyway, use %s." % override
    else:
        tail = " This check has no override."
    return RefusedError("will not write: %s.%s" % (reason, tail))


def preflight(inv: Inventory, plan: Plan, force: bool) -> None:
    check_plan_paths(inv, plan)
    compat = schema_compatibility(inv, plan)
    if compat and compat["changed"] and not force:
        raise refuse("what this plan touches changed shape (state DB schema version %s): %s" % (
            compat["schema_version"], "; ".join(compat["changed"][:5])), "--force")
    users = codex_users(inv.home,
                        [d.path for d in inv.dbs] + [p for p in [history_db_path(inv)] if p])
    repair = REPAIR_BY_NAME.get(plan.command)  # restore writes through here too; it is no repair
    if (repair is not None and repair.desktop_must_quit) or any(
            w.path.name == ".codex-global-state.json" for w in plan.file_writes):
        # Desktop rewrites .codex-global-state.json when it exits, undoing an edit made while it
        # runs.
        users += desktop_processes()
    if users and not force:
        raise refuse("Codex is using this home (%s); quit Codex Desktop, the IDE extension and any "
                     "codex process first" % "; ".join(users[:3]), "--force")


# What this tool ever writes, and so all a backup of it may name and a restore may put back:
# rollouts under sessions/ and archived_sessions/, session_index.jsonl, Desktop's
# .codex-global-state.json, and the state and history DBs (with their -wal/-shm/-journal files,
# which rebuild-db moves). One predicate for every plan (preflight) and for restore, so a
# manifest naming anything else (auth.json, config.toml, a lock) is refused before it is opened.
# CODEX-COMPAT: the names are those of 0.100.0-0.171.0.
TOOL_WRITTEN_TOP_FILES = ("session_index.jsonl", ".codex-global-state.json")
ROLLOUT_FOLDERS = ("sessions", "archived_sessions")
DB_NAME_RE = re.compile(r"^(?:state(?:_\d+)?|thread_history_\d+)\.sqlite$")
DB_FILE_RE = re.compile(r"^(?:state(?:_\d+)?|thread_history_\d+)\.sqlite(?:-wal|-shm|-journal)?$")
CREDENTIAL_NAME_RE = re.compile(r"auth|credential|token|cookie|secret|passw|api.?key"
                                r"|\.lock$|\.key$|\.pem$", re.IGNORECASE)


def tool_write_refusal(text: str, kind: str) -> Optional[str]:
    """Why `text` (a path relative to the home; a DB may be absolute) is not a file this tool
    writes, or None when it is one. Pure: it looks at the name only, never at the file."""
    parts = [p for p in re.split(r"[\\/]+", text) if p]
    if not parts:
        return "an empty path"
    if any(CREDENTIAL_NAME_RE.search(part) for part in parts[-1:]) or parts[-1] == "auth.json":
        return "a credential or lock file, which this tool never opens"
    name = parts[-1]
    if kind == "sqlite":
        return None if DB_NAME_RE.match(name) else "not a state or history DB"
    if len(parts) == 1 and (name in TOOL_WRITTEN_TOP_FILES or DB_FILE_RE.match(name)):
        return None
    if parts[0] in ROLLOUT_FOLDERS and len(parts) > 1 and ROLLOUT_NAME_RE.match(name):
        return None
    return ("not a file this tool writes (only rollouts, session_index.jsonl, "
            ".codex-global-state.json and the DBs)")


def check_tool_writes(text: str, kind: str) -> None:
    reason = tool_write_refusal(text, kind)
    if reason:
        raise refuse("%s is %s" % (text, reason), None)


def check_plan_paths(inv: Inventory, plan: Plan) -> None:
    """Where a plan writes: inside the home, through no symlink, only files this tool writes.
    The same rule for --apply (preflight) and for the dry run (plan_path_refusal)."""
    verified: set = set()  # folders already walked: a provider move names ~10,000 in a few dozen
    for path in plan.touched_files():
        check_inside_home(path, inv.home, verified)
        check_tool_writes(display_path(path, inv.home), "file")
    for db in plan.touched_dbs():
        check_tool_writes(db.name, "sqlite")
        inside = is_within(Path(os.path.realpath(str(db))), inv.home)
        if not inside and not is_configured_sqlite_home(db, inv):
            raise refuse("%s lies outside CODEX_HOME" % db, None)


def plan_path_refusal(inv: Inventory, plan: Plan) -> Optional[str]:
    """What --apply would refuse about where this plan writes, said by the dry run already."""
    try:
        check_plan_paths(inv, plan)
    except RefusedError as exc:
        return str(exc)
    return None


def is_configured_sqlite_home(db: Path, inv: Inventory) -> bool:
    return any(db.parent == folder
               for folder, origin in sqlite_home_dirs(inv.home, inv.config, dict(os.environ))
               if origin in ("config sqlite_home", "CODEX_SQLITE_HOME"))


def check_inside_home(path: Any, home: Path, verified: Optional[set] = None) -> None:
    """Writes stay inside the home and never go through a symlink (a symlinked home itself is
    resolved once, up front, and is fine). `verified` holds the folders earlier calls of one
    check walked and found to be no link: the walk up from a path stops at the first of them
    (strings, not Paths: a provider move checks every rollout it rewrites)."""
    root = str(home)
    current = os.path.abspath(str(path))
    if not _text_within(current, root):
        raise refuse("%s lies outside CODEX_HOME" % path, None)
    walked = []
    while current != root and _text_within(current, root):
        if verified is not None and current in verified:
            break
        parent = os.path.dirname(current)
        # CODEX-COMPAT: a linked sessions/ or archived_sessions/ (a synced folder) is followed by
        # every release measured (0.120.0-0.171.0): it is where the conversations live, as a
        # linked home is. A link deeper down is skipped by Codex and never written through.
        top_level_folder = (parent == root
                            and os.path.basename(current) in ("sessions", "archived_sessions"))
        if _is_link_for_guard(current, path, home) and not top_level_folder:
            raise refuse("%s is reached through a symlink (%s)"
                         % (display_path(path, home), display_path(current, home)), None)
        walked.append(current)
        if parent == current:  # a file system's root ("//" is its own parent): nothing above
            break
        current = parent
    if verified is not None:
        verified.update(walked[1:])  # the folders, not the file: each file is looked at itself
    mode = _guard_lstat_mode(str(path), path, home, follow=True)
    if mode is not None and not S_ISREG(mode):
        raise refuse("%s is not a regular file" % display_path(path, home), None)


def _is_link_for_guard(text: str, path: Any, home: Path) -> bool:
    mode = _guard_lstat_mode(text, path, home)
    return mode is not None and S_ISLNK(mode)


def _guard_lstat_mode(text: str, path: Any, home: Path, follow: bool = False) -> Optional[int]:
    """The mode of `text` (None where nothing is there). Anything else the system answers (a
    name too long, a folder that may not be read) leaves the guard unable to say the write is
    safe: it refuses then, before anything is written."""
    try:
        return (os.stat(text) if follow else os.lstat(text)).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise refuse("%s cannot be checked (%s)" % (display_path(path, home),
                                                    exc.strerror or exc), None) from None


def _text_within(text: str, root: str) -> bool:
    """is_within for normalised absolute path strings: `root` itself or a path under it."""
    return text == root or text.startswith(root if root.endswith(os.sep) else root + os.sep)


def codex_users(home: Path, dbs: List[Path]) -> List[str]:
    """Who is using the home right now. An idle `codex app-server` (what Desktop and the IDE run)
    holds no write lock, but every open SQLite connection in WAL mode holds a shared lock on byte
    128 of the -shm file, which F_GETLK reports with the holder's pid."""
    probed = []
    for db in dbs:
        pid = shm_lock_holder(Path(str(db) + "-shm"))
        if pid:
            probed.append((str(pid), "pid %d has %s open" % (pid, display_path(db, home))))
    named = processes_with_open_files(home)
    # The /proc scan names the process; drop the lock probe's line for a pid it already named.
    named_pids = {pid for pid, _line in named if pid}
    users = [line for pid, line in probed if pid not in named_pids] + writer_lock_holders(home)
    return sorted(set(users + [line for _pid, line in named]))


def shm_lock_holder(shm: Path) -> Optional[int]:
    if os.name != "posix" or not shm.exists():
        return None
    import fcntl
    import struct
    if sys.platform.startswith("linux"):
        layout = "hhxxxxqqixxxx"
        request = struct.pack(layout, fcntl.F_WRLCK, os.SEEK_SET, 128, 1, 0)
    elif sys.platform == "darwin" or "bsd" in sys.platform:
        layout = "qqihh"
        request = struct.pack(layout, 128, 1, 0, fcntl.F_WRLCK, os.SEEK_SET)
    else:  # pragma: no cover - other POSIX systems: the process scan still applies
        return None
    try:
        fd = os.open(str(shm), os.O_RDWR)
    except OSError:
        try:
            fd = os.open(str(shm), os.O_RDONLY)
        except OSError:
            return None
    try:
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, request)
    except OSError:
        return None
    finally:
        os.close(fd)
    fields = struct.unpack(layout, answer)
    if sys.platform.startswith("linux"):
        l_type, pid = fields[0], fields[4]
    else:
        l_type, pid = fields[3], fields[2]
    return pid if l_type != fcntl.F_UNLCK else None


def writer_lock_holders(home: Path) -> List[str]:
    folder = home / "thread-writer-locks"
    if os.name != "posix" or not folder.is_dir():
        return []
    import fcntl
    holders = []
    for lock in sorted(folder.iterdir()):
        if not lock.is_file():
            continue
        try:
            fd = os.open(str(lock), os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError:
            holders.append("a Codex thread writer holds %s" % display_path(lock, home))
        finally:
            os.close(fd)
    return holders


def processes_with_open_files(home: Path) -> List[Tuple[str, str]]:
    """(pid, line) of each process with a file of the home open: /proc on Linux, lsof
    elsewhere; on Windows (pid "") each Codex process tasklist lists."""
    if os.name == "nt":  # pragma: no cover - exercised on Windows CI
        return [("", "%s is running" % name) for name in _windows_codex_processes()]
    proc = Path("/proc")
    if proc.is_dir() and (proc / "self" / "fd").is_dir():
        return _proc_holders(home)
    lsof = shutil.which("lsof")
    if lsof is None:  # pragma: no cover
        return []
    import subprocess
    try:
        done = subprocess.run([lsof, "-Fpc", "+D", str(home / "sessions")],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=20)
        out = done.stdout.decode("utf-8", "replace")
    except (OSError, subprocess.SubprocessError):  # pragma: no cover
        return []
    users, pid = [], None
    for line in out.splitlines():
        if line.startswith("p"):
            pid = line[1:]
        elif line.startswith("c") and pid and int(pid) != os.getpid():
            users.append((pid, "pid %s (%s) has files of the home open" % (pid, line[1:])))
    return users


def _proc_holders(home: Path) -> List[Tuple[str, str]]:
    users, named = [], set()
    for pid, target in proc_open_files(home):
        if pid not in named and BACKUP_DIR_NAME not in target:
            named.add(pid)
            users.append((pid, "pid %s (%s) has %s open"
                          % (pid, _process_name(pid), display_path(Path(target), home))))
    return users


def proc_open_files(home: Path) -> Iterator[Tuple[str, str]]:
    """(pid, path) for every file under the home that another process has open (Linux /proc)."""
    for pid, _link, target in other_process_fds():
        if target.startswith(home_prefixes(home)):
            yield pid, target


def home_prefixes(home: Path) -> Tuple[str, ...]:
    """What an open file's path under the home starts with, spelled as given or resolved."""
    return tuple({str(home) + os.sep, os.path.realpath(str(home)) + os.sep})


def other_process_fds() -> Iterator[Tuple[str, str, str]]:
    """(pid, its /proc fd link, what the link names) for every open file of every other
    process this user may look at (Linux /proc); a process or fd gone meanwhile is passed over."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            fds = os.listdir("/proc/%s/fd" % entry)
        except OSError:
            continue
        for fd in fds:
            link = "/proc/%s/fd/%s" % (entry, fd)
            try:
                target = os.readlink(link)
            except OSError:
                continue
            yield entry, link, target


def _process_name(pid: str) -> str:
    try:
        return Path("/proc/%s/comm" % pid).read_text().strip()
    except OSError:
        return "?"


def desktop_processes() -> List[str]:
    """Codex Desktop (an Electron app named Codex) running on this machine."""
    if os.name == "nt":  # pragma: no cover
        return ["%s is running" % name for name in _windows_codex_processes()
                if "codex.exe" in name.lower() and "app" in name.lower()]
    found = []
    proc = Path("/proc")
    if proc.is_dir():
        for entry in os.listdir("/proc"):
            if (entry.isdigit() and int(entry) != os.getpid()
                    and _process_name(entry) in ("Codex", "codex-desktop")):
                found.append("Codex Desktop is running (pid %s)" % entry)
        return found
    pgrep = shutil.which("pgrep")
    if pgrep:  # pragma: no cover - macOS
        import subprocess
        out = subprocess.run([pgrep, "-x", "Codex"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL).stdout
        found = ["Codex Desktop is running (pid %s)" % p for p in out.decode().split()]
    return found


def _windows_codex_processes() -> List[str]:  # pragma: no cover - Windows only
    """The image names of the Codex processes tasklist lists."""
    import subprocess
    try:
        out = subprocess.run(["tasklist", "/FO", "CSV", "/NH"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL,
                             timeout=20).stdout.decode("utf-8", "replace")
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.split(",")[0].strip('"') for line in out.splitlines()
            if line.lower().startswith(('"codex', '"codex.exe'))]


class ToolLock:
    """Two copies of the tool never apply to one home at once: an exclusive lock on a file of
    our own, released by the OS if the process dies."""

    def __init__(self, home: Path) -> None:
        self.path = home / BACKUP_DIR_NAME / ".lock"
        self.handle: Any = None

    def __enter__(self) -> "ToolLock":
        folder = self.path.parent
        check_backup_root(folder)
        try:
            folder.mkdir(mode=0o700, exist_ok=True)
            check_backup_root(folder)
            fd = os.open(str(self.path),
                         os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0)
                         | getattr(os, "O_NONBLOCK", 0), 0o600)
            self.handle = os.fdopen(fd, "a+b")
        except OSError as exc:
            if os.path.islink(str(self.path)):
                raise refuse("%s is a symlink; the lock is never followed out of the home"
                             % display_path(
                    self.path, self.path.parent.parent), None) from None
            raise refuse("cannot create %s (%s): the home is not writable" % (
                self.path.parent, exc.strerror or exc), None) from None
        try:
            if os.name == "nt":  # pragma: no cover
                import msvcrt
                msvcrt.locking(self.handle.fileno(), msvcrt.LK_NBLCK, 1)
            else:
                import fcntl
                fcntl.flock(self.handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.handle.close()
            raise refuse("another codex-session-recovery run is writing to this home",
                         None) from None
        return self

    def __exit__(self, *exc: Any) -> None:
        self.handle.close()


# ---------------------------------------------------------------------------------------------
# Backups and restore. A backup holds each DB (through SQLite's online backup API, which
# includes pages still in the -wal) and each file to be rewritten, byte for byte, plus a
# manifest. Restore puts exactly those back.
# ---------------------------------------------------------------------------------------------


def _time_ns() -> int:
    import time
    return time.time_ns()


def check_backup_root(folder: Path) -> None:
    """recovery-backups/ is a real folder of the home: a symlink would send the copies (the
    conversations) elsewhere, a file in its place is not a folder to write into."""
    if os.path.islink(str(folder)):
        raise refuse("%s is a symlink; backups are never written outside the home" % folder.name,
                     None)
    if os.path.lexists(str(folder)) and not folder.is_dir():
        raise refuse("%s exists and is not a folder; move it away so backups can be made" % folder,
                     None)


def make_backup_dir(home: Path, command: str) -> Path:
    root = home / BACKUP_DIR_NAME
    check_backup_root(root)
    root.mkdir(mode=0o700, exist_ok=True)
    stamp = utc_now().strftime("%Y%m%dT%H%M%SZ")
    for n in range(1000):
        folder = root / ("%s-%s%s" % (stamp, command, "" if n == 0 else "-%d" % n))
        try:
            folder.mkdir(mode=0o700)
            return folder
        except FileExistsError:
            continue
    raise ApplyError("could not create a backup folder under %s" % root)


# A DB's content as backups and journals name it: the tool's own digest, with its scheme in
# front. Digests recorded before it are a bare SHA-256 of sqlite3's iterdump() text, which CPython
# lays out by version (3.9 puts the sqlite_sequence statements among the tables, 3.10 and later
# just before COMMIT; 3.13 adds a pragma where a foreign key is violated). Every real state DB
# has a sqlite_sequence, so a home repaired under one python3 could not trust its backup under
# another; those digests are still read, in every layout (legacy_db_digests).
DB_DIGEST_SCHEME = "sqlite-rows-1:"
# Rows encoded per JSON text: bounded memory (~1.4 MB at 256 rows of a state DB's threads),
# and one encoder call per batch, not per row. The digest does not depend on it.
DIGEST_BATCH_ROWS = 256
# The SQLite tables iterdump() dumped beside the schema's own, which the digest keeps.
DIGESTED_INTERNAL_TABLES = ("sqlite_sequence", "sqlite_stat1")


def _blob_json(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"blob": value.hex()}  # an object: never equal to the encoding of a text
    raise TypeError("not a SQLite value: %r" % type(value))


# JSON gives each SQLite value one exact text in every Python 3: an integer's digits, a real's
# shortest round-trip repr, a text with every non-ASCII character escaped, a blob as hex.
_DIGEST_JSON = json.JSONEncoder(separators=(",", ":"), default=_blob_json, check_circular=False)


def db_digest(conn: sqlite3.Connection) -> str:
    """A digest of the whole DB's content: the SHA-256 of the JSON of the schema's SQL, then of
    each table's name and array of rows in rowid order. `restore` puts the whole DB back, so it
    compares this, not only the rows the run touched: a change Codex made since would be undone
    too."""
    cursor = conn.cursor()
    cursor.row_factory = None  # tuples, whatever the connection's factory
    digest = hashlib.sha256()
    encode = _DIGEST_JSON.encode
    schema = cursor.execute("SELECT type, name, tbl_name, sql FROM sqlite_master "
                            "ORDER BY type, name, tbl_name, sql").fetchall()
    digest.update(encode(schema).encode("ascii"))
    for kind, name, _table, _sql in schema:
        if kind != "table" or (name.startswith("sqlite_")
                               and name not in DIGESTED_INTERNAL_TABLES):
            continue
        digest.update(encode(name).encode("ascii") + b"[")
        rows, separator = _table_rows(cursor, name), b""
        while True:
            batch = rows.fetchmany(DIGEST_BATCH_ROWS)
            if not batch:
                break
            # The batch's array without its brackets: the table's one array, however batched.
            digest.update(separator + encode(batch)[1:-1].encode("ascii"))
            separator = b","
        digest.update(b"]")
    return DB_DIGEST_SCHEME + digest.hexdigest()


def _table_rows(cursor: sqlite3.Cursor, table: str) -> sqlite3.Cursor:
    """Every row of `table` in an order that does not depend on the query planner (which may
    read a covering index instead): by rowid, or for a WITHOUT ROWID table, which has none to
    name, by its primary key's columns."""
    quoted = _quoted_name(table)
    try:
        return cursor.execute("SELECT * FROM %s ORDER BY rowid" % quoted)
    except sqlite3.OperationalError:
        columns = cursor.execute("PRAGMA table_info(%s)" % quoted).fetchall()
        key = ", ".join(_quoted_name(name) for _position, name in
                        sorted((info[5], info[1]) for info in columns if info[5]))
        return cursor.execute("SELECT * FROM %s%s" % (quoted, " ORDER BY " + key if key else ""))


def _quoted_name(name: str) -> str:
    return '"%s"' % name.replace('"', '""')


_SEQUENCE_LINES = ('DELETE FROM "sqlite_sequence";', 'INSERT INTO "sqlite_sequence" VALUES(')
_FOREIGN_KEYS_OFF = "PRAGMA foreign_keys=OFF;"


def legacy_db_digests(conn: sqlite3.Connection) -> set:
    """The digests recorded before DB_DIGEST_SCHEME, as each CPython 3.9-3.13 took them of this
    content, from one pass of this Python's iterdump(): its lines with the sqlite_sequence
    statements where 3.9 put them and where later releases do; where a foreign key is violated,
    each of those also with 3.13's pragma in front."""
    cursor = conn.cursor()
    cursor.row_factory = None
    sequence, anchors = _legacy_sequence_statements(cursor)
    violated = cursor.execute("PRAGMA foreign_key_check").fetchone() is not None
    layouts = {(inline, pragma): hashlib.sha256() for inline in (True, False)
               for pragma in ((False, True) if violated else (False,))}
    placed = False
    for line in conn.iterdump():
        if line == _FOREIGN_KEYS_OFF or line.startswith(_SEQUENCE_LINES):
            continue  # where this Python put them: each layout puts them in its own place
        for (inline, pragma), digest in layouts.items():
            if pragma and line == "BEGIN TRANSACTION;":
                digest.update(_FOREIGN_KEYS_OFF.encode("utf-8"))
            if (line in anchors and not placed) if inline else line == "COMMIT;":
                for statement in sequence:
                    digest.update(statement.encode("utf-8", "surrogatepass"))
            digest.update(line.encode("utf-8", "surrogatepass"))
        placed = placed or line in anchors
    return {digest.hexdigest() for digest in layouts.values()}


def _legacy_sequence_statements(cursor: sqlite3.Cursor) -> Tuple[List[str], set]:
    """iterdump()'s statements for sqlite_sequence (none without that table), and the lines
    before which 3.9 wrote them: in that table's place in name order, so before the next table
    it dumped, or without one, before the first statement that is not a table's."""
    tables = cursor.execute('SELECT "name", "sql" FROM "sqlite_master" WHERE "sql" NOT NULL '
                            'AND "type" == \'table\' ORDER BY "name"').fetchall()
    if not any(name == "sqlite_sequence" for name, _sql in tables):
        return [], set()
    statements = [_SEQUENCE_LINES[0]] + [row[0] for row in cursor.execute(
        "SELECT 'INSERT INTO \"sqlite_sequence\" VALUES('||quote(\"name\")||','"
        "||quote(\"seq\")||');' FROM \"sqlite_sequence\"")]
    for name, sql in tables:
        if name > "sqlite_sequence" and name == "sqlite_stat1":
            return statements, {'ANALYZE "sqlite_master";'}
        if name > "sqlite_sequence" and not name.startswith("sqlite_"):
            return statements, {sql + ";"}
    others = cursor.execute("SELECT sql FROM sqlite_master WHERE sql NOT NULL "
                            "AND type IN ('index', 'trigger', 'view')").fetchall()
    return statements, {sql + ";" for (sql,) in others} | {"COMMIT;"}


class WrittenSpan(NamedTuple):
    """Where the manifest last written holds a fixed list's text, in which form (_Span)."""
    file: str
    form: str
    start: int
    length: int
    sha256: bytes


class Streamed:
    """A list of the backup manifest made again from the plan, an item at a time, each time the
    manifest is written: a provider move at 100,000 threads plans ~42,000 changes, and its
    actions and touched rows held as dicts for the whole apply were ~35 MB. A `fixed` list (the
    plan's actions and rows: the plan does not change once made) is made the same each time:
    `written` says where its text lies in the manifest last written (write_manifest), and the
    next write copies it from there instead of making it again."""

    __slots__ = ("make", "fixed", "written")

    def __init__(self, make: Callable[[], Iterable[Any]], fixed: bool = False) -> None:
        self.make, self.fixed = make, fixed
        self.written: Optional[WrittenSpan] = None

    def __iter__(self) -> Iterator[Any]:
        return iter(self.make())


def touched_rows(plan: Plan, db: Path) -> Dict[str, Streamed]:
    """The key of each row the plan changes in `db`, by table, each once and in plan order."""
    tables: List[str] = []
    for change in plan.sql:
        if change.table not in tables and change.db == db:
            tables.append(change.table)
    return {table: Streamed(lambda table=table: _touched_keys(plan, db, table), fixed=True)
            for table in tables}


def _touched_keys(plan: Plan, db: Path, table: str) -> Iterator[Dict[str, Any]]:
    seen = set()  # not a search of the keys so far: a projection has thousands of rows
    for change in plan.sql:
        if change.table == table and change.db == db:
            key = change.key
            mark = json.dumps(key, sort_keys=True, default=str)  # equal as the manifest shows them
            if mark not in seen:
                seen.add(mark)
                yield key


# A copied file's facts in the backup manifest, packed: whether it existed, its size, mode and
# mtime_ns, and the SHA-256 of its copy (zeros where it did not exist); then whether the SHA-256
# of the copy's bytes with the planned edits is known, and it (not in the manifest: the rewrite's).
_COPIED_FILE = struct.Struct("<?QIq32s?32s")
# Its SHA-256 when the run completed, packed the same way: whether it had one (it existed), and it.
_COPIED_AFTER = struct.Struct("<?32s")
# What a rollout the run replaced was right after it was written: whether it was, st_dev, st_ino,
# size, mtime_ns and its SHA-256 (a dict of path -> state was ~250 bytes a rollout, ~2.7 MB at
# 100,000 threads). finish_manifest reuses the digest while the file is still exactly that.
_COPIED_WRITTEN = struct.Struct("<?QQQq32s")


class CopiedFiles:
    """The backup manifest's file entries, in the order the files were copied: the name the
    manifest gives each, and its facts packed; each entry's dict is made again as the manifest is
    written. As dicts (nine keys, three strings) they were ~750 bytes a rollout for the whole
    apply, ~8 MB at 100,000 threads."""

    __slots__ = ("names", "_facts", "_odd_backups", "_after", "_written")

    def __init__(self) -> None:
        self.names: List[str] = []
        self._facts = bytearray()
        self._odd_backups: Dict[int, str] = {}  # a copy not at files/<name>: outside the home
        self._after: Optional[bytearray] = None
        self._written: Optional[bytearray] = None

    def add(self, name: str, backup: str, stat: Optional[os.stat_result],
            digest: Optional[str], edited: Optional[str] = None) -> None:
        """A file copied to `backup` (its stat and digest, and `edited`: the digest of its bytes
        with the planned edits, when known), or one that did not exist (None)."""
        at = len(self.names)
        self.names.append(name)
        if backup != os.path.join("files", name):
            self._odd_backups[at] = backup
        self._facts += _COPIED_FILE.pack(
            stat is not None, stat.st_size if stat else 0, stat.st_mode & 0o7777 if stat else 0,
            stat.st_mtime_ns if stat else 0, bytes.fromhex(digest) if digest else b"",
            edited is not None, bytes.fromhex(edited) if edited else b"")

    def __len__(self) -> int:
        return len(self.names)

    def _facts_of(self, at: int) -> Tuple[bool, int, int, int, bytes]:
        return _COPIED_FILE.unpack_from(self._facts, at * _COPIED_FILE.size)[:5]

    def edited_digest(self, at: int) -> Optional[str]:
        """The SHA-256 of the copy's bytes with the planned edits (None: not known)."""
        known, digest = _COPIED_FILE.unpack_from(self._facts, at * _COPIED_FILE.size)[5:]
        return digest.hex() if known else None

    def backup(self, at: int) -> Optional[str]:
        """Where the file's copy is in the backup folder (None: it did not exist)."""
        if not self._facts_of(at)[0]:
            return None
        return self._odd_backups.get(at) or os.path.join("files", self.names[at])

    def sha256_before(self, at: int) -> Optional[str]:
        existed, _size, _mode, _mtime_ns, digest = self._facts_of(at)
        return digest.hex() if existed else None

    def set_after(self, at: int, digest: Optional[str]) -> None:
        if self._after is None:
            self._after = bytearray(_COPIED_AFTER.size * len(self.names))
        _COPIED_AFTER.pack_into(self._after, at * _COPIED_AFTER.size, digest is not None,
                                bytes.fromhex(digest) if digest else b"")

    def sha256_after(self, at: int) -> Optional[str]:
        if self._after is None:
            return None
        known, digest = _COPIED_AFTER.unpack_from(self._after, at * _COPIED_AFTER.size)
        return digest.hex() if known else None

    def set_written(self, at: int, identity: Tuple[int, int], size: int, mtime_ns: int,
                    digest: str) -> None:
        """The file was replaced by the run: the new file's (st_dev, st_ino), size, mtime_ns and
        the SHA-256 it was written with."""
        if self._written is None:
            self._written = bytearray(_COPIED_WRITTEN.size * len(self.names))
        _COPIED_WRITTEN.pack_into(self._written, at * _COPIED_WRITTEN.size, True, *identity,
                                  size, mtime_ns, bytes.fromhex(digest))

    def written_digest(self, at: int, path: Path) -> Optional[str]:
        """The SHA-256 the run wrote `path` with, while it is still exactly that file (same
        inode, size and mtime: nothing appended since); None otherwise, or when not written."""
        if self._written is None:
            return None
        known, dev, ino, size, mtime_ns, digest = _COPIED_WRITTEN.unpack_from(
            self._written, at * _COPIED_WRITTEN.size)
        if not known:
            return None
        try:
            now = os.stat(str(path))
        except OSError:
            return None
        same = (now.st_dev, now.st_ino, now.st_size, now.st_mtime_ns) == (dev, ino, size, mtime_ns)
        return digest.hex() if same else None

    def entry(self, at: int) -> Dict[str, Any]:
        """The entry as the manifest shows it."""
        existed, size, mode, mtime_ns, digest = self._facts_of(at)
        if not existed:
            return {"path": self.names[at], "kind": "file", "existed": False, "backup": None,
                    "size": None, "mode": None, "mtime_ns": None, "sha256_before": None,
                    "sha256_after": self.sha256_after(at)}
        return {"path": self.names[at], "kind": "file", "existed": True,
                "backup": self._odd_backups.get(at) or os.path.join("files", self.names[at]),
                "size": size, "mode": mode, "mtime_ns": mtime_ns, "sha256_before": digest.hex(),
                "sha256_after": self.sha256_after(at)}

    def by_name(self) -> Dict[str, int]:
        """Each file's place, by the name the manifest gives it (the last, if one is twice)."""
        return {name: at for at, name in enumerate(self.names)}

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        return (self.entry(at) for at in range(len(self.names)))


class ManifestEntries(Streamed):
    """The manifest's entries: each DB's (a dict; a few), then each copied file's."""

    __slots__ = ("dbs", "files")

    def __init__(self) -> None:
        super().__init__(self._all)
        self.dbs: List[Dict[str, Any]] = []
        self.files = CopiedFiles()

    def _all(self) -> Iterator[Dict[str, Any]]:
        yield from self.dbs
        yield from self.files


def backup_plan(inv: Inventory, plan: Plan, argv: Sequence[str]) -> Tuple[Path, Dict[str, Any]]:
    """The plan's backup. The manifest's actions and rows are written from the plan
    (Streamed), which the apply holds anyway."""
    dbs = {db: touched_rows(plan, db) for db in plan.touched_dbs()}
    actions = Streamed(lambda: plan.iter_actions_json(inv.home), fixed=True)
    return make_backup(inv.home, plan.command, dbs, plan.touched_files_and_edits(), actions, argv)


def make_backup(home: Path, command: str, dbs: Dict[Path, Dict[str, Streamed]],
                files: Iterable[Tuple[Path, Optional["RolloutEdit"]]], actions: Streamed,
                argv: Sequence[str]) -> Tuple[Path, Dict[str, Any]]:
    folder = make_backup_dir(home, command)
    try:
        return _fill_backup(folder, home, command, dbs, files, actions, argv)
    except BaseException:
        shutil.rmtree(str(folder), ignore_errors=True)
        raise


def _fill_backup(folder: Path, home: Path, command: str, dbs: Dict[Path, Dict[str, Streamed]],
                 files: Iterable[Tuple[Path, Optional["RolloutEdit"]]], actions: Streamed,
                 argv: Sequence[str]) -> Tuple[Path, Dict[str, Any]]:
    """Every DB and file copied into `folder`, and the manifest written last: each copy and its
    folder fsynced first, so a manifest on disk always names copies that are on disk. A file is
    hashed as it is copied, one read of it, so the digest is of exactly the bytes the copy
    holds; the rewrite then compares a rollout's bytes with this copy instead of hashing them
    again. For a rollout with its edit the same read also hashes those bytes with the edits
    applied (kept with its entry): what the rewrite will write when the rollout still holds the
    copy's bytes, so the rewrite need not hash what it writes."""
    manifest: Dict[str, Any] = {
        "tool": TOOL_NAME, "version": __version__, "command": command, "argv": list(argv),
        "created_at": utc_now().strftime("%Y-%m-%dT%H:%M:%SZ"), "codex_home": str(home),
        # Folder names have one-second resolution; this orders two runs of the same second.
        "created_ns": _time_ns(),
        "complete": False, "entries": ManifestEntries(), "actions": actions,
    }
    entries = manifest["entries"]
    for db, rows in dbs.items():
        target = folder / "files" / _backup_name(db, home)
        target.parent.mkdir(parents=True, exist_ok=True)
        source = open_db_readonly(db)
        dest = sqlite3.connect(str(target))
        try:
            source.backup(dest)
            # The digest of the copy, which restore checks and puts back: the live DB may have
            # taken another commit (Codex's) since the copy was made.
            entry = {"path": _manifest_path(db, home), "kind": "sqlite",
                     "backup": str(target.relative_to(folder)),
                     "rows": rows, "digest_before": db_digest(dest), "digest_after": None}
        finally:
            dest.close()
            source.close()
        fsync_path(target)
        entries.dbs.append(entry)
        _fault_point("mid_backup")
    folders = set()
    for path, edit in files:
        target = folder / "files" / _backup_name(path, home)
        if target.parent not in folders:
            target.parent.mkdir(parents=True, exist_ok=True)
            folders.add(target.parent)
        exists = path.exists()
        digest, stat, after = None, None, None
        if exists:
            after = EditedDigest(edit.replacements) if edit is not None else None
            digest, stat = copy_hashing(path, target, after)
        entries.files.add(_manifest_path(path, home), str(target.relative_to(folder)), stat,
                          digest, after.hexdigest() if after is not None else None)
    # Written first, synced together: the disk gets the copies in one stream, not one by one.
    for at in range(len(entries.files)):
        copy = entries.files.backup(at)
        if copy is not None:
            fsync_path(os.path.join(str(folder), copy))
    fsync_folders(folders_up_to(folder, list(folders)))
    write_manifest(folder, manifest)
    return folder, manifest


def copy_hashing(path: Path, target: Path,
                 also: Optional["EditedDigest"] = None) -> Tuple[str, os.stat_result]:
    """`path` copied to `target` in one read, hashed as it is read: the SHA-256 is of exactly the
    bytes the copy holds (and, into `also`, of those bytes with its edits). Returns it with the
    source's fstat after the copy; mode and times are carried over. Not synced here (the caller
    syncs all copies at once)."""
    digest = hashlib.sha256()
    source, opened = open_regular_with_stat(path)
    with source, open(str(target), "wb") as out:
        # One buffer, reused (see copy_span), no larger than the file: with a 1 MB one made
        # (and its pages mapped) for each, copying 10,722 small rollouts took 0.7-1 s more.
        view = memoryview(bytearray(min(READ_CHUNK, max(opened.st_size, 1))))
        for got in iter(lambda: source.readinto(view), 0):
            digest.update(view[:got])
            if also is not None:
                also.update(view[:got])
            out.write(view[:got])
        stat = os.fstat(source.fileno())
    os.chmod(str(target), stat.st_mode & 0o7777)
    os.utime(str(target), ns=(stat.st_atime_ns, stat.st_mtime_ns))
    return digest.hexdigest(), stat


class EditedDigest:
    """The SHA-256 of a file's bytes with planned replacements ((offset, length, new bytes), as
    RolloutEdit.replacements) applied, fed the original bytes in order, chunk by chunk: the
    digest of what write_edited_copy writes from those bytes. None (hexdigest) when the bytes
    fed end before the last replacement or the replacements overlap."""

    def __init__(self, replacements: Sequence[Tuple[int, int, bytes]]) -> None:
        self.digest = hashlib.sha256()
        self.pending = sorted(replacements)
        self.next = 0  # index of the next replacement to apply
        self.position = 0  # offset of the next byte fed
        self.skip_to = 0  # bytes before this offset are replaced, not hashed
        self.valid = True

    def update(self, chunk: Any) -> None:
        start, end = self.position, self.position + len(chunk)
        at = max(start, min(end, self.skip_to))
        while at < end and self.valid:
            if self.next < len(self.pending) and self.pending[self.next][0] < end:
                offset, length, new = self.pending[self.next]
                if offset < at:
                    self.valid = False  # overlapping replacements: write_edited_copy refuses too
                    break
                self.digest.update(chunk[at - start:offset - start])
                self.digest.update(new)
                self.next += 1
                self.skip_to = offset + length
                at = min(end, self.skip_to)
            else:
                self.digest.update(chunk[at - start:])
                at = end
        self.position = end

    def hexdigest(self) -> Optional[str]:
        if not self.valid or self.next < len(self.pending) or self.position < self.skip_to:
            return None
        return self.digest.hexdigest()


def folders_up_to(top: Path, folders: Iterable[Path]) -> set:
    """`top` and every folder between it and each of `folders` (the ones a backup created)."""
    found = {top}
    for folder in folders:
        while folder != top and is_within(folder, top) and folder not in found:
            found.add(folder)
            folder = folder.parent
    return found


def fsync_folders(folders: Iterable[Path]) -> None:
    """Each folder fsynced once, so the names created or renamed in it are on disk too (a file's
    own fsync does not cover its directory entry). Where folders cannot be opened (Windows),
    a no-op: there the rename's durability is the file system's."""
    if os.name != "posix":
        return
    import errno
    for folder in sorted(set(folders)):
        try:
            fd = os.open(str(folder), os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except PermissionError:
            continue  # a folder one may write in but not list: its rename is the disk's to keep
        try:
            os.fsync(fd)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, getattr(errno, "ENOTSUP", errno.EINVAL)):
                raise  # EINVAL: a file system that cannot sync a folder (it has no such step)
        finally:
            os.close(fd)


def _backup_name(path: Path, home: Path) -> str:
    try:
        return str(path.relative_to(home))
    except ValueError:
        return os.path.join("_outside", *[p for p in path.parts if p not in (os.sep, path.anchor)])


def _manifest_path(path: Path, home: Path) -> str:
    return display_path(path, home)


def _resolve_manifest_path(text: str, home: Path) -> Path:
    path = Path(text)
    return path if path.is_absolute() else home / path


def write_manifest(folder: Path, manifest: Dict[str, Any]) -> None:
    tmp, final = folder / "manifest.json.tmp", folder / "manifest.json"
    with open(str(tmp), "wb") as handle:
        writer = ManifestWriter(handle, str(final))
        for part in _manifest_parts(manifest):
            writer.write(part)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(str(tmp), str(final))
    fsync_folders([folder])


class _Span:
    """A fixed Streamed list in the manifest's parts, with the pieces that make its text in its
    `form`: "lines" at the top level (an item a line), "inline" inside an entry (one line). The
    same list may stand in both; its text is copied only into the form it was written in."""

    __slots__ = ("streamed", "pieces", "form")

    def __init__(self, streamed: Streamed, pieces: Iterator[Any], form: str) -> None:
        self.streamed, self.pieces, self.form = streamed, pieces, form


MANIFEST_COPY_CHUNK = 64 * 1024


class ManifestWriter:
    """Writes manifest parts to `handle` (binary), which becomes the file `name`. A fixed list's
    text is copied from the manifest last written when that file still holds it there, proven by
    its SHA-256 taken as it was written; otherwise it is made again, and where it lies is kept for
    the next write. The completed manifest of a provider move at 100,000 threads made its ~56,000
    actions (14.5 MB of text) a second time for this."""

    def __init__(self, handle: Any, name: str) -> None:
        self.handle, self.name, self.at = handle, name, 0
        self.digest: Any = None  # of the fixed list being written; nested lists are not tracked

    def write(self, part: Any) -> None:
        if isinstance(part, _Span):
            self._span(part)
            return
        data = part.encode("utf-8")
        self.handle.write(data)
        self.at += len(data)
        if self.digest is not None:
            self.digest.update(data)

    def _span(self, span: _Span) -> None:
        if self.digest is not None:  # inside another fixed list: part of that one's text
            for part in span.pieces:
                self.write(part)
            return
        start = self.at
        written = span.streamed.written
        if written is not None and written.form == span.form and self._copied(written):
            span.streamed.written = written._replace(file=self.name, start=start)
            return
        self.digest = hashlib.sha256()
        try:
            for part in span.pieces:
                self.write(part)
            span.streamed.written = WrittenSpan(self.name, span.form, start, self.at - start,
                                                self.digest.digest())
        finally:
            self.digest = None

    def _copied(self, written: WrittenSpan) -> bool:
        """The text copied from where the last write put it, if it is still those bytes; when
        it is not (or cannot be read, or a link stands in the manifest's place), nothing copied
        stays behind."""
        if written.file != self.name:
            return False
        begin, digest = self.at, hashlib.sha256()
        try:
            with open_regular(Path(self.name), getattr(os, "O_NOFOLLOW", 0)) as source:
                source.seek(written.start)
                # A small buffer: a 1 MB one put the completion of a 100,000-thread apply
                # 0.7-1 MB above the run's peak until then.
                whole = copy_span(source, self.handle, digest, written.length,
                                  bytearray(MANIFEST_COPY_CHUNK))
        except (OSError, ValueError):
            whole = False
        if whole and digest.digest() == written.sha256:
            self.at += written.length
            return True
        self.handle.seek(begin)
        self.handle.truncate(begin)
        return False


def manifest_pieces(manifest: Dict[str, Any]) -> Iterator[str]:
    """The manifest as JSON, one key a line and one entry or action a line: as readable as
    indented JSON, and written by the C encoder (indent= makes json use its pure-Python one:
    0.07 s against 0.03 s of CPU for 1,752 actions, and it is written twice per run). Made a
    line at a time, a Streamed list an item at a time: a provider move at 100,000 threads has
    ~50,000 actions and entries, and their texts joined at once were ~70 MB on top of the
    manifest itself."""
    return _flat(_manifest_parts(manifest))


def _flat(parts: Iterable[Any]) -> Iterator[str]:
    for part in parts:
        if isinstance(part, _Span):
            yield from _flat(part.pieces)
        else:
            yield part


def _manifest_parts(manifest: Dict[str, Any]) -> Iterator[Any]:
    """manifest_pieces with each fixed Streamed list as a _Span of its pieces."""
    yield "{\n"
    for number, (key, value) in enumerate(manifest.items()):
        yield "%s  %s: " % (",\n" if number else "", _manifest_json(key))
        if isinstance(value, Streamed) and value.fixed:
            yield _Span(value, _listed_pieces(value), "lines")
        else:
            yield from _listed_pieces(value)
    yield "\n}\n"


# What an exhausted iterator gives _listed_pieces (None is a value a list can hold).
_NO_ITEM = object()


def _listed_pieces(value: Any) -> Iterator[Any]:
    """A value of the manifest's top level: a list or Streamed one item a line."""
    items = iter(value) if isinstance(value, (list, Streamed)) else None
    first = next(items, _NO_ITEM) if items is not None else _NO_ITEM
    if first is _NO_ITEM:
        yield from _json_pieces(value)
        return
    yield "[\n    "
    yield from _json_pieces(first)
    for item in items:  # type: ignore[union-attr]
        yield ",\n    "
        yield from _json_pieces(item)
    yield "\n  ]"


def _manifest_json(value: Any) -> str:
    return json.dumps(value, default=str)


def _json_pieces(value: Any) -> Iterator[Any]:
    """`value` as json.dumps writes it (default separators), made a piece at a time through a
    dict that holds a Streamed list and an item at a time through that list."""
    if isinstance(value, Streamed):
        if value.fixed:
            yield _Span(value, _streamed_pieces(value), "inline")
        else:
            yield from _streamed_pieces(value)
    elif isinstance(value, dict) and _holds_streamed(value):
        yield "{"
        for at, (key, inner) in enumerate(value.items()):
            yield "%s%s: " % (", " if at else "", _manifest_json(str(key)))
            yield from _json_pieces(inner)
        yield "}"
    else:
        yield _manifest_json(value)


def _streamed_pieces(value: Streamed) -> Iterator[str]:
    yield "["
    for at, item in enumerate(value):
        yield ", " + _manifest_json(item) if at else _manifest_json(item)
    yield "]"


def _holds_streamed(value: Dict[Any, Any]) -> bool:
    return any(isinstance(inner, Streamed) or (isinstance(inner, dict) and _holds_streamed(inner))
               for inner in value.values())


def fsync_path(path: "Path | str") -> None:
    with open(str(path), "rb") as handle:
        os.fsync(handle.fileno())


def atomic_write(path: Path, data: bytes, mode: Optional[int],
                 mtime_ns: Optional[int] = None) -> None:
    def fill(tmp: Path) -> None:
        with open(str(tmp), "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    replace_through_temp(path, fill, mode, mtime_ns)


def atomic_copy(source: Path, path: Path, mode: Optional[int], mtime_ns: Optional[int]) -> None:
    def fill(tmp: Path) -> None:
        if not path.parent.is_dir():
            path.parent.mkdir(parents=True)  # an archived_sessions/ or date folder removed since
        shutil.copyfile(str(source), str(tmp))
        fsync_path(tmp)
    replace_through_temp(path, fill, mode, mtime_ns)


def replace_through_temp(path: Path, fill: Any, mode: Optional[int],
                         mtime_ns: Optional[int]) -> None:
    """`fill(tmp)` writes and fsyncs the new content beside `path`; it gets `mode` and
    `mtime_ns` and replaces `path` in one rename. The temp file never outlives the call."""
    tmp = temp_beside(path)
    try:
        fill(tmp)
        if mode is not None:
            os.chmod(str(tmp), mode)
        if mtime_ns is not None:
            os.utime(str(tmp), ns=(mtime_ns, mtime_ns))
        os.replace(str(tmp), str(path))
        fsync_folders([path.parent])
    finally:
        if tmp.exists():
            tmp.unlink()


class RestoreAction:
    """Put one entry of a verified backup back: a file (or its absence) or a whole DB."""

    def __init__(self, entry: Dict[str, Any], target: Path, payload: Optional[Path]) -> None:
        self.entry, self.target, self.payload = entry, target, payload

    @property
    def kind(self) -> str:
        if self.entry["kind"] == "sqlite":
            return "restore_db"
        return "restore_file" if self.entry.get("existed", True) else "remove"

    def needed(self) -> bool:
        """False when the target already is what the backup holds (nothing to put back)."""
        if self.kind == "restore_db":
            return not DbContent(self.target).matches(self.entry.get("digest_before"))
        if self.kind == "remove":
            return os.path.lexists(str(self.target))
        return current_sha256(self.target) != self.entry.get("sha256_before")

    def intent(self) -> Dict[str, Any]:
        if self.kind == "restore_db":
            return {"path": self.entry["path"], "digest_after": self.entry.get("digest_before")}
        return {"path": self.entry["path"], "sha256_after": self.entry.get("sha256_before")}

    def apply(self) -> None:
        if self.kind == "restore_db":
            restore_database(self.payload, self.target, self.entry)
        elif self.kind == "remove":
            if os.path.lexists(str(self.target)):
                self.target.unlink()
        else:
            atomic_copy(self.payload, self.target, self.entry.get("mode"),
                        self.entry.get("mtime_ns"))

    def verify(self) -> None:
        if self.needed():
            raise ApplyError("%s is not what the backup holds after putting it back"
                             % self.entry["path"])

    def as_json(self, home: Path) -> Dict[str, Any]:
        return {"kind": self.kind, "path": self.entry["path"]}


def current_sha256(path: Path) -> Optional[str]:
    try:
        return sha256_file(path)
    except FileNotFoundError:
        return None


def current_db_digest(path: Path) -> Optional[str]:
    try:
        with readonly_db(path) as conn:
            return db_digest(conn)
    except sqlite3.Error:
        return None


_UNREAD = object()


class DbContent:
    """What one DB holds now, compared with digests this tool recorded in any of its schemes
    (see DB_DIGEST_SCHEME); each kind of digest is taken at most once. A DB that cannot be read
    has no digest: it matches None, as an absent state does."""

    __slots__ = ("path", "_digest", "_legacy")

    def __init__(self, path: Path) -> None:
        self.path, self._digest, self._legacy = path, _UNREAD, None

    def matches(self, recorded: Any) -> bool:
        if isinstance(recorded, str) and not recorded.startswith(DB_DIGEST_SCHEME):
            if self._legacy is None:
                try:
                    with readonly_db(self.path) as conn:
                        self._legacy = legacy_db_digests(conn)
                except sqlite3.Error:
                    self._legacy = set()
            return recorded in self._legacy
        if self._digest is _UNREAD:
            self._digest = current_db_digest(self.path)
        return self._digest == recorded

    def matches_any(self, recorded: Iterable[Any]) -> bool:
        return any(self.matches(state) for state in recorded)


def verified_restore_actions(folder: Path, manifest: Dict[str, Any], home: Path,
                             allowed_db_dirs: Sequence[Path] = ()) -> List[RestoreAction]:
    """Every entry of a backup, checked before anything is written: a path relative to the home
    that stays inside it and passes no symlink (a DB may also sit in a configured sqlite_home),
    a payload inside the backup folder that is a regular file, and a payload whose SHA-256 (for a
    DB, the digest of its content) is the one the manifest recorded. Any failure refuses the
    whole restore: a backup that does not verify is not trusted in part."""
    actions = []
    for number, entry in enumerate(manifest["entries"]):
        if (not isinstance(entry, dict) or entry.get("kind") not in ("file", "sqlite")
                or not isinstance(entry.get("path"), str) or not entry["path"]):
            raise refuse("entry %d of %s/manifest.json is not an entry this tool writes"
                         % (number, folder.name), None)
        reason = tool_write_refusal(entry["path"], entry["kind"])
        if reason:
            raise refuse("the backup names %s, %s" % (entry["path"], reason), None)
        target = restore_target(entry, home, allowed_db_dirs)
        payload = None
        if entry["kind"] == "sqlite" or entry.get("existed", True):
            payload = restore_payload(entry, folder)
            if entry["kind"] == "sqlite":
                recorded = entry.get("digest_before")
                if not isinstance(recorded, str) or not DbContent(payload).matches(recorded):
                    raise refuse("the backup copy of %s does not match its manifest (the backup "
                                 "was changed or damaged)" % entry["path"], None)
            elif sha256_file(payload) != entry.get("sha256_before"):
                raise refuse("the backup copy of %s does not match its manifest's SHA-256 (the "
                             "backup was changed or damaged)" % entry["path"], None)
        actions.append(RestoreAction(entry, target, payload))
    return actions


def restore_target(entry: Dict[str, Any], home: Path, allowed_db_dirs: Sequence[Path]) -> Path:
    text = entry["path"]
    path = Path(text)
    if path.is_absolute() or is_windows_path(text):
        if (entry["kind"] == "sqlite" and STATE_DB_RE.match(path.name)
                and path.parent in allowed_db_dirs):
            return path  # a state DB in the configured sqlite_home, outside the home
        raise refuse("the backup names %s, an absolute path; a backup of this tool names paths "
                     "inside the home"
                     % text, None)
    if ".." in path.parts or not is_within(Path(os.path.normpath(str(home / path))), home):
        raise refuse("the backup names %s, which leaves CODEX_HOME" % text, None)
    check_inside_home(home / path, home)
    return home / path


def restore_payload(entry: Dict[str, Any], folder: Path) -> Path:
    text = entry.get("backup")
    files = folder / "files"
    if (not isinstance(text, str) or not text or Path(text).is_absolute()
            or ".." in Path(text).parts):
        raise refuse("the backup entry for %s names no copy inside the backup folder"
                     % entry["path"], None)
    payload = folder / text
    current = payload
    while current != folder and is_within(current, folder):
        if current.is_symlink():
            raise refuse("the backup copy of %s is reached through a symlink" % entry["path"], None)
        current = current.parent
    if not is_within(payload, files) or not payload.is_file():
        raise refuse("the backup copy of %s is missing or not a regular file" % entry["path"], None)
    return payload


def restore_backup(folder: Path, home: Path) -> Tuple[List[str], List[str]]:
    """The engine's automatic undo, with the same actions `restore` plans and the same test of
    what changed since the run (changed_since_backup, which `restore` refuses on): put back
    each file and DB of the backup it just made that is still as the run left it and that no
    other process holds open. Anything else is kept as it is: a rollout a live session appended
    to after the run replaced it, or one the run never replaced, which only another process can
    have changed; putting the old bytes back would drop that process's lines. Returns (the
    paths restored, the paths kept)."""
    manifest = read_manifest(folder)
    changed = set(changed_since_backup(folder, home))
    held = open_elsewhere(home)
    restored, kept, failures = [], [], []
    for action in verified_restore_actions(folder, manifest, home, restore_db_dirs(home)):
        try:
            if not action.needed():
                continue
            if action.entry["path"] in changed or (
                    action.kind != "restore_db" and os.path.realpath(str(action.target)) in held):
                kept.append(action.entry["path"])
                continue
            action.apply()
            restored.append(action.entry["path"])
        except (OSError, sqlite3.Error) as exc:
            # Keep going: every other file put back is one less file left changed.
            failures.append("%s: %s" % (action.entry["path"], short(str(exc), 120)))
    if failures:
        raise ApplyError("could not put back %s" % "; ".join(failures))
    return restored, kept


def kept_after_restore(kept: List[str]) -> str:
    """What the automatic restore's message says of the paths it left as they are."""
    if not kept:
        return ""
    names = ", ".join(kept[:3]) + (" and %d more" % (len(kept) - 3) if len(kept) > 3 else "")
    return ("; kept as they are: %s (changed after this run wrote them, or held open by another "
            "process; `restore --latest --apply --discard-changes` puts the old bytes back once "
            "Codex is closed)" % names)


def restore_db_dirs(home: Path, config: Optional[Config] = None) -> List[Path]:
    """Folders outside the home a backup may name a DB in: the sqlite_home settings in force."""
    config = config if config is not None else load_config(home, None)
    return [folder for folder, origin in sqlite_home_dirs(home, config, dict(os.environ))
            if origin in ("config sqlite_home", "CODEX_SQLITE_HOME")]


def restore_database(backup: Path, target: Path, entry: Dict[str, Any]) -> bool:
    """Put a DB back through SQLite (WAL-safe). A DB whose content is what it was before the
    run is left alone; a DB another process holds is reported after a bounded wait."""
    if target.exists() and DbContent(target).matches(entry.get("digest_before")):
        return False
    dest = sqlite3.connect(str(target), timeout=10.0, isolation_level=None)
    source = sqlite3.connect(str(backup))
    try:
        dest.execute("BEGIN IMMEDIATE")  # fails after the timeout instead of waiting forever
        dest.execute("ROLLBACK")
        source.backup(dest)
    finally:
        dest.close()
        source.close()
    return True


def read_manifest(folder: Path) -> Dict[str, Any]:
    path = folder / "manifest.json"
    if not path.is_file():
        raise UsageError("%s is not a backup made by this tool (no manifest.json)" % folder)
    try:
        manifest = json.loads(read_small_file(path, MAX_MANIFEST_BYTES).decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise refuse("%s/manifest.json does not verify (%s)" % (folder.name, short(str(exc), 100)),
                     None) from None
    if (not isinstance(manifest, dict) or manifest.get("tool") != TOOL_NAME
            or not isinstance(manifest.get("entries"), list)):
        raise refuse("%s/manifest.json does not verify: it is not a manifest of this tool"
                     % folder.name, None)
    return manifest


JOURNAL_NAME = "journal.jsonl"


def read_journal(folder: Path) -> Dict[str, set]:
    """path -> every state a run said (before writing it) it would leave that path in."""
    intents: Dict[str, set] = {}
    try:
        with open_regular(folder / JOURNAL_NAME) as handle:
            for raw in iter(lambda: handle.readline(MAX_LINE_BYTES), b""):
                try:
                    record = json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, ValueError):
                    continue  # a torn last line: its write never began
                if isinstance(record, dict) and isinstance(record.get("path"), str):
                    state = record.get("sha256_after", record.get("digest_after"))
                    intents.setdefault(record["path"], set()).add(state)
    except OSError:
        pass
    return intents


class Journal:
    """Before each write the engine appends (and syncs) the state it is about to leave the path
    in. After a kill, restore tells the dead run's own writes (before, or one of these) from
    changes something else made, which need --discard-changes."""

    def __init__(self, folder: Path, home: Path) -> None:
        self.path, self.home = folder / JOURNAL_NAME, home

    def intend(self, path: Path, **state: Any) -> None:
        self.intend_many([(path, state)])

    def intend_many(self, records: List[Tuple[Path, Dict[str, Any]]]) -> None:
        """Several intents appended with one sync, before the first of those writes."""
        lines = [json.dumps(dict(path=_manifest_path(path, self.home), **state), sort_keys=True)
                 .encode("utf-8") for path, state in records]
        new = not os.path.lexists(str(self.path))
        with open(str(self.path), "ab") as handle:
            handle.write(b"".join(line + b"\n" for line in lines))
            handle.flush()
            os.fsync(handle.fileno())
        if new:
            fsync_folders([self.path.parent])  # the journal's own name, once


def changed_since_backup(folder: Path, home: Path) -> List[str]:
    """Files and DBs that differ from what the backed-up run left behind. For a run that was
    interrupted ("after" never recorded) a path is unchanged in its state before the run or in
    a state the run's journal says it was writing."""
    manifest = read_manifest(folder)
    intents = read_journal(folder) if not manifest.get("complete") else {}
    changed = []
    state = "after" if manifest.get("complete") else "before"
    for entry in manifest["entries"]:
        target = _resolve_manifest_path(entry["path"], home)
        if entry["kind"] == "sqlite":
            expected = {entry.get("digest_" + state)} | intents.get(entry["path"], set())
            unchanged = DbContent(target).matches_any(expected)
        else:
            expected = {entry.get("sha256_" + state)} | intents.get(entry["path"], set())
            try:
                unchanged = (sha256_file(target) if target.exists() else None) in expected
            except OSError:
                unchanged = False
        if not unchanged:
            changed.append(entry["path"])
    return changed


# ---------------------------------------------------------------------------------------------
# Apply: the one place that writes. Preflight, lock, backup, rollouts, DBs, files, verify;
# on any failure after the first write, restore from the backup and say whether that worked.
# ---------------------------------------------------------------------------------------------

# Rollouts are rewritten in batches of this many files (or bytes, whichever comes first): each
# batch's temp files are written, then synced together, journaled with one sync, renamed, and
# each folder synced once. A batch holds a lease, a writer lock and an open file per rollout
# for its whole replace window, so it is bounded: a session opening one of them waits (the
# kernel holds its open) at most for one batch, and the run holds ~200 descriptors at most.
ROLLOUT_BATCH_FILES = 64
ROLLOUT_BATCH_BYTES = 64 * 1024 * 1024
# Descriptors a batch holds per rollout (the rollout, its backup copy, its writer lock, its
# temp file while it is written), and those kept free for the rest of the run (the DBs, the
# journal, the tool lock): under a low `ulimit -n` batches get smaller, the apply goes on.
FDS_PER_ROLLOUT = 4
FDS_SPARE = 16
# Why a rollout of a batch was left as it was, when its rewrite gives no reason of its own.
ROLLOUT_CHANGED = ("the rollout changed after it was read (a live session?); it was left as "
                   "it is")
# What a DB is right after the run committed to it: (the digest the journal recorded, its
# data_version on the run's connection, the file's (st_dev, st_ino)).
CommittedState = Tuple[str, int, Optional[Tuple[int, int]]]

# Every write point calls _fault_point(name). The crash-injection tests set
# CODEX_SESSION_RECOVERY_FAULT=NAME[:N][:kill|raise] to kill the process (SIGKILL) or fail at the
# N-th visit of that point (default 1), proving the home survives a crash at each of them.
FAULT_ENV = "CODEX_SESSION_RECOVERY_FAULT"
WRITE_POINTS = ("mid_backup", "after_backup", "after_rollout_temps", "before_rollout_replace",
                "after_rollout_replace", "mid_transaction", "after_commit", "before_file_write",
                "before_manifest_finish")
_fault_visits: Dict[str, int] = {}


def _fault_point(name: str) -> None:
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    parts = spec.split(":")
    if parts[0] != name:
        return
    _fault_visits[name] = _fault_visits.get(name, 0) + 1
    wanted = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 1
    if _fault_visits[name] != wanted:
        return
    if parts[-1] == "kill" and hasattr(os, "kill"):
        import signal
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))
    raise OSError("injected fault at %s" % name)


def apply_plan(inv: Inventory, plan: Plan, args: argparse.Namespace,
               argv: Sequence[str]) -> Dict[str, Any]:
    preflight(inv, plan, args.force)
    with ToolLock(inv.home):
        remove_stale_temp_files(inv.temp_files)
        remove_partial_backups(inv.home)
        folder, manifest = make_backup_or_fail(lambda: backup_plan(inv, plan, argv))
        _fault_point("after_backup")
        result: Dict[str, Any] = {"backup_dir": str(folder), "skipped": []}
        connections = lock_databases(plan.touched_dbs(), folder)
        journal = Journal(folder, inv.home)
        committed: Dict[Path, CommittedState] = {}
        try:
            busy = open_elsewhere(inv.home)
            copies = backup_copies(folder, manifest, inv.home, plan)
            skipped_threads = write_rollouts(plan, result, busy, inv.home, journal, copies)
            write_sql(plan, skipped_threads, connections, journal, committed)
            write_restores(plan, journal)
            for write in plan.file_writes:
                _fault_point("before_file_write")
                mode = write.path.stat().st_mode & 0o7777 if write.path.exists() else 0o600
                journal.intend(write.path, sha256_after=hashlib.sha256(write.data).hexdigest())
                atomic_write(write.path, write.data, mode)
            move_into_backup(plan.moves, folder, manifest, inv.home, journal)
        except Exception as exc:  # noqa: BLE001 - any failure after writing began must restore
            close_all(connections)
            try:
                _restored, kept = restore_backup(folder, inv.home)
                restored = ("the automatic restore from %s succeeded" % folder
                            + kept_after_restore(kept))
            except Exception as again:  # noqa: BLE001
                restored = "the automatic restore FAILED (%s); the backup is intact at %s" % (
                    short(str(again), 300), folder)
            raise ApplyError("%s; %s" % (short(str(exc) or type(exc).__name__, 200),
                                         restored)) from None
        settled = still_as_committed(connections, committed, inv.home)
        close_all(connections)
        try:
            _fault_point("before_manifest_finish")
            finish_manifest(folder, manifest, inv.home, settled)
        except Exception as exc:  # noqa: BLE001 - every write stands; say how to undo them
            raise ApplyError("the repair was written, but its backup's manifest could not be "
                             "finished (%s); nothing was put back, and `restore --latest "
                             "--apply` undoes the run from its journal"
                             % short(str(exc) or type(exc).__name__, 200)) from None
    return result


def make_backup_or_fail(make: Any) -> Tuple[Path, Dict[str, Any]]:
    """A backup that cannot be completed (a full disk, an unreadable DB) stops the run before
    anything is written; the half-made backup folder is removed."""
    try:
        return make()
    except (OSError, sqlite3.Error) as exc:
        raise ApplyError("could not make the backup (%s); nothing was written to the home"
                         % short(str(exc), 200)) from None


def lock_databases(dbs: List[Path], backup_folder: Path) -> Dict[Path, sqlite3.Connection]:
    """Take the write lock of every DB the plan changes before the first rollout is rewritten,
    so a DB that is locked, read-only or unwritable stops the run while nothing has changed."""
    connections: Dict[Path, sqlite3.Connection] = {}
    for db in dbs:
        try:
            conn = sqlite3.connect(str(db), timeout=5.0, isolation_level=None)
            connections[db] = conn
            conn.execute("PRAGMA busy_timeout = 5000")
            conn.execute("BEGIN IMMEDIATE")
            # SQLite opens a DB it cannot write read-only without a word, and BEGIN IMMEDIATE
            # succeeds on it: rewriting the header with its own value proves the write.
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            conn.execute("PRAGMA user_version = %d" % int(version))
        except sqlite3.Error as exc:
            close_all(connections)
            shutil.rmtree(str(backup_folder), ignore_errors=True)
            raise refuse("%s cannot be written now (%s): %s" % (
                db_label(db), short(str(exc), 120), lock_failure_advice(str(exc))), None) from None
    return connections


def lock_failure_advice(error: str) -> str:
    text = error.lower()
    if "full" in text:
        return "the disk is full; free some space"
    if "readonly" in text or "read-only" in text:
        return "it is read-only (its permissions, or a read-only disk)"
    if "locked" in text or "busy" in text:
        return "another process holds it; quit Codex and try again"
    return "quit whatever holds it, and check the disk and the file's permissions"


def db_label(db: Path) -> str:
    """A DB by its name, and by what it is when it is a symlink (the link is not the file)."""
    real = os.path.realpath(str(db))
    if real == str(db) or not os.path.islink(str(db)):
        return db.name
    return "%s (a link to %s)" % (db.name, real)


def close_all(connections: Dict[Path, sqlite3.Connection]) -> None:
    for conn in connections.values():
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        conn.close()
    connections.clear()


def open_elsewhere(home: Path) -> Dict[str, List[str]]:
    """Files of the home that another process has open for writing right now, by real path. A
    rollout a live writer holds is never replaced (its later lines would land in the replaced
    file), not even with --force. A reader is no such risk: it goes on reading the bytes it
    opened, and opening for writing later breaks the replace window's lease."""
    found: Dict[str, List[str]] = {}
    if os.name == "posix" and Path("/proc/self/fd").is_dir():
        for pid, link, target in other_process_fds():
            if target.startswith(home_prefixes(home)) and descriptor_writes(link):
                found.setdefault(os.path.realpath(target), []).append(pid)
    return found


def descriptor_writes(link: str) -> bool:
    """Was the descriptor behind /proc/PID/fd/N opened for writing? Its fdinfo's `flags` say;
    one whose flags cannot be read counts as a writer, unless it is gone: a reader that closed
    the file since it was listed (another copy of this tool reading rollout heads) writes
    nothing, and counting it made an apply leave that rollout alone as a live session."""
    try:
        with open(link.replace("/fd/", "/fdinfo/", 1)) as info:
            for line in info:
                if line.startswith("flags:"):
                    return int(line.split()[1], 8) & os.O_ACCMODE != os.O_RDONLY
    except FileNotFoundError:  # the descriptor (or its process) is gone
        return False
    except (OSError, ValueError, IndexError):
        pass
    return True


def temp_beside(path: Path, kind: str = "") -> Path:
    """The hidden temp file this process writes before it replaces `path` (`kind` tells a kept
    old copy apart): named with TEMP_MARKER, so diagnose finds what a killed run left."""
    return path.parent / (".%s%s%s%d" % (path.name, TEMP_MARKER, kind, os.getpid()))


def remove_partial_backups(home: Path) -> None:
    """Backup folders with no manifest: the manifest is written before the first write to the
    home, so such a folder belongs to a run killed before it changed anything. Under the tool
    lock no other run is filling one."""
    for backup in list_backups(home):
        if backup["partial"]:
            shutil.rmtree(backup["path"], ignore_errors=True)


def remove_stale_temp_files(paths: List[Path]) -> None:
    """Temp files of an earlier run that was killed before it could rename them. Under the
    tool lock no other run is writing, so every one of them is stale: each is a copy."""
    for path in paths:
        try:
            path.unlink()
        except OSError:
            pass


def write_restores(plan: Plan, journal: "Journal") -> None:
    """Each entry of a verified backup put back, then read again to prove it."""
    for action in plan.restores:
        _fault_point("before_file_write")
        journal.intend(action.target, **{k: v for k, v in action.intent().items() if k != "path"})
        action.apply()
        action.verify()


def move_into_backup(moves: List[Path], folder: Path, manifest: Dict[str, Any], home: Path,
                     journal: Optional["Journal"] = None) -> None:
    """Move each file over its own byte copy in the backup: the original file lives on there."""
    files = manifest["entries"].files
    copied = files.by_name() if moves else {}
    for path in moves:
        _fault_point("before_file_write")
        at = copied[_manifest_path(path, home)]
        copy = files.backup(at)
        if copy is None or sha256_file(path) != files.sha256_before(at):
            raise ApplyError("%s changed while it was being backed up" % display_path(path, home))
        if journal is not None:
            journal.intend(path, sha256_after=None)
        os.replace(str(path), str(folder / copy))


def rollout_batch_files(soft: Optional[int] = None, already_open: Optional[int] = None) -> int:
    """How many rollouts one batch may hold: ROLLOUT_BATCH_FILES, or fewer where the limit on
    open files (`soft`, this process's by default) leaves less room."""
    soft = open_file_limit() if soft is None else soft
    if soft is None:
        return ROLLOUT_BATCH_FILES
    already_open = count_open_files() if already_open is None else already_open
    room = (soft - already_open - FDS_SPARE) // FDS_PER_ROLLOUT
    return max(1, min(ROLLOUT_BATCH_FILES, room))


def open_file_limit() -> Optional[int]:
    """The soft RLIMIT_NOFILE, or None where there is none (Windows) or it is unlimited."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def count_open_files() -> int:
    """Descriptors this process has open now; where no folder lists them, FDS_SPARE again."""
    for folder in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(folder))
        except OSError:
            continue
    return FDS_SPARE


def write_rollouts(plan: Plan, result: Dict[str, Any], busy: Dict[str, List[str]], home: Path,
                   journal: Optional["Journal"] = None,
                   references: Optional["BackupCopies"] = None) -> set:
    """Every rollout edit of the plan, in batches (rewrite_batch); an import's copy from another
    home one at a time (copy_rollout). `references`: rollout -> its backup copy, known to hold
    the planned bytes, with the SHA-256 of that copy's bytes with the planned edits; it keeps
    what each replaced rollout now is, for the manifest.
    Returns the threads left as they were, each reported in `result["skipped"]` in plan order."""
    reasons: Dict[int, str] = {}
    batch: List[RolloutEdit] = []
    batch_files = rollout_batch_files()

    def run_batch() -> None:
        replaced = rewrite_batch(batch, home, result, journal, references)
        for edit, done in zip(batch, replaced):
            if not done:
                reasons[id(edit)] = edit.skip_reason or ROLLOUT_CHANGED
        batch.clear()

    for edit in plan.rollout_edits:
        holders = busy.get(os.path.realpath(str(edit.target)))
        if holders:
            reasons[id(edit)] = ("pid %s has the rollout open (a live session); it was left as "
                                 "it is" % ", ".join(holders))
        elif edit.in_place:
            batch.append(edit)
            if (len(batch) >= batch_files
                    or sum(e.fingerprint[0] for e in batch) >= ROLLOUT_BATCH_BYTES):
                run_batch()
        else:
            run_batch()  # keep plan order: what came before is written before this copy
            _fault_point("before_rollout_replace")
            try:
                with thread_writer_lock(home, edit.thread_id):
                    replaced = copy_rollout(edit, journal)
            except WriterLockHeld as held:
                replaced, edit.skip_reason = False, str(held)
            _fault_point("after_rollout_replace")
            if not replaced:
                reasons[id(edit)] = edit.skip_reason or ROLLOUT_CHANGED
    if batch:
        run_batch()
    skipped = set()
    for edit in plan.rollout_edits:
        if id(edit) in reasons:
            skipped.add(edit.thread_id)
            result["skipped"].append({"thread_id": edit.thread_id, "reason": reasons[id(edit)]})
    return skipped


def backup_copies(folder: Path, manifest: Dict[str, Any], home: Path,
                  plan: Plan) -> "BackupCopies":
    """rollout -> its copy in the backup, for each rollout rewritten in place whose copy holds
    exactly the planned bytes (the SHA-256 taken as it was copied is the plan's): the rewrite
    compares what it reads with that copy instead of hashing it a second time."""
    files = manifest["entries"].files
    copied = files.by_name()
    found = BackupCopies(folder, home, files)
    for edit in plan.rollout_edits:
        at = copied.get(_manifest_path(edit.path, home)) if edit.in_place else None
        if at is not None and files.sha256_before(at) == edit.fingerprint[2]:
            found.add(at)
    return found


class BackupCopies:
    """What backup_copies found, held for the whole rewrite: which of the backup's copied files
    (by their name there and their place in it), each copy's Path made when the rewrite asks
    for it. A pair of Paths per rollout in a dict was ~10 MB at 100,000 threads."""

    __slots__ = ("folder", "home", "files", "_copies")

    def __init__(self, folder: Path, home: Path, files: CopiedFiles) -> None:
        self.folder, self.home, self.files = folder, home, files
        self._copies: Dict[str, int] = {}

    def add(self, at: int) -> None:
        self._copies[self.files.names[at]] = at

    def reference(self, path: Path) -> Tuple[Optional[Path], Optional[str], Optional[int]]:
        """The rollout's copy, the SHA-256 of its bytes with the edits (see _fill_backup) when
        known, and the copy's place among the entries (for wrote); (None, None, None) where the
        backup holds no copy of the planned bytes."""
        at = self._copies.get(_manifest_path(path, self.home))
        copy = self.files.backup(at) if at is not None else None
        if copy is None:
            return None, None, None
        return self.folder / copy, self.files.edited_digest(at), at

    def wrote(self, at: int, identity: Tuple[int, int], size: int, mtime_ns: int,
              digest: str) -> None:
        """The rollout whose copy is at `at` (see reference) was replaced with a file of this
        identity, size, mtime and SHA-256, kept with its entry for finish_manifest."""
        self.files.set_written(at, identity, size, mtime_ns, digest)

    def get(self, path: Path, default: Optional[Path] = None) -> Optional[Path]:
        copy = self.reference(path)[0]
        return default if copy is None else copy

    def __getitem__(self, path: Path) -> Path:
        copy = self.get(path)
        if copy is None:
            raise KeyError(path)
        return copy

    def __contains__(self, path: Any) -> bool:
        return self.get(path) is not None

    def __len__(self) -> int:
        return len(self._copies)


# ---------------------------------------------------------------------------------------------
# Live writers. A session may open a rollout at any moment, also after the run's first check.
# The guarantee "no appended line is lost" holds for the whole replace window: Codex's own
# per-thread writer lock is taken where the release has one; on Linux a read lease makes the
# kernel hold off (and report) any process opening the file for writing; right before the
# replace the file's identity and its holders are checked again; and right after it, a process
# found holding the old file gets it back (from a hard link kept for that instant).
# ---------------------------------------------------------------------------------------------

WRITER_LOCKS_DIR = "thread-writer-locks"


class WriterLockHeld(Exception):
    pass


@contextlib.contextmanager
def thread_writer_lock(home: Path, thread_id: str) -> Iterator[None]:
    """CODEX-COMPAT 0.169.0 and 0.171.0: a loaded thread is held with an exclusive flock on
    thread-writer-locks/<thread id>.lock (measured with /proc/locks; the file stays after the
    thread closes). Taking it makes a resuming Codex wait until the rollout is replaced; a
    thread whose lock is held is loaded right now and is left alone."""
    folder = home / WRITER_LOCKS_DIR
    if os.name != "posix" or folder.is_symlink() or not folder.is_dir():
        yield
        return
    import fcntl
    path = folder / ("%s.lock" % thread_id)
    if not os.path.lexists(str(path)):
        # Never created here (the home stays as it was): a Codex that creates it now and opens
        # the rollout is seen by the lease and the holder checks instead.
        yield
        return
    try:
        fd = os.open(str(path),
                     os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise WriterLockHeld("its Codex writer lock cannot be opened (%s); it was left as it is"
                             % (exc.strerror or exc)) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise WriterLockHeld("a Codex process holds the thread's writer lock (%s/%s.lock): it "
                                 "is loaded right now; it was left as it is"
                                 % (WRITER_LOCKS_DIR, thread_id)) from None
        yield
    finally:
        os.close(fd)


# Linux fcntl commands (fcntl.F_SETLEASE on 3.9+ builds that have it)
F_SETLEASE, F_GETLEASE = 1024, 1025


def take_read_lease(fd: int) -> Optional[bool]:
    """A Linux read lease on the open rollout: granted only while no process has the file open
    for writing (False: one has); while held, a process opening it for writing waits and the
    break shows in lease_broken(). None where leases are not available (other systems, some
    file systems, files of another owner): the /proc scan alone then guards the window."""
    if not sys.platform.startswith("linux"):
        return None
    import errno
    import fcntl
    import signal
    try:
        # The break is read with F_GETLEASE; the signal that announces it must not end the run.
        signal.signal(signal.SIGIO, signal.SIG_IGN)
    except (ValueError, AttributeError, OSError):  # not the main thread: no lease, the scan guards
        return None
    try:
        fcntl.fcntl(fd, getattr(fcntl, "F_SETLEASE", F_SETLEASE), fcntl.F_RDLCK)
        return True
    except OSError as exc:
        return False if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EBUSY) else None


def lease_broken(fd: int) -> bool:
    import fcntl
    try:
        return fcntl.fcntl(fd, getattr(fcntl, "F_GETLEASE", F_GETLEASE)) != fcntl.F_RDLCK
    except OSError:
        return True


def drop_lease(fd: int) -> None:
    import fcntl
    try:
        fcntl.fcntl(fd, getattr(fcntl, "F_SETLEASE", F_SETLEASE), fcntl.F_UNLCK)
    except OSError:
        pass


def holders_of(path: Path, identity: Tuple[int, int]) -> List[str]:
    """Other processes that have this very file (device, inode) open, found through /proc (an
    fd of a file renamed over reads "<path> (deleted)", so the folder is what is matched)."""
    if not Path("/proc/self/fd").is_dir():
        return []
    folder = os.path.realpath(str(path.parent)) + os.sep
    found: List[str] = []
    for pid, link, target in other_process_fds():
        if pid in found or not target.startswith(folder):
            continue
        try:
            stat = os.stat(link)
        except OSError:
            continue
        if (stat.st_dev, stat.st_ino) == identity:
            found.append(pid)
    return found


def opened_for_writing_since(edit: RolloutEdit, source: Any, lease: Optional[bool],
                             identity: Tuple[int, int]) -> bool:
    """With a lease the kernel reports any open for writing (no /proc scan per file needed);
    without one, any other process holding the file counts."""
    if lease:
        return lease_broken(source.fileno())
    return bool(holders_of(edit.path, identity))


def same_file_as_planned(edit: RolloutEdit, source: Any) -> bool:
    """The path still names the file that was read, unchanged: same inode, size and mtime."""
    try:
        now = edit.path.stat()
    except OSError:
        return False
    opened = os.fstat(source.fileno())
    size, mtime_ns, _digest = edit.fingerprint
    same = (now.st_dev, now.st_ino) == (opened.st_dev, opened.st_ino)
    if edit.identity is not None:
        same = same and stat_identity(now) == edit.identity
    return same and ((now.st_size, now.st_mtime_ns) == (size, mtime_ns)
                     == (opened.st_size, opened.st_mtime_ns))


class HashingWriter:
    """A file being written, with the SHA-256 of every byte written to it."""

    def __init__(self, handle: Any) -> None:
        self.handle, self.digest = handle, hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self.handle.write(data)


class SourceDigest:
    """The SHA-256 of every byte the rewrite reads from the rollout, to hold to the plan's."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()

    def update(self, data: bytes) -> None:
        self.digest.update(data)

    def holds(self, expected: str) -> bool:
        return self.digest.hexdigest() == expected

    def close(self) -> None:
        pass


class SameBytesAs(SourceDigest):
    """In place of the digest, where the backup holds a copy whose SHA-256 (taken as it was
    copied) is the plan's: every byte read is compared with that copy's byte, in step. Equal
    bytes have the plan's digest, so this proves what hashing proves, at the cost of a read
    of a file just written (in the page cache) instead of a second SHA-256 pass."""

    def __init__(self, copy: Path) -> None:
        super().__init__()
        self.copy, self.same = open_regular(copy), True
        # Allocated at the first read and freed by holds(): a batch keeps one check per
        # rollout until its replace, and must not keep a megabyte with each.
        self.buffer = bytearray(0)

    def update(self, data: Any) -> None:
        if not self.same:
            return
        size = len(data)
        if size > len(self.buffer):
            self.buffer = bytearray(max(size, min(READ_CHUNK, 2 * len(self.buffer))))
        view = memoryview(self.buffer)[:size]
        got = 0
        while got < size:
            n = self.copy.readinto(view[got:])
            if not n:
                self.same = False  # the copy is shorter
                return
            got += n
        # bytearray == buffer is one memcmp (a memoryview on the left compares item by item)
        mine = self.buffer if size == len(self.buffer) else self.buffer[:size]
        self.same = mine == data

    def holds(self, expected: str) -> bool:
        self.buffer = bytearray(0)
        return self.same and not self.copy.read(1)  # and the copy ends where the read did

    def close(self) -> None:
        self.buffer = bytearray(0)
        self.copy.close()


class PendingRewrite:
    """One rollout of a batch between its temp file and its replace: the open source (its
    lease held), the temp file written from it, and how far it got."""

    def __init__(self, edit: RolloutEdit) -> None:
        self.edit = edit
        self.tmp, self.keep = temp_beside(edit.path), temp_beside(edit.path, "old-")
        self.source: Any = None
        self.lease: Optional[bool] = None
        self.check: Optional[SourceDigest] = None
        self.identity: Tuple[int, int] = (0, 0)
        self.written, self.sha256_after, self.tmp_identity = 0, "", (0, 0)
        self.copy_at: Optional[int] = None  # its backup copy's place (BackupCopies.reference)
        self.ready = self.renamed = self.replaced = self.carried = False

    def close(self) -> None:
        try:
            if self.lease and self.source is not None:
                drop_lease(self.source.fileno())
            if self.source is not None:
                self.source.close()
            if self.check is not None:
                self.check.close()
        finally:
            for leftover in (self.tmp, self.keep):
                if leftover.exists():
                    leftover.unlink()


def rewrite_rollout(edit: RolloutEdit, result: Optional[Dict[str, Any]] = None,
                    journal: Optional["Journal"] = None) -> bool:
    """One rollout rewritten in place: a batch of one (see rewrite_batch)."""
    return rewrite_batch([edit], None, result if result is not None else {}, journal)[0]


def rewrite_batch(edits: List[RolloutEdit], home: Optional[Path], result: Dict[str, Any],
                  journal: Optional["Journal"] = None,
                  references: Optional["BackupCopies"] = None) -> List[bool]:
    """Each rollout written anew beside it: the unchanged byte ranges copied in large chunks,
    the planned lines substituted. Every byte read must be the plan's (hashed, or compared with
    the backup's copy of it where `references` names one; then what is written is that copy's
    bytes with the edits, whose SHA-256 `references` may hold, not hashed again), inode, size
    and mtime must not move,
    and no other process may open the file for writing; otherwise (a live session) it is left
    alone, with the reason in `edit.skip_reason`. The temp files are synced together and
    journaled with one sync; then each, checked once more, replaces its rollout, bytes appended
    to the old file in the instant around the replace are carried over, and a process found
    holding the old file gets it back. Each folder is synced once, after its renames.

    The writer lock (with `home`) and the lease of every rollout of the batch are held from
    before its read until after its replace: the guarantee of one rewrite, for each of them.
    Returns, per edit, whether it was replaced."""
    pending = [PendingRewrite(edit) for edit in edits]
    with contextlib.ExitStack() as locks:
        try:
            for item in pending:
                reference, after, item.copy_at = (references.reference(item.edit.path)
                                                  if references is not None
                                                  else (None, None, None))
                prepare_rewrite(item, home, locks, reference, after)
            ready = [item for item in pending if item.ready]
            for item in ready:
                fsync_path(item.tmp)
            if journal is not None and ready:
                journal.intend_many([(item.edit.path, {"sha256_after": item.sha256_after})
                                     for item in ready])
            _fault_point("after_rollout_temps")
            for item in pending:
                _fault_point("before_rollout_replace")
                if item.ready:
                    item.replaced = publish_rewrite(item, result)
                _fault_point("after_rollout_replace")
            fsync_folders(item.edit.path.parent for item in pending if item.renamed)
        finally:
            for item in pending:
                item.close()
    if references is not None:
        for item in pending:
            if (item.copy_at is not None and item.replaced and not item.carried
                    and item.sha256_after):
                references.wrote(item.copy_at, item.tmp_identity, item.written,
                                 item.edit.fingerprint[1], item.sha256_after)
    return [item.replaced for item in pending]


def prepare_rewrite(item: PendingRewrite, home: Optional[Path], locks: contextlib.ExitStack,
                    reference: Optional[Path], reference_after: Optional[str] = None) -> None:
    """The temp file of one rollout, written (not yet synced) under its writer lock and lease;
    `item.ready` once it holds the planned edit of exactly the planned bytes. With a `reference`
    copy every byte read is compared with it, so what is written is the copy's bytes with the
    edits: their SHA-256, `reference_after` where the backup took it, is not taken again."""
    edit = item.edit
    if home is not None:
        try:
            locks.enter_context(thread_writer_lock(home, edit.thread_id))
        except WriterLockHeld as held:
            edit.skip_reason = str(held)
            return
    size, mtime_ns, expected = edit.fingerprint
    stat = edit.path.stat()
    if (stat.st_size, stat.st_mtime_ns) != (size, mtime_ns):
        return
    item.source = source = open_regular(edit.path)
    item.lease = take_read_lease(source.fileno())
    if item.lease is False:
        edit.skip_reason = ("another process has the rollout open for writing (a live session); "
                            "it was left as it is")
        return
    opened = os.fstat(source.fileno())
    item.identity = (opened.st_dev, opened.st_ino)
    item.check = SameBytesAs(reference) if reference is not None else SourceDigest()
    known_after = reference_after if reference is not None else None
    copied = write_edited_copy(source, item.tmp, edit, size, item.check, sync=False,
                               hash_written=known_after is None)
    if copied is None:
        return
    item.written, item.sha256_after = copied[0], known_after or copied[1]
    os.chmod(str(item.tmp), stat.st_mode & 0o7777)
    # Codex orders threads by the rollout's mtime when it re-derives a row: keep it.
    os.utime(str(item.tmp), ns=(stat.st_atime_ns, mtime_ns))
    made = os.stat(str(item.tmp))
    item.tmp_identity = (made.st_dev, made.st_ino)
    item.ready = item.check.holds(expected)


def publish_rewrite(item: PendingRewrite, result: Dict[str, Any]) -> bool:
    """The synced temp file of one rollout replaces it, if the rollout is still the file that
    was read and no process opened it for writing since; see rewrite_batch."""
    edit, source = item.edit, item.source
    if not same_file_as_planned(edit, source):
        return False
    if opened_for_writing_since(edit, source, item.lease, item.identity):
        edit.skip_reason = ("a process opened the rollout while it was being rewritten (a live "
                            "session); it was left as it is")
        return False
    kept = link_quietly(edit.path, item.keep)
    os.replace(str(item.tmp), str(edit.path))
    item.renamed = True
    late = opened_for_writing_since(edit, source, item.lease, item.identity)
    if late and kept:
        give_back_old_file(edit, item.keep, item.written, result)
        return False
    item.carried = carry_late_tail(source, edit.fingerprint[0], edit, result)
    return True


def link_quietly(path: Path, link: Path) -> bool:
    """A second name for the file about to be replaced, so it can be put back; False where the
    file system has no hard links (the carry-over of late bytes still applies)."""
    try:
        if link.exists():
            link.unlink()
        os.link(str(path), str(link))
        return True
    except (OSError, NotImplementedError, AttributeError):
        return False


def give_back_old_file(edit: RolloutEdit, keep: Path, written: int, result: Dict[str, Any]) -> None:
    """A process opened the old file around the replace and writes into it: put it back under
    its name (every byte it wrote is in it), and carry over anything appended to the new file
    in the meantime by a writer that opened the path after the replace."""
    with open(str(edit.path), "rb") as new_file:
        os.replace(str(keep), str(edit.path))
        new_file.seek(written)
        extra = new_file.read()
    if extra:
        with open(str(edit.path), "ab") as out:
            out.write(extra)
            out.flush()
            os.fsync(out.fileno())
    edit.skip_reason = ("a process opened the rollout during the replace (a live session); the "
                        "original file was put back with every line written to it")
    result.setdefault("given_back", []).append({"thread_id": edit.thread_id,
                                                "bytes_carried": len(extra)})


def target_as_planned(edit: RolloutEdit) -> bool:
    """A copy's target is still absent, or still the file that was compared when planning."""
    try:
        stat = edit.target.stat()
    except FileNotFoundError:
        return edit.target_fingerprint is None
    return edit.target_fingerprint == (stat.st_size, stat.st_mtime_ns)


def carry_late_tail(source: Any, size: int, edit: RolloutEdit, result: Dict[str, Any]) -> bool:
    """Bytes appended to the old file since it was read, appended to the new one (synced);
    True when there were any."""
    grown = os.fstat(source.fileno()).st_size
    if grown <= size:
        return False
    source.seek(size)
    with open(str(edit.target), "ab") as out:
        shutil.copyfileobj(source, out, READ_CHUNK)
        out.flush()
        os.fsync(out.fileno())
    result.setdefault("carried_over", []).append({"thread_id": edit.thread_id,
                                                  "bytes": grown - size})
    return True


def copy_rollout(edit: RolloutEdit, journal: Optional["Journal"] = None) -> bool:
    """import: another home's rollout written, with its planned line edits, to its place in this
    home. The source is only read (no lease, no link, nothing written beside it); the copy must
    hold exactly the bytes planned, and the target must still be as it was when planned
    (absent, or this home's shorter copy, unchanged)."""
    size, mtime_ns, expected = edit.fingerprint
    stat = edit.path.stat()
    if (stat.st_size, stat.st_mtime_ns) != (size, mtime_ns) or not target_as_planned(edit):
        return False
    edit.target.parent.mkdir(parents=True, exist_ok=True)  # a new date folder
    tmp = temp_beside(edit.target)
    check = SourceDigest()
    try:
        with open_regular(edit.path) as source:
            copied = write_edited_copy(source, tmp, edit, size, check)
        if copied is None:
            return False
        # A copy from a read-only backup must stay appendable: Codex appends when it resumes.
        os.chmod(str(tmp), (stat.st_mode & 0o7777) | 0o600)
        # Codex orders threads by the rollout's mtime when it re-derives a row: keep it.
        os.utime(str(tmp), ns=(stat.st_atime_ns, mtime_ns))
        if not check.holds(expected) or not target_as_planned(edit):
            return False
        if journal is not None:
            journal.intend(edit.target, sha256_after=copied[1])
        os.replace(str(tmp), str(edit.target))
        fsync_folders([edit.target.parent])
        return True
    finally:
        if tmp.exists():
            tmp.unlink()


def write_edited_copy(source: Any, tmp: Path, edit: RolloutEdit, size: int,
                      digest: Any, sync: bool = True,
                      hash_written: bool = True) -> Optional[Tuple[int, str]]:
    """The source's bytes with the planned lines substituted, written to `tmp` and fsynced
    (unless `sync` is False: the caller syncs it); every byte read goes into `digest` (which the
    caller holds to the plan's read). Returns (bytes written, SHA-256 of what was written, or ""
    when not `hash_written`: the caller knows it), or None when the source is not `size` bytes
    long."""
    buffer = bytearray(min(READ_CHUNK, max(size, 1)))
    with open(str(tmp), "wb") as handle:
        out: Any = HashingWriter(handle) if hash_written else handle
        position = 0
        for offset, length, new_raw in sorted(edit.replacements):
            if not copy_span(source, out, digest, offset - position, buffer):
                return None
            digest.update(source.read(length))
            out.write(new_raw)
            position = offset + length
        if not copy_span(source, out, digest, size - position, buffer) or source.read(1):
            return None
        handle.flush()
        if sync:
            os.fsync(handle.fileno())
        return handle.tell(), out.digest.hexdigest() if hash_written else ""


def copy_span(source: Any, out: Any, digest: Any, count: int,
              buffer: Optional[bytearray] = None) -> bool:
    """`count` bytes from `source` to `out`, each fed to `digest`, through one reused buffer
    (a fresh megabyte per read costs more than the copy: the allocator maps and faults it in)."""
    view = memoryview(buffer if buffer is not None else bytearray(min(READ_CHUNK, max(count, 1))))
    while count > 0:
        got = source.readinto(view[:min(len(view), count)])
        if not got:
            return False  # the file shrank since it was planned
        chunk = view[:got]
        digest.update(chunk)
        out.write(chunk)
        count -= got
    return True


def write_sql(plan: Plan, skipped_threads: set, connections: Dict[Path, sqlite3.Connection],
              journal: Optional["Journal"] = None,
              committed: Optional[Dict[Path, CommittedState]] = None) -> None:
    """One transaction per DB, on the connection that has held its write lock since before the
    first rollout was rewritten; verified by re-reading after the commit. `committed` collects,
    per DB committed, the digest the journal recorded and what tells a later commit of another
    process (data_version, the file's identity), for the manifest."""
    by_db: Dict[Path, List[SqlChange]] = {}
    for change in plan.sql:
        if change.thread_id not in skipped_threads:
            by_db.setdefault(change.db, []).append(change)
    for db, conn in connections.items():
        changes = by_db.get(db, [])
        for change in changes:
            _fault_point("mid_transaction")
            sql, params = change.statement()
            if conn.execute(sql, params).rowcount != 1:
                raise ApplyError("%s: expected to change one row of %s for %s"
                                 % (db.name, change.table, change.key))
        if not changes:
            # locked only to prove it could be written: leave its bytes alone
            conn.execute("ROLLBACK")
            continue
        digest = None
        if journal is not None:
            # Inside the transaction the connection sees the content the commit will leave.
            digest = db_digest(conn)
            journal.intend(db, digest_after=digest)
        conn.execute("COMMIT")
        _fault_point("after_commit")
        if committed is not None and digest is not None:
            committed[db] = (digest, data_version(conn), file_identity(db))
        verify_sql(conn, changes)


def verify_sql(conn: sqlite3.Connection, changes: List[SqlChange]) -> None:
    for change in changes:
        clauses = " AND ".join("%s IS ?" % c for c in change.key)
        if change.op == "delete":
            gone = conn.execute("SELECT 1 FROM %s WHERE %s" % (change.table, clauses),
                                list(change.key.values()))
            if gone.fetchone() is not None:
                raise ApplyError("re-reading %s after commit still shows %s"
                                 % (change.table, change.key))
            continue
        row = conn.execute("SELECT %s FROM %s WHERE %s"
                           % (", ".join(change.values), change.table, clauses),
                           list(change.key.values())).fetchone()
        if row is None or list(row) != list(change.values.values()):
            raise ApplyError("re-reading %s after commit did not show the change for %s"
                             % (change.table, change.key))


def data_version(conn: sqlite3.Connection) -> int:
    """SQLite's count of commits by other connections, as this one sees it: unchanged across
    its own commits, changed by anyone else's."""
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


def file_identity(path: Path) -> Optional[Tuple[int, int]]:
    try:
        stat = os.stat(str(path))
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def still_as_committed(connections: Dict[Path, sqlite3.Connection],
                       committed: Dict[Path, CommittedState], home: Path) -> Dict[str, str]:
    """manifest path -> the digest the run committed, for each DB no other connection has
    committed to since (data_version, read on the run's own connection before it is closed)
    and whose path still names the same file; finish_manifest dumps the others again."""
    settled = {}
    for db, (digest, version, identity) in committed.items():
        conn = connections.get(db)
        try:
            same = conn is not None and data_version(conn) == version
        except sqlite3.Error:
            same = False
        if same and identity is not None and file_identity(db) == identity:
            settled[_manifest_path(db, home)] = digest
    return settled


def finish_manifest(folder: Path, manifest: Dict[str, Any], home: Path,
                    committed: Optional[Dict[str, str]] = None) -> None:
    """Each entry's state after the run. A rollout the run replaced that is still the file it
    wrote (same inode, size and mtime: nothing appended since) has the SHA-256 it was written
    with, and a DB no other connection committed to since the run's commit has the digest the
    journal recorded for that commit (`committed`, from still_as_committed); anything else is
    hashed (or dumped) as it is now."""
    committed = committed or {}
    for entry in manifest["entries"].dbs:
        if entry["path"] in committed:
            entry["digest_after"] = committed[entry["path"]]
            continue
        conn = open_db_readonly(_resolve_manifest_path(entry["path"], home))
        try:
            entry["digest_after"] = db_digest(conn)
        finally:
            conn.close()
    files = manifest["entries"].files
    for at, name in enumerate(files.names):
        target = _resolve_manifest_path(name, home)
        digest = files.written_digest(at, target)
        if digest is None:
            digest = sha256_file(target) if target.exists() else None
        files.set_after(at, digest)
    manifest["complete"] = True
    write_manifest(folder, manifest)
    (folder / "README.txt").write_text(
        "Backup made by %s %s before `%s --apply`.\nTo put everything back: %s restore %s --apply\n"
        "(without --apply it only shows what it would restore)\n" % (
            TOOL_NAME, __version__, manifest["command"], TOOL_NAME, folder), encoding="utf-8")


def list_backups(home: Path) -> List[Dict[str, Any]]:
    root = home / BACKUP_DIR_NAME
    found = []
    if root.is_dir():
        for folder in sorted(root.iterdir()):
            if not folder.is_dir():
                continue
            if folder.is_symlink():
                continue
            try:
                manifest = read_manifest(folder)
            except ToolError:
                # No manifest: a run killed while backing up, before it wrote anything (removed
                # by the next apply). A manifest that does not verify is listed, never removed.
                partial = not os.path.lexists(str(folder / "manifest.json"))
                found.append({"path": str(folder), "name": folder.name, "command": None,
                              "created_at": None,
                              "complete": False, "partial": partial, "unverifiable": not partial,
                              "files": 0,
                              "_order": (int(folder.stat().st_mtime * 1e9), folder.name)})
                continue
            found.append({"path": str(folder), "name": folder.name,
                          "command": manifest.get("command"),
                          "created_at": manifest.get("created_at"),
                          "complete": manifest.get("complete"),
                          "partial": False, "unverifiable": False,
                          "files": len(manifest["entries"]),
                          "_order": (manifest.get("created_ns")
                                     or int(folder.stat().st_mtime * 1e9), folder.name)})
    found.sort(key=lambda b: b.pop("_order"))
    return found


# ---------------------------------------------------------------------------------------------
# Verification with the user's Codex. The tool's verdicts come from rules measured on a few
# releases; `--verify` asks the Codex the user actually has. It lists a private scratch copy of
# the home (DB copies, rollout heads, config; never a credential) as it is and as the plan
# leaves it, offline, and the answer is compared with the tool's own prediction. No byte of the
# real home is written; the scratch copy is removed afterwards, also on Ctrl-C and SIGTERM.
# ---------------------------------------------------------------------------------------------

# Where Codex Desktop and the IDE extension ship their own `codex` binary, checked after
# --codex-bin and `codex` on PATH, in this order. `{platform}` is the extension's folder for
# this machine (linux-x86_64, macos-aarch64, windows-x86_64, ...). Newest extension first.
CODEX_BUNDLED_BINARIES = (
    ("Codex Desktop", "/Applications/Codex.app/Contents/Resources/codex"),
    ("Codex Desktop", "~/Applications/Codex.app/Contents/Resources/codex"),
    ("ChatGPT Desktop",
     "/Applications/ChatGPT.app/Contents/Resources/codex-cli/CodexCLI.app/Contents/MacOS/codex"),
    ("VS Code extension", "~/.vscode/extensions/openai.chatgpt-*/bin/{platform}/codex"),
    ("VS Code Insiders extension",
     "~/.vscode-insiders/extensions/openai.chatgpt-*/bin/{platform}/codex"),
    ("VS Code remote extension",
     "~/.vscode-server/extensions/openai.chatgpt-*/bin/{platform}/codex"),
    ("Cursor extension", "~/.cursor/extensions/openai.chatgpt-*/bin/{platform}/codex"),
    ("Cursor remote extension",
     "~/.cursor-server/extensions/openai.chatgpt-*/bin/{platform}/codex"),
    ("Windsurf extension", "~/.windsurf/extensions/openai.chatgpt-*/bin/{platform}/codex"),
)
# Settings given to the verifying app-server with `-c` (they win over config.toml, which is
# copied unchanged): what reaches the network at start-up is switched off.
# CODEX-COMPAT: 0.120.0-0.171.0 fetch plugins (github.com, chatgpt.com) at start-up unless
# plugins are off; update checks, analytics, OpenTelemetry export and MCP servers are the
# other configured ways out. Each release accepts every one of these keys.
OFFLINE_OVERRIDES = (
    "features.plugins=false",
    "analytics.enabled=false",
    "check_for_update_on_startup=false",
    "mcp_servers={}",
    'otel.exporter="none"',
)
VERIFY_TIMEOUT = 60.0  # seconds for the app-server to start, and for each page of its listing
LIST_PAGE_LIMIT = 1000
# CODEX-COMPAT: the filesystem lister reads 10 head records before it looks for a user message.
HEAD_RECORD_LIMIT = 10
# Lines past a rollout's head that listing still reads: the thread's later session_meta lines
# and its provider settings (the latest thread_settings_applied names the provider, 0.169.0+).
LISTING_LINE_MARKERS = PROVIDER_LINE_MARKERS


class VerifyError(Exception):
    """Verification could not run to the end (a time-out, a Codex that exits): reported in one
    line; a dry run carries on as without --verify, an apply is refused. `exited`: the app-server
    stopped by itself, which is Codex's own answer about that copy of the home (it cannot open
    it)."""

    def __init__(self, message: str, exited: bool = False) -> None:
        super().__init__(message)
        self.exited = exited


class CodexBinary:
    def __init__(self, path: Path, origin: str) -> None:
        self.path, self.origin = path, origin
        self.version: Optional[str] = None


def bundle_platform() -> str:
    """The IDE extension's folder name for this machine's binaries."""
    import platform
    machine = platform.machine().lower()
    arch = "aarch64" if machine in ("arm64", "aarch64") else "x86_64"
    system = {"darwin": "macos", "win32": "windows"}.get(sys.platform, "linux")
    return "%s-%s" % (system, arch)


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(str(path), os.X_OK)


def find_codex_binary(flag: Optional[str], environ: Dict[str, str]) -> Optional[CodexBinary]:
    """--codex-bin, else `codex` on PATH, else a binary Codex Desktop or the IDE extension
    ships. The npm `codex` on PATH is a node launcher; it works as a command all the same."""
    if flag:
        path = Path(flag).expanduser()
        if not _is_executable(path):
            raise UsageError("--codex-bin %s is not an executable file" % flag)
        return CodexBinary(path.absolute(), "--codex-bin")
    import glob
    on_path = shutil.which("codex", path=environ.get("PATH", ""))
    if on_path:
        return CodexBinary(Path(on_path), "PATH")
    user_home = environ.get("HOME") or environ.get("USERPROFILE") or str(Path.home())
    suffix = ".exe" if sys.platform == "win32" else ""
    for origin, pattern in CODEX_BUNDLED_BINARIES:
        pattern = pattern.replace("{platform}", bundle_platform()) + suffix
        if pattern.startswith("~"):
            pattern = user_home + pattern[1:]
        found = [Path(p) for p in glob.glob(pattern)]
        found.sort(key=lambda p: parse_version(re.sub(r"^.*openai\.chatgpt-", "", str(p))),
                   reverse=True)
        for path in found:
            if _is_executable(path):
                return CodexBinary(path, origin)
    return None


def codex_version(binary: CodexBinary, scratch: "ScratchHome") -> str:
    """`codex --version` says `codex-cli 0.171.0`. Run with the scratch environment too."""
    import subprocess
    try:
        # Its own process group: a launcher that hangs is stopped with whatever it started.
        proc = subprocess.Popen([str(binary.path), "--version"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE,
                                text=True, stdin=subprocess.DEVNULL, env=verify_env(scratch),
                                cwd=str(scratch.home), start_new_session=os.name == "posix")
    except (OSError, subprocess.SubprocessError) as exc:
        raise VerifyError("%s --version failed: %s" % (binary.path, short(str(exc), 160))) from None
    try:
        stdout, stderr = proc.communicate(timeout=VERIFY_TIMEOUT)
    except subprocess.TimeoutExpired:
        _stop_group(proc)
        proc.communicate()
        raise VerifyError("%s --version did not answer within %d s"
                          % (binary.path, VERIFY_TIMEOUT)) from None
    finally:
        if os.name == "posix" and proc.returncode is not None:
            try:
                os.killpg(proc.pid, 9)  # a child the launcher left behind
            except OSError:
                pass
    match = re.search(r"\b(\d+\.\d+\.\d+[\w.+-]*)", stdout or "")
    if proc.returncode != 0 or not match:
        raise VerifyError("%s --version did not name a release: %s" % (
            binary.path, short(((stdout or "") + (stderr or "")).strip(), 160)))
    return match.group(1)


def verify_env(scratch: "ScratchHome") -> Dict[str, str]:
    """The environment the verifying Codex runs in: only what finding programs and text needs.
    No API key, token, proxy or Codex setting of the user's reaches it; HOME is inside the
    scratch folder so nothing under the user's own home is read."""
    keep = ("PATH", "LANG", "LC_ALL", "SYSTEMROOT", "SystemRoot", "WINDIR", "COMSPEC", "PATHEXT")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update({"NO_COLOR": "1", "CODEX_HOME": str(scratch.home), "HOME": str(scratch.user_home),
                "USERPROFILE": str(scratch.user_home), "TMPDIR": str(scratch.tmp),
                "TEMP": str(scratch.tmp), "TMP": str(scratch.tmp)})
    return env


SCRATCH_PREFIX = "csr-verify-"
_SCRATCH_NAME = re.compile(r"^csr-verify-[a-z]+-(\d+)-")


def remove_stale_scratch(parent: Path) -> None:
    """Scratch folders that a run killed before it could clean up (kill -9) left behind: named
    with that run's pid, which no longer exists. Only this user's own folders, never a link;
    POSIX only (elsewhere a pid cannot be probed without touching the process)."""
    if os.name != "posix":
        return
    try:
        entries = list(os.scandir(str(parent)))
    except OSError:
        return
    for entry in entries:
        match = _SCRATCH_NAME.match(entry.name)
        try:
            if not match or not entry.is_dir(follow_symlinks=False) or \
                    entry.stat(follow_symlinks=False).st_uid != os.getuid():
                continue
        except OSError:
            continue
        if not process_exists(int(match.group(1))):
            shutil.rmtree(entry.path, ignore_errors=True)


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # another user's process: it exists
    return True


class ScratchHome:
    """A private folder (0700) under the system temp dir holding one copied home, removed on
    exit whatever happens. SIGTERM is turned into KeyboardInterrupt while it exists, so a
    terminated run cleans up like an interrupted one."""

    def __init__(self, real_home: Path, label: str) -> None:
        parent = Path(tempfile.gettempdir()).resolve()
        if is_within(parent, real_home.resolve()):
            raise VerifyError("the system temp folder %s lies inside CODEX_HOME; set TMPDIR "
                              "elsewhere" % parent)
        remove_stale_scratch(parent)
        # The pid in the name lets a later run know this folder's run is gone (kill -9).
        self.root = Path(tempfile.mkdtemp(prefix="%s%s-%d-" % (SCRATCH_PREFIX, label, os.getpid()),
                                          dir=str(parent)))
        self.home = self.root / "codex-home"
        self.user_home = self.root / "user-home"
        self.tmp = self.root / "tmp"
        self.moved = self.root / "moved"
        for folder in (self.home, self.user_home, self.tmp, self.moved):
            folder.mkdir(mode=0o700)
        self.sqlite_home: Optional[Path] = None
        self.bytes_copied = 0
        self.files_copied = 0
        self._old_handler: Any = None

    def __enter__(self) -> "ScratchHome":
        import signal
        try:
            self._old_handler = signal.signal(signal.SIGTERM, _raise_interrupt)
        except (ValueError, AttributeError):  # not the main thread, or no SIGTERM here
            self._old_handler = None
        return self

    def __exit__(self, *exc: Any) -> None:
        import signal
        try:
            shutil.rmtree(str(self.root), ignore_errors=True)
            if self.root.exists():  # a read-only folder Codex made: make it writable, then again
                for folder, _dirs, _files in os.walk(str(self.root)):
                    os.chmod(folder, 0o700)
                shutil.rmtree(str(self.root), ignore_errors=True)
        finally:
            if self._old_handler is not None:
                signal.signal(signal.SIGTERM, self._old_handler)

    def path_for(self, real: Path, real_home: Path) -> Path:
        """Where a file of the real home lives in the scratch copy."""
        return self.home / os.path.relpath(os.path.abspath(str(real)), str(real_home))


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt()


def home_bytes(home: Path) -> int:
    """Size of the home as Codex keeps it (the tool's own backups left out)."""
    total = 0
    for folder, dirs, files in os.walk(str(home)):
        if os.path.abspath(folder) == os.path.abspath(str(home)):
            dirs[:] = [d for d in dirs if d != BACKUP_DIR_NAME]
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total


class PathMapper:
    """Rewrites a path of the real home (as Codex stored it) into the scratch copy. Paths that
    do not name the real home stay as they are: Codex must see them exactly as it would."""

    def __init__(self, real_home: Path, scratch: ScratchHome) -> None:
        self.scratch = scratch
        self.prefixes = sorted({str(real_home), os.path.abspath(str(real_home)),
                                os.path.realpath(str(real_home))},
                               key=len, reverse=True)

    def __call__(self, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        for prefix in self.prefixes:
            if value.startswith(prefix + os.sep):
                return str(self.scratch.home) + value[len(prefix):]
        return value

    def path(self, real: Path) -> Path:
        mapped = self(str(real))
        return Path(mapped) if mapped != str(real) else self.scratch.moved / real.name


def copy_file_to_scratch(source: Path, target: Path, scratch: ScratchHome) -> None:
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    shutil.copyfile(str(source), str(target))
    stat = source.stat()
    os.utime(str(target), ns=(stat.st_atime_ns, stat.st_mtime_ns))
    scratch.bytes_copied += stat.st_size
    scratch.files_copied += 1


def copy_db_to_scratch(db: Path, target: Path, scratch: ScratchHome) -> None:
    """SQLite's online backup API from a read-only connection: pages still in the -wal are
    included, the user's DB is not written. A DB SQLite cannot read is copied byte for byte,
    so the user's Codex meets the same damage."""
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        with readonly_db(db) as source:
            copy = sqlite3.connect(str(target))
            try:
                source.backup(copy)
            finally:
                copy.close()
        scratch.bytes_copied += target.stat().st_size
        scratch.files_copied += 1
    except sqlite3.Error:
        for suffix in ("", "-wal"):
            if os.path.isfile(str(db) + suffix):
                copy_file_to_scratch(Path(str(db) + suffix), Path(str(target) + suffix), scratch)


def point_rows_at_scratch(target: Path, mapper: PathMapper) -> None:
    """Every `rollout_path` that names a file of the real home names its scratch copy."""
    try:
        conn = sqlite3.connect(str(target), isolation_level=None)
    except sqlite3.Error:
        return
    try:
        if "rollout_path" not in table_columns(conn, "threads"):
            return
        rows = conn.execute("SELECT id, rollout_path FROM threads").fetchall()
        conn.execute("BEGIN")
        for thread_id, stored in rows:
            mapped = mapper(stored)
            if mapped != stored:
                conn.execute("UPDATE threads SET rollout_path = ? WHERE id = ?",
                             (mapped, thread_id))
        conn.execute("COMMIT")
    except sqlite3.Error:
        pass  # a damaged DB stays as damaged as the real one
    finally:
        conn.close()


def rollout_head_lines(info: RolloutInfo) -> int:
    """How many lines of a rollout listing reads at least: through its first real user
    message, and the head records; with no user message, as far as the lister looks for one."""
    return max(info.evidence_line or HEAD_SCAN_LINES, HEAD_RECORD_LIMIT)


def head_complete(count: int, info: RolloutInfo, event_seen: bool) -> bool:
    if count < rollout_head_lines(info):
        return False
    return event_seen or count >= HEAD_SCAN_LINES


def later_listing_lines(source: Any, info: RolloutInfo, head_end: int,
                        cache: Optional[Dict[Any, List[Tuple[int, int]]]]) -> List[Tuple[int, int]]:
    """(offset, length) of each line past the head that listing reads, found by the repairs'
    block scan. The scan reads the whole file, so its answer is kept per version of the file
    (inode, size, mtime): the second scratch copy of one run reads only the lines it needs."""
    stat = os.fstat(source.fileno())
    key = (str(info.path), stat.st_ino, stat.st_size, stat.st_mtime_ns, head_end)
    if cache is not None and key in cache:
        return cache[key]
    found = []
    try:
        for _line, offset, raw in iter_marked_lines(source, LISTING_LINE_MARKERS, _NoDigest(),
                                                    RolloutEdit(info.path, "")):
            found.append((head_end + offset, len(raw)))
    except PlanError:
        pass  # a pathological line: listing cannot read past it either
    if cache is not None:
        cache[key] = found
    return found


def copy_rollout_head(info: RolloutInfo, target: Path, edit: Optional[RolloutEdit],
                      scratch: ScratchHome,
                      cache: Optional[Dict[Any, List[Tuple[int, int]]]] = None) -> None:
    """The head of one rollout, plus the later lines listing reads (and any line the plan
    edits), with the plan's line edits applied exactly as the apply engine writes them."""
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    lines = edit.line_spans() if edit else {}  # line offset -> (old length, its replacements)
    written = count = 0
    event_seen = False
    with open(str(info.path), "rb") as source, open(str(target), "wb") as out:
        while not head_complete(count, info, event_seen):
            count += 1
            start = source.tell()
            raw, oversized = read_line_bounded(source)
            if not raw and not oversized:
                break
            end = source.tell()
            if start in lines:
                raw = spliced_line(start, raw, lines.pop(start)[1])
            elif oversized:
                source.seek(start)
                raw = source.read(end - start)
            event_seen = event_seen or (count >= (info.evidence_line or 0) and
                                        any(marker in raw for marker in USER_EVENT_MARKERS))
            out.write(raw)
            written += len(raw)
        head_end = source.tell()
        later: Dict[int, bytes] = {}
        for offset, length in later_listing_lines(source, info, head_end, cache):
            source.seek(offset)
            later[offset] = source.read(length)
        for offset, (length, _spans) in lines.items():
            if offset not in later and offset >= head_end:
                source.seek(offset)
                later[offset] = source.read(length)
        for offset in sorted(later):
            raw = (spliced_line(offset, later[offset], lines[offset][1]) if offset in lines
                   else later[offset])
            out.write(raw)
            written += len(raw)
    stat = info.path.stat()
    os.utime(str(target), ns=(stat.st_atime_ns, stat.st_mtime_ns))
    scratch.bytes_copied += written
    scratch.files_copied += 1


class _NoDigest:
    """The block scan hashes what it reads for the apply engine; a copy needs no digest."""

    def update(self, data: bytes) -> None:
        pass


def build_scratch_home(inv: Inventory, scratch: ScratchHome, plan: Optional[Plan],
                       cache: Optional[Dict[Any, List[Tuple[int, int]]]] = None) -> None:
    """Copy what listing reads into the scratch home, then apply the plan to the copy: rollout
    edits to the heads, the plan's SQL through the apply engine's own writer, whole-file
    writes, and moves (into a folder beside the copy). auth.json and every other credential
    are never opened: only the files named here are."""
    mapper = PathMapper(inv.home, scratch)
    for name in ["config.toml"] + sorted(n for n in os.listdir(str(inv.home))
                                         if n.endswith(".config.toml")) + [
            "session_index.jsonl", ".codex-global-state.json"]:
        source = inv.home / name
        if source.is_file():
            copy_file_to_scratch(source, scratch.home / name, scratch)
    db_targets: Dict[Path, Path] = {}
    explicit = [folder for folder, origin in sqlite_home_dirs(inv.home, inv.config,
                                                              dict(os.environ))
                if origin in ("config sqlite_home", "CODEX_SQLITE_HOME")]
    if explicit:
        # The copied config.toml names a sqlite_home Codex would open and write: the verifying
        # Codex is pointed at a folder of the scratch copy instead (with -c sqlite_home).
        scratch.sqlite_home = scratch.root / "sqlite-home"
        scratch.sqlite_home.mkdir(mode=0o700)
    for db in inv.dbs:
        if db.path.parent in explicit or not is_within(Path(os.path.abspath(str(db.path))),
                                                       inv.home):
            scratch.sqlite_home = scratch.sqlite_home or scratch.root / "sqlite-home"
            target = scratch.sqlite_home / db.path.name
        else:
            target = scratch.path_for(db.path, inv.home)
        copy_db_to_scratch(db.path, target, scratch)
        point_rows_at_scratch(target, mapper)
        db_targets[db.path] = target
    edits = {e.path: e for e in (plan.rollout_edits if plan else [])}
    # import's copies come from another home: the copy goes where the plan puts it, over this
    # home's shorter copy where there is one.
    copies = {e.target: e for e in (plan.rollout_edits if plan else []) if not e.in_place}
    for info in progress(inv.rollouts, "verify: copying rollout heads"):
        if info.path in copies:
            continue
        if info.compressed and info.path.is_file():
            copy_file_to_scratch(info.path, scratch.path_for(info.path, inv.home), scratch)
        elif info.path.is_file() and "unreadable" not in info.problems:
            copy_rollout_head_as_kept(info, scratch.path_for(info.path, inv.home),
                                      edits.get(info.path),
                                      scratch, cache, info.file in inv.linked_rollouts)
    for target, edit in copies.items():
        copy_rollout_head(scan_rollout(edit.path, edit.path.parent),
                          scratch.path_for(target, inv.home), edit, scratch)
    if plan is not None:
        apply_plan_to_scratch(plan, mapper, db_targets)


def copy_rollout_head_as_kept(info: RolloutInfo, target: Path, edit: Optional[RolloutEdit],
                              scratch: ScratchHome,
                              cache: Dict[Any, List[Tuple[int, int]]], linked: bool) -> None:
    """A rollout that is a symbolic link stays one on the copy (Codex's file listing skips
    links), unless the plan edits it: the apply engine replaces the link by the edited file."""
    if not linked or edit is not None:
        copy_rollout_head(info, target, edit, scratch, cache)
        return
    kept = scratch.root / "linked-rollouts" / os.path.relpath(str(target), str(scratch.home))
    copy_rollout_head(info, kept, None, scratch, cache)
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.symlink(str(kept), str(target))


def apply_plan_to_scratch(plan: Plan, mapper: PathMapper, db_targets: Dict[Path, Path]) -> None:
    """The plan's SQL, file writes and moves, on the scratch copy. The SQL runs through the
    apply engine's write_sql/verify_sql (same statements, same one-row guards) with every path
    of the real home mapped into the copy. CODEX-COMPAT: changes to the history projection
    (thread_history_*.sqlite) are left out with that DB: listing reads no projection
    (measured 0.120.0-0.171.0), and it holds every turn's text."""
    scratch_plan = Plan(plan.command)
    for change in plan.sql:
        if change.db not in db_targets:
            continue
        scratch_plan.sql.append(SqlChange(
            db_targets[change.db], change.table, {k: mapper(v) for k, v in change.key.items()},
            {k: mapper(v) for k, v in change.values.items()},
            {k: mapper(v) for k, v in change.expect.items()},
            change.thread_id, change.op))
    connections: Dict[Path, sqlite3.Connection] = {}
    try:
        for db in scratch_plan.touched_dbs():
            conn = sqlite3.connect(str(db), timeout=5.0, isolation_level=None)
            connections[db] = conn
            conn.execute("BEGIN IMMEDIATE")
        write_sql(scratch_plan, set(), connections)
    except (sqlite3.Error, ApplyError) as exc:
        raise VerifyError("the plan could not be applied to the scratch copy: %s"
                          % short(str(exc), 200)) from None
    finally:
        close_all(connections)
    for write in plan.file_writes:
        target = mapper.path(write.path)
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write(target, write.data, 0o600)
    copies = {Path(str(real) + suffix): Path(str(copy) + suffix)
              for real, copy in db_targets.items()
              for suffix in ("", "-wal", "-shm")}
    for moved in plan.moves:
        target = copies.get(moved) or mapper.path(moved)
        if target.exists() and is_within(target, mapper.scratch.root):
            os.replace(str(target), str(mapper.scratch.moved / target.name))


class CodexLister:
    """`codex app-server` on the scratch home over stdio (newline-delimited JSON-RPC 2.0):
    `initialize`, then the default `thread/list` over every page. Every wait is bounded."""

    def __init__(self, binary: CodexBinary, scratch: ScratchHome) -> None:
        self.binary, self.scratch = binary, scratch
        self.proc: Any = None
        self.pumps: List[Any] = []
        self.lines: Any = None
        self.stderr_tail: List[str] = []
        self.next_id = 0

    def __enter__(self) -> "CodexLister":
        import queue
        import subprocess
        import threading
        command = [str(self.binary.path)]
        for setting in OFFLINE_OVERRIDES:
            command += ["-c", setting]
        # Where Codex writes beside the home: into the scratch folder, whatever config.toml says.
        command += ["-c", "log_dir=%s" % json.dumps(str(self.scratch.root / "log"))]
        if self.scratch.sqlite_home is not None:
            command += ["-c", "sqlite_home=%s" % json.dumps(str(self.scratch.sqlite_home))]
        command.append("app-server")
        try:
            self.proc = subprocess.Popen(
                command, cwd=str(self.scratch.home), env=verify_env(self.scratch),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                start_new_session=os.name == "posix")
        except OSError as exc:
            raise VerifyError("could not start %s app-server: %s"
                              % (self.binary.path, short(str(exc), 160))) from None
        self.lines = queue.Queue()
        self.pumps = [threading.Thread(target=self._pump_stdout, daemon=True),
                      threading.Thread(target=self._pump_stderr, daemon=True)]
        for pump in self.pumps:
            pump.start()
        try:
            self.request("initialize", {"clientInfo": {"name": "codex_session_recovery",
                                                       "title": TOOL_NAME, "version": __version__}})
            self._send({"jsonrpc": "2.0", "method": "initialized"})
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _pump_stdout(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _pump_stderr(self) -> None:
        for line in self.proc.stderr:
            self.stderr_tail = (self.stderr_tail + [line.decode("utf-8", "replace").rstrip()])[-5:]

    def _send(self, message: Dict[str, Any]) -> None:
        try:
            self.proc.stdin.write((json.dumps(message) + "\n").encode("utf-8"))
            self.proc.stdin.flush()
        except OSError as exc:
            raise VerifyError("Codex app-server stopped (%s)%s"
                              % (exc, self._stderr_hint())) from None

    def _stderr_hint(self) -> str:
        """Codex's last words, with the scratch folder's long private path said in a word: what
        Codex means comes after it, and must survive the cut to 200 characters."""
        if not self.stderr_tail:
            return ""
        said = self.stderr_tail[-1].replace(str(self.scratch.home), "<scratch copy>")
        return ": %s" % short(said.replace(str(self.scratch.root), "<scratch>"), 200)

    def request(self, method: str, params: Dict[str, Any]) -> Dict[str, Any]:
        import queue
        import time
        self.next_id += 1
        request_id = self.next_id
        self._send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        deadline = time.monotonic() + VERIFY_TIMEOUT
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise VerifyError("Codex app-server did not answer %s within %d s"
                                  % (method, VERIFY_TIMEOUT)) from None
            if line is None:
                raise VerifyError("Codex app-server exited before answering %s%s"
                                  % (method, self._stderr_hint()),
                                  exited=True)
            try:
                message = json.loads(line.decode("utf-8", "replace"))
            except ValueError:
                continue
            if not isinstance(message, dict):
                continue
            if "method" in message and "id" in message:
                # A request from the server (an approval prompt): nobody is there to answer it.
                self._send({"jsonrpc": "2.0", "id": message["id"],
                            "error": {"code": -32601, "message": "not supported"}})
            elif message.get("id") == request_id:
                if "error" in message:
                    raise VerifyError("Codex app-server refused %s: %s"
                                      % (method, short(json.dumps(message["error"]), 200)))
                return message.get("result") or {}

    def listed_ids(self) -> List[str]:
        """The default `thread/list` (no filters: what a user sees), every page."""
        ids: List[str] = []
        cursor = None
        seen = set()
        while True:
            params: Dict[str, Any] = {"limit": LIST_PAGE_LIMIT}
            if cursor:
                params["cursor"] = cursor
            result = self.request("thread/list", params)
            ids.extend(str(item.get("id")).lower()
                       for item in result.get("data") or [] if isinstance(item, dict))
            if progress.enabled:
                sys.stderr.write("\rverify: Codex listed %d" % len(ids))
            cursor = result.get("nextCursor")
            if not cursor or cursor in seen:
                if progress.enabled:
                    sys.stderr.write("\n")
                return list(dict.fromkeys(ids))
            seen.add(cursor)

    def close(self) -> None:
        """Close stdin (the app-server exits on EOF), then terminate the whole group: the npm
        launcher keeps the native binary as a child."""
        import subprocess
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            _stop_group(proc)
        if os.name == "posix":
            try:
                os.killpg(proc.pid, 9)  # a child the launcher left behind
            except OSError:
                pass
        for pump in self.pumps:
            pump.join(5)  # they end at EOF, once every process holding the pipes is gone
        for stream in (proc.stdout, proc.stderr):
            stream.close()


def _stop_group(proc: Any) -> None:
    import signal
    import subprocess
    for sig in (signal.SIGTERM, getattr(signal, "SIGKILL", signal.SIGTERM)):
        try:
            if os.name == "posix":
                os.killpg(proc.pid, sig)
            else:  # pragma: no cover - Windows
                proc.kill()
        except OSError:
            pass
        try:
            proc.wait(5)
            return
        except subprocess.TimeoutExpired:
            continue


def predicted_listed(inv: Inventory) -> List[str]:
    """The tool's own prediction of the default listing: every thread no reason hides."""
    return sorted(v.id for v in inv.threads.values() if not v.hidden)


def conversation_count(inv: Inventory) -> int:
    """The user's conversations: interactive, not archived, with a user message."""
    return sum(1 for v in inv.threads.values()
               if is_interactive(v.source) and not v.archived and v.has_evidence)


def app_server_inventory(inv: Inventory) -> Inventory:
    """The inventory as the app-server sees the home. It has no --profile (0.169.0+ measured;
    Desktop and the IDE run it): with --profile, the prediction it is held to is the one for the
    top-level configuration."""
    if not inv.config.profile:
        return inv
    plain = Inventory(inv.home, inv.home_origin, load_config(inv.home, None), dict(os.environ))
    run_checks(plain)
    return plain


def scratch_inventory(scratch: ScratchHome) -> Inventory:
    """The tool's own reading of the scratch copy: its prediction of the home after the plan."""
    config = load_config(scratch.home, None)
    if scratch.sqlite_home is not None:
        config.sqlite_home = str(scratch.sqlite_home)
    copy = Inventory(scratch.home, "scratch", config, {})
    run_checks(copy)
    return copy


def list_scratch(binary: CodexBinary, inv: Inventory, plan: Optional[Plan], label: str,
                 cache: Dict[Any, List[Tuple[int, int]]]) -> Dict[str, Any]:
    """One scratch copy (of the home as it is, or as `plan` leaves it), the tool's prediction
    for it, and what the user's Codex lists on it."""
    with ScratchHome(inv.home, label) as scratch:
        build_scratch_home(inv, scratch, plan, cache)
        predicted_inv = app_server_inventory(inv) if plan is None else scratch_inventory(scratch)
        predicted = predicted_listed(predicted_inv)
        conversations = conversation_count(predicted_inv)
        listed: Optional[List[str]] = None
        error = None
        try:
            with CodexLister(binary, scratch) as lister:
                listed = lister.listed_ids()
        except VerifyError as exc:
            if not exc.exited:
                raise
            error = str(exc)  # Codex cannot open this copy: a measured answer, not a broken check
        return {"listed": listed, "error": error, "predicted": predicted,
                "conversations": conversations,
                "bytes_copied": scratch.bytes_copied, "files_copied": scratch.files_copied,
                "scratch_root": str(scratch.root)}


def disagreements(phase: str, listed: List[str], predicted: List[str]) -> List[Dict[str, Any]]:
    said, shown = set(predicted), set(listed)
    return [{"id": tid, "phase": phase, "predicted": "listed" if tid in said else "hidden",
             "codex": "listed" if tid in shown else "hidden"} for tid in sorted(said ^ shown)]


NO_CODEX_MESSAGE = ("no Codex binary found (--codex-bin, `codex` on PATH, Codex Desktop, the IDE "
                    "extension); carrying on without verification")


def verify_with_codex(inv: Inventory, args: argparse.Namespace, plan: Optional[Plan],
                      apply: Optional[Any] = None) -> Dict[str, Any]:
    """The `verification` object. The home as it is is listed on one scratch copy, and the home
    as `plan` leaves it on another. With `apply` (a function that writes the real home and
    returns its new inventory), the plan is applied only when Codex agreed with both
    predictions; the repaired home is then listed on a third copy. A disagreement refuses the
    apply: nothing is written, and so when the check cannot finish before the apply. Without a
    Codex the command goes on as without --verify (the line on stderr says so)."""
    binary = find_codex_binary(getattr(args, "codex_bin", None), dict(os.environ))
    if binary is None:
        if apply is not None:
            apply()
        return {"status": "no_codex", "message": NO_CODEX_MESSAGE}
    result: Dict[str, Any] = {"status": "verified", "codex_bin": str(binary.path),
                              "codex_origin": binary.origin,
                              "codex_version": None,
                              "surface": "app-server (Desktop, IDE extension)",
                              "refused": False}
    phase = "before"
    listings: List[Tuple[str, Dict[str, Any]]] = []
    try:
        with ScratchHome(inv.home, "version") as scratch:
            result["codex_version"] = binary.version = codex_version(binary, scratch)
        cache: Dict[Any, List[Tuple[int, int]]] = {}
        listings.append(("before", list_scratch(binary, inv, None, "before", cache)))
        phase = "after"
        if plan is not None and plan.change_count:
            listings.append(("after", list_scratch(binary, inv, plan, "after", cache)))
        if apply is not None:
            found, errors = compare_listings(listings)
            if found or "after" in errors:
                result["refused"] = True
            else:
                repaired = apply()
                apply = None
                phase = "applied"
                listings.append(("applied", list_scratch(binary, repaired, None, "after", cache)))
    except VerifyError as exc:
        # Asked to check before writing, and the check did not finish: nothing is written.
        result.update(status="failed",
                      message="verification did not finish (%s): %s" % (phase, exc),
                      refused=apply is not None and phase != "applied")
        return result
    found, errors = compare_listings(listings)
    before = listings[0][1]
    final = listings[-1][1] if len(listings) > 1 else (before if plan is not None else None)
    result.update(
        listed_before=before["listed"], predicted_before=before["predicted"],
        conversations_before=before["conversations"],
        listed_after=final["listed"] if final else None,
        predicted_after=final["predicted"] if final else None,
        conversations_after=final["conversations"] if final else None,
        # A Codex that cannot open the home now is what some repairs are for (rebuild-db);
        # one that still cannot after the plan contradicts the plan.
        codex_errors=errors, disagreements=found,
        agrees=not found and not {"after", "applied"} & set(errors),
        cost={"bytes_copied": max(listing["bytes_copied"] for _p, listing in listings),
              "files_copied": max(listing["files_copied"] for _p, listing in listings),
              "home_bytes": home_bytes(inv.home)})
    if inv.config.profile:
        result["profile_note"] = ("the app-server (Desktop, IDE extension) has no --profile and "
                                  "lists under the top-level provider, which is what was checked; "
                                  "`codex --profile "
                                  "%s` (the CLI) "
                                  "lists under %s" % (inv.config.profile, inv.config.provider))
    return result


def compare_listings(listings: List[Tuple[str, Dict[str, Any]]]
                     ) -> Tuple[List[Dict[str, Any]], Dict[str, str]]:
    """Every disagreement of the listings taken so far, by phase, and the phases in which Codex
    could not open the home at all."""
    found: List[Dict[str, Any]] = []
    errors: Dict[str, str] = {}
    for phase, listing in listings:
        if listing["error"]:
            errors[phase] = listing["error"]
        else:
            found += disagreements(phase, listing["listed"], listing["predicted"])
    return found, errors


# What --apply --verify says when Codex contradicts the plan; the override is the same line
# without --verify, which a person chooses knowingly.
VERIFY_REFUSAL = ("the apply did not start and nothing was written, because Codex contradicts this "
                  "plan (to apply it regardless, run the same line without --verify)")


def verification_lines(verification: Optional[Dict[str, Any]], applied: bool) -> List[str]:
    """The verification, for a person: who answered, the counts, every disagreement."""
    if verification is None or verification["status"] != "verified":
        return []  # the one line on stderr says why
    lines = []
    who = "Codex %s (%s)" % (verification["codex_version"], verification["codex_origin"])
    now = "before the apply" if applied else "now"
    then = "after the apply" if applied else "after this plan"
    errors = verification["codex_errors"]
    after_error = errors.get("applied" if applied else "after")
    if "before" in errors:
        text = "%s cannot open this home %s (%s)" % (who, now, short(errors["before"], 160))
    else:
        text = "%s lists %d of your %d conversations %s" % (
            who, len(verification["listed_before"]), verification["conversations_before"], now)
    if after_error:
        text += "; %s it still cannot (%s)" % (then, short(after_error, 160))
    elif verification["listed_after"] is not None and (
            verification["listed_after"] != verification["listed_before"]
            or "before" not in errors):
        text += "; %s it lists %d of %d" % (then, len(verification["listed_after"]),
                                            verification["conversations_after"])
    lines.append("Verify:    " + text)
    cost = verification["cost"]
    lines.append("           (on a scratch copy: %s copied, %.1f%% of the home's %s; removed)" % (
        _fmt_bytes(cost["bytes_copied"]), 100.0 * cost["bytes_copied"] / max(cost["home_bytes"], 1),
        _fmt_bytes(cost["home_bytes"])))
    if verification["agrees"]:
        lines.append("           Codex agrees with this tool's prediction for every thread.")
    elif "after" in errors:
        lines.append("WARNING:   Codex cannot open the home as this plan leaves it; do not apply.")
    elif "applied" in errors:
        lines.append("WARNING:   Codex cannot open the home as the apply left it; `restore "
                     "--latest --apply` puts it back.")
    else:
        lines.append("WARNING:   Codex disagrees with this tool's prediction for %s; do not apply "
                     "before this is understood:"
                     % plural(len({d["id"] for d in verification["disagreements"]}), "thread"))
        for item in verification["disagreements"]:
            lines.append("  %s %s: predicted %s, Codex %s"
                         % (item["phase"], item["id"], item["predicted"], item["codex"]))
    if verification.get("refused"):
        lines.append("REFUSED:   %s" % VERIFY_REFUSAL)
    if verification.get("profile_note"):
        lines.append("           Note: %s" % verification["profile_note"])
    return lines


def _fmt_bytes(count: int) -> str:
    if count < 1024:
        return "%d bytes" % count
    size, unit = float(count) / 1024, "KB"
    for bigger in ("MB", "GB"):
        if size < 1024:
            break
        size, unit = size / 1024, bigger
    return "%.1f %s" % (size, unit)


def report_verification(verification: Optional[Dict[str, Any]]) -> None:
    """On stderr, also under --json: a missing Codex or an unfinished check in one line, and a
    disagreement as a warning nobody can miss."""
    if not verification:
        return
    if verification["status"] != "verified":
        sys.stderr.write("verify: %s\n" % verification["message"])
        if verification.get("refused"):
            sys.stderr.write("refused: the apply did not start and nothing was written, because "
                             "your Codex could not check the plan (to apply it regardless, run the "
                             "same line without --verify)\n")
        return
    if verification.get("refused"):
        sys.stderr.write("refused: %s\n" % VERIFY_REFUSAL)
    if "after" in verification["codex_errors"]:
        sys.stderr.write("warning: Codex %s cannot open the home as the plan leaves it (%s); do "
                         "not apply\n" % (
            verification["codex_version"], short(verification["codex_errors"]["after"], 200)))
    elif "applied" in verification["codex_errors"]:
        sys.stderr.write("warning: Codex %s cannot open the home as the apply left it (%s); "
                         "`restore --latest --apply` puts it back\n"
                         % (verification["codex_version"],
                            short(verification["codex_errors"]["applied"], 200)))
    elif not verification["agrees"]:
        ids = sorted({d["id"] for d in verification["disagreements"]})
        sys.stderr.write("warning: Codex %s disagrees with this tool's prediction for %s (%s); do "
                         "not apply before this is understood\n"
                         % (verification["codex_version"], plural(len(ids), "thread"),
                                                          ", ".join(ids[:5])))


def verification_exit_code(code: int, verification: Optional[Dict[str, Any]]) -> int:
    """A disagreement is a finding: exit 1 even where the command would have said 0; one that
    stopped an apply is a refusal by a safety check (3)."""
    if verification and verification.get("refused"):
        return EXIT_REFUSED
    if (verification and verification.get("status") == "verified" and not verification["agrees"]
            and code == EXIT_OK):
        return EXIT_FINDINGS
    return code


# ---------------------------------------------------------------------------------------------
# Rendering: one JSON document under --json, short human text otherwise.
# ---------------------------------------------------------------------------------------------

SAFETY_LINE_READ = "read-only: no file was changed; credentials (auth.json, tokens) were not opened"


# Every --json document starts with these keys, in this order: tool, version, command,
# codex_home, exit_code, applied (the documented contract; a change to them is a Migrating note
# in CHANGELOG.md).
def envelope(command: Optional[str], inv: Any, exit_code: int, applied: bool = False,
             **body: Any) -> Dict[str, Any]:
    """The one shape of every --json document. `inv` is the Inventory, or only the home (a
    Path or None) for a command that builds none; `body` adds the command's own keys (and
    may override `codex_home`, as report does to redact it)."""
    home = inv.home if isinstance(inv, Inventory) else inv
    doc = {"tool": TOOL_NAME, "version": __version__, "command": command,
           "codex_home": None if home is None else str(home), "exit_code": exit_code,
           "applied": applied}
    doc.update(body)
    return doc


# A list longer than this is written to the JSON output this many items at a time (emit_json).
JSON_PIECE_ITEMS = 1000


class Output:
    """Everything the commands print on stdout goes through here. When stdout stops taking it
    (its reader gone, `| head`; a full disk; a device that fails), the rest is not printed:
    stdout is pointed at the null device (closed_pipe_exit), so no later write or the
    interpreter's last flush fails again, and main() ends with 1 unless the run's code already
    says more. A closed pipe is quiet (the output was not wanted); anything else is said once,
    in one line on stderr."""

    def __init__(self) -> None:
        self.lost = False

    def write(self, text: str) -> None:
        self._attempt("write", text)

    def line(self, text: str) -> None:
        """What print(text) would write."""
        self._attempt("write", text + "\n")

    def flush(self) -> None:
        self._attempt("flush")

    def _attempt(self, method: str, *args: str) -> None:
        if self.lost:
            return
        try:
            getattr(sys.stdout, method)(*args)
        except (OSError, ValueError) as exc:  # ValueError: a stream already closed
            self.lost = True
            if not isinstance(exc, BrokenPipeError):
                sys.stderr.write("stdout: the output could not be written (%s); the rest is "
                                 "not printed\n" % (getattr(exc, "strerror", None) or exc))
            closed_pipe_exit()


output = Output()


def emit_json(doc: Dict[str, Any]) -> None:
    """One document. Indented for a person at a terminal; compact otherwise (agents and pipes),
    which also lets Python use its fast encoder on homes with thousands of threads. A value
    that is an iterator (diagnose's per-thread list) is written item by item, so the whole
    list is never held in memory at once."""
    pretty = sys.stdout.isatty()
    # json.dumps with options builds a new encoder on each call; one serves every item.
    compact = json.JSONEncoder(separators=(",", ":"), default=str).encode

    def dump(value: Any, depth: int) -> str:
        """`value` as it reads `depth` levels down: the same text json.dumps(doc, indent=2) has."""
        if not pretty:
            return compact(value)
        return json.dumps(value, indent=2, default=str).replace("\n", "\n" + "  " * depth)

    def newline(depth: int) -> str:
        return "\n" + "  " * depth if pretty else ""

    write = output.write

    def stream(value: Any, depth: int) -> None:
        """`value` written piece by piece where it holds a long list (a finding's thread ids:
        one string of them all, and the encoder's pieces of it, cost ~150 bytes a thread at
        once), JSON_PIECE_ITEMS items a piece, else in one piece; the same text either way."""
        if isinstance(value, Iterator):  # one small record an item (a thread, an action)
            write("[")
            items = 0
            for item in value:
                write(("," if items else "") + newline(depth + 1) + dump(item, depth + 1))
                items += 1
            write((newline(depth) if items else "") + "]")
        elif type(value) in (list, tuple) and holds_long(value):
            write("[")
            for start in range(0, len(value), JSON_PIECE_ITEMS):
                piece = list(value[start:start + JSON_PIECE_ITEMS])
                if start:
                    write(",")
                if holds_long(piece):
                    for n, item in enumerate(piece):
                        write(("," if n else "") + newline(depth + 1))
                        stream(item, depth + 1)
                else:  # the piece's items as json.dumps writes them inside its brackets
                    write(dump(piece, depth)[1:-1 - len(newline(depth))])
            write((newline(depth) if value else "") + "]")
        elif type(value) is dict and holds_long(value) and all(type(k) is str for k in value):
            write("{")
            for n, (key, item) in enumerate(value.items()):
                write(("," if n else "") + newline(depth + 1) + json.dumps(key)
                      + (": " if pretty else ":"))
                stream(item, depth + 1)
            write(newline(depth) + "}")
        else:
            write(dump(value, depth))

    stream(doc, 0)
    write("\n")


def holds_long(value: Any) -> bool:
    """Whether a list or dict is, or holds at any depth, an iterator or a list longer than
    JSON_PIECE_ITEMS (written JSON_PIECE_ITEMS items at a time)."""
    if isinstance(value, Iterator):
        return True
    if type(value) in (list, tuple):
        return len(value) > JSON_PIECE_ITEMS or any(holds_long(v) for v in value
                                                   if type(v) in (list, tuple, dict))
    if type(value) is dict:
        return any(holds_long(v) for v in value.values()
                   if isinstance(v, Iterator) or type(v) in (list, tuple, dict))
    return False


def render_diagnose_text(doc: Dict[str, Any], verbose: bool) -> str:
    lines = []
    cfg, counts, db = doc["config"], doc["counts"], doc["state_db"]
    lines.append("%s %s diagnose" % (TOOL_NAME, __version__))
    origin = doc["codex_home_origin"]
    lines.append("Home:      %s (%s)"
                 % (doc["codex_home"],
                    "the default, ~/.codex" if origin == "default" else "from " + origin))
    lines.append("Safety:    %s" % doc["safety"])
    profile = "; profile %s" % cfg["profile"] if cfg["profile"] else ""
    lines.append("Provider:  %s (%s)%s"
                 % (cfg["active_provider"] or "unknown", cfg["provider_source"], profile))
    if db["live"]:
        live = db["live"]
        lines.append("State DB:  %s (schema %s, %d thread columns; %s)" % (
            live["path"], live["schema_version"], live["thread_columns"], db["reason"]))
    else:
        lines.append("State DB:  none (%s)" % db["reason"])
    reader = doc["reader_release"]
    lines.append("Release:   %s reads this home (%s)"
                 % (reader["version"] or "an unknown release", reader["basis"]))
    surfaces = cfg["surfaces"]
    if surfaces["cli"] != surfaces["app"]:
        lines.append("Surfaces:  codex CLI%s: %s; Desktop/IDE (app-server): %s — they disagree%s"
                     % (
            " --profile %s" % cfg["profile"] if cfg["profile"] else "", surfaces["cli"]["provider"],
            surfaces["app"]["provider"],
            "; verdicts follow --surface %s" % cfg["surface"] if cfg["surface"] else ""))
    lines.append("Threads:   %d (%d DB rows, %d rollout files); visible by default %d, hidden %d, "
                 "archived %d" % (
        counts["threads"], counts["db_rows"], counts["rollout_files"], counts["visible_by_default"],
        counts["hidden"], counts["archived"]))
    lines.append("  by source:   %s" % _fmt_counts(counts["by_source"]))
    lines.append("  by provider: %s" % _fmt_counts(counts["by_provider"]))
    latest = doc["latest_interactive_thread"]
    if latest:
        lines.append("Latest interactive thread: %s (provider %s, %s)"
                     % (latest["id"], latest["provider"], latest["updated_at"]))
    idx = doc["session_index"]
    lines.append("Index:     session_index.jsonl %s, %s" % (
        "present" if idx["present"] else "absent", plural(idx["entries"], "entry", "entries")))
    if doc["ui_state"]["present"]:
        lines.append("UI state:  .codex-global-state.json sidebar keys: %s" % (
            ", ".join(sorted(doc["ui_state"]["sidebar"])) or "none"))
    lines.append("")
    if not doc["findings"]:
        lines.append("No findings: every thread is where Codex will list it.")
    for finding in doc["findings"]:
        count = finding.get("count")
        lines.append("[%s] %s%s: %s" % (finding["severity"], finding["code"],
                                        " (%s)" % plural(count, "thread") if count else "",
                                        finding["message"]))
        ids = finding.get("thread_ids") or []
        shown = ids if verbose else ids[:3]
        if shown:
            lines.append("    e.g. %s%s"
                         % (", ".join(shown), " …" if len(ids) > len(shown) else ""))
        if finding.get("evidence"):
            lines.append("    %s"
                         % short(json.dumps(finding["evidence"], default=str),
                                 200 if not verbose else 2000))
        if finding.get("why_no_action"):
            lines.append("    nothing to do: %s" % "; ".join(finding["why_no_action"]))
    if doc["next_commands"]:
        lines.append("")
        lines.append("Next (dry runs; nothing is written without --apply):")
        lines.extend("  " + c for c in doc["next_commands"])
    if doc.get("verification"):
        lines.append("")
        lines.extend(verification_lines(doc["verification"], False))
    return "\n".join(lines)


SAFETY_LINE_WRITE = "wrote only after a backup; credentials (auth.json, tokens) were not opened"


def render_plan_text(doc: Dict[str, Any], verbose: bool) -> str:
    lines = ["%s %s %s" % (TOOL_NAME, __version__, doc["command"]),
             "Home:      %s" % doc["codex_home"]]
    for key, value in doc["plan"].items():
        if key == "folders":
            lines.append("Folders:   %s"
                         % ("none under --from" if not value else plural(len(value), "thread")))
            moves = sorted(value.items()) if verbose else sorted(value.items())[:20]
            lines.extend("  %s  %s" % (tid, move) for tid, move in moves)
            if len(value) > 20 and not verbose:
                lines.append("  … %d more (--verbose lists all)" % (len(value) - 20))
            continue
        if key == "scope":
            value = "sources %s; %s" % (", ".join(value["sources"]), "; ".join(
                "%s threads %s" % (kind, "included" if value["include_" + kind] else "left out")
                for kind in ("archived", "empty")))
        elif isinstance(value, dict):
            value = ", ".join("%s %s" % (k.replace("_", " "), v) for k, v in value.items())
        elif isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        lines.append("%-10s %s" % (key.replace("_", " ") + ":", value))
    compat = compatibility_line(doc.get("compatibility"))
    if compat:
        lines.append("Schema:    %s" % compat)
    counts, shown, total = tally_actions(doc["actions"], None if verbose else 10)
    lines.append("Plan:      %s" % (summary_of_counts(counts) or "nothing"))
    for action in shown:
        if action["kind"] == "rollout_edit":
            changed = ", ".join("line %d %s" % (c["line"], c["field"])
                                for c in action["changes"])
            kept = ("; damaged lines kept verbatim (%s)" % ", ".join(action["kept_verbatim"])
                    if action.get("kept_verbatim") else "")
            lines.append("  rollout  %s: %s%s" % (action["path"], changed, kept))
        elif action["kind"] == "rollout_copy":
            how = "over the shorter" if action["replaces"] else "to"
            moved = ("; %s moved to the provider" % plural(len(action["changes"]), "line")
                     if action["changes"] else "")
            lines.append("  copy     %s %s %s%s" % (action["from"], how, action["path"], moved))
        elif action["kind"] == "sql":
            detail = "%s %s" % (action["sql"], action["params"]) if verbose else "%s %s row %s" % (
                action["op"], action["table"], action["thread_id"] or "")
            lines.append("  sql      %s: %s" % (action["db"], detail))
        elif action["kind"] == "move_to_backup":
            lines.append("  move     %s into the backup folder (kept, not deleted)"
                         % action["path"])
        else:
            lines.append("  file     %s: %s" % (action["path"], json.dumps(action["summary"])))
    if total > len(shown):
        lines.append("  … %d more (--verbose lists all)" % (total - len(shown)))
    for item in doc["skipped"]:
        lines.append("  skipped  %s: %s"
                     % (item.get("thread_id") or item.get("path"), item["reason"]))
    for item in doc.get("findings") or []:
        lines.append("  [%s] %s: %s" % (item["code"], item.get("thread_id"), item["message"]))
    if doc["applied"]:
        lines.append("Applied %s. Backup: %s"
                     % (plural(doc["changes"], "change"), doc["backup_dir"]))
        lines.append("Restart Codex (or reload the window), then run diagnose again.")
    elif doc["changes"]:
        lines.append("Plan id:   %s (add --expect-plan %s to --apply to write exactly this plan)"
                     % (
            doc["plan_id"], doc["plan_id"]))
        lines.append("%s planned; nothing was written. Re-run with --apply to write %s after a "
                     "backup to CODEX_HOME/%s/." % (plural(doc["changes"], "change"),
                                                    "it" if doc["changes"] == 1 else "them",
                                                    BACKUP_DIR_NAME))
    else:
        lines.append("Nothing to do.")
    lines.extend(verification_lines(doc.get("verification"), doc["applied"]))
    return "\n".join(lines)


def tally_actions(actions: Iterable[Dict[str, Any]], keep: Optional[int]
                  ) -> Tuple[Dict[Tuple[str, str], int], List[Dict[str, Any]], int]:
    """One pass over the actions: how many of each kind (noun, verb), the first `keep` of them
    (all where None) and how many there are."""
    counts: Dict[Tuple[str, str], int] = {}
    kept: List[Dict[str, Any]] = []
    total = 0
    for action in actions:
        total += 1
        if keep is None or len(kept) < keep:
            kept.append(action)
        if action["kind"] == "sql":
            noun = "thread row" if action["table"] == "threads" else "history-offset row"
            verb = {"update": "updated", "insert": "added", "delete": "removed"}[action["op"]]
        else:
            noun, verb = {"rollout_edit": ("rollout", "rewritten"),
                          "rollout_copy": ("rollout", "copied in"),
                          "file_write": ("file", "rewritten"),
                          "move_to_backup": ("file", "moved into the backup")}[action["kind"]]
        counts[(noun, verb)] = counts.get((noun, verb), 0) + 1
    return counts, kept, total


def summary_of_counts(counts: Dict[Tuple[str, str], int]) -> str:
    """`3 rollouts rewritten; 3 thread rows updated; 6 history-offset rows updated`."""
    return "; ".join("%s %s" % (plural(n, noun), verb) for (noun, verb), n in counts.items())


def plural(count: int, noun: str, nouns: Optional[str] = None) -> str:
    """`1 thread`, `2 threads`; `nouns` where the plural is not noun + s."""
    return "%d %s" % (count, noun if count == 1 else nouns or noun + "s")


def _fmt_counts(counts: Dict[str, int]) -> str:
    return ", ".join("%s %d" % kv for kv in counts.items()) or "none"


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------


def cmd_diagnose(args: argparse.Namespace) -> int:
    inv = build_inventory(args)
    findings = run_checks(inv)
    code = exit_code_for(findings)
    latest = latest_interactive_thread(inv)
    views = sorted(inv.threads.values(), key=lambda v: -(v.updated_ms or 0))
    next_lines = repair_lines(inv, findings)
    doc = envelope(
        "diagnose", inv, code,
        codex_home_origin=inv.home_origin,
        safety=SAFETY_LINE_READ,
        config=inv.config.as_json(),
        codex_release=".".join(map(str, inv.written_release)) or None,
        reader_release=dict(inv.reader, version=".".join(map(str, inv.reader["version"])) or None),
        state_db={"live": inv.live_db.as_json(inv.home) if inv.live_db else None,
                  "reason": inv.live_reason,
                  "all": [d.as_json(inv.home) for d in inv.dbs],
                  "backfill": inv.backfill, "history_projections": inv.projections},
        counts=summarise(inv),
        latest_interactive_thread=None if latest is None else {
            "id": latest.id, "provider": latest.rollout_provider or latest.db_provider,
            "updated_at": iso_from_millis(latest.updated_ms)},
        provider_candidates={k: len(v) for k, v in provider_candidates(inv).items()},
        session_index={k: v for k, v in inv.index.items() if k != "names"},
        ui_state=inv.global_state,
        findings=findings,
        threads=(thread_entry(v, args.verbose) for v in views if v.reasons or args.verbose),
        next_commands=[line["command"] for line in next_lines],
        next_argv=[line["argv"] for line in next_lines],
    )
    if getattr(args, "verify", False):
        doc["verification"] = verify_with_codex(inv, args, None)
        doc["exit_code"] = code = verification_exit_code(code, doc["verification"])
    if args.json:
        emit_json(doc)
    else:
        output.line(render_diagnose_text(doc, args.verbose))
    report_verification(doc.get("verification"))
    return code


# What to do about each reason a repair of the table does not cure (or cannot reach for one
# thread): the manual step, or why nothing is to be done (by-design filters are explained,
# never "repaired"). Curable reasons get their command line from REPAIRS. `{why}` is the
# reason's own why; references/reason-codes.md shows each entry (tests/reason_docs.py).
REASON_FIXES: Dict[str, str] = {
    "provider_mismatch": "no repair reaches it: {why}",
    "user_event_missing": "no repair reaches it: {why}",
    "attachment_only_prompt": "0.120-era Codex: repair-user-events; newer Codex: pin the thread, "
                              "or open it by id (`codex resume ID`) and send one message",
    "rollout_missing": "nothing to recover locally; reindex --prune-missing removes the row",
    "rollout_inaccessible": "fix the permissions of the rollout's folder (or the disk); the row is "
                            "never pruned",
    "rollout_path_stale": "no repair reaches it: {why}",
    "no_db_row": "no repair reaches it: {why}",
    "rollout_not_indexable": "nothing to repair: move the file out of sessions/ if it is not a "
                             "conversation",
    "rollout_is_link": "the thread's evidence `manual_step`: replace the link (the rollout, or the "
                       "linked folder it lies in) by what it points to, keeping the name, then "
                       "diagnose again",
    "archive_flag_mismatch": "no repair reaches it: {why}",
    "source_filtered": "by design: see it with `codex resume --all --include-non-interactive`, or "
                       "resume it by id",
    "archived": "by design: open Codex's Archived view, or unarchive it there",
    "no_user_content": "nothing to recover: the thread never had a user message",
    "head_line_not_utf8": "open it by id (`codex resume ID`) on 0.169.0 or newer, where every turn "
                          "reads; the tool never edits the conversation's own bytes to make it "
                          "list",
    "user_message_beyond_scan": "resume it by id (`codex resume ID`): 0.130.0 and newer leave it "
                                "out of the default list",
    "beyond_recent_window": "scroll or search in Codex, or pin the thread",
    "cwd_unmatchable": "`codex resume --all` lists it regardless of folder",
    "history_projection_missing": "the thread's evidence `manual_step`: resume it once in Codex "
                                  "(it rebuilds the turns from the rollout), or, with `elsewhere: "
                                  "true`, point sqlite_home back at the folder whose "
                                  "thread_history_1.sqlite has its rows",
}


def find_thread(inv: Inventory, wanted: str) -> ThreadView:
    wanted = wanted.strip().lower()
    if wanted in inv.threads:
        return inv.threads[wanted]
    matches = ([v for k, v in inv.threads.items() if k.startswith(wanted)] if len(wanted) >= 6
               else [])
    if not matches:
        named = [inv.threads[k]
                 for k, n in inv.index["names"].items() if n.lower() == wanted and k in inv.threads]
        matches = named
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UsageError("no thread %s in the state DB, the rollouts or session_index.jsonl"
                         % wanted)
    raise UsageError("%s matches %d threads; give more of the id" % (wanted, len(matches)))


def scan_rollout_layers(path: Path, thread_id: str) -> Dict[str, Any]:
    """Every session_meta and provider-setting line of one rollout, found by the same block
    scan the repairs use."""
    metas, settings = [], []
    probe = RolloutEdit(path, thread_id)
    with open_regular(path) as handle:
        for line_no, _offset, raw in iter_marked_lines(handle, PROVIDER_LINE_MARKERS,
                                                       hashlib.sha256(), probe):
            record = parse_rollout_line(raw, line_no, [])
            payload = record.get("payload") if record else None
            if not isinstance(payload, dict):
                continue
            if record.get("type") == "session_meta":
                metas.append({"line": line_no, "id": payload.get("id"),
                              "own": str(payload.get("id", "")).lower() == thread_id,
                              "model_provider": payload.get("model_provider"),
                              "source": decode_source(payload.get("source")),
                              "cli_version": payload.get("cli_version")})
            elif (payload.get("type") == "thread_settings_applied"
                  and isinstance(payload.get("thread_settings"), dict)):
                provider = payload["thread_settings"].get("model_provider_id")
                settings.append({"line": line_no, "model_provider_id": provider})
    return {"session_meta_lines": metas, "thread_settings_applied": settings,
            "encrypted_reasoning": probe.encrypted_reasoning}


def projection_layer(inv: Inventory, view: ThreadView) -> Optional[Dict[str, Any]]:
    db_path = history_db_path(inv)
    if db_path is None:
        return None
    try:
        with readonly_db(db_path) as conn:
            if not table_exists(conn, "thread_turns"):
                return None
            turns = conn.execute("SELECT count(*), min(rollout_byte_offset), "
                                 "max(rollout_end_byte_offset) FROM thread_turns WHERE thread_id = "
                                 "?", (view.id,)).fetchone()
            state = conn.execute("SELECT next_rollout_byte_offset FROM "
                                 "thread_history_projection_state "
                                 "WHERE thread_id = ?", (view.id,)).fetchone() if table_exists(
                conn, "thread_history_projection_state") else None
    except sqlite3.Error as exc:
        return {"error": short(str(exc), 120)}
    size = view.primary.size if view.primary else None
    next_offset = state[0] if state else None
    return {"db": display_path(db_path, inv.home), "turns": turns[0], "first_offset": turns[1],
            "last_end_offset": turns[2], "next_rollout_byte_offset": next_offset,
            "rollout_size": size,
            "offsets_within_file": None if size is None or next_offset is None
            else next_offset <= size,
            "offsets_on_line_starts": None
            if view.primary is None or turns[0] == 0 and next_offset is None
            else view.id not in inv.misaligned_offsets}


def filter_verdicts(inv: Inventory, view: ThreadView) -> List[Dict[str, Any]]:
    codes = {r["code"]: r for r in view.reasons}
    gate = inv.gate_column() or "preview (file listing)"
    first_message = ("found at line %s" % view.primary.evidence_line
                     if view.primary and view.primary.has_evidence else "not found")
    rank = view.rank
    return [
        {"filter": "provider", "passes": "provider_mismatch" not in codes,
         "detail": "active %s; DB %s; rollout %s"
         % (inv.config.provider, view.db_provider, view.rollout_provider)},
        {"filter": "source", "passes": "source_filtered" not in codes, "detail": view.source},
        {"filter": "archived", "passes": "archived" not in codes,
         "detail": "in archived_sessions/" if view.archived else "in sessions/"},
        {"filter": "preview", "passes": not ({"no_user_content"} & set(codes)) and not (
            "user_event_missing" in codes and codes["user_event_missing"]["hides"]),
         "detail": "gate column %s; first user message %s" % (gate, first_message)},
        {"filter": "cwd", "passes": "cwd_unmatchable" not in codes and "cwd_moved" not in codes,
         "detail": (codes["cwd_unmatchable"]["evidence"]["problem"] if "cwd_unmatchable" in codes
                    else
                    "folder moved to %s"
                    % codes["cwd_moved"]["evidence"].get("found", "one of several folders")
                    if "cwd_moved" in codes else "matchable")},
        {"filter": "recent window", "passes": None if rank is None else rank <= RECENT_WINDOW,
         "detail": "rank %s of the listed threads (Desktop loads ~%d)" % (rank, RECENT_WINDOW)
         if rank
         else "hidden by the filters above"},
    ]


def full_thread_row(inv: Inventory, view: ThreadView) -> Optional[Dict[str, Any]]:
    """Every column of the thread's row: the inventory keeps only those the checks read."""
    if not view.row:
        return None
    try:
        return read_full_thread_row(inv.live_db, view.id) or dict(view.row)
    except sqlite3.Error:
        return dict(view.row)


def trace_thread(inv: Inventory, view: ThreadView, verbose: bool) -> Dict[str, Any]:
    other_rows = []
    for db in inv.dbs:
        if db is inv.live_db or db.error:
            continue
        try:
            with readonly_db(db.path) as conn:
                found = conn.execute("SELECT model_provider, archived, rollout_path FROM threads "
                                     "WHERE id = ?",
                                     (view.id,)).fetchone()
        except sqlite3.Error:
            found = None
        if found:
            other_rows.append({"db": display_path(db.path, inv.home), "model_provider": found[0],
                               "archived": found[1]})
    rollouts = []
    for info in view.files:
        layer = {"path": info.rel, "size": info.size, "archived_location": info.archived_location,
                 "problems": info.problems, "first_user_message_line": info.evidence_line,
                 "first_user_message_kind": info.evidence_kind}
        if not info.compressed:
            try:
                layer.update(scan_rollout_layers(info.path, view.id))
            except (OSError, PlanError) as exc:
                layer["error"] = str(exc)
        rollouts.append(layer)
    row = full_thread_row(inv, view)
    if row is not None and not verbose:
        row = {k: v for k, v in row.items() if k not in ("name",)}
    state = read_global_state_hints(inv.home, view.id)
    fixes, commands = [], {}
    codes = [r["code"] for r in view.reasons]
    for line in repair_lines(inv, [], view):  # the commands first, in the order they must run
        for code in codes:
            if code in REPAIR_BY_NAME[line["repair"]].cures and code not in commands:
                fixes.append("%s: %s" % (code, line["command"]))
                commands[code] = line["argv"]
    for reason in view.reasons:
        if reason["code"] not in commands and reason["code"] in REASON_FIXES:
            fixes.append("%s: %s" % (reason["code"], REASON_FIXES[reason["code"]].format(
                why=reason.get("why") or "see the evidence")))
    return {
        "id": view.id, "listed_by_default": not view.hidden,
        "reasons": [r["code"] for r in view.reasons],
        "evidence": {r.code: r.evidence_of(view) for r in view.reasons if r.has_evidence},
        "fixes": fixes,
        "fix_commands": commands,
        "filters": filter_verdicts(inv, view),
        "db": {"live": display_path(inv.live_db.path, inv.home) if inv.live_db else None,
               "row": row,
               "other_dbs": other_rows},
        "rollouts": rollouts,
        "index": {"name": (view.index_name if verbose
                           else ("(named)" if view.index_name else None))},
        "ui_state": state, "projection": projection_layer(inv, view),
    }


def read_global_state_hints(home: Path, thread_id: str) -> Dict[str, Any]:
    try:
        found = load_global_state(home)
    except (OSError, ValueError):
        return {"present": True, "readable": False}
    if found is None:  # none, or a folder or FIFO in its place
        return {"present": (home / GLOBAL_STATE_FILE).exists(), "readable": False}
    data = found[1]
    if not isinstance(data, dict):
        return {"present": True, "readable": False}

    def contains(key: str) -> bool:
        value = data.get(key)
        return thread_id in value if isinstance(value, (list, dict)) else False

    return {"present": True, "readable": True,
            "workspace_root_hint": contains("thread-workspace-root-hints"),
            "project_assignment": contains("thread-project-assignments"),
            "pinned": contains("pinned-thread-ids"),
            "projectless": contains("projectless-thread-ids")}


def render_trace_text(doc: Dict[str, Any]) -> str:
    t = doc["trace"]
    lines = ["Thread %s: %s" % (t["id"], "listed by default" if t["listed_by_default"] else
                                 "HIDDEN from default lists (%s)"
                                 % ", ".join(c for c in t["reasons"]))]
    for verdict in t["filters"]:
        mark = "n/a" if verdict["passes"] is None else ("ok" if verdict["passes"] else "FAIL")
        lines.append("  %-14s %-4s %s" % (verdict["filter"], mark, verdict["detail"]))
    row = t["db"]["row"]
    lines.append("State DB %s: %s" % (t["db"]["live"], "row present" if row else "no row"))
    if row:
        lines.append("  provider %s, source %s, archived %s, rollout_path %s" % (
            row.get("model_provider"), row.get("source"), row.get("archived"),
            row.get("rollout_path")))
    for other in t["db"]["other_dbs"]:
        lines.append("  stale copy in %s: provider %s" % (other["db"], other["model_provider"]))
    for layer in t["rollouts"]:
        lines.append("Rollout %s (%d bytes%s)"
                     % (layer["path"], layer["size"], ", problems: " + ", ".join(
            layer["problems"]) if layer["problems"] else ""))
        for meta in layer.get("session_meta_lines", []):
            lines.append("  line %d session_meta%s provider %s source %s" % (
                meta["line"], "" if meta["own"] else " (another thread's, from a fork)",
                meta["model_provider"], meta["source"]))
        for setting in layer.get("thread_settings_applied", []):
            lines.append("  line %d thread_settings_applied provider %s"
                         % (setting["line"], setting["model_provider_id"]))
    if not t["rollouts"]:
        lines.append("Rollout: none found under sessions/ or archived_sessions/")
    if t["projection"]:
        p = t["projection"]
        lines.append("History projection: %s, next offset %s of %s bytes" % (
            plural(p.get("turns") or 0, "turn"), p.get("next_rollout_byte_offset"),
            p.get("rollout_size")))
    name = t["index"]["name"]
    lines.append("Index name: %s"
                 % ("set (--verbose shows it)" if name == "(named)" else name or "none"))
    if t["ui_state"].get("present"):
        hints = t["ui_state"]
        if not hints.get("readable"):
            lines.append("Desktop state: .codex-global-state.json is unreadable")
        else:
            labels = (("workspace_root_hint", "a workspace hint"),
                      ("project_assignment", "a project assignment"), ("pinned", "pinned"),
                      ("projectless", "projectless"))
            held = [label for key, label in labels if hints.get(key)]
            lines.append("Desktop state: %s"
                         % (", ".join(held) if held else "no hint, pin or project for this thread"))
    for fix in t["fixes"]:
        code, _, step = fix.partition(": ")
        lines.append("Fix (%s): %s" % (code, step))
    return "\n".join(lines)


def cmd_trace(args: argparse.Namespace) -> int:
    inv = build_inventory(args)
    run_checks(inv)
    view = find_thread(inv, args.thread_id)
    trace = trace_thread(inv, view, args.verbose)
    worth_a_look = [r for r in view.reasons if r["severity"] != "info"]
    code = EXIT_OK if trace["listed_by_default"] and not worth_a_look else EXIT_FINDINGS
    doc = envelope("trace", inv, code, safety=SAFETY_LINE_READ, trace=trace)
    if args.json:
        emit_json(doc)
    else:
        output.line(render_trace_text(doc))
    return code


def redact(text: Any, home: Path) -> Any:
    """Paths inside the home become relative; any other absolute path is replaced."""
    if not isinstance(text, str):
        return text
    if text.startswith(str(home)):
        return "<CODEX_HOME>" + text[len(str(home)):]
    if text.startswith(("/", "\\\\")) or re.match(r"^[A-Za-z]:[\\/]", text):
        return "<path outside CODEX_HOME>"
    return text


def cmd_report(args: argparse.Namespace) -> int:
    """A bundle to paste into an issue: counts, versions and codes; no message text, no paths
    outside the home, no names."""
    inv = build_inventory(args)
    findings = run_checks(inv)
    code = exit_code_for(findings)
    live = inv.live_db
    doc = envelope(
        "report", inv, code, codex_home="<CODEX_HOME>", safety=SAFETY_LINE_READ,
        platform={"system": sys.platform, "python": "%d.%d.%d" % sys.version_info[:3],
                  "sqlite": sqlite3.sqlite_version},
        codex_release=".".join(map(str, inv.written_release)) or None,
        config={"active_provider": inv.config.provider,
                "provider_source": inv.config.provider_source,
                "profile": bool(inv.config.profile),
                "configured_providers": inv.config.configured_providers,
                "sqlite_home_set": bool(inv.config.sqlite_home)},
        state_db={"live": None if live is None else {
            "path": redact(str(live.path), inv.home), "schema_version": live.schema_version,
            "thread_columns": len(live.columns), "integrity": live.integrity,
            "error": bool(live.error),
            "checksum_drift": len(live.checksum_drift)},
            "count": len(inv.dbs), "backfill_status": (inv.backfill or {}).get("status"),
            "history_projections": inv.projections},
        counts=summarise(inv),
        findings=[{"code": f["code"], "severity": f["severity"], "count": f.get("count")}
                  for f in findings],
        threads=[{"id": v.id, "reasons": [r["code"] for r in v.reasons],
                  "source": source_kind(v.source),
                  "provider": {"db": v.db_provider, "rollout": v.rollout_provider},
                  "archived": v.archived,
                  "rank": v.rank, "rollout_problems": v.primary.problems if v.primary else None}
                 for v in inv.threads.values() if v.reasons],
        session_index={k: v for k, v in inv.index.items() if k != "names"},
        ui_state={"present": inv.global_state["present"], "readable": not inv.global_state["error"],
                  "sidebar_keys": sorted(inv.global_state["sidebar"]),
                  "sidebar_reset": inv.global_state.get("sidebar_reset")},
    )
    emit_json(doc)
    return code


def run_repair(args: argparse.Namespace) -> int:
    """The shape of every repair: read, check, plan (with the planner the parser bound to the
    command), then either show the plan or apply it."""
    planner = args.planner
    inv = build_inventory(args)
    run_checks(inv)
    try:
        plan = planner(inv, args)
    finally:
        close_plan_readers(inv)  # nothing of the planner's reading stays open while applying
    plan_id = plan.plan_id(inv.home)
    expected = getattr(args, "expect_plan", None)
    if expected and args.apply and expected != plan_id:
        raise refuse("the plan changed since the dry run that was reviewed (%s, now %s): Codex or "
                     "something else wrote to the home; run the dry run again and review it"
                     % (expected, plan_id), None)
    compat = schema_compatibility(inv, plan) if plan.sql else None
    if compat and compat["changed"]:
        plan.warnings.append("%s: --apply refuses unless --force" % compatibility_line(compat))
    refusal = plan_path_refusal(inv, plan) if plan.change_count and not args.apply else None
    if refusal:
        plan.warnings.append("--apply will refuse this plan: %s" % refusal)
    applied: Optional[Dict[str, Any]] = None
    verification: Optional[Dict[str, Any]] = None
    writes = bool(args.apply and plan.change_count)

    def apply() -> None:
        nonlocal applied
        applied = apply_plan(inv, plan, args, args.argv)

    def apply_and_read_again() -> Inventory:
        """For --verify, which lists the repaired home: the apply, then the home read again."""
        apply()
        repaired = build_inventory(args)
        run_checks(repaired)
        return repaired

    if getattr(args, "verify", False):
        verification = verify_with_codex(inv, args, plan, apply_and_read_again if writes else None)
    elif writes:
        apply()
    code = EXIT_OK if applied is not None or (plan.change_count == 0
                                              and not plan.findings) else EXIT_FINDINGS
    code = verification_exit_code(code, verification)
    doc = envelope(plan.command, inv, code, applied=applied is not None,
                   safety=SAFETY_LINE_READ if applied is None else SAFETY_LINE_WRITE,
                   plan=plan.notes, plan_id=plan_id, changes=plan.change_count,
                   compatibility=compat,
                   # read once as they are written (JSON) or counted (text): thousands of
                   # actions are never held as one list
                   actions=plan.iter_actions_json(inv.home, args.verbose),
                   warnings=plan.warnings,
                   skipped=plan.skipped + (applied or {}).get("skipped", []),
                   findings=plan.findings,
                   backup_dir=(applied or {}).get("backup_dir"))
    if verification is not None:
        doc["verification"] = verification
    if args.json:
        emit_json(doc)
    else:
        output.line(render_plan_text(doc, args.verbose))
    for warning in plan.warnings:
        sys.stderr.write("warning: %s\n" % warning)
    report_verification(verification)
    return code


def choose_backup(home: Path, args: argparse.Namespace) -> Path:
    if args.backup_dir and args.latest:
        raise UsageError("give a backup folder or --latest, not both")
    if args.backup_dir:
        folder = Path(args.backup_dir).expanduser()
        if not folder.is_absolute() and not folder.exists():
            folder = home / BACKUP_DIR_NAME / args.backup_dir
        return folder.resolve()
    if args.latest:
        backups = [b for b in list_backups(home) if b["command"] not in ("restore", None)]
        if not backups:
            raise UsageError("no backups under %s" % (home / BACKUP_DIR_NAME))
        return Path(backups[-1]["path"])
    raise UsageError("name a backup folder, or use --latest or --list")


def plan_restore(inv: Inventory, folder: Path, manifest: Dict[str, Any]) -> Plan:
    """A restore is a plan like any repair's: the verified entries that differ from the home,
    applied by apply_plan (preflight, lock, undo backup, journal, verify)."""
    plan = Plan("restore")
    actions = verified_restore_actions(folder, manifest, inv.home,
                                       restore_db_dirs(inv.home, inv.config))
    journal = read_journal(folder) if (folder / JOURNAL_NAME).is_file() else None
    plan.restores = []
    for action in (a for a in actions if a.needed()):
        if journal is not None and action.entry["path"] not in journal:
            # The run wrote every path it changed to its journal first: a path it never named
            # was never changed by it, so putting it back would only undo someone else's change.
            if action.kind == "remove":
                raise refuse("the backup would remove %s, which that run never wrote (its journal "
                             "does not name it)" % action.entry["path"], None)
            plan.skipped.append({"path": action.entry["path"],
                                 "reason": "that run never wrote it (its journal "
                                           "does not name it)"})
            continue
        plan.restores.append(action)
    plan.notes["from"] = str(folder)
    return plan


def backup_note(backup: Dict[str, Any]) -> str:
    """What `restore --list` says after a backup's name when it is not a complete run's."""
    if backup["partial"]:
        return "  (partial: no manifest; removed by the next --apply)"
    if backup["unverifiable"]:
        return "  (manifest does not verify)"
    return "" if backup["complete"] else "  (incomplete run)"


def cmd_restore(args: argparse.Namespace) -> int:
    home, _origin = resolve_codex_home(args.codex_home, dict(os.environ))
    if args.list:
        check_backup_root(home / BACKUP_DIR_NAME)  # the rule every --apply's backup follows
        backups = list_backups(home)
        doc = envelope("restore", home, EXIT_OK, backups=backups)
        if args.json:
            emit_json(doc)
        else:
            width = max([len(b["name"]) for b in backups] + [0])
            output.line("\n".join("%-*s  %-18s %3d file(s)%s"
                                   % (width, b["name"], b["command"] or "-", b["files"],
                                      backup_note(b)) for b in backups)
                        or "No backups under %s" % (home / BACKUP_DIR_NAME))
        return EXIT_OK
    folder = choose_backup(home, args)
    if not is_within(folder, (home / BACKUP_DIR_NAME).resolve()):
        raise refuse("%s is not a backup folder of this home" % folder, None)
    manifest = read_manifest(folder)
    inv = build_inventory(args)
    plan = plan_restore(inv, folder, manifest)
    changed = changed_since_backup(folder, home)
    entries = [e["path"] for e in manifest["entries"]]
    removals = [a.entry["path"] for a in plan.restores if a.kind == "remove"]
    creations = [a.entry["path"]
                 for a in plan.restores
                 if a.kind == "restore_file" and not os.path.lexists(str(a.target))]
    result: Dict[str, Any] = {"backup_dir": str(folder), "files": entries,
                              "changed_since_run": changed,
                              "would_remove": removals, "would_create": creations,
                              "skipped": plan.skipped}
    if args.apply:
        if changed and not args.discard_changes:
            raise refuse("%d file(s) changed after that run (%s); restoring puts each back whole "
                         "and would discard those changes (Codex itself updates the DB when it "
                         "lists threads)"
                         % (len(changed), ", ".join(changed[:3])), "--discard-changes")
        if plan.change_count:
            applied = apply_plan(inv, plan, args, args.argv)
            result["undo_backup_dir"] = applied["backup_dir"]
        else:
            result["undo_backup_dir"] = None
    code = EXIT_OK if args.apply else EXIT_FINDINGS
    doc = envelope("restore", home, code, applied=bool(args.apply), **result)
    if args.json:
        emit_json(doc)
    else:
        verb = "Restored" if args.apply else "Would restore"
        output.line("%s %d file(s) from %s" % (verb, len(entries), folder))
        for path in entries:
            output.line("  %s%s" % (path, "  (changed since that run)" if path in changed else ""))
        for path in removals:
            output.line("%s %s (that run created it)"
                        % ("Removed" if args.apply else "Would remove", path))
        for path in creations:
            output.line("%s %s (it no longer exists)"
                        % ("Created" if args.apply else "Would create", path))
        for skip in plan.skipped:
            output.line("Left alone: %s (%s)" % (skip["path"], skip["reason"]))
        if args.apply and result["undo_backup_dir"]:
            output.line("The state just before this restore is saved in %s"
                        % result["undo_backup_dir"])
        elif args.apply:
            output.line("Nothing to put back: the home already holds what the backup holds.")
        else:
            output.line("Nothing was written. Re-run with --apply to restore%s." % (
                " (--discard-changes too: files changed since that run)" if changed else ""))
    return code


# ---------------------------------------------------------------------------------------------
# Argument parser. Shared options work before and after the subcommand name.
# ---------------------------------------------------------------------------------------------

HELP_SUMMARY = """\
Find out why local Codex conversations vanished from the lists, and bring them back by
repairing local metadata. Reads only, unless --apply is given; --apply backs up every file it
changes first (CODEX_HOME/recovery-backups/) and refuses while Codex is using the home unless
--force. Never opens auth.json, API keys, tokens or cookies."""

HELP_EPILOG = "exit codes:\n" + "".join("  %d  %s\n" % row for row in EXIT_CODES) + """
examples:
  %(prog)s diagnose
  %(prog)s diagnose --codex-home ~/.codex --json
  %(prog)s repair-provider --from openai --to auto            # dry run: shows the plan
  %(prog)s repair-provider --from openai --to auto --apply    # backs up, then writes
  %(prog)s repair-provider --from openai --verify             # your Codex checks the plan first
  %(prog)s repair-user-events
  %(prog)s repair-ui-state
  %(prog)s rebuild-index
  %(prog)s trace 019a2f3c                                     # one thread, every layer
  %(prog)s report > codex-report.json                          # redacted, for an issue
  %(prog)s reindex
  %(prog)s rebuild-db
  %(prog)s import --from /mnt/old-laptop/.codex --to auto     # another home's conversations
  %(prog)s remap-cwd --from /Users/ana/src/shop --to /home/ana/projects/shop
  %(prog)s restore --list
  %(prog)s restore --latest --apply
"""


class ArgumentsRejected(SystemExit):
    """argparse's usage error (exit 2), carrying its message so main() can still print the one
    JSON document --json promises."""

    def __init__(self, message: str) -> None:
        super().__init__(EXIT_USAGE)
        self.message = message


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors main() can still answer with a JSON document."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write("%s: error: %s\n" % (self.prog, message))
        raise ArgumentsRejected(message)


def program_name() -> str:
    """`codex_session_recovery.py` when run as a script, the console-script name when installed."""
    invoked = os.path.basename(sys.argv[0] or "")
    if not invoked or invoked.endswith(".py") or invoked.startswith(("pytest", "python", "-")):
        return "codex_session_recovery.py"
    return invoked


def _shared_options(defaults: bool) -> argparse.ArgumentParser:
    """Options every command takes. Subcommands get SUPPRESS defaults so a value given before
    the subcommand name is not overwritten by the subcommand's default."""
    parser = argparse.ArgumentParser(add_help=False)
    default = (lambda value: value) if defaults else (lambda value: argparse.SUPPRESS)
    group = parser.add_argument_group("common options")
    group.add_argument("--codex-home", metavar="PATH", default=default(None),
                       help="Codex home to inspect (default: $CODEX_HOME, else ~/.codex)")
    group.add_argument("--profile", metavar="NAME", default=default(None),
                       help="resolve the active provider as `codex --profile NAME` would")
    group.add_argument("--surface", choices=("cli", "app"), default=default(None),
                       help="which app's listing the verdicts follow when they differ: `cli` (the "
                            "codex command line, with --profile) or `app` (Codex Desktop and the "
                            "IDE extension, which take no --profile)")
    group.add_argument("--json", action="store_true", default=default(False),
                       help="print exactly one JSON document on stdout")
    group.add_argument("--verbose", action="store_true", default=default(False),
                       help="list every thread and example; include message snippets")
    group.add_argument("--deep", action="store_true", default=default(False),
                       help="read rollout heads with the reference reader (every line decoded in "
                            "full); the same verdicts, slower")
    return parser


def _scope_options(parser: argparse.ArgumentParser, title: str = "scope") -> None:
    group = parser.add_argument_group(title)
    group.add_argument("--source", action="append", metavar="KIND",
                       choices=("cli", "vscode", "exec", "mcp", "subagent", "any"),
                       help="thread sources in scope (repeatable; default: cli and vscode, the "
                            "ones Codex lists; `any` for all)")
    group.add_argument("--include-archived", action="store_true", help="include archived threads")
    group.add_argument("--include-empty", action="store_true",
                       help="include threads with no user message")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=program_name(), description=HELP_SUMMARY, epilog=HELP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter, parents=[_shared_options(True)])
    parser.add_argument("--version", action="version", version="%s %s" % (TOOL_NAME, __version__))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.set_defaults(command_names=sub.choices)  # every command, for main()'s error document
    shared = _shared_options(False)

    diagnose = sub.add_parser(
        "diagnose", parents=[shared],
        help="explain, thread by thread, why conversations are hidden (read-only)",
        description="Read the state DB, every rollout head, the session index and Desktop's UI "
                    "state; report each hidden thread with stable reason codes and the next "
                    "command to run. Never writes.")
    _scope_options(diagnose,
                   "scope of the suggested repairs (provider candidates and next commands; "
                   "findings always cover every thread)")
    _verify_options(diagnose)
    diagnose.set_defaults(handler=cmd_diagnose)

    trace = sub.add_parser(
        "trace", parents=[shared],
        help="follow one thread through every layer and every list filter (read-only)",
        description="Where is my conversation? Show one thread's DB row(s), rollout file(s) and "
                    "their session_meta lines, index entry, Desktop hints and history projection, "
                    "and the verdict of each filter a Codex list applies: provider, source, "
                    "archived, preview, cwd, rank.")
    trace.add_argument("thread_id", metavar="THREAD_ID",
                       help="a thread id, a unique prefix of one (6+ characters), "
                            "or a thread name from session_index.jsonl")
    trace.set_defaults(handler=cmd_trace)

    report = sub.add_parser(
        "report", parents=[shared],
        help="print a redacted JSON bundle to paste into an issue (read-only)",
        description="Counts, versions, reason codes and per-thread codes, as one JSON document. No "
                    "message text, no thread names, no path outside CODEX_HOME.")
    report.set_defaults(handler=cmd_report)

    for entry in REPAIRS:
        repair = sub.add_parser(entry.name, parents=[shared], help=entry.summary,
                                description=entry.description)
        if entry.options is not None:
            entry.options(repair)
        _write_options(repair)
        _verify_options(repair)
        repair.add_argument("--expect-plan", metavar="PLAN_ID",
                            help="with --apply: refuse unless the plan is the one the dry run "
                                 "printed as plan_id (nothing changed in between)")
        repair.set_defaults(handler=run_repair, planner=entry.planner)

    restore = sub.add_parser(
        "restore", parents=[shared], help="put back exactly what an earlier --apply changed",
        description="Restore the files and DB of a backup made by --apply, after verifying every "
                    "copy against the manifest. Refuses when they changed after that run, unless "
                    "--discard-changes, and while Codex is using the home, unless --force. The "
                    "state just before the restore is backed up too.")
    restore.add_argument("backup_dir", nargs="?", metavar="BACKUP_DIR",
                         help="a folder under CODEX_HOME/%s (its name or path)" % BACKUP_DIR_NAME)
    restore.add_argument("--latest", action="store_true", help="the most recent backup")
    restore.add_argument("--list", action="store_true", help="list the backups and exit")
    _write_options(restore, force_help="restore although Codex is using the home; never implies "
                                       "--apply")
    restore.add_argument("--discard-changes", action="store_true",
                         help="restore although files changed after "
                              "that run (those later changes are lost; the undo backup keeps them)")
    restore.set_defaults(handler=cmd_restore)
    return parser


def _verify_options(parser: argparse.ArgumentParser) -> None:
    """--verify and --codex-bin, for diagnose and every repair."""
    group = parser.add_argument_group("verification with your own Codex")
    group.add_argument("--verify", action="store_true",
                       help="ask your Codex (its app-server, offline, on a private scratch copy of "
                            "the home with no credentials) what it lists now and after this plan, "
                            "and compare with this tool's prediction; a disagreement is a finding "
                            "(exit 1). No byte of the home is written")
    group.add_argument("--codex-bin", metavar="PATH", type=_executable_argument,
                       help="the codex binary --verify runs (default: `codex` on PATH, else the "
                            "one Codex Desktop or the IDE extension ships)")


def _executable_argument(text: str) -> str:
    """--codex-bin is checked before the home is read: a typo is a usage error at once."""
    if not _is_executable(Path(text).expanduser()):
        raise argparse.ArgumentTypeError("%s is not an executable file" % text)
    return text


def _write_options(parser: argparse.ArgumentParser, force_help: Optional[str] = None) -> None:
    group = parser.add_argument_group("writing")
    group.add_argument("--apply", action="store_true",
                       help="write the changes (after a backup); without it "
                            "nothing is written")
    group.add_argument("--force", action="store_true",
                       help=force_help or "proceed although Codex is using the "
                       "home or the schema is newer than known; never implies --apply")


def error_document(command: Optional[str], home: Any, exc: ToolError) -> Dict[str, Any]:
    return envelope(command, home, exc.exit_code, error={"kind": exc.label, "message": str(exc)})


def home_for_error(args: argparse.Namespace) -> Optional[Path]:
    """The home an error document names: the resolved one, else the path that was tried."""
    try:
        return resolve_codex_home(getattr(args, "codex_home", None), dict(os.environ))[0]
    except (ToolError, OSError, RuntimeError):  # RuntimeError: a symlink loop, before 3.13
        flag = getattr(args, "codex_home", None)
        return Path(flag).expanduser() if flag else None


def main(argv: Optional[Sequence[str]] = None) -> int:
    if sys.stdout is None:  # started with stdout closed (`>&-`): nothing could be reported
        sys.stderr.write("stdout is closed: nothing this run did could be reported; run it "
                         "with stdout open\n")
        return EXIT_USAGE
    output.lost = False
    code = _run_main(argv)
    # Output not delivered is not a success; any other code already says more than 1 would.
    return (code or EXIT_FINDINGS) if output.lost else code


def _run_main(argv: Optional[Sequence[str]]) -> int:
    parser = build_parser()
    raw = list(sys.argv[1:] if argv is None else argv)
    if "--version" in raw and "--json" in raw:
        # --json promises one JSON document; argparse's version action prints text. (-h stays
        # text: help is read by a person.)
        emit_json({"tool": TOOL_NAME, "version": __version__})
        return EXIT_OK
    try:
        args = parser.parse_args(raw)
    except ArgumentsRejected as exc:  # argparse has printed its usage and message to stderr
        if "--json" in raw:
            command = next((word for word in raw if word in parser.get_default("command_names")),
                           None)
            emit_json(error_document(command, None, UsageError(exc.message)))
        raise
    args.argv = raw
    progress.enabled = not getattr(args, "json", False) and sys.stderr.isatty()
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        if getattr(args, "json", False):
            emit_json(error_document(None, None, UsageError("name a command")))
        return EXIT_USAGE
    try:
        code = args.handler(args)
        output.flush()
        return code
    except BrokenPipeError:
        return closed_pipe_exit()
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except ToolError as exc:
        if getattr(args, "json", False):
            emit_json(error_document(args.command, home_for_error(args), exc))
        sys.stderr.write("%s: %s\n" % (exc.label, exc))
        return exc.exit_code


def closed_pipe_exit() -> int:
    """The reader of stdout went away (`| head`, `| sed -n 1,6p`): what is left is not wanted.
    stdout is pointed at the null device so the interpreter's last flush cannot fail again, and
    the run ends quietly with 1, as the output was not all delivered. Any --apply had already
    finished or been undone by then: the engine prints nothing while it writes. (Output does
    the same for the commands' own output; this is for a write outside it.)"""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation is both
        pass  # stdout is not a file descriptor (a test's buffer): nothing will flush to a pipe
    return EXIT_FINDINGS


if __name__ == "__main__":
    raise SystemExit(main())
