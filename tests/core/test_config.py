"""Layered configuration: every layer, precedence, discovery, and the error messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from ccproxy.config import ConfigError, load_config
from ccproxy.plugins import load_plugins


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults() -> None:
    config = load_config(env={})
    assert config.settings.server.host == "127.0.0.1"
    assert config.settings.server.port == 8000
    assert config.source_of("server.port") == "default"


def test_precedence_cli_over_env_over_file(tmp_path: Path) -> None:
    toml = write(tmp_path / "c.toml", "[server]\nport = 7000\nhost = '127.0.0.2'\nworkers = 3\n")
    config = load_config(
        config_file=toml, env={"SERVER__PORT": "7100", "SERVER__HOST": "127.0.0.3"}, cli={"server.port": 7200}
    )
    s = config.settings.server
    assert (s.port, s.host, s.workers) == (7200, "127.0.0.3", 3)
    assert config.source_of("server.port") == "cli"
    assert config.source_of("server.host") == "env"
    assert config.source_of("server.workers") == "file"
    assert config.source_of("server.reload") == "default"


def test_env_nesting_and_known_variables(tmp_path: Path) -> None:
    config = load_config(
        env={
            "LOGGING__LEVEL": "debug",
            "CCPROXY_VERBOSE_API": "true",
            "CCPROXY_REQUEST_LOG_DIR": str(tmp_path / "logs"),
            "PLUGINS__CLAUDE_API__BASE_URL": "http://127.0.0.1:9",
            "UNRELATED__THING": "ignored",
            "PATH": "/bin",
        }
    )
    assert config.settings.logging.level == "debug"
    assert config.settings.logging.verbose_api is True
    # the old request-log directory is the raw HTTP logger's directory now (one mechanism)
    assert config.settings.plugins["raw_http_logger"]["log_dir"] == str(tmp_path / "logs")
    assert config.settings.plugins["claude_api"]["base_url"] == "http://127.0.0.1:9"
    plugins = load_plugins(config)
    entry = plugins.get("claude_api")
    assert entry is not None and entry.ctx is not None
    assert entry.ctx.settings.base_url == "http://127.0.0.1:9"


def test_security_and_limits_from_env() -> None:
    config = load_config(
        env={
            "CCPROXY_AUTH_TOKEN": "sk-env-token",
            "SECURITY__ALLOWED_HOSTS": '["proxy.lan"]',
            "SECURITY__ALLOWED_ORIGINS": '["http://localhost:3000"]',
            "LIMITS__MAX_BODY_BYTES": "1048576",
            "LIMITS__HEADER_TIMEOUT_SECONDS": "2.5",
        }
    )
    security, limits = config.settings.security, config.settings.limits
    assert security.auth_token is not None and security.auth_token.get_secret_value() == "sk-env-token"
    assert config.origins["security.auth_token"] == "environment variable CCPROXY_AUTH_TOKEN"
    assert security.allowed_hosts == ["proxy.lan"] and security.allowed_origins == ["http://localhost:3000"]
    assert limits.max_body_bytes == 1 << 20 and limits.header_timeout_seconds == 2.5
    assert load_config(env={}).settings.limits.max_body_bytes == 32 << 20
    with pytest.raises(ConfigError, match=r"limits\.max_headers"):
        load_config(env={"LIMITS__MAX_HEADERS": "0"})


def test_plugin_oauth_override_keeps_other_defaults() -> None:
    config = load_config(env={"PLUGINS__CLAUDE_API__OAUTH__TOKEN_URL": "http://127.0.0.1:9/v1/oauth/token"})
    entry = load_plugins(config).get("claude_api")
    assert entry is not None and entry.ctx is not None
    oauth = entry.ctx.settings.oauth
    assert oauth.token_url == "http://127.0.0.1:9/v1/oauth/token"
    assert oauth.client_id == "9d1c250a-e61b-44d9-88ed-5944d1962f5e"


def test_json_lists_from_env() -> None:
    config = load_config(env={"PLUGINS__CLAUDE_API__REQUIRED_BETAS": '["oauth-2025-04-20"]'})
    entry = load_plugins(config).get("claude_api")
    assert entry is not None and entry.ctx is not None
    assert entry.ctx.settings.required_betas == ["oauth-2025-04-20"]


@pytest.mark.parametrize("name", [".ccproxy.toml", "ccproxy.toml"])
def test_discovers_file_in_cwd(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / name, "[server]\nport = 7300\n")
    monkeypatch.chdir(tmp_path)
    config = load_config(env={})
    assert config.settings.server.port == 7300
    assert config.file == Path(name)


def test_dot_file_wins_over_plain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / ".ccproxy.toml", "[server]\nport = 7301\n")
    write(tmp_path / "ccproxy.toml", "[server]\nport = 7302\n")
    monkeypatch.chdir(tmp_path)
    assert load_config(env={}).settings.server.port == 7301


def test_xdg_config_and_ccproxy_config_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "xdg" / "ccproxy" / "config.toml", "[server]\nport = 7400\n")
    assert load_config(env={"XDG_CONFIG_HOME": str(tmp_path / "xdg")}).settings.server.port == 7400
    explicit = write(tmp_path / "other.toml", "[server]\nport = 7401\n")
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "CCPROXY_CONFIG": str(explicit)}
    assert load_config(env=env).settings.server.port == 7401
    flag = write(tmp_path / "flag.toml", "[server]\nport = 7402\n")
    assert load_config(config_file=flag, env=env).settings.server.port == 7402


def test_unknown_key_names_key_file_and_suggestion(tmp_path: Path) -> None:
    toml = write(tmp_path / "c.toml", "[server]\nprot = 1\n")
    with pytest.raises(ConfigError) as err:
        load_config(config_file=toml, env={})
    message = str(err.value)
    assert "'server.prot'" in message and str(toml) in message and "did you mean 'server.port'" in message


def test_unknown_env_key_names_the_variable() -> None:
    with pytest.raises(
        ConfigError, match=r"environment variable LOGGING__LEVLE.*did you mean 'logging.level'"
    ):
        load_config(env={"LOGGING__LEVLE": "debug"})


def test_bad_value_names_key_value_and_expectation(tmp_path: Path) -> None:
    toml = write(tmp_path / "c.toml", "[server]\nport = 'eighty'\n")
    with pytest.raises(ConfigError) as err:
        load_config(config_file=toml, env={})
    message = str(err.value)
    assert "'eighty'" in message and "'server.port'" in message and "integer" in message


def test_bad_value_in_plugin_section() -> None:
    config = load_config(env={"PLUGINS__CLAUDE_API__RETRY_ATTEMPTS": "many"})
    with pytest.raises(
        ConfigError, match=r"plugins.claude_api.retry_attempts.*PLUGINS__CLAUDE_API__RETRY_ATTEMPTS"
    ):
        load_plugins(config)


def test_unknown_plugin_key_and_unknown_plugin(tmp_path: Path) -> None:
    toml = write(tmp_path / "c.toml", "[plugins.claude_api]\nbase_ulr = 'x'\n")
    with pytest.raises(
        ConfigError, match=r"plugins.claude_api.base_ulr.*did you mean 'plugins.claude_api.base_url'"
    ):
        load_plugins(load_config(config_file=toml, env={}))
    toml = write(tmp_path / "d.toml", "[plugins.claude_ap]\nenabled = true\n")
    with pytest.raises(ConfigError, match=r"unknown plugin 'plugins.claude_ap'.*did you mean 'claude_api'"):
        load_plugins(load_config(config_file=toml, env={}))


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    toml = write(tmp_path / "c.toml", "[server\n")
    with pytest.raises(ConfigError, match=r"invalid TOML"):
        load_config(config_file=toml, env={})
    with pytest.raises(ConfigError, match=r"config file not found"):
        load_config(config_file=tmp_path / "nope.toml", env={})
    with pytest.raises(ConfigError, match=r"CCPROXY_CONFIG"):
        load_config(env={"CCPROXY_CONFIG": str(tmp_path / "nope.toml")})


def test_secret_value_is_not_echoed_in_errors() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(env={}, cli={"security.auth_token": 12345, "security.allow_unauthenticated": "maybe"})
    assert "12345" not in str(err.value)


def test_bad_value_overridden_by_a_higher_layer_is_still_an_error(tmp_path: Path) -> None:
    toml = write(tmp_path / "c.toml", "[server]\nport = 'abc'\n")
    with pytest.raises(ConfigError, match=r"'abc' for 'server.port' \(in .*c.toml\)"):
        load_config(config_file=toml, env={"SERVER__PORT": "9000"})
    with pytest.raises(ConfigError, match=r"'x' for 'server.workers' .*SERVER__WORKERS"):
        load_config(env={"SERVER__WORKERS": "x"}, cli={"server.workers": 2})
    plugin = write(tmp_path / "p.toml", "[plugins.codex]\nenabled = 'maybe'\n")
    config = load_config(config_file=plugin, env={"PLUGINS__CODEX__ENABLED": "true"})  # core is fine
    with pytest.raises(ConfigError, match=r"'maybe' for 'plugins.codex.enabled' \(in .*p.toml\)"):
        load_plugins(config)
    good = load_config(config_file=write(tmp_path / "g.toml", "[plugins.codex]\nenabled = false\n"), env={})
    assert load_plugins(good).get("codex").enabled is False  # type: ignore[union-attr]


def test_plugin_alias_table_maps_old_section_names(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from ccproxy import config as config_module

    monkeypatch.setitem(config_module.PLUGIN_ALIASES, "codexconfig", "codex")
    via_env = load_config(env={"PLUGINS__CODEXCONFIG__ENABLED": "true"})
    assert load_plugins(via_env).get("codex").enabled is True  # type: ignore[union-attr]
    assert via_env.origins["plugins.codex.enabled"] == "environment variable PLUGINS__CODEXCONFIG__ENABLED"
    toml = write(tmp_path / "c.toml", "[plugins.CodexConfig]\nenabled = true\n")
    assert load_plugins(load_config(config_file=toml, env={})).get("codex").enabled is True  # type: ignore[union-attr]


def test_seed_spelling_is_the_raw_http_logger_plugin() -> None:
    """PLUGINS__RAWHTTPLOGGERCONFIG__* means plugins.raw_http_logger.*: accepted once that plugin is
    installed; until then one line naming the plugin it means."""
    config = load_config(env={"PLUGINS__RAWHTTPLOGGERCONFIG__ENABLED": "true"})
    installed = {p.name for p in load_plugins(load_config(env={})).plugins}
    if "raw_http_logger" in installed:
        assert load_plugins(config).get("raw_http_logger").enabled is True  # type: ignore[union-attr]
        return
    with pytest.raises(ConfigError) as caught:
        load_plugins(config)
    message = str(caught.value)
    assert "plugins.raw_http_logger" in message and "PLUGINS__RAWHTTPLOGGERCONFIG__ENABLED" in message
    assert "installed plugins: claude_api" in message and "\n" not in message


def test_unknown_plugin_suggests_by_folded_spelling() -> None:
    with pytest.raises(ConfigError, match="did you mean 'claude_api'"):
        load_plugins(load_config(env={"PLUGINS__CLAUDEAPICONFIG__ENABLED": "true"}))


def test_default_limits_serve_the_thousand_stream_burst() -> None:
    """The benchmark's target (1,000 concurrent slow streams, bench/runner.py slow_conns) must be served by a
    proxy as shipped: a lower in-flight default once refused half of them with 503s."""
    from bench.runner import Settings
    from ccproxy.config import LimitsSettings

    limits = LimitsSettings()
    burst = Settings().slow_conns
    assert limits.max_requests_in_flight >= burst and limits.max_connections >= burst
