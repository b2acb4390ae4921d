"""JSON shape checks for request fields: each raises ``Invalid`` for a value of the wrong shape, and the
path to it is collected on the way out. The per-format field tables that use them: ``formats.fields``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ccproxy.formats.base import JSON, TranslationError

# JSON nesting the proxy can always write back (orjson refuses more than 255 levels).
MAX_DEPTH = 255
INT64 = (1 << 63) - 1
MAX_TOKENS = (1 << 31) - 1  # both upstreams' own ceiling for any token count

Check = Callable[[Any], None]  # raises ``Invalid`` for a value of the wrong shape; never sees ``None``


class Invalid(Exception):
    """A wrong value; the path to it is collected on the way out, so a valid body builds no path strings."""

    def __init__(self, expected: str, value: Any, *steps: str | int) -> None:
        super().__init__(expected)
        self.expected = expected
        self.value = value
        self.steps = list(steps)

    def at(self, step: str | int) -> Invalid:
        self.steps.insert(0, step)
        return self

    def error(self, name: str) -> TranslationError:
        path = name + "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in self.steps)
        return TranslationError(f"{path}: expected {self.expected}, got {_describe(self.value)}", param=path)


_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if type(value) in (int, float):
        return repr(value)
    return _JSON_TYPES.get(type(value), type(value).__name__)


def of_type(kind: type, expected: str) -> Check:
    """A check that the value is exactly of JSON type ``kind`` (``bool`` is not an ``int`` here)."""

    def run(value: Any) -> None:
        if type(value) is not kind:
            raise Invalid(expected, value)

    return run


string = of_type(str, "a string")
boolean = of_type(bool, "a boolean (true or false)")
obj = of_type(dict, "an object")
array = of_type(list, "an array")


def integer(low: int, high: int) -> Check:
    expected = f"an integer from {low} to {high}"

    def run(value: Any) -> None:
        if type(value) is not int or not low <= value <= high:
            raise Invalid(expected, value)

    return run


def number(low: float, high: float) -> Check:
    expected = f"a number from {low:g} to {high:g}"

    def run(value: Any) -> None:
        if type(value) not in (int, float) or not math.isfinite(value) or not low <= value <= high:
            raise Invalid(expected, value)

    return run


def string_or_array(value: Any) -> None:
    if type(value) not in (str, list):
        raise Invalid("a string or an array", value)


def string_or_object(value: Any) -> None:
    if type(value) not in (str, dict):
        raise Invalid("a string or an object", value)


def string_list(value: Any) -> None:
    if type(value) is not list:
        raise Invalid("an array of strings", value)
    for i, item in enumerate(value):
        if type(item) is not str:
            raise Invalid("a string", item, i)


def stop(value: Any) -> None:
    if type(value) is not str:
        string_list(value)


def string_values(value: Any) -> None:
    """An object of strings (OpenAI ``metadata``; Anthropic ``metadata``, whose ``user_id`` may be null)."""
    if type(value) is not dict:
        raise Invalid("an object of strings", value)
    for key, item in value.items():
        if item is not None and type(item) is not str:
            raise Invalid("a string", item, key)


def anything(value: Any) -> None:
    """No shape required: the upstream judges the value, or the route ignores or refuses the field."""


def check_keys(value: JSON, checks: dict[str, Check]) -> None:
    """The optional keys of one object: each present, non-null one is checked (paths built on failure)."""
    for key, check in checks.items():
        item = value.get(key)
        if item is not None:
            try:
                check(item)
            except Invalid as bad:
                raise bad.at(key) from None


def shaped(checks: dict[str, Check]) -> Check:
    """An object whose listed keys have these shapes."""

    def run(value: Any) -> None:
        if type(value) is not dict:
            raise Invalid("an object", value)
        check_keys(value, checks)

    return run


def objects(what: str, item_check: Check) -> Check:
    """An array of objects, each given to ``item_check``."""
    expected, one = f"an array of {what}", f"an object ({what[:-1]})"

    def run(value: Any) -> None:
        if type(value) is not list:
            raise Invalid(expected, value)
        for i, item in enumerate(value):
            if type(item) is not dict:
                raise Invalid(one, item, i)
            try:
                item_check(item)
            except Invalid as bad:
                raise bad.at(i) from None

    return run


def messages(item_check: Check) -> Check:
    """An array of messages; the common plain message (a string ``role`` and string ``content``, nothing else)
    is recognised inline, anything else goes to ``item_check``."""

    def run(value: Any) -> None:
        if type(value) is not list:
            raise Invalid("an array of messages", value)
        for i, item in enumerate(value):
            if type(item) is not dict:
                raise Invalid("an object (message)", item, i)
            if len(item) == 2 and type(item.get("role")) is str and type(item.get("content")) is str:
                continue
            try:
                item_check(item)
            except Invalid as bad:
                raise bad.at(i) from None

    return run


def too_deep(value: Any, depth: int = 0) -> list[str | int] | None:
    """The steps to the first place ``value`` nests deeper than ``MAX_DEPTH`` (cold path: only after orjson
    refused to write a value back)."""
    if depth >= MAX_DEPTH and type(value) in (dict, list):
        return []
    items = value.items() if type(value) is dict else enumerate(value) if type(value) is list else ()
    for key, item in items:
        found = too_deep(item, depth + 1)
        if found is not None:
            return [key, *found]
    return None


def depth_error(body: JSON) -> TranslationError:
    """The 400 for a body orjson cannot write back, naming where it nests too deeply."""
    steps = too_deep(body) or ["(body)"]
    return Invalid(f"at most {MAX_DEPTH} levels of nesting", {}, *steps[1:]).error(str(steps[0]))
