"""The guided path, followed the way a user (or the Codex agent) follows it, on homes made by
the real Codex releases and judged by them.

For each scenario home: run `diagnose`; run each line of its Next block exactly as printed
(split with shlex from the text output; the `--json` argv list must be the same), first as
the dry run it is, then with `--apply --expect-plan <id>`; at most 3 rounds. Then:

* the final `diagnose` exits 0;
* the real default `thread/list` (all pages: what the user sees) lists every expected thread,
  and everything it listed before the repair;
* every turn of every expected thread reads (`thread/read`), and one thread continues
  (`thread/resume` + `turn/start`);
* every rollout no plan named is byte-identical.

Each release's base homes are built once per module (at the path they are used at: the state
DB and the history projection hold absolute paths) and copied back for every scenario.
Releases: 0.171.0, 0.169.0, 0.130.0 and 0.120.0 for every scenario that applies to them, and
0.100.0 (no state DB, rollouts only) for those its built-in provider allows offline.
"""

import hashlib
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest

import codex_harness as harness
from homes import hash_tree, script_env

pytestmark = pytest.mark.realcodex

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "codex_session_recovery.py"
CUSTOM = harness.CUSTOM_PROVIDER
MAX_ROUNDS = 3
# CODEX-COMPAT: 0.100.0's built-in openai provider ignores `openai_base_url` (its turns went to
# api.openai.com, measured) and it keeps no state DB: there the scenarios start under one custom
# provider and switch to another.
ROLLOUT_ONLY_RELEASE = harness.ROLLOUT_ONLY_RELEASE
OTHER_CUSTOM = "standin-b"
LABELS = ("alpha", "beta", "gamma", "delta")
TURNS = 2


# ---------------------------------------------------------------------------------------------
# Base homes


class Base:
    """A home one release built: four interactive threads of two turns, one archived thread,
    one `codex exec` thread."""

    def __init__(self, version: str, provider: str, root: Path, ids: Dict[str, Any]) -> None:
        self.version, self.provider, self.root, self.ids = version, provider, root, ids
        self.live, self.pristine = root / "live", root / "pristine"

    def restore(self) -> Path:
        shutil.rmtree(str(self.live), ignore_errors=True)
        shutil.copytree(str(self.pristine), str(self.live), symlinks=True)
        return self.live / "home"


@pytest.fixture(scope="module")
def bases(standin, tmp_path_factory):
    top = tmp_path_factory.mktemp("guided")
    built: Dict[Tuple[str, str], Base] = {}

    def get(version: str, provider: str) -> Base:
        key = (version, provider)
        if key not in built:
            binary = harness.require_release(version)
            root = top / ("%s-%s" % key)
            live = root / "live"
            cwd = live / "project"
            cwd.mkdir(parents=True)
            home = harness.build_home(version, live / "home", standin, provider=provider)
            if provider != "openai":
                harness.login_with_api_key(binary, home, live / "user-home")
            ids: Dict[str, Any] = {"interactive": []}
            with harness.AppServer(binary, home, cwd=cwd) as server:
                for label in LABELS:
                    thread_id = server.start_thread(cwd)
                    for n in range(TURNS):
                        server.run_turn(thread_id, "question %d in %s" % (n + 1, label))
                    ids["interactive"].append(thread_id)
                ids["archived"] = server.start_thread(cwd)
                server.run_turn(ids["archived"], "question in the archived thread")
                server.archive(ids["archived"])
            ids["exec"] = harness.run_exec(binary, home, cwd, "question from codex exec")
            shutil.copytree(str(live), str(root / "pristine"), symlinks=True)
            built[key] = Base(version, provider, root, ids)
        base = built[key]
        base.restore()
        return base

    return get


# ---------------------------------------------------------------------------------------------
# The tool, run as printed


