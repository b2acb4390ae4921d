"""The ``ccproxy`` command. Heavy modules are imported inside the commands so ``--help`` stays instant."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer

from ccproxy import __version__
from ccproxy.observe.cli import pricing_app, usage_app

app = typer.Typer(
    name="ccproxy",
    help="Use your Claude and ChatGPT subscriptions through the standard Anthropic and OpenAI APIs.",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
config_app = typer.Typer(help="Show, create and describe the configuration.", no_args_is_help=True)
plugins_app = typer.Typer(help="Inspect plugins.", no_args_is_help=True)
dev_app = typer.Typer(help="Development helpers.", no_args_is_help=True)
auth_app = typer.Typer(help="Log in, inspect and refresh provider credentials.", no_args_is_help=True)
app.add_typer(auth_app, name="auth")
app.add_typer(config_app, name="config")
app.add_typer(plugins_app, name="plugins")
app.add_typer(dev_app, name="dev")
app.add_typer(usage_app, name="usage")
app.add_typer(pricing_app, name="pricing")

ConfigOption = Annotated[
    Optional[Path],  # noqa: UP045 (typer needs Optional on 3.11)
    typer.Option("--config", "-c", help="TOML config file (default: $CCPROXY_CONFIG, ./.ccproxy.toml, ...)"),
]


def fail(message: str, code: int = 2) -> NoReturn:
    """One clear line on stderr, never a traceback."""
    typer.echo(f"ccproxy: error: {message}", err=True)
    raise typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ccproxy {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[
        bool, typer.Option("--version", "-V", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """ccproxy: one local server for Claude (API and SDK) and ChatGPT (Codex) subscriptions."""


def _load(config_file: Path | None, cli: dict[str, Any] | None = None) -> Any:
    from ccproxy.config import ConfigError, load_config

    try:
        return load_config(config_file=config_file, cli=cli)
    except ConfigError as exc:
        fail(str(exc))


@app.command()
def serve(
    host: Annotated[Optional[str], typer.Option(help="Bind address [default: 127.0.0.1]")] = None,  # noqa: UP045
    port: Annotated[Optional[int], typer.Option(help="Port [default: 8000]")] = None,  # noqa: UP045
    reload: Annotated[bool, typer.Option("--reload", help="Restart on code changes")] = False,
    workers: Annotated[Optional[int], typer.Option(help="Worker processes [default: 1]")] = None,  # noqa: UP045
    log_level: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--log-level", help="debug, info, warning or error [default: info]"),
    ] = None,
    config: ConfigOption = None,
    auth_token: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--auth-token", help="Require this token on every route but /health", show_default=False
        ),
    ] = None,
    allow_unauthenticated: Annotated[
        bool, typer.Option("--allow-unauthenticated", help="Allow a non-loopback bind without a token")
    ] = False,
    mock: Annotated[
        bool, typer.Option("--mock", help="Offline mode: built-in fake upstreams, throwaway credentials")
    ] = False,
    enable_plugin: Annotated[
        Optional[list[str]], typer.Option("--enable-plugin", help="Enable a plugin (repeatable)")  # noqa: UP045
    ] = None,
    disable_plugin: Annotated[
        Optional[list[str]], typer.Option("--disable-plugin", help="Disable a plugin (repeatable)")  # noqa: UP045
    ] = None,
) -> None:
    """Run the proxy server."""
    cli: dict[str, Any] = {
        "server.host": host,
        "server.port": port,
        "server.workers": workers,
        "server.reload": reload or None,
        "logging.level": log_level.lower() if log_level else None,
        "security.auth_token": auth_token,
        "security.allow_unauthenticated": allow_unauthenticated or None,
    }
    for name in enable_plugin or ():
        cli[f"plugins.{name}.enabled"] = True
    for name in disable_plugin or ():
        cli[f"plugins.{name}.enabled"] = False
    loaded = _load(config, cli)
    from ccproxy.server import run

    try:
        run(loaded, cli={k: v for k, v in cli.items() if v is not None}, mock=mock, config_file=config)
    except ValueError as exc:
        fail(str(exc))


@config_app.command("show")
def config_show(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Effective settings, each with its source (default, file, env, cli); secrets masked."""
    from ccproxy.config_cli import show

    show(_load(config), as_json=as_json)


@config_app.command("init")
def config_init(
    path: Annotated[Optional[Path], typer.Argument(help="Where to write [default: user config path]")] = None,  # noqa: UP045
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file")] = False,
) -> None:
    """Write a commented TOML config file with every setting at its default."""
    from ccproxy.config_cli import init

    try:
        written = init(path, force=force)
    except FileExistsError as exc:
        fail(f"{exc} exists; use --force to overwrite")
    typer.echo(f"wrote {written}")


