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
def cli(capsys):
    """The tool in-process with --json, as `cli(*argv)`: (exit code, its one JSON document),
    with the document's exit_code checked against the real one."""
    import codex_session_recovery as csr
    from homes import one_json_document

    def run(*argv: str):
        try:
            code = csr.main([*argv, "--json"])
        except SystemExit as exc:  # argparse's own usage errors
            code = exc.code
        doc = one_json_document(capsys.readouterr().out)
        assert doc["exit_code"] == code, (code, doc)
        return code, doc

    return run
