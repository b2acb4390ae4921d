"""``ccproxy keys``: client keys with budgets and rate limits (the mechanism is ``ccproxy.keys``)."""

from __future__ import annotations

from typing import Annotated, Any, NoReturn, Optional

import typer

keys_app = typer.Typer(help="Client keys with budgets and rate limits.", no_args_is_help=True)


def _fail(message: str) -> NoReturn:
    from ccproxy.cli import fail  # the command line's one error line (imported when a command runs)

    fail(message)


def _keys_call(fn: Any) -> Any:
    from ccproxy.auth.credential import CredentialError
    from ccproxy.keys import KeyCommandError

    try:
        return fn()
    except (KeyCommandError, CredentialError, OSError) as exc:
        _fail(str(exc))


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="A name for the tool or person using the key")],
    budget_usd: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option("--budget-usd", help="Spend cap per period (API-equivalent USD)"),
    ] = None,
    period: Annotated[str, typer.Option("--period", help="Budget period: day, week or month")] = "month",
    rpm: Annotated[Optional[int], typer.Option("--rpm", help="Requests per minute")] = None,  # noqa: UP045
    providers: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--providers", help="Comma-separated providers the key may use (claude,codex)"),
    ] = None,
    expires: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--expires", help="Lifetime, e.g. 12h, 30d, 2w [default: never]"),
    ] = None,
) -> None:
    """Create a key; it is printed once, alone on the last line (only its hash is stored)."""
    from ccproxy.keys import KeyFile, create_key

    if period not in ("day", "week", "month"):
        _fail(f"unknown period '{period}'; expected day, week or month")
    wanted = [p.strip() for p in providers.split(",") if p.strip()] if providers else None
    key = _keys_call(
        lambda: create_key(
            KeyFile(),
            name,
            budget_usd=budget_usd,
            period=period,  # type: ignore[arg-type]
            rpm=rpm,
            providers=wanted,
            expires_in=expires,
        )
    )
    typer.echo(f"created key {name!r}; it is shown only now, store it safely:", err=True)
    typer.echo(key)


@keys_app.command("list")
def keys_list(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Every key with its limits and spend this period (never the key itself)."""
    from ccproxy.keys import key_rows

    rows = _keys_call(key_rows)
    if as_json:
        import orjson

        typer.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    if not rows:
        typer.echo("no keys (create one with `ccproxy keys create NAME`)")
    for row in rows:
        budget = f"${row['spent_usd']:.2f}/${row['budget_usd']:.2f} per {row['period']}"
        typer.echo(
            f"{row['name']}: {row['state']}"
            + (f", budget {budget}" if row["budget_usd"] is not None else "")
            + (f", {row['rpm']} rpm" if row["rpm"] else "")
            + (f", providers {','.join(row['providers'])}" if row["providers"] else "")
        )


@keys_app.command("revoke")
def keys_revoke(name: Annotated[str, typer.Argument(help="The key's name")]) -> None:
    """Revoke a key; a running proxy refuses it from the next request on."""
    from ccproxy.keys import KeyFile, revoke_key

    _keys_call(lambda: revoke_key(KeyFile(), name))
    typer.echo(f"revoked key {name!r}")
