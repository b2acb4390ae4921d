"""Images and documents (NOTES §4.10): OpenAI image URLs and file data ⇄ Anthropic image and document
blocks."""

from __future__ import annotations

import base64
import binascii
import re

from ccproxy.formats.base import JSON, TranslationError

_DATA_URL = re.compile(r"^data:(?P<type>[\w.+-]+/[\w.+-]+)?(;[^,;]*)*?;base64,(?P<data>.*)$", re.S)


def parse_data_url(url: str) -> tuple[str, str] | None:
    """``(media_type, base64_data)`` of a base64 ``data:`` URL, or ``None`` when ``url`` is not one."""
    match = _DATA_URL.match(url)
    if match is None:
        return None
    return match.group("type") or "application/octet-stream", match.group("data")


def anthropic_source_from_url(url: str, param: str) -> JSON:
    """Anthropic image/document ``source`` for a data URL (→ base64) or an http(s) URL (→ url)."""
    parsed = parse_data_url(url)
    if parsed is not None:
        return {"type": "base64", "media_type": parsed[0], "data": parsed[1]}
    if url.startswith(("https://", "http://")):
        return {"type": "url", "url": url}
    raise TranslationError("expected an http(s) URL or a base64 data URL", param=param)


def anthropic_image_block(url: str, param: str) -> JSON:
    source = anthropic_source_from_url(url, param)
    if source["type"] == "base64" and not str(source["media_type"]).startswith("image/"):
        raise TranslationError(f"unsupported image media type {source['media_type']!r}", param=param)
    return {"type": "image", "source": source}


def anthropic_document_block(file_data: str | None, file_url: str | None, param: str) -> JSON:
    """Anthropic ``document`` block for an OpenAI file part (PDF or plain text as a data URL, or a URL)."""
    if file_data:
        url = file_data if file_data.startswith("data:") else f"data:application/pdf;base64,{file_data}"
        source = anthropic_source_from_url(url, param)
        if source["media_type"] == "text/plain":
            text = _b64_text(source["data"], param)
            return {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": text}}
        if source["media_type"] != "application/pdf":
            raise TranslationError(f"unsupported file type {source['media_type']!r}", param=param)
        return {"type": "document", "source": source}
    if file_url:
        return {"type": "document", "source": anthropic_source_from_url(file_url, param)}
    raise TranslationError("file parts need file_data or a URL; file ids cannot be resolved", param=param)


def _b64_text(data: str, param: str) -> str:
    try:
        return base64.b64decode(data, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise TranslationError("file_data is not valid base64 text", param=param) from exc


def image_url_from_anthropic(source: JSON) -> str:
    """An OpenAI image URL (data URL or plain URL) for an Anthropic image ``source``."""
    if source.get("type") == "base64":
        return f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    return str(source.get("url", ""))
