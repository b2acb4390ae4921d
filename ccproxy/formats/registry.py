"""Imports the built-in translation modules; each registers itself with ``ccproxy.formats.base``."""

from ccproxy.formats import (  # noqa: F401
    anthropic_on_responses,
    chat_on_anthropic,
    chat_on_responses,
    responses_on_anthropic,
)
