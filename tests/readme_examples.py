"""Regenerate the sample output shown in README.md and README.zh-CN.md.

    python3 tests/readme_examples.py [--keep DIR]

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
  ~/new-laptop: this machine's home (provider `proxy`), its own chat in ~/work/shop.

It then runs, in order, the commands each README block shows, from a copy of the script in
~/codex-session-recovery, with HOME pointing at the temporary folder (so `~/.codex` is the
default home, as in the READMEs) and stdout on a pseudo-terminal (so JSON comes out indented,
as a person sees it). It prints each block's command and output, with the temporary folder
replaced by /home/alice. Paste a block over the matching `console` block in both READMEs,
keeping the `…` elisions they make. Thread ids are deterministic; backup folder names, pids
and the Python and SQLite versions are not.

This is a script, not a test: pytest does not collect it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

try:
    import pty
except ImportError:  # pragma: no cover - Windows
    pty = None  # type: ignore

sys.path.insert(0, str(Path(__file__).resolve().parent))

from homes import HomeBuilder  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "codex_session_recovery.py"
SHOWN_HOME = "/home/alice"


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
    ~/new-laptop, where the project now lives in ~/work/shop."""
    old = HomeBuilder(alice / "old-laptop" / ".codex", "0.169.0")
    named = old.thread(cwd="/Users/alice/src/shop", user_text="fix the failing checkout test", turns=2)
    old.thread(cwd="/Users/alice/src/shop", user_text="add a retry to the payment client")
    old.thread(cwd="/Users/alice/src/shop", archived=True, user_text="draft the Q3 migration plan")
    old.index([{"id": named.id, "thread_name": "checkout bug", "updated_at": "2026-09-21T14:14:21Z"}])
    project = alice / "work" / "shop"
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
        return "$ %s\n%s" % (" ".join(shown).replace(str(self.alice), "~"), out)


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


def blocks(alice: Path) -> Dict[str, List[str]]:
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
                        r.run("remap-cwd", "--from", "/Users/alice/src/shop", "--to", str(alice / "work" / "shop"),
                              home="new-laptop")]
    out["restore"] = [r.run("restore", "--list"), r.run("restore", "--latest"),
                      r.run("restore", "--latest", "--apply")]
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", metavar="DIR", help="build the homes in DIR (must not exist) and keep them")
    args = parser.parse_args(argv)
    if args.keep:
        alice = Path(args.keep).resolve()
        alice.mkdir(parents=True)
        result = blocks(alice)
    else:
        with tempfile.TemporaryDirectory(prefix="readme-examples-") as tmp:
            alice = Path(tmp).resolve() / "alice"
            alice.mkdir()
            result = blocks(alice)
    for name, commands in result.items():
        print("===== %s" % name)
        print("\n\n".join(commands))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
