import pytest
from pydantic import ValidationError

from ccproxy.formats.aliases import AliasRule, resolve_model

RULES = [
    AliasRule(match="sonnet", kind="exact", target="claude-sonnet-4-5"),
    AliasRule(match="gpt-4o", kind="prefix", target="claude-sonnet-4-5"),
    AliasRule(match=r"opus-(\d+)", kind="regex", target=r"claude-opus-\1"),
    AliasRule(match="claude-", kind="prefix", target="should-not-win"),
]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("sonnet", "claude-sonnet-4-5"),
        ("sonnet-x", "sonnet-x"),  # exact does not match a longer name
        ("gpt-4o-mini", "claude-sonnet-4-5"),
        ("opus-4", "claude-opus-4"),
        ("xopus-4", "xopus-4"),  # regex must match the whole name
        ("unknown", "unknown"),
    ],
)
def test_resolve(name: str, expected: str) -> None:
    assert resolve_model(name, RULES) == expected


def test_first_match_wins_and_no_chaining() -> None:
    rules = [AliasRule(match="a", target="b"), AliasRule(match="b", target="c")]
    assert resolve_model("a", rules) == "b"
    assert resolve_model("a", []) == "a"


def test_default_kind_is_exact() -> None:
    assert AliasRule(match="x", target="y").kind == "exact"


@pytest.mark.parametrize(
    "bad",
    [
        {"match": "(", "kind": "regex", "target": "x"},
        {"match": "a", "kind": "regex", "target": r"\2"},
        {"match": "", "target": "x"},
        {"match": "a", "kind": "glob", "target": "x"},
        {"match": "a", "target": "x", "extra": 1},
    ],
)
def test_invalid_rules_rejected(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        AliasRule.model_validate(bad)
