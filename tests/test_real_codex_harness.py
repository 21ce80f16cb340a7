"""The real-Codex harness works, and real releases behave as the tool assumes.

These tests run installed Codex releases (``.ci/install-codex``) offline
against a local stand-in. They pin down the visibility rules the recovery tool
relies on: what the default ``thread/list`` shows (current provider,
interactive sources, not archived) and how to list the rest.
"""


import pytest

import codex_harness as harness

pytestmark = pytest.mark.realcodex


require_release = harness.require_release




@pytest.fixture(scope="module", params=harness.RELEASES)
def sample(request, standin, tmp_path_factory):
    """One populated home per release, shared by the read-only tests:
    two interactive threads, one exec thread, one archived thread, all made
    under the built-in ``openai`` provider."""
    version = request.param
    binary = require_release(version)
    root = tmp_path_factory.mktemp("codex-%s" % version)
    cwd = root / "project"
    cwd.mkdir()
    home = harness.build_home(version, root / "home", standin)
    ids = harness.populate_sample_home(version, home, cwd)
    return {"version": version, "binary": binary, "home": home, "cwd": cwd,
            "ids": ids}


@pytest.fixture
def server(sample):
    with harness.AppServer(sample["binary"], sample["home"],
                           cwd=sample["cwd"]) as app_server:
        yield app_server


def user_texts(turn):
    return [part["text"] for item in turn["items"]
            if item["type"] == "userMessage"
            for part in item["content"] if part.get("type") == "text"]


def agent_texts(turn):
    return [item["text"] for item in turn["items"]
            if item["type"] == "agentMessage"]


def test_interactive_thread_is_listed_and_reads_back_both_turns(sample,
                                                                server):
    thread_id = sample["ids"]["interactive"][0]
    listed = server.list_threads()
    assert thread_id in [item["id"] for item in listed]
    item = next(item for item in listed if item["id"] == thread_id)
    assert item["source"] == "vscode"
    assert item["modelProvider"] == "openai"
    assert item["preview"] == "first question in alpha"

    thread = server.read_thread(thread_id)
    turns = thread["turns"]
    assert [user_texts(turn) for turn in turns] == [
        ["first question in alpha"], ["second question in alpha"]]
    assert [agent_texts(turn) for turn in turns] == [
        ["echo: first question in alpha"], ["echo: second question in alpha"]]


def test_exec_thread_is_listed_only_when_exec_is_asked_for(sample, server):
    exec_id = sample["ids"]["exec"]
    assert exec_id not in server.listed_ids()
    assert exec_id in server.listed_ids(sourceKinds=["exec"])
    # The sources a user sees stay visible alongside it.
    both = server.listed_ids(sourceKinds=["vscode", "exec"])
    assert set(sample["ids"]["interactive"]) | {exec_id} <= set(both)


def test_archived_thread_is_listed_only_with_archived(sample, server):
    archived_id = sample["ids"]["archived"]
    assert archived_id not in server.listed_ids()
    assert server.listed_ids(archived=True) == [archived_id]
    archived_file = [p.name for p in
                     (sample["home"] / "archived_sessions").iterdir()]
    assert any(archived_id in name for name in archived_file)


def test_default_listing_is_interactive_threads_of_the_provider(sample,
                                                                server):
    assert sorted(server.listed_ids()) == sorted(
        sample["ids"]["interactive"])


@pytest.mark.parametrize("version", harness.RELEASES)
def test_provider_switch_hides_threads_until_all_providers_are_asked_for(
        version, standin, tmp_path):
    binary = require_release(version)
    cwd = tmp_path / "project"
    cwd.mkdir()
    home = harness.build_home(version, tmp_path / "home", standin,
                              provider="openai")
    served_before = standin.responses_served
    with harness.AppServer(binary, home, cwd=cwd) as server:
        made = [server.start_thread(cwd) for _ in range(2)]
        for thread_id in made:
            server.run_turn(thread_id, "made under openai")
        assert sorted(server.listed_ids()) == sorted(made)
    # Every turn went to the local stand-in.
    assert standin.responses_served == served_before + 2

    harness.write_config(home, harness.CUSTOM_PROVIDER, standin.base_url)
    with harness.AppServer(binary, home, cwd=cwd) as server:
        assert server.listed_ids() == []
        everything = server.list_threads(modelProviders=[])
        assert sorted(item["id"] for item in everything) == sorted(made)
        assert {item["modelProvider"] for item in everything} == {"openai"}
        # A thread started now belongs to the new provider and is listed.
        fresh = server.start_thread(cwd)
        server.run_turn(fresh, "made under the custom provider")
        assert server.listed_ids() == [fresh]

