"""What ``ccproxy config ...`` and ``ccproxy plugins list`` print; kept out of cli.py so --help stays fast."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from ccproxy.config import LoadedConfig, Settings, user_config_path
from ccproxy.plugins import PluginSet, load_plugins


def effective(config: LoadedConfig, plugins: PluginSet) -> list[tuple[str, Any, str]]:
    """Every setting as ``(dotted key, shown value, source)``; secrets masked."""
    rows: list[tuple[str, Any, str]] = []
    settings = config.settings
    for section in ("server", "logging", "security"):
        rows.extend(_rows(getattr(settings, section), section, config))
    for entry in plugins.plugins:
        if entry.ctx is not None:
            rows.extend(_rows(entry.ctx.settings, f"plugins.{entry.name}", config))
    return rows


def _rows(model: BaseModel, prefix: str, config: LoadedConfig) -> list[tuple[str, Any, str]]:
    rows: list[tuple[str, Any, str]] = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        dotted = f"{prefix}.{name}"
        if isinstance(value, BaseModel):
            rows.extend(_rows(value, dotted, config))
            continue
        rows.append((dotted, _shown(value), _source(dotted, config)))
    return rows


def _source(dotted: str, config: LoadedConfig) -> str:
    if dotted in config.sources:
        return config.sources[dotted]
    # a whole table (e.g. a list of alias rules) set at a parent key
    parent = dotted
    while "." in parent:
        parent = parent.rpartition(".")[0]
        if parent in config.sources:
            return config.sources[parent]
    child = next((s for k, s in config.sources.items() if k.startswith(dotted + ".")), None)
    return child or "default"


def _shown(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return "***" if value.get_secret_value() else ""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_shown(v) for v in value]
    return value


def show(config: LoadedConfig, *, as_json: bool) -> None:
    plugins = load_plugins(config)
    rows = effective(config, plugins)
    if as_json:
        print(json.dumps({k: {"value": v, "source": s} for k, v, s in rows}, indent=2, default=str))
        return
    print_table(
        f"ccproxy settings (file: {config.file or 'none'})",
        ("setting", "source", "value"),  # the value last: a long one (alias rules) pushes nothing right
        [(k, s, v if isinstance(v, str) else json.dumps(v, default=str)) for k, v, s in rows],
    )


def list_plugins(config: LoadedConfig) -> None:
    plugins = load_plugins(config)
    print_table(
        "ccproxy plugins",
        ("name", "enabled", "why", "version"),
        [(e.name, "yes" if e.enabled else "no", e.why, e.version) for e in plugins.plugins],
    )


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A table on a terminal; otherwise (a pipe, a file) plain aligned columns, never cut or wrapped."""
    if not sys.stdout.isatty():
        widths = [max(len(str(r[i])) for r in [columns, *rows]) for i in range(len(columns))]
        for row in [columns, *rows]:
            print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(Text(str(cell)) for cell in row))  # plain text: a value's [brackets] stay

    Console().print(table)


def schema() -> str:
    from ccproxy.plugins import _entry_points

    doc = Settings.model_json_schema()
    plugin_props: dict[str, Any] = {}
    for ep in _entry_points():
        try:
            obj = ep.load()
            plugin = obj() if isinstance(obj, type) else obj
            plugin_props[ep.name] = plugin.settings_model.model_json_schema()
        except Exception as exc:  # a broken plugin still leaves the core schema usable
            plugin_props[ep.name] = {"description": f"failed to load: {exc}"}
    doc["properties"]["plugins"] = {
        "type": "object",
        "properties": plugin_props,
        "additionalProperties": False,
    }
    return json.dumps(doc, indent=2)


def init(path: Path | None, *, force: bool) -> Path:
    from ccproxy.plugins import _entry_points

    target = path or user_config_path()
    if target.exists() and not force:
        raise FileExistsError(str(target))
    lines = [
        "# ccproxy configuration. Precedence: command-line flags > environment > this file > defaults.",
        "# Environment variables nest with '__', e.g. SERVER__PORT=9000, PLUGINS__CLAUDE_API__BASE_URL=...",
        "# Every setting is listed with its default, commented out; uncomment what you change.",
        "",
    ]
    defaults = Settings()
    for section in ("server", "logging", "security"):
        lines.extend(_toml_section(section, getattr(defaults, section)))
    for ep in _entry_points():
        try:
            obj = ep.load()
            plugin = obj() if isinstance(obj, type) else obj
            lines.extend(_toml_section(f"plugins.{ep.name}", plugin.settings_model()))
        except Exception:
            continue
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target


def _toml_section(name: str, model: BaseModel) -> list[str]:

    lines = [f"[{name}]"]
    nested: list[tuple[str, BaseModel]] = []
    for field_name, info in type(model).model_fields.items():
        value = getattr(model, field_name)
        if isinstance(value, BaseModel):
            nested.append((f"{name}.{field_name}", value))
            continue
        if info.description:
            lines.append(f"# {info.description}")
        shown = _shown(value)
        # Commented out: the file documents every default without pinning it (defaults can improve).
        if shown is None or shown == "" or isinstance(value, SecretStr):
            lines.append(f"# {field_name} = ...")
        else:
            lines.append("# " + f"{field_name} = {_toml_value(shown)}".replace("\n", "\n# "))
    lines.append("")
    for sub_name, sub in nested:
        lines.extend(_toml_section(sub_name, sub))
    return lines


def _toml_value(value: Any) -> str:
    """A TOML literal; lists of tables become arrays of inline tables, one per line."""
    import tomlkit

    if isinstance(value, dict):
        table = tomlkit.inline_table()
        table.update(value)
        return str(table.as_string())
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        rows = []
        for entry in value:
            table = tomlkit.inline_table()
            table.update({k: v for k, v in entry.items() if v is not None})
            rows.append(f"    {table.as_string()},")
        return "[\n" + "\n".join(rows) + "\n]"
    return str(tomlkit.item(value).as_string())
