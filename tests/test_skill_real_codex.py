"""The real Codex accepts this repository as a skill.

Runs an installed release (``.ci/install-codex``): its bundled skill validator must pass on the
repository root, and its app-server must list the skill, with the description from SKILL.md
and the interface from agents/openai.yaml, when the repository is linked into a home. A
missing release or PyYAML skips locally and fails in CI, where the install steps ran.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import codex_harness as harness
from test_skill_and_docs import ROOT, SKILL_NAME, openai_yaml, skill_fields

pytestmark = pytest.mark.realcodex

RELEASE = "0.169.0"


def skip_or_fail(message):
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


require_release = harness.require_release




@pytest.fixture
def real_home(standin, tmp_path):
    """A home the real release has started in once (which installs its system skills).
    A custom provider keeps ``codex login`` and auth.json out of it."""
    binary = require_release(RELEASE)
    home = harness.build_home(RELEASE, tmp_path / "home", standin, provider=harness.CUSTOM_PROVIDER,
                              user_home=tmp_path / "user-home")
    with harness.AppServer(binary, home, cwd=tmp_path):
        pass
    return {"binary": binary, "home": home, "user_home": tmp_path / "user-home", "cwd": tmp_path}


def test_bundled_validator_accepts_the_repository(real_home):
    try:
        import yaml  # noqa: F401  (the validator imports it)
    except ImportError:
        skip_or_fail("PyYAML is not installed; the bundled quick_validate.py needs it")
    validator = real_home["home"] / "skills" / ".system" / "skill-creator" / "scripts" / "quick_validate.py"
    assert validator.is_file(), "codex %s did not install its skill-creator" % RELEASE
    proc = subprocess.run([sys.executable, str(validator), str(ROOT)], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=60)
    out = proc.stdout.decode("utf-8", "replace")
    assert proc.returncode == 0, out
    assert "valid" in out.lower()


@pytest.mark.parametrize("where", ["codex-home-skills", "agents-skills"])
def test_app_server_lists_the_linked_skill(real_home, where):
    if where == "codex-home-skills":
        folder = real_home["home"] / "skills"
    else:
        folder = real_home["user_home"] / ".agents" / "skills"
    folder.mkdir(parents=True, exist_ok=True)
    os.symlink(str(ROOT), str(folder / SKILL_NAME), target_is_directory=True)
    env = harness.clean_env(real_home["home"], real_home["user_home"])
    with harness.AppServer(real_home["binary"], real_home["home"], cwd=real_home["cwd"], env=env) as server:
        result = server.request("skills/list", {})
    # 0.169.0 answers {"data": [{"cwd": ..., "skills": [{"name", "description", "path",
    # "scope", "enabled", "interface": {...}}, ...]}]}.
    skills = [skill for entry in result["data"] for skill in entry.get("skills") or []]
    ours = [skill for skill in skills if skill.get("name") == SKILL_NAME]
    assert len(ours) == 1, sorted(skill.get("name") for skill in skills)
    skill = ours[0]
    assert skill["description"] == skill_fields()["description"]
    assert skill.get("enabled", True) is True
    assert Path(skill["path"]).resolve() == (ROOT / "SKILL.md").resolve()
    interface = openai_yaml()[0]["interface"]
    assert skill["interface"]["displayName"] == interface["display_name"]
    assert skill["interface"]["shortDescription"] == interface["short_description"]
    assert skill["interface"]["defaultPrompt"] == interface["default_prompt"]
