"""Pure translation between Anthropic Messages, OpenAI Chat Completions and OpenAI Responses.

No I/O and no web-framework imports: every function takes and returns plain JSON-compatible dicts, and
every stream translator is an incremental state machine fed one upstream event at a time.
"""

from ccproxy.formats.base import (
    Format,
    StreamTranslator,
    Translation,
    TranslationContext,
    TranslationError,
)
from ccproxy.formats.errors import ErrorInfo, parse_error, render_error, render_stream_error

__all__ = [
    "ErrorInfo",
    "Format",
    "StreamTranslator",
    "Translation",
    "TranslationContext",
    "TranslationError",
    "parse_error",
    "render_error",
    "render_stream_error",
]