@config_app.command("schema")
def config_schema() -> None:
    """The JSON schema of the settings, plugin sections included."""
    from ccproxy.config_cli import schema

    typer.echo(schema())


@config_app.command("codex")
def config_codex(
    enable: Annotated[bool, typer.Option("--enable/--disable", help="Turn the Codex provider on or off")],
    config: ConfigOption = None,
) -> None:
    """Enable or disable the Codex provider in your config file (created if needed, comments kept)."""
    from ccproxy.auth_cli import set_plugin_enabled
    from ccproxy.config import ConfigError

    try:
        path = set_plugin_enabled("codex", enable, config)
    except ConfigError as exc:
        fail(str(exc))
    typer.echo(f"codex provider {'enabled' if enable else 'disabled'} in {path}")


ProviderArg = Annotated[str, typer.Argument(help="claude or codex")]


def _auth_call(fn: Any) -> Any:
    """Run an auth operation; credential problems become one clear line and exit code 1."""
    from ccproxy.auth.credential import CredentialError
    from ccproxy.config import ConfigError

    try:
        return fn()
    except CredentialError as exc:
        fail(exc.message, code=1)
    except ConfigError as exc:
        fail(str(exc))


@auth_app.command("login")
def auth_login(
    provider: ProviderArg = "claude",
    no_browser: Annotated[
        bool, typer.Option("--no-browser", help="Print the URL and paste the result back")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Log in with OAuth (PKCE) in the browser; saved to ccproxy's own store (mode 0600)."""
    from ccproxy.auth_cli import provider_name, run_login

    loaded = _load(config)
    _auth_call(lambda: run_login(loaded, provider_name(provider), no_browser=no_browser))


@auth_app.command("login-openai")
def auth_login_openai(
    no_browser: Annotated[
        bool, typer.Option("--no-browser", help="Print the URL and paste the result back")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Log in to ChatGPT for the Codex provider (same as `ccproxy auth login codex`)."""
    from ccproxy.auth_cli import run_login

    loaded = _load(config)
    _auth_call(lambda: run_login(loaded, "codex", no_browser=no_browser))


@auth_app.command("status")
def auth_status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
    config: ConfigOption = None,
) -> None:
    """Credential source, account, plan and expiry for every provider (never the tokens)."""
    from ccproxy.auth_cli import print_status

    loaded = _load(config)
    _auth_call(lambda: print_status(loaded, as_json=as_json))


@auth_app.command("logout")
def auth_logout(provider: ProviderArg = "claude") -> None:
    """Delete ccproxy's own stored login (the Claude Code / Codex CLI files are left alone)."""
    from ccproxy.auth_cli import provider_name, run_logout

    removed = _auth_call(lambda: run_logout(provider_name(provider)))
    typer.echo("removed " + ", ".join(map(str, removed)) if removed else "no ccproxy login to remove")


@auth_app.command("refresh")
def auth_refresh(provider: ProviderArg = "claude", config: ConfigOption = None) -> None:
    """Refresh the access token now, writing it back where it came from."""
    from ccproxy.auth_cli import provider_name, run_refresh

    loaded = _load(config)
    typer.echo(_auth_call(lambda: run_refresh(loaded, provider_name(provider))))


@plugins_app.command("list")
def plugins_list(config: ConfigOption = None) -> None:
    """Every discovered plugin: name, enabled, why, version."""
    from ccproxy.config_cli import list_plugins

    list_plugins(_load(config))


@dev_app.command("fake-upstream")
def dev_fake_upstream(
    host: Annotated[str, typer.Option(help="Bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8081,
) -> None:
    """Run the fake Anthropic, Codex backend and OAuth servers standalone."""
    from ccproxy.testing import run_fake_upstreams

    run_fake_upstreams(host, port)


def _click_exceptions() -> Any:
    try:  # typer >= 0.20 vendors its own click
        from typer._click import exceptions
    except ImportError:  # pragma: no cover - older typer on the system click
        from click import exceptions  # type: ignore[no-redef]
    return exceptions


def main() -> None:
    click = _click_exceptions()
    try:
        code = app(standalone_mode=False, prog_name="ccproxy")
    except click.NoArgsIsHelpError as exc:
        typer.echo(exc.ctx.get_help() if exc.ctx else "", err=False)
        code = 0
    except click.UsageError as exc:
        # one clear line instead of click's usage block
        typer.echo(f"ccproxy: error: {exc.format_message()}", err=True)
        code = 2
    except typer.Exit as exc:
        code = exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        code = 130
    sys.exit(code if isinstance(code, int) else 0)
