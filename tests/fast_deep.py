"""The fast rollout reader against the reference reader, on any home.

scan_rollout (one os.read of the head, the instructions in session_meta matched rather than
decoded, the tail from the same buffer) must find exactly what scan_rollout_deep (buffered
readline and json.loads of every line) finds: every fact of every rollout, and so every
verdict, reason code and piece of evidence the checks derive from them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import codex_session_recovery as csr


def find_homes(root: Path) -> Iterator[Path]:
    """Folders under root that look like a Codex home (they hold sessions/ or archived_sessions/)."""
    for folder, dirs, _files in os.walk(str(root)):
        dirs[:] = sorted(d for d in dirs if d != csr.BACKUP_DIR_NAME)
        if "sessions" in dirs or "archived_sessions" in dirs:
            yield Path(folder)


def rollout_facts(info: Any) -> Dict[str, Any]:
    facts = {name: getattr(info, name) for name in type(info).__slots__}
    facts["meta"] = dict(info.meta.items()) if info.meta else {}
    return facts


def verdicts(inv: Any) -> Dict[str, Any]:
    findings = csr.run_checks(inv)
    threads = {tid: {"reasons": view.reasons, "rank": view.rank, "hidden": view.hidden,
                     "entry": csr.thread_entry(view, True)} for tid, view in inv.threads.items()}
    return {"findings": findings, "threads": threads, "summary": csr.summarise(inv)}


def inventory(home: Path, deep: bool) -> Tuple[Any, Any]:
    """(inventory, None), or (None, the error) when the home cannot be read at all."""
    try:
        config = csr.load_config(home, None)
        return csr.Inventory(home, "test", config, {}, deep=deep), None
    except Exception as exc:  # noqa: BLE001 - both readers must fail alike
        return None, (type(exc).__name__, str(exc))


def differences(home: Path) -> List[str]:
    """What the fast reader and the reference reader disagree on in this home (empty: nothing)."""
    fast, fast_error = inventory(home, deep=False)
    deep, deep_error = inventory(home, deep=True)
    if fast_error or deep_error:
        return [] if fast_error == deep_error else ["%s: fast %r, deep %r" % (home, fast_error, deep_error)]
    problems = []
    for a, b in zip(fast.rollouts, deep.rollouts):
        fa, fb = rollout_facts(a), rollout_facts(b)
        if fa != fb:
            problems.append("%s: %s" % (a.file, {k: (fa[k], fb.get(k)) for k in fa if fa[k] != fb.get(k)}))
    if len(fast.rollouts) != len(deep.rollouts):
        problems.append("%s: %d rollouts read fast, %d deep" % (home, len(fast.rollouts), len(deep.rollouts)))
    if not problems and verdicts(fast) != verdicts(deep):
        problems.append("%s: the verdicts differ" % home)
    return problems
