"""config.toml: the stdlib-free TOML reader and the active-provider resolution across releases."""

import pytest

import codex_session_recovery as csr

SAMPLE = '''
# Codex config
model = "gpt-5"
model_provider = "proxy"          # trailing comment
sqlite_home = '/var/codex'
approvals = ["a", 'b',
  "c",   # comment inside an array
]
limits.max_bytes = 1_048_576
ratio = 0.5
enabled = true
disabled = false
path = "C:\\\\Users\\\\ana\\t\\u00e9"
instructions = """
line one
line two"""
raw = \'\'\'
no \\escapes\'\'\'

[model_providers.proxy]
name = "Proxy"
base_url = "http://127.0.0.1:8080/v1"
wire_api = "responses"
env = { "KEY" = "value", other = 2 }

[model_providers."quoted.name"]
base_url = "x"

[[mcp_servers_list]]
name = "first"
[[mcp_servers_list]]
name = "second"
'''


def test_subset_reader_matches_tomllib_where_present():
    parsed = csr.parse_toml_subset(SAMPLE)
    assert parsed["model_provider"] == "proxy"
    assert parsed["sqlite_home"] == "/var/codex"
    assert parsed["approvals"] == ["a", "b", "c"]
    assert parsed["limits"] == {"max_bytes": 1048576}
    assert parsed["ratio"] == 0.5 and parsed["enabled"] is True and parsed["disabled"] is False
    assert parsed["path"] == "C:\\Users\\ana\t\u00e9"
    assert parsed["instructions"] == "line one\nline two"
    assert parsed["raw"] == "no \\escapes"
    assert parsed["model_providers"]["proxy"]["env"] == {"KEY": "value", "other": 2}
    assert parsed["model_providers"]["quoted.name"] == {"base_url": "x"}
    assert [t["name"] for t in parsed["mcp_servers_list"]] == ["first", "second"]
    tomllib = pytest.importorskip("tomllib")
    assert parsed == tomllib.loads(SAMPLE)


@pytest.mark.parametrize("text, fragment", [
    ('a = "unterminated', "unterminated string"),
    ("a = ", "unsupported value"),
    ("[table", "expected ]"),
    ('a = 1\na = 2', "duplicate key"),
    ("a = 1 b", "unexpected text"),
    ('a = "\\q"', "bad escape"),
    ("= 1", "expected a key"),
])
def test_subset_reader_reports_line_and_reason(text, fragment):
    with pytest.raises(csr.TomlError) as caught:
        csr.parse_toml_subset(text)
    assert fragment in str(caught.value)
    assert "(line " in str(caught.value)


def test_subset_reader_handles_crlf_and_bare_newline_values():
    assert csr.parse_toml_subset('a = "x"\r\n[b]\r\nc = 1\r\n') == {"a": "x", "b": {"c": 1}}


def write(home, name, text):
    (home / name).write_text(text, encoding="utf-8")


def test_provider_defaults_to_openai(tmp_path):
    config = csr.load_config(tmp_path, None)
    assert config.provider == "openai"
    assert config.provider_is_default and "names no model_provider" in config.provider_source
    assert config.problems == []


def test_top_level_model_provider(tmp_path):
    write(tmp_path, "config.toml", 'model_provider = "proxy"\n[model_providers.proxy]\nbase_url = "x"\n')
    config = csr.load_config(tmp_path, None)
    assert (config.provider, config.provider_source) == ("proxy", "config.toml model_provider")
    assert config.configured_providers == ["proxy"]
    assert config.knows_provider("proxy") and config.knows_provider("openai")
    assert not config.knows_provider("gone")


def test_legacy_profile_is_followed_and_reported(tmp_path):
    write(tmp_path, "config.toml", 'profile = "work"\nmodel_provider = "a"\n[profiles.work]\nmodel_provider = "b"\n')
    config = csr.load_config(tmp_path, None)
    assert config.provider == "b"
    assert config.profile == "work"
    assert "profile" in config.provider_source
    assert [p["code"] for p in config.problems] == ["legacy_profile"]


def test_profile_file_wins_over_legacy_table(tmp_path):
    write(tmp_path, "config.toml", 'model_provider = "a"\n[profiles.work]\nmodel_provider = "b"\n')
    write(tmp_path, "work.config.toml", 'model_provider = "c"\n[model_providers.c]\nbase_url = "x"\n')
    config = csr.load_config(tmp_path, "work")
    assert (config.provider, config.provider_source) == ("c", "work.config.toml model_provider")
    assert "c" in config.configured_providers


def test_profile_falls_back_to_legacy_table_then_reports_missing(tmp_path):
    write(tmp_path, "config.toml", '[profiles.work]\nmodel_provider = "b"\n')
    assert csr.load_config(tmp_path, "work").provider == "b"
    missing = csr.load_config(tmp_path, "nope")
    assert missing.provider == "openai"
    assert [p["code"] for p in missing.problems] == ["profile_missing"]


@pytest.mark.parametrize("content, code", [
    (b'model_provider = "unterminated\n', "config_unparsable"),
    (b"\xff\xfe not utf-8", "config_unparsable"),
    (b"model_provider = 3\n", "config_unparsable"),
])
def test_bad_config_is_a_problem_not_a_crash(tmp_path, content, code):
    (tmp_path / "config.toml").write_bytes(content)
    config = csr.load_config(tmp_path, None)
    assert config.provider == "openai"
    assert [p["code"] for p in config.problems] == [code]


def test_config_with_bom_is_read(tmp_path):
    (tmp_path / "config.toml").write_bytes(b'\xef\xbb\xbfmodel_provider = "x"\n')
    assert csr.load_config(tmp_path, None).provider == "x"
