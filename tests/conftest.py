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