def run(argv: List[str], cwd: Path) -> subprocess.CompletedProcess:
    """A command line as the user runs it: its own process, from a folder that is not the
    home (a relative --codex-home would break here). Not homes.run_script: `argv` is a Next
    line run verbatim, program and all, as the tool printed it."""
    return subprocess.run(argv, cwd=str(cwd), capture_output=True, text=True, timeout=300, env=script_env())


def diagnose(home: Path, extra: List[str], cwd: Path) -> Tuple[int, str, Dict[str, Any]]:
    base = [sys.executable, str(SCRIPT), "diagnose", "--codex-home", str(home)] + extra
    text = run(base, cwd)
    doc_run = run(base + ["--json"], cwd)
    assert text.returncode in (0, 1), text.stderr
    doc = json.loads(doc_run.stdout)
    assert doc["exit_code"] == text.returncode == doc_run.returncode
    return text.returncode, text.stdout, doc


def next_block(text: str) -> List[List[str]]:
    lines = text.splitlines()
    if not any(line.startswith("Next (") for line in lines):
        return []
    start = next(n for n, line in enumerate(lines) if line.startswith("Next (")) + 1
    return [shlex.split(line.strip()) for line in lines[start:] if line.startswith("  ")]


def plan_id_of(text: str) -> str:
    line = next(line for line in text.splitlines() if line.startswith("Plan id:"))
    return line.split()[2]


def rollout_hashes(home: Path) -> Dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in ("sessions", "archived_sessions") for p in (home / folder).rglob("*.jsonl")}


def resume_steps(doc: Dict[str, Any]) -> List[str]:
    """Threads whose finding's manual step is to resume them once in Codex (copied-in rollouts
    on 0.169.0+, where no local repair is safe)."""
    return [t["id"] for t in doc["threads"] if "history_projection_missing" in t["reasons"]
            and "resume" in str(t["evidence"].get("history_projection_missing", {}).get("manual_step", ""))]


def follow_next(home: Path, extra: List[str], cwd: Path, answer: Optional[str],
                binary: Optional[Path] = None) -> Dict[str, Any]:
    """diagnose, then every Next line verbatim (dry run, then --apply --expect-plan), at most
    MAX_ROUNDS times. `answer` is what the user says when asked which app they use; a manual
    step the output states precisely (resume a thread once) is done with the real `binary`."""
    edited: set = set()
    rounds = 0
    for rounds in range(1, MAX_ROUNDS + 2):
        code, text, doc = diagnose(home, extra, cwd)
        if any(f["code"] == "surfaces_disagree" for f in doc["findings"]):
            assert answer, "the tool asked which app is used; this scenario has no answer"
            assert not doc["next_argv"], "a move was planned although the surfaces disagree"
            extra = extra + ["--surface", answer]
            code, text, doc = diagnose(home, extra, cwd)
        if code == 0:
            break
        assert rounds <= MAX_ROUNDS, "still findings after %d rounds: %s" % (
            MAX_ROUNDS, [(f["severity"], f["code"]) for f in doc["findings"]])
        printed = next_block(text)
        assert printed == doc["next_argv"], "the text and --json Next lines differ"
        manual = resume_steps(doc) if not printed else []
        if manual and binary is not None:
            with harness.AppServer(binary, home, cwd=cwd) as server:
                for thread_id in manual:
                    server.resume_thread(thread_id)
            continue
        assert printed, "exit 1 with nothing to run: %s" % [(f["severity"], f["code"]) for f in doc["findings"]
                                                           if f["severity"] != "info"]
        for argv in printed:
            before = hash_tree(home)
            dry = run(argv, cwd)
            assert dry.returncode == 1, "a Next line that plans nothing: %s\n%s%s" % (
                shlex.join(argv), dry.stdout, dry.stderr)
            assert hash_tree(home) == before, "the dry run changed the home"
            plan_id = plan_id_of(dry.stdout)
            again = run(argv + ["--json"], cwd)
            assert again.stdout.strip(), again.stderr
            as_json = json.loads(again.stdout)
            assert as_json["plan_id"] == plan_id
            edited |= {str(home / a["path"]) for a in as_json["actions"] if a["kind"] == "rollout_edit"}
            applied = run(argv + ["--apply", "--expect-plan", plan_id], cwd)
            assert applied.returncode == 0, applied.stdout + applied.stderr
    return {"rounds": rounds, "edited": edited, "extra": extra}


