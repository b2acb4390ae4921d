"""The ``ccproxy`` command. Heavy modules are imported inside the commands so ``--help`` stays instant."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer

from ccproxy import __version__
from ccproxy.keys_cli import keys_app
from ccproxy.observe.cli import pricing_app, usage_app

app = typer.Typer(
    name="ccproxy",
    help="Use your Claude and ChatGPT subscriptions through the standard Anthropic and OpenAI APIs.",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    add_completion=False,  # our own --show-completion/--install-completion take the shell's name
    context_settings={"help_option_names": ["-h", "--help"]},
)
config_app = typer.Typer(help="Show, create and describe the configuration.", no_args_is_help=True)
plugins_app = typer.Typer(help="Inspect plugins.", no_args_is_help=True)
dev_app = typer.Typer(help="Development helpers.", no_args_is_help=True)
auth_app = typer.Typer(help="Log in, inspect and refresh provider credentials.", no_args_is_help=True)
permissions_app = typer.Typer(help="Answer the SDK mode agent's tool-use requests.", no_args_is_help=True)
app.add_typer(auth_app, name="auth")
app.add_typer(permissions_app, name="permissions")
app.add_typer(keys_app, name="keys")
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


SHELLS = ("bash", "zsh", "fish", "powershell", "pwsh")
COMPLETE_VAR = "_CCPROXY_COMPLETE"


def _shell(value: str) -> str:
    shell = value.lower()
    if shell not in SHELLS:
        fail(f"unknown shell '{value}'; expected one of {', '.join(SHELLS)}")
    return shell


def _show_completion(value: str | None) -> None:
    if value:
        from typer._completion_shared import get_completion_script

        shell = _shell(value)
        script = get_completion_script(prog_name="ccproxy", complete_var=COMPLETE_VAR, shell=shell)
        if shell == "zsh":  # compdef exists only after compinit, which a plain ~/.zshrc may not run
            guard = "(( $+functions[compdef] )) || { autoload -Uz compinit && compinit -u }\ncompdef "
            script = script.replace("\ncompdef ", "\n" + guard, 1)
        typer.echo(script)
        raise typer.Exit()


def _install_completion(value: str | None) -> None:
    if value:
        from typer._completion_shared import install

        shell, path = install(shell=_shell(value), prog_name="ccproxy", complete_var=COMPLETE_VAR)
        typer.echo(f"{shell} completion installed in {path}; it takes effect in a new shell")
        raise typer.Exit()


def _detected_shell() -> str:
    """The shell ccproxy runs under (for a bare --show-completion / --install-completion)."""
    from typer._completion_shared import _get_shell_name

    return _get_shell_name() or Path(os.environ.get("SHELL", "bash")).name


def _completion_option(flag: str, callback: Any, help_text: str) -> Any:
    return typer.Option(
        flag, metavar="SHELL", callback=callback, is_eager=True, expose_value=False, help=help_text
    )


@app.callback()
def main_callback(
    version: Annotated[
        bool, typer.Option("--version", "-V", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
    show_completion: Annotated[
        Optional[str],  # noqa: UP045
        _completion_option(
            "--show-completion",
            _show_completion,
            "Print the completion script for SHELL (bash, zsh, fish, powershell; default: this shell), "
            'e.g. eval "$(ccproxy --show-completion zsh)".',
        ),
    ] = None,
    install_completion: Annotated[
        Optional[str],  # noqa: UP045
        _completion_option(
            "--install-completion",
            _install_completion,
            "Install completion for SHELL (default: this shell) in its startup file.",
        ),
    ] = None,
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
    auth_token_file: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(
            "--auth-token-file",
            help="Read the auth token from this file (kept out of the process list)",
            show_default=False,
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
    if auth_token is not None and auth_token_file is not None:
        fail("give either --auth-token or --auth-token-file, not both")
    if auth_token is not None:
        typer.echo(
            "ccproxy: warning: a token given with --auth-token is visible to every local user in the process "
            "list; prefer --auth-token-file FILE or the CCPROXY_AUTH_TOKEN variable",
            err=True,
        )
    if auth_token_file is not None:
        auth_token = _read_token_file(auth_token_file)
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


def _read_token_file(path: Path) -> str:
    try:
        token = path.expanduser().read_text(encoding="utf-8").strip()
        mode = path.expanduser().stat().st_mode
    except OSError as exc:
        fail(f"cannot read --auth-token-file {path}: {exc.strerror}")
    except UnicodeDecodeError:
        fail(f"--auth-token-file {path} is not UTF-8 text")
    if not token or "\n" in token:
        fail(f"--auth-token-file {path} must hold the token on one line")
    if mode & 0o077:
        typer.echo(f"ccproxy: warning: {path} is readable by other users; chmod 600 it", err=True)
    return token


@permissions_app.command("watch")
def permissions_watch(
    url: Annotated[str, typer.Option("--url", help="The ccproxy server")] = "http://127.0.0.1:8000",
    auth_token: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--auth-token",
            envvar="CCPROXY_AUTH_TOKEN",
            help="The server's auth token [default: $CCPROXY_AUTH_TOKEN]",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Follow permission requests and answer each with y/n; reconnects when the server restarts."""
    import asyncio

    from ccproxy.permissions.watch import watch

    try:
        asyncio.run(watch(url, auth_token))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


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


