"""Model alias rules: rewrite the model a client asks for (``sonnet``, ``gpt-4o``) into an upstream model id.

Rules are tried in order; the first match wins. ``exact`` compares the whole name, ``prefix`` its start,
``regex`` uses ``re.fullmatch`` and may reference groups in ``target`` (``\\1``). The client's own name is
kept in ``TranslationContext.model`` and restored in responses; resolution is the provider's job.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator


class AliasRule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    match: str
    kind: Literal["exact", "prefix", "regex"] = "exact"
    target: str

    @field_validator("match", "target")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _valid_regex(self) -> AliasRule:
        if self.kind == "regex":
            try:
                pattern = _compiled(self.match)
                pattern.sub(self.target, "")  # group references in target must exist in the pattern
            except re.error as exc:
                raise ValueError(f"invalid regex alias {self.match!r}: {exc}") from exc
        return self

    def apply(self, name: str) -> str | None:
        """The rewritten name when this rule matches ``name``, else ``None``."""
        if self.kind == "exact":
            return self.target if name == self.match else None
        if self.kind == "prefix":
            return self.target if name.startswith(self.match) else None
        found = _compiled(self.match).fullmatch(name)
        return found.expand(self.target) if found else None


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def resolve_model(name: str, rules: Iterable[AliasRule]) -> str:
    """``name`` rewritten by the first matching rule; unchanged when none matches (one pass, no chaining,
    so a rule set cannot loop)."""
    for rule in rules:
        target = rule.apply(name)
        if target is not None:
            return target
    return name
