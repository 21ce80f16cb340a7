"""The sample output shown in README.md and README.zh-CN.md, regenerated from real runs.

    python3 tests/readme_examples.py            # rewrite the examples in both READMEs
    python3 tests/readme_examples.py --check    # exit 1, with a diff, when one differs
    python3 tests/readme_examples.py --print    # print every run's output
    python3 tests/readme_examples.py --keep DIR # ... and keep the homes in DIR

Builds the sample homes the READMEs describe with tests/homes.py, under a temporary folder
that stands in for alice's home directory:

* ~/.codex: three chats made under `openai` before config.toml switched to a provider named
  `proxy`, one chat under `proxy`, one `exec` thread, one archived thread, a session index
  with one stale entry, and a Desktop sidebar narrowed to one workspace;
* ~/old-codex: a 0.120.0 home whose DB row lost the first user message;
* ~/synced-codex: a home copied from another machine (a stale rollout_path, a rollout with no
  row, an archived flag that disagrees with the file's folder);
* ~/broken-codex: a state DB whose backfill never finished;
* ~/old-laptop/.codex: another machine's home, its chats in /Users/alice/src/shop; and
  ~/new-laptop: this machine's home (provider `proxy`), its own chat in ~/projects/shop.

It then runs, in order, the commands the README blocks show, from a copy of the script in
~/codex-session-recovery, with HOME pointing at the temporary folder (so `~/.codex` is the
default home, as in the READMEs) and stdout on a pseudo-terminal (so JSON comes out indented,
as a person sees it), and replaces the temporary folder by /home/alice.

How a README block is matched: each `$ command` line of a `console` block takes the output of
the next run of that command. A line that holds only `…` stands for one or more lines the
README leaves out; the rewrite keeps those elisions (it re-takes each shown stretch of lines
from its first to its last line). Backup folder stamps, pids, plan ids, the platform and the
Python and SQLite versions are compared as placeholders. A `json` block is a trimmed
document: every key it shows must hold the value it shows, `"..."` (or a string starting
with "...") stands for any value, a list whose last item is such a string may go on, and an
object with a `"..."` key may have more keys (the document itself always may). The rewrite
leaves `json` blocks alone.

This is a script, not a test: pytest does not collect it. `.ci/run` runs it with --check.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

try:
    import pty
except ImportError:  # pragma: no cover - Windows
    pty = None  # type: ignore

sys.path.insert(0, str(Path(__file__).resolve().parent))

from homes import HomeBuilder  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "codex_session_recovery.py"
SHOWN_HOME = "/home/alice"
READMES = (ROOT / "README.md", ROOT / "README.zh-CN.md")
ELISION = "…"


def build_main_home(home: Path) -> None:
    """~/.codex: three chats under openai, then config.toml switched to proxy."""
    b = HomeBuilder(home, "0.169.0").provider_config("proxy")
    first = b.thread(provider="openai", user_text="fix the failing checkout test")
    b.thread(provider="openai", user_text="add a retry to the payment client")
    b.thread(provider="openai", user_text="explain the cart total rounding")
    b.thread(provider="proxy", user_text="bump the SDK to 4.2")
    b.thread(provider="proxy", source="exec", user_text="summarise the CI logs")
    b.thread(provider="proxy", archived=True, user_text="draft the Q3 migration plan")
    b.index([
        {"id": first.id, "thread_name": "checkout test", "updated_at": "2026-09-21T14:14:21Z"},
        {"id": "019a0000-dead-7bee-8f00-000000000000", "thread_name": "deleted long ago",
         "updated_at": "2026-08-01T09:00:00Z"},
    ])
    (home / ".codex-global-state.json").write_text(json.dumps({"electron-persisted-atom-state": {
        "sidebar-collapsed-groups": {"/home/ana/shop": True},
        "sidebar-workspace-filter-v2": "/home/ana/shop",
        "thread-sort-key": "updated_at",
    }}, indent=2) + "\n", encoding="utf-8")


def build_old_home(home: Path) -> None:
    """~/old-codex: written by 0.120.0; one row lost its first user message."""
    b = HomeBuilder(home, "0.120.0").provider_config("openai")
    b.thread(user_text="write release notes for 2.3",
             row_overrides={"first_user_message": "", "title": "", "has_user_event": 0})
    b.thread(user_text="rename the config loader", row_overrides={"has_user_event": 1})


def build_synced_home(home: Path) -> None:
    """~/synced-codex: copied from another machine."""
    b = HomeBuilder(home, "0.169.0").provider_config("openai")
    b.thread()
    moved = b.thread(user_text="profile the search endpoint")
    b.thread(user_text="review the release checklist", row_overrides={"archived": 1, "archived_at": 1790000300})
    b.thread(user_text="port the importer to asyncio", row=False)
    conn = sqlite3.connect(str(home / "state_5.sqlite"))
    try:
        conn.execute("UPDATE threads SET rollout_path = ? WHERE id = ?",
                     (str(moved.path).replace(str(home), "/Users/alice/.codex"), moved.id))
        conn.commit()
    finally:
        conn.close()


def build_broken_home(home: Path) -> None:
    """~/broken-codex: the DB's backfill stopped part way, long ago."""
    b = HomeBuilder(home, "0.169.0").provider_config("openai")
    b.thread()
    b.thread(user_text="tidy the logging setup")
    conn = sqlite3.connect(str(home / "state_5.sqlite"))
    try:
        conn.execute("UPDATE backfill_state SET status = 'running', last_watermark = 'sessions/2026/09/21', "
                     "updated_at = 1790000100 WHERE id = 1")
        conn.commit()
    finally:
        conn.close()