# ---------------------------------------------------------------------------------------------
# The judge


def listed(binary: Path, home: Path, cwd: Path) -> List[str]:
    with harness.AppServer(binary, home, cwd=cwd) as server:
        return server.listed_ids()


def listed_without_changing(binary: Path, home: Path, cwd: Path) -> List[str]:
    """What the user saw before any repair. Listing writes (Codex repoints and re-derives rows),
    so the home is put back byte for byte afterwards."""
    keep = home.parent / (home.name + ".before")
    shutil.copytree(str(home), str(keep), symlinks=True)
    try:
        return listed(binary, home, cwd)
    finally:
        shutil.rmtree(str(home))
        keep.rename(home)


def user_texts(turn: Dict[str, Any]) -> List[str]:
    return [part["text"] for item in turn["items"] if item["type"] == "userMessage"
            for part in item["content"] if part.get("type") == "text"]


def judge(binary: Path, home: Path, cwd: Path, expected: Dict[str, List[str]], before: List[str]) -> None:
    with harness.AppServer(binary, home, cwd=cwd) as server:
        now = server.listed_ids()
        missing = sorted(set(expected) - set(now))
        assert not missing, "not listed after the guided repair: %s (listed %s)" % (missing, now)
        hidden = sorted(set(before) - set(now))
        assert not hidden, "listed before the repair, hidden after: %s" % hidden
        for thread_id, texts in expected.items():
            turns = server.read_thread(thread_id)["turns"]
            assert [t for turn in turns for t in user_texts(turn)] == texts, thread_id
        chosen = sorted(expected)[0]
        server.resume_thread(chosen)
        assert server.run_turn(chosen, "one more question")["status"] == "completed"


def expected_texts(ids: List[str], base: Base) -> Dict[str, List[str]]:
    labels = dict(zip(base.ids["interactive"], LABELS))
    return {i: ["question %d in %s" % (n + 1, labels[i]) for n in range(TURNS)] for i in ids}


# ---------------------------------------------------------------------------------------------
# Scenarios: each takes a fresh base home and returns what the guided path must reach.


def rollout_of(home: Path, thread_id: str) -> Path:
    return next(p for folder in ("sessions", "archived_sessions")
                for p in (home / folder).rglob("rollout-*%s.jsonl" % thread_id))


def first_provider(version: str) -> str:
    """The provider a scenario's threads are made under."""
    return CUSTOM if version == ROLLOUT_ONLY_RELEASE else "openai"


def second_provider(version: str) -> str:
    """The provider a scenario switches to."""
    return OTHER_CUSTOM if version == ROLLOUT_ONLY_RELEASE else CUSTOM


def switch(home: Path, provider: str, standin) -> None:
    harness.write_config(home, provider, standin.base_url)


def scenario_switch_to_custom(bases, version, standin):
    base = bases(version, first_provider(version))
    home = base.live / "home"
    switch(home, second_provider(version), standin)
    return base, home, base.ids["interactive"], {}


def scenario_switch_to_openai(bases, version, standin):
    base = bases(version, CUSTOM)
    home = base.live / "home"
    switch(home, "openai", standin)  # the old provider's table goes: exec/archived threads keep it
    return base, home, base.ids["interactive"], {}


def move_home(base: Base, user: str) -> Path:
    """The home copied to another user's folder (another machine, a new account); the old one
    is gone."""
    target = base.live / "users" / user / ".codex"
    target.parent.mkdir(parents=True)
    shutil.copytree(str(base.live / "home"), str(target), symlinks=True)
    shutil.rmtree(str(base.live / "home"))
    return target


def scenario_moved_home(bases, version, standin):
    base = bases(version, first_provider(version))
    return base, move_home(base, "bob"), base.ids["interactive"], {}


