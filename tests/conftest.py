import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def standin():
    """One loopback Responses-API stand-in for every real-Codex test of the session."""
    import codex_harness

    with codex_harness.ResponsesStandIn() as server:
        yield server


@pytest.fixture
def cli():
    """The tool in-process with --json, as `cli(*argv)`: (exit code, its one JSON document),
    with the document's exit_code checked against the real one (homes.run_in_process)."""
    from homes import run_in_process

    def run(*argv: str):
        code, doc, _err = run_in_process(*argv)
        return code, doc

    return run


# Every home a test builds (synthetic or made by the real Codex) is read twice when the test
# ends, by the fast rollout reader and by the reference reader: facts, verdicts, reason codes
# and evidence must be identical (tests/fast_deep.py).
_checked_homes = set()


@pytest.fixture(autouse=True)
def fast_and_deep_readers_agree(tmp_path):
    yield
    import fast_deep

    problems = []
    for home in fast_deep.find_homes(tmp_path):
        _checked_homes.add(str(home))
        problems += fast_deep.differences(home)
    assert not problems, "fast and deep readers disagree:\n" + "\n".join(problems)


def pytest_sessionfinish(session, exitstatus):
    """Homes made by module- or session-wide fixtures, checked once at the end."""
    import fast_deep

    try:
        base = session.config._tmp_path_factory.getbasetemp()
    except Exception:  # noqa: BLE001 - no temporary folder was used
        return
    problems = []
    for home in fast_deep.find_homes(base):
        if str(home) not in _checked_homes:
            problems += fast_deep.differences(home)
    if problems:
        session.config.get_terminal_writer().line("fast and deep readers disagree:\n" + "\n".join(problems), red=True)
        session.exitstatus = 1