def build_moved_homes(alice: Path) -> None:
    """~/old-laptop/.codex (chats in /Users/alice/src/shop, one named, one archived) and
    ~/new-laptop, where the project now lives in ~/projects/shop."""
    old = HomeBuilder(alice / "old-laptop" / ".codex", "0.169.0")
    named = old.thread(cwd="/Users/alice/src/shop", user_text="fix the failing checkout test", turns=2)
    old.thread(cwd="/Users/alice/src/shop", user_text="add a retry to the payment client")
    old.thread(cwd="/Users/alice/src/shop", archived=True, user_text="draft the Q3 migration plan")
    old.index([{"id": named.id, "thread_name": "checkout bug", "updated_at": "2026-09-21T14:14:21Z"}])
    project = alice / "projects" / "shop"
    project.mkdir(parents=True)
    new = HomeBuilder(alice / "new-laptop", "0.169.0").provider_config("proxy")
    new.thread(provider="proxy", cwd=str(project), user_text="why is the cart total off by a cent")


class Runner:
    """Runs the script as a user would, from a clone in alice's home, and prints a block."""

    def __init__(self, alice: Path) -> None:
        self.alice = alice
        self.clone = alice / "codex-session-recovery"
        (self.clone / "scripts").mkdir(parents=True, exist_ok=True)
        shutil.copy2(str(SCRIPT), str(self.clone / "scripts" / SCRIPT.name))
        self.env = dict(os.environ, HOME=str(alice), PYTHONDONTWRITEBYTECODE="1")
        self.env.pop("CODEX_HOME", None)
        self.log: List[Tuple[str, str]] = []  # (the `$ ...` line, its output), in run order

    def run(self, *args: str, home: Optional[str] = None) -> str:
        """One `$ command` line and its output. `home` is a folder name under ~ given as
        --codex-home ~/NAME."""
        shown = ["python3", "scripts/codex_session_recovery.py"]
        real = list(shown)
        if home:
            shown += ["--codex-home", "~/" + home]
            real += ["--codex-home", str(self.alice / home)]
        shown += list(args)
        real += list(args)
        out = run_on_terminal(real, str(self.clone), self.env).rstrip("\n").replace(str(self.alice), SHOWN_HOME)
        line = "$ " + " ".join(shown).replace(str(self.alice), "~")
        self.log.append((line, out))
        return "%s\n%s" % (line, out)