def scenario_deleted(bases, version, standin):
    """One rollout removed by hand (its row and index entry stay), one thread deleted through
    Codex's thread/delete where the release has it (row, rollout and index entry go), then a
    provider switch."""
    base = bases(version, first_provider(version))
    home = base.live / "home"
    by_hand, through_codex = base.ids["interactive"][:2]
    rollout_of(home, by_hand).unlink()
    with harness.AppServer(harness.require_release(version), home, cwd=base.live / "project") as server:
        try:
            server.request("thread/delete", {"threadId": through_codex})
        except harness.JsonRpcError:
            rollout_of(home, through_codex).unlink()  # CODEX-COMPAT: no thread/delete before 0.169.0
    switch(home, second_provider(version), standin)
    return base, home, base.ids["interactive"][2:], {}


def scenario_mix(bases, version, standin):
    """A home moved to another user, its provider switched, and one rollout deleted by hand."""
    base = bases(version, first_provider(version))
    home = move_home(base, "carol")
    rollout_of(home, base.ids["interactive"][0]).unlink()
    switch(home, second_provider(version), standin)
    return base, home, base.ids["interactive"][1:], {}


def scenario_legacy_profile(bases, version, standin):
    """CODEX-COMPAT: 0.120.0 and 0.130.0 follow a top-level `profile = "work"`: the threads
    made before it was added (under openai) are hidden; the profile's provider is the active one."""
    base = bases(version, "openai")
    home = base.live / "home"
    text = (home / "config.toml").read_text()
    text = 'profile = "work"\n' + text + (
        '\n[model_providers.%s]\nname = "%s"\nbase_url = "%s"\nwire_api = "responses"\nenv_key = "%s"\n'
        '\n[profiles.work]\nmodel_provider = "%s"\n' % (CUSTOM, CUSTOM, standin.base_url, harness.FAKE_KEY_ENV, CUSTOM))
    (home / "config.toml").write_text(text)
    return base, home, base.ids["interactive"], {}


def scenario_profile_file(bases, version, standin):
    """CODEX-COMPAT: 0.169.0: config.toml says openai, work.config.toml a custom provider, and
    one more thread was made under it. Desktop and the IDE (the app-server, no --profile) list
    the four openai threads; diagnose --profile work must not move them to the profile's
    provider (that listed 0 of them there), and asks which app is used: the IDE."""
    base = bases(version, "openai")
    home = base.live / "home"
    cwd = base.live / "project"
    switch(home, CUSTOM, standin)
    with harness.AppServer(harness.require_release(version), home, cwd=cwd) as server:
        extra_id = server.start_thread(cwd)
        for n in range(TURNS):
            server.run_turn(extra_id, "question %d in epsilon" % (n + 1))
    switch(home, "openai", standin)
    (home / "work.config.toml").write_text(
        'model_provider = "%s"\n\n[model_providers.%s]\nname = "%s"\nbase_url = "%s"\nwire_api = "responses"\n'
        'env_key = "%s"\n' % (CUSTOM, CUSTOM, CUSTOM, standin.base_url, harness.FAKE_KEY_ENV))
    texts = {extra_id: ["question %d in epsilon" % (n + 1) for n in range(TURNS)]}
    return base, home, base.ids["interactive"], {"extra": ["--profile", "work"], "answer": "app",
                                                  "more_expected": texts}


def scenario_upgrade(bases, version, standin):
    """A home 0.130.0 built under a custom provider, switched to openai, then opened by the
    newer release (which migrates it)."""
    base = bases("0.130.0", CUSTOM)
    home = base.live / "home"
    switch(home, "openai", standin)
    listed(harness.require_release(version), home, base.live / "project")
    return base, home, base.ids["interactive"], {}


def scenario_torn_tail(bases, version, standin):
    """A crash cut the last line of one hidden thread's rollout mid-object."""
    base = bases(version, first_provider(version))
    home = base.live / "home"
    path = rollout_of(home, base.ids["interactive"][0])
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - 40])
    switch(home, second_provider(version), standin)
    return base, home, base.ids["interactive"], {"torn": True}


