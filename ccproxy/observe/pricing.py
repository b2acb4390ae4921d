"""The ``pricing`` plugin: every proxied request's API-equivalent cost, from a price table.

The table ships with the package (``prices.json``); ``ccproxy pricing update [URL]`` fetches a newer one
into the user's data directory, and ``[plugins.pricing.models]`` in the config overrides or adds models.
A model is found by its exact name, else by the longest table name it starts with followed by ``-``
(``claude-sonnet-4-5-20250929`` → ``claude-sonnet-4-5``). An unknown model gets no cost and one warning.
"""

from __future__ import annotations

import datetime as dt
import importlib.resources
import os
import tempfile
import urllib.request
from pathlib import Path
from typing import Any, Literal

import orjson
import structlog
from pydantic import Field, ValidationError

from ccproxy.config import StrictModel, user_data_dir
from ccproxy.plugins import Plugin, PluginContext, PluginSettings, RequestEvent, Usage, hookimpl

log = structlog.get_logger("ccproxy.pricing")
DEFAULT_URL = "https://raw.githubusercontent.com/CaddyGlow/ccproxy-api/main/ccproxy/observe/prices.json"
_MAX_TABLE_BYTES = 1 << 20
_CACHE_LIMIT = 1024  # distinct model names remembered (client-chosen names are unbounded)


class ModelPrice(StrictModel):
    """USD per million tokens. Cache prices default to the input price when a model has none."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_read: float | None = Field(None, ge=0)
    cache_write: float | None = Field(None, ge=0)

    def rates(self) -> tuple[float, float, float, float]:
        """Input, output, cache-read and cache-write prices. Reasoning tokens are part of output_tokens
        (both APIs bill them as output), so they have no price of their own."""
        read = self.input if self.cache_read is None else self.cache_read
        write = self.input if self.cache_write is None else self.cache_write
        return (self.input, self.output, read, write)


class PriceTable(StrictModel):
    """The documented JSON format of a price table (``ccproxy pricing update`` refuses anything else)."""

    format: Literal[1]
    updated: dt.date
    currency: Literal["USD"] = "USD"
    unit: Literal["per million tokens"] = "per million tokens"
    source: str = ""
    models: dict[str, ModelPrice] = Field(min_length=1)


class PricingSettings(PluginSettings):
    models: dict[str, ModelPrice] = Field(
        default_factory=dict, description="Prices that override or extend the table (USD per million tokens)"
    )


def user_table_path() -> Path:
    return user_data_dir() / "prices.json"


def shipped_table() -> PriceTable:
    data = importlib.resources.files("ccproxy.observe").joinpath("prices.json").read_bytes()
    return PriceTable.model_validate(orjson.loads(data))


def parse_table(data: bytes) -> PriceTable:
    """A table from JSON bytes; ``ValueError`` with a one-line reason when it is not a valid table."""
    try:
        return PriceTable.model_validate(orjson.loads(data))
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "table"
        raise ValueError(f"{where}: {err['msg'].lower()}") from None


def active_table() -> tuple[PriceTable, str]:
    """The fetched table when there is a valid one no older than the shipped one, else the shipped one."""
    shipped = shipped_table()
    path = user_table_path()
    try:
        fetched = parse_table(path.read_bytes())
    except FileNotFoundError:
        return shipped, "shipped with ccproxy"
    except (OSError, ValueError) as exc:
        log.warning("ignoring the fetched price table", path=str(path), error=str(exc))
        return shipped, "shipped with ccproxy"
    if fetched.updated < shipped.updated:
        return shipped, "shipped with ccproxy (newer than the fetched table)"
    return fetched, str(path)


class Prices:
    """Model name → price, with the config's overrides on top of the table."""

    def __init__(self, table: PriceTable, overrides: dict[str, ModelPrice] | None = None) -> None:
        self.table = table
        self.models = {**table.models, **(overrides or {})}
        # longest first, so "gpt-5.1-codex-mini-x" finds "gpt-5.1-codex-mini" before "gpt-5.1"
        self._prefixes = sorted(self.models, key=len, reverse=True)
        self._cache: dict[str, ModelPrice | None] = {}
        self._rates: dict[str, tuple[float, float, float, float]] = {}  # the hot path's view of the prices
        self._warned: set[str] = set()

    def lookup(self, model: str) -> ModelPrice | None:
        try:
            return self._cache[model]
        except KeyError:
            pass
        price = self.models.get(model)
        if price is None:
            price = next(
                (self.models[p] for p in self._prefixes if model.startswith(p) and model[len(p)] == "-"),
                None,
            )
        if len(self._cache) < _CACHE_LIMIT:
            self._cache[model] = price
        return price

    def cost(self, model: str | None, usage: Usage | None) -> float | None:
        if model is None or usage is None:
            return None
        rates = self._rates.get(model)
        if rates is None:
            rates = self._rates_of(model)
            if rates is None:
                return None
        return (
            usage.input_tokens * rates[0]
            + usage.output_tokens * rates[1]
            + usage.cache_read_tokens * rates[2]
            + usage.cache_write_tokens * rates[3]
        ) / 1_000_000

    def _rates_of(self, model: str) -> tuple[float, float, float, float] | None:
        """Per-token-kind prices of ``model`` (cached with its price), or ``None`` with a one-time warning."""
        price = self.lookup(model)
        if price is None:
            if model not in self._warned and len(self._warned) < _CACHE_LIMIT:
                self._warned.add(model)
                log.warning("no price for this model; its requests get no cost", model=model)
            return None
        rates = price.rates()
        if len(self._rates) < _CACHE_LIMIT:
            self._rates[model] = rates
        return rates


class PricingPlugin(Plugin):
    name = "pricing"
    settings_model = PricingSettings

    def __init__(self) -> None:
        self.prices: Prices | None = None

    async def startup(self, ctx: PluginContext) -> None:
        table, where = active_table()
        self.prices = Prices(table, ctx.settings.models)
        log.debug("price table loaded", source=where, updated=str(table.updated), models=len(table.models))

    @hookimpl(tryfirst=True)  # the ledger and the metrics read cost_usd after this
    def ccproxy_request_finished(self, event: RequestEvent) -> None:
        # a provider that knows the real cost (SDK mode: the agent's own figure) has set it already
        prices = self.prices
        if prices is not None and event.cost_usd is None:
            event.cost_usd = prices.cost(event.model_served or event.model, event.usage)


def fetch_table(url: str, timeout: float = 30.0) -> bytes:
    """The bytes at ``url`` (http, https or file), at most 1 MiB."""
    if not url.startswith(("http://", "https://", "file://")):
        raise ValueError(f"unsupported URL (http, https or file only): {url}")
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        data: bytes = resp.read(_MAX_TABLE_BYTES + 1)
    if len(data) > _MAX_TABLE_BYTES:
        raise ValueError("price table larger than 1 MiB")
    return data


def update_table(url: str) -> PriceTable:
    """Fetch, validate and atomically install a table; a bad one raises and leaves the old one in place."""
    table = parse_table(fetch_table(url))
    path = user_table_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".prices-", suffix=".json")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(
                orjson.dumps(table.model_dump(mode="json", exclude_none=True), option=orjson.OPT_INDENT_2)
            )
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return table


def table_rows(prices: Prices) -> list[dict[str, Any]]:
    return [{"model": name, **price.model_dump()} for name, price in sorted(prices.models.items())]
