"""Issue 15: the account registry, pure: header parsing, strategies, priorities, rests, persistence."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from ccproxy.accounts import Account, Accounts, AccountSettings, Quota
from ccproxy.auth.credential import Credential
from ccproxy.errors import ProxyError
from ccproxy.providers.claude_api.rules import QUOTA_HEADERS as CLAUDE_HEADERS
from ccproxy.providers.claude_api.rules import parse_quota as claude_quota
from ccproxy.providers.codex.rules import parse_quota as codex_quota
from ccproxy.providers.codex.rules import usage_from_quota as codex_usage
from ccproxy.testing.corpus import all_cases, corpus_available

NOW = 1_800_000_000.0


def registry(*names: str, tmp: Path | None = None, **settings: Any) -> Accounts:
    accounts = [Account(n, static=Credential(access_token=f"t-{n}")) for n in names]
    options = AccountSettings.model_validate({"jitter_seconds": 0, **settings})
    path = tmp / "state.json" if tmp is not None else None
    return Accounts(
        "claude", accounts, options, claude_quota, headers=CLAUDE_HEADERS, state_path=path, clock=lambda: NOW
    )


def claude_headers(
    status: str = "allowed", util: float = 0.4, reset: float = NOW + 3600, **extra: str
) -> dict[str, str]:
    u = "anthropic-ratelimit-unified-"
    return {
        u + "status": status,
        u + "reset": str(int(reset)),
        u + "5h-status": status,
        u + "5h-utilization": str(util),
        u + "5h-reset": str(int(reset)),
        u + "7d-status": "allowed",
        u + "7d-utilization": "0.1",
        u + "7d-reset": str(int(NOW + 86400)),
        **extra,
    }


def test_claude_headers_parse_into_windows_and_overage() -> None:
    quota = claude_quota(claude_headers(), NOW)
    assert quota is not None and quota.status == "allowed" and not quota.overage_in_use
    assert [(w.name, w.utilization) for w in quota.windows] == [("5h", 0.4), ("7d", 0.1)]
    limited = claude_quota(claude_headers("rejected", 1.0), NOW)
    assert limited is not None and limited.rejected and limited.resets_at == int(NOW + 3600)
    overage = claude_quota(
        claude_headers("rejected", 1.0, **{"anthropic-ratelimit-unified-overage-status": "allowed"}), NOW
    )
    assert overage is not None and overage.overage_in_use and not overage.rejected
    assert claude_quota({}, NOW) is None
    assert claude_quota(
        {"anthropic-ratelimit-unified-status": "allowed", "anthropic-ratelimit-unified-5h-reset": "x"}, NOW
    )


@pytest.mark.skipif(not corpus_available(), reason="the recorded conformance corpus is not on this machine")
def test_codex_headers_recorded_from_the_real_backend_parse() -> None:
    recorded = [
        c.response_headers() for c in all_cases() if "x-codex-primary-used-percent" in c.response_headers()
    ]
    assert recorded, "the corpus has a Codex answer with usage headers"
    for headers in recorded:
        quota = codex_quota(headers, NOW)
        assert quota is not None and [w.name for w in quota.windows] == ["primary", "secondary"]
        primary = quota.windows[0]
        assert primary.utilization == float(headers["x-codex-primary-used-percent"]) / 100
        assert primary.resets_at == NOW + float(headers["x-codex-primary-reset-after-seconds"])


def test_codex_credits_headers_are_kept_and_reported_as_last_seen() -> None:
    headers = {
        "x-codex-primary-used-percent": "40",
        "x-codex-primary-reset-after-seconds": "600",
        "x-codex-secondary-used-percent": "10",
        "x-codex-secondary-reset-after-seconds": "86400",
        "x-codex-credits-has-credits": "true",
        "x-codex-credits-unlimited": "false",
        "x-codex-credits-balance": "12.50",
    }
    quota = codex_quota(headers, NOW)
    assert quota is not None
    assert quota.credits == {"has_credits": True, "unlimited": False, "balance": "12.50"}
    body = codex_usage(quota, NOW, "plus")
    assert body["plan_type"] == "plus" and body["credits"] == quota.credits
    primary = body["rate_limit"]["primary_window"]
    assert (primary["used_percent"], primary["limit_window_seconds"]) == (40, 18000)
    assert (primary["reset_after_seconds"], primary["reset_at"]) == (600, round(NOW + 600))
    no_credits = codex_quota({k: v for k, v in headers.items() if "credits" not in k}, NOW)
    assert no_credits is not None and no_credits.credits is None


def test_fill_first_priorities_round_robin_and_affinity() -> None:
    assert registry("a", "b").choose().name == "a"
    assert registry("a", "b", priorities={"b": -1}).choose().name == "b"
    rr = registry("a", "b", "c", strategy="round-robin")
    assert [rr.choose().name for _ in range(4)] == ["a", "b", "c", "a"]
    sticky = registry("a", "b", strategy="round-robin")
    first = sticky.choose("s1").name
    assert [sticky.choose("s1").name for _ in range(5)] == [first] * 5
    assert sticky.choose("s2").name != first


def test_rest_until_reset_then_all_limited_names_the_windows() -> None:
    accounts = registry("a", "b")
    a, b = accounts.accounts
    accounts.observe(a, 429, claude_headers("rejected", 1.0, reset=NOW + 100))
    assert a.resting_until == NOW + 100 and accounts.choose().name == "b"
    accounts.observe(b, 200, claude_headers("rejected", 1.0, reset=NOW + 40))
    with pytest.raises(ProxyError) as info:
        accounts.choose()
    assert info.value.info.status == 429 and info.value.headers == {"retry-after": "40"}
    assert "a: 5h window resets" in info.value.info.message and "b: 5h window" in info.value.info.message


def test_a_single_account_only_rests_for_the_billing_guard() -> None:
    single = registry("a")
    only = single.accounts[0]
    single.observe(only, 429, claude_headers("rejected", 1.0))
    assert only.resting_until == 0 and single.choose() is only
    single.observe(only, 200, claude_headers(**{"anthropic-ratelimit-unified-overage-in-use": "true"}))
    assert only.rest_reason == "overage"
    with pytest.raises(ProxyError):
        single.choose()


def test_state_is_written_only_on_change_and_read_back(tmp_path: Path) -> None:
    accounts = registry("a", "b", tmp=tmp_path)
    a = accounts.accounts[0]
    accounts.observe(a, 429, claude_headers("rejected", 1.0))
    asyncio.run(accounts.save())
    again = registry("a", "b", tmp=tmp_path)
    again.load_state()
    restored = again.accounts[0]
    assert restored.resting_until == a.resting_until and restored.rest_reason == "limited"
    assert isinstance(restored.quota, Quota) and restored.quota.windows == a.quota.windows  # type: ignore[union-attr]
    assert restored.quota == a.quota  # credits and overage included
    assert (tmp_path / "state.json").stat().st_mode & 0o777 == 0o600


def test_unchanged_headers_are_not_parsed_again_but_changed_ones_are() -> None:
    accounts = registry("a", "b")
    a = accounts.accounts[0]
    accounts.observe(a, 200, claude_headers(util=0.4))
    first = a.quota
    accounts.observe(a, 200, claude_headers(util=0.4))
    assert a.quota is first  # same values: the parsed state is kept as it was
    accounts.observe(a, 200, claude_headers(util=0.5))
    assert a.quota is not first and a.quota is not None and a.quota.windows[0].utilization == 0.5