def scenario_copied_in(bases, version, standin):
    """Rollouts copied into sessions/ from another machine's home (no rows here).
    CODEX-COMPAT: 0.169.0 and 0.171.0 list them but read no turns until one resume; the tool
    states that manual step, and the guided path does it."""
    other = bases(version, second_provider(version))
    keep = other.live.parent / "other-machine"
    shutil.rmtree(str(keep), ignore_errors=True)
    shutil.copytree(str(other.live / "home" / "sessions"), str(keep), symlinks=True)
    copied = other.ids["interactive"]
    base = bases(version, first_provider(version))
    home = base.live / "home"
    for thread_id in copied:
        source = next(keep.rglob("rollout-*%s.jsonl" % thread_id))
        target = home / "sessions" / source.relative_to(keep)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(str(source), str(target))
    labels = dict(zip(copied, LABELS))
    texts = {i: ["question %d in %s" % (n + 1, labels[i]) for n in range(TURNS)] for i in copied}
    return base, home, base.ids["interactive"], {"more_expected": texts}


SCENARIOS = {
    "switch-to-custom": scenario_switch_to_custom,
    "switch-to-openai": scenario_switch_to_openai,
    "moved-home": scenario_moved_home,
    "deleted-rollouts": scenario_deleted,
    "mix": scenario_mix,
    "legacy-profile": scenario_legacy_profile,
    "profile-file": scenario_profile_file,
    "upgrade-from-0.130.0": scenario_upgrade,
    "torn-tail": scenario_torn_tail,
    "copied-in": scenario_copied_in,
}

# Which releases each scenario is about.
RELEASES = tuple(harness.RELEASES)
CASES = [(name, version) for name in ("switch-to-custom", "switch-to-openai", "moved-home", "deleted-rollouts",
                                      "mix", "torn-tail", "copied-in")
         for version in RELEASES]
CASES += [(name, ROLLOUT_ONLY_RELEASE) for name in ("switch-to-custom", "moved-home", "deleted-rollouts", "mix",
                                                   "torn-tail", "copied-in")]
CASES += [("legacy-profile", "0.130.0"), ("legacy-profile", "0.120.0")]
CASES += [("profile-file", v) for v in RELEASES if v >= "0.169.0"]
CASES += [("upgrade-from-0.130.0", v) for v in RELEASES if v >= "0.169.0"]


def case_param(name: str, version: str) -> Any:
    return pytest.param(name, version, id="%s-%s" % (name, version))


@pytest.mark.parametrize("name,version", [case_param(n, v) for n, v in CASES])
def test_following_next_verbatim_brings_every_conversation_back(bases, standin, name, version, tmp_path):
    binary = harness.require_release(version)
    base, home, interactive, options = SCENARIOS[name](bases, version, standin)
    cwd = base.live / "project"
    expected = expected_texts([i for i in interactive if rollout_exists(home, i)], base)
    expected.update(options.get("more_expected", {}))
    before_listed = listed_without_changing(binary, home, cwd)
    before_rollouts = rollout_hashes(home)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = follow_next(home, list(options.get("extra", [])), elsewhere, options.get("answer"), binary)
    code, _text, doc = diagnose(home, result["extra"], elsewhere)
    assert code == 0, [(f["severity"], f["code"]) for f in doc["findings"] if f["severity"] != "info"]
    after_rollouts = rollout_hashes(home)
    touched = {p for p in before_rollouts if before_rollouts[p] != after_rollouts.get(p)}
    assert touched <= result["edited"], "rollouts changed that no plan named: %s" % sorted(touched - result["edited"])
    judge(binary, home, cwd, expected, before_listed)


def rollout_exists(home: Path, thread_id: str) -> bool:
    return any((home / folder).rglob("rollout-*%s.jsonl" % thread_id) for folder in ("sessions", "archived_sessions"))