AccountOption = Annotated[
    str | None,
    typer.Option(
        "--account", help="A named account (one of several logins of this provider)", show_default=False
    ),
]


@auth_app.command("login")
def auth_login(
    provider: ProviderArg = "claude",
    no_browser: Annotated[
        bool, typer.Option("--no-browser", help="Print the URL and paste the result back")
    ] = False,
    account: AccountOption = None,
    config: ConfigOption = None,
) -> None:
    """Log in with OAuth (PKCE) in the browser; saved to ccproxy's own store (mode 0600).

    With --account NAME the login is added as a named account beside the others (see "Several accounts")."""
    from ccproxy.auth_cli import provider_name, run_login

    loaded = _load(config)
    _login(lambda: run_login(loaded, provider_name(provider), no_browser=no_browser, account=account))


def _login(fn: Any) -> None:
    try:
        _auth_call(fn)
    except KeyboardInterrupt:  # Ctrl-C at the paste prompt or while waiting for the browser
        typer.echo("", err=True)  # the terminal's line still holds the prompt and ^C
        fail("login aborted (interrupted); nothing was saved", code=130)


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
    _login(lambda: run_login(loaded, "codex", no_browser=no_browser))


@auth_app.command("status")
def auth_status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
    config: ConfigOption = None,
) -> None:
    """Credential source, account, plan and expiry for every provider (never the tokens).

    Exit code 0 when at least one provider has usable credentials, 3 when none has (log in first),
    1 when credentials could not be read, 2 for a configuration error."""
    from ccproxy.auth_cli import print_status

    loaded = _load(config)
    code = _auth_call(lambda: print_status(loaded, as_json=as_json))
    raise typer.Exit(code)


@auth_app.command("logout")
def auth_logout(provider: ProviderArg = "claude", account: AccountOption = None) -> None:
    """Delete ccproxy's own stored login, or the named account's (the CLIs' files are left alone)."""
    from ccproxy.auth_cli import provider_name, run_logout

    removed = _auth_call(lambda: run_logout(provider_name(provider), account))
    what = f"account {account!r}" if account else "ccproxy login"
    typer.echo("removed " + ", ".join(map(str, removed)) if removed else f"no {what} to remove")


@auth_app.command("refresh")
def auth_refresh(provider: ProviderArg = "claude", config: ConfigOption = None) -> None:
    """Refresh the access token now, writing it back where it came from."""
    from ccproxy.auth_cli import provider_name, run_refresh

    loaded = _load(config)
    typer.echo(_auth_call(lambda: run_refresh(loaded, provider_name(provider))))