def run_on_terminal(command: List[str], cwd: str, env: Dict[str, str]) -> str:
    """stdout then stderr of a command whose stdout is a terminal, as a person running it sees
    it (JSON is indented only for a terminal). stderr stays a pipe, so no progress lines."""
    if pty is None:  # no pseudo-terminals (Windows): the output a pipe gets
        proc = subprocess.run(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
        return (proc.stdout + proc.stderr).decode("utf-8")
    master, slave = pty.openpty()
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=slave,
                            stderr=subprocess.PIPE)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the command closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    err = proc.stderr.read()
    proc.stderr.close()
    proc.wait(timeout=120)
    return (b"".join(chunks).replace(b"\r\n", b"\n") + err).decode("utf-8")


def blocks(alice: Path, runs: Optional[List[Tuple[str, str]]] = None) -> Dict[str, List[str]]:
    """Build the homes and run every command; `runs` receives each (command, output)."""
    build_main_home(alice / ".codex")
    build_old_home(alice / "old-codex")
    build_synced_home(alice / "synced-codex")
    build_broken_home(alice / "broken-codex")
    build_moved_homes(alice)
    r = Runner(alice)
    out: Dict[str, List[str]] = {}
    out["diagnose"] = [r.run("diagnose")]
    out["diagnose --json"] = [r.run("diagnose", "--json")]
    out["trace"] = [r.run("trace", "019a34e8")]
    out["report"] = [r.run("report")]
    # Writing: a refusal while a process holds the state DB open, as a running Codex does.
    holder = subprocess.Popen([sys.executable, "-c", "import sqlite3, sys, time\n"
                               "c = sqlite3.connect(sys.argv[1]); c.execute('SELECT count(*) FROM threads').fetchall()\n"
                               "print('open', flush=True); time.sleep(120)", str(alice / ".codex" / "state_5.sqlite")],
                              stdout=subprocess.PIPE)
    try:
        holder.stdout.readline()
        out["writing"] = [r.run("repair-provider", "--from", "openai", "--apply")]
    finally:
        holder.kill()
        holder.stdout.close()
        holder.wait()
    out["repair-provider"] = [r.run("repair-provider", "--from", "openai", "--to", "auto"),
                              r.run("repair-provider", "--from", "openai", "--to", "auto", "--apply"),
                              r.run("repair-provider", "--from", "openai", "--to", "auto")]
    time.sleep(1.1)  # backup folders are named by the second
    out["repair-user-events"] = [r.run("repair-user-events", home="old-codex")]
    out["rebuild-index"] = [r.run("rebuild-index")]
    r.run("rebuild-index", "--apply")
    time.sleep(1.1)
    out["repair-ui-state"] = [r.run("repair-ui-state")]
    r.run("repair-ui-state", "--apply")
    time.sleep(1.1)
    out["reindex"] = [r.run("diagnose", home="synced-codex"), r.run("reindex", home="synced-codex")]
    out["rebuild-db"] = [r.run("rebuild-db", home="broken-codex")]
    old_laptop = str(alice / "old-laptop" / ".codex")
    out["import"] = [r.run("import", "--from", old_laptop, "--to", "auto", home="new-laptop")]
    r.run("import", "--from", old_laptop, "--to", "auto", "--apply", home="new-laptop")
    out["remap-cwd"] = [r.run("diagnose", home="new-laptop"),
                        r.run("remap-cwd", "--from", "/Users/alice/src/shop", "--to", str(alice / "projects" / "shop"),
                              home="new-laptop")]
    out["restore"] = [r.run("restore", "--list"), r.run("restore", "--latest"),
                      r.run("restore", "--latest", "--apply")]
    if runs is not None:
        runs.extend(r.log)
    return out


# -- comparing and rewriting README blocks ---------------------------------------------------