ProviderOption = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(
        "--provider", help="Whose subscription: claude or codex [default: codex for codex, else claude]"
    ),
]


def _client(value: str, allowed: tuple[str, ...]) -> Any:
    from ccproxy.config import did_you_mean

    if value not in allowed:
        fail(
            f"unknown client '{value}'; expected one of {', '.join(allowed)}"
            + did_you_mean(value, [*allowed])
        )
    return value


def _provider(value: str | None) -> Any:
    from ccproxy.auth_cli import provider_name

    return None if value is None else provider_name(value)


@app.command("env", short_help="Print the settings that point a client at ccproxy.")
def env_command(
    client: Annotated[str, typer.Argument(help="claude, codex, openai or anthropic")],
    provider: ProviderOption = None,
    host: Annotated[Optional[str], typer.Option(help="ccproxy's address [default: from config]")] = None,  # noqa: UP045
    port: Annotated[Optional[int], typer.Option(help="ccproxy's port [default: from config]")] = None,  # noqa: UP045
    config: ConfigOption = None,
) -> None:
    """Print the settings that point a client at ccproxy (exports; Codex: a config.toml snippet)."""
    from ccproxy import clients

    chosen = _client(client, clients.CLIENTS)
    loaded = _load(config)
    server = loaded.settings.server
    url = clients.proxy_url(host or server.host, port or server.port)
    settings = _auth_call(
        lambda: clients.settings_for(chosen, url, clients.client_key(loaded), _provider(provider))
    )
    typer.echo(clients.render(chosen, settings), nl=False)


@app.command(
    "run",
    short_help="Start Claude Code or the Codex CLI pointed at ccproxy.",
    context_settings={
        "allow_extra_args": True,
        "ignore_unknown_options": True,
        "allow_interspersed_args": False,
    },
)
def run_command(
    ctx: typer.Context,
    client: Annotated[
        str,
        typer.Argument(metavar="CLIENT", help="claude or codex; the arguments after it go to that CLI"),
    ],
    mock: Annotated[
        bool, typer.Option("--mock", help="Start an offline ccproxy (fake upstreams) for this run")
    ] = False,
    provider: ProviderOption = None,
    host: Annotated[Optional[str], typer.Option(help="ccproxy's address [default: from config]")] = None,  # noqa: UP045
    port: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(help="ccproxy's port [default: from config; with --mock a free one]"),
    ] = None,
    binary: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--bin", help="The CLI's executable [default: found on PATH]"),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Start Claude Code or the Codex CLI pointed at ccproxy, e.g. ccproxy run claude -p "hi".

    Uses the ccproxy running at the configured address, or starts one for the CLI's lifetime. Nothing is
    written to the CLI's own config files; the exit code is the CLI's."""
    from ccproxy import clients

    chosen = _client(client, clients.RUNNABLE)
    loaded = _load(config)
    serve_args = ["--config", str(config)] if config else []
    code = _auth_call(
        lambda: clients.run(
            loaded,
            chosen,
            ctx.args,
            host=host,
            port=port,
            mock=mock,
            provider=_provider(provider),
            binary=binary,
            serve_args=serve_args,
        )
    )
    raise typer.Exit(code)


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
    from typer._completion_classes import completion_init

    completion_init()  # typer's completion classes answer the scripts --show-completion prints
    click = _click_exceptions()
    args = sys.argv[1:]
    if args and args[-1] in ("--show-completion", "--install-completion"):
        args.append(_detected_shell())  # the bare flag means "for the shell I am in"
    try:
        code = app(args=args, standalone_mode=False, prog_name="ccproxy")
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
    except Exception as exc:
        # A config error found late (e.g. in a plugin's section while the plugins load) is still one
        # line and exit 2, whichever command found it. ccproxy.config is loaded if one was raised.
        config = sys.modules.get("ccproxy.config")
        if config is None or not isinstance(exc, config.ConfigError):
            raise
        typer.echo(f"ccproxy: error: {exc}", err=True)
        code = 2
    sys.exit(code if isinstance(code, int) else 0)