PLACEHOLDERS = (
    (re.compile(r"\b\d{8}T\d{6}Z"), "<STAMP>"),  # backup folder names
    (re.compile(r"\bpid \d+"), "pid <PID>"),
    (re.compile(r"\b[0-9a-f]{16}\b"), "<PLAN_ID>"),
    (re.compile(r'"(python|sqlite)": "[0-9.]+"'), r'"\1": "<VERSION>"'),
    (re.compile(r'"system": "[a-z0-9]+"'), '"system": "<PLATFORM>"'),  # report's sys.platform
)


def normalise(line: str) -> str:
    for pattern, placeholder in PLACEHOLDERS:
        line = pattern.sub(placeholder, line)
    return line.rstrip()


def is_elision(line: str) -> bool:
    return line.strip() == ELISION


def segments(shown: List[str]) -> List[Any]:
    """The shown lines as literal stretches (lists) and elisions (the elision line itself)."""
    parts: List[Any] = []
    for line in shown:
        if is_elision(line):
            parts.append(line)
        elif parts and isinstance(parts[-1], list):
            parts[-1].append(line)
        else:
            parts.append([line])
    return parts


def refit(shown: List[str], fresh: List[str]) -> Optional[List[str]]:
    """`fresh` trimmed the way `shown` is: each shown stretch re-taken from its first to its
    last line, each elision kept where it stands for at least one line. None when a stretch's
    first or last line is no longer in the output (trim that block again by hand)."""
    parts = segments(shown)
    if not any(isinstance(p, str) for p in parts):
        return list(fresh)
    out: List[str] = []
    at = 0
    pending: Optional[str] = None  # an elision waiting for the lines it stands for
    for n, part in enumerate(parts):
        if isinstance(part, str):
            pending = part
            continue
        last_part = n == len(parts) - 1
        first, last = normalise(part[0]), normalise(part[-1])
        start = at if pending is None else next(
            (i for i in range(at, len(fresh)) if normalise(fresh[i]) == first), None)
        if start is None or normalise(fresh[start]) != first:
            return None
        if last_part:
            end = len(fresh) - 1
            if normalise(fresh[end]) != last:
                return None
        else:
            end = next((j for j in range(start + len(part) - 1 if len(part) > 1 else start, len(fresh))
                        if normalise(fresh[j]) == last), None)
            if end is None:
                return None
        if pending is not None and start > at:
            out.append(pending)
        pending = None
        out.extend(fresh[start:end + 1])
        at = end + 1
    if pending is not None and at < len(fresh):
        out.append(pending)
    return out


def keep_unchanged(shown: List[str], new: List[str]) -> List[str]:
    """`new`, except that a line equal to the shown one but for a placeholder (a stamp, a pid)
    stays as the README has it, so a rewrite changes only what really changed."""
    matcher = difflib.SequenceMatcher(None, [normalise(l) for l in shown], [normalise(l) for l in new],
                                      autojunk=False)
    out: List[str] = []
    for op, a1, a2, b1, b2 in matcher.get_opcodes():
        out.extend(shown[a1:a2] if op == "equal" else new[b1:b2])
    return out


def json_matches(shown: Any, real: Any, top: bool = False) -> bool:
    if isinstance(shown, str) and shown.startswith("..."):
        return True
    if isinstance(shown, dict):
        if not isinstance(real, dict):
            return False
        keys = [k for k in shown if k != "..."]
        if "..." not in shown and not top and set(keys) != set(real):
            return False
        return all(k in real and json_matches(shown[k], real[k]) for k in keys)
    if isinstance(shown, list):
        if not isinstance(real, list):
            return False
        open_ended = bool(shown) and isinstance(shown[-1], str) and shown[-1].startswith("...")
        items = shown[:-1] if open_ended else shown
        if len(items) > len(real) or (not open_ended and len(items) != len(real)):
            return False
        return all(json_matches(s, r) for s, r in zip(items, real))
    if isinstance(shown, str) and isinstance(real, str):
        return normalise(shown) == normalise(real)
    return shown == real


BLOCK_RE = re.compile(r"^```(console|json)\n(.*?)^```$", re.M | re.S)


def console_runs(body: str) -> List[Tuple[str, List[str]]]:
    runs: List[Tuple[str, List[str]]] = []
    for line in body.rstrip("\n").split("\n"):
        if line.startswith("$ "):
            runs.append((line, []))
        elif runs:
            runs[-1][1].append(line)
    for _command, lines in runs:  # the blank line between two runs belongs to neither
        while lines and not lines[-1].strip():
            lines.pop()
    return runs


def render_console(runs: List[Tuple[str, List[str]]]) -> str:
    return "\n\n".join("\n".join([command] + lines) for command, lines in runs) + "\n"


def process(text: str, name: str, log: List[Tuple[str, str]], problems: List[str]) -> str:
    """`text` with every block refitted to `log`; what does not match goes to `problems`."""
    queues: Dict[str, List[str]] = {}
    for command, output in log:
        queues.setdefault(command, []).append(output)
    latest = {command: output for command, output in log}

    def one_block(match: "re.Match[str]") -> str:
        kind, body = match.group(1), match.group(2)
        where = "%s line %d" % (name, text.count("\n", 0, match.start()) + 1)
        if kind == "json":
            shown = json.loads(body)
            command = "$ python3 scripts/codex_session_recovery.py %s --json" % shown.get("command")
            if command not in latest:
                problems.append("%s: no run of %s" % (where, command))
            elif not json_matches(shown, json.loads(latest[command]), top=True):
                problems.append("%s: the json block does not match the output of `%s` (edit it by hand):\n%s"
                                % (where, command[2:], latest[command]))
            return match.group(0)
        runs = console_runs(body)
        refitted = []
        for command, shown in runs:
            if not queues.get(command):
                problems.append("%s: `%s` is not among the commands this script runs" % (where, command))
                refitted.append((command, shown))
                continue
            fresh = queues[command].pop(0).split("\n")
            new = refit(shown, fresh)
            if new is None:
                problems.append("%s: the lines kept around `…` in `%s` are gone; trim it again from:\n%s"
                                % (where, command[2:], "\n".join(fresh)))
                refitted.append((command, shown))
                continue
            if [normalise(l) for l in new] != [normalise(l) for l in shown]:
                diff = difflib.unified_diff(shown, new, "README", "real output", lineterm="", n=1)
                problems.append("%s: `%s` differs:\n%s" % (where, command[2:], "\n".join(diff)))
            refitted.append((command, keep_unchanged(shown, new)))
        return "```console\n%s```" % render_console(refitted)

    return BLOCK_RE.sub(one_block, text)


def run_everything(keep: Optional[str]) -> Tuple[Dict[str, List[str]], List[Tuple[str, str]]]:
    runs: List[Tuple[str, str]] = []
    if keep:
        alice = Path(keep).resolve()
        alice.mkdir(parents=True)
        return blocks(alice, runs), runs
    with tempfile.TemporaryDirectory(prefix="readme-examples-") as tmp:
        alice = Path(tmp).resolve() / "alice"
        alice.mkdir()
        return blocks(alice, runs), runs


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="change nothing; exit 1 if an example differs")
    mode.add_argument("--print", action="store_true", help="print every run's output instead")
    parser.add_argument("--keep", metavar="DIR", help="build the homes in DIR (must not exist) and keep them")
    args = parser.parse_args(argv)
    result, runs = run_everything(args.keep)
    if args.print:
        for name, commands in result.items():
            print("===== %s" % name)
            print("\n\n".join(commands))
            print()
        return 0
    failed = False
    for path in READMES:
        problems: List[str] = []
        text = path.read_text(encoding="utf-8")
        new = process(text, path.name, runs, problems)
        if args.check:
            for problem in problems:
                print(problem + "\n")
            failed = failed or bool(problems)
        else:
            stuck = [p for p in problems if "differs:" not in p]
            for problem in stuck:
                print(problem + "\n")
            failed = failed or bool(stuck)
            if new != text:
                path.write_text(new, encoding="utf-8")
                print("rewrote the examples in %s" % path.name)
    if args.check:
        print("README examples: %s" % ("differ from the real output (python3 tests/readme_examples.py rewrites them)"
                                       if failed else "match the real output"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
