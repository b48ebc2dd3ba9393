"""Pure text helpers: split answers for Discord and clean what users typed."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

DISCORD_LIMIT = 2000
# Break preferences, best first: a paragraph, a line, a word.
_SEPARATORS = ("\n\n", "\n", " ")
# A separator is only worth using when it keeps at least this share of the window.
_MIN_FILL = 0.5
_MAX_INFO = 32

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass(frozen=True)
class _Fence:
    marker: str
    info: str

    @property
    def opener(self) -> str:
        return f"{self.marker}{self.info}\n"

    @property
    def closer(self) -> str:
        return f"\n{self.marker}"


def split_message(text: str, limit: int = DISCORD_LIMIT) -> list[str]:
    """Split text into Discord-sized messages, closing and reopening code blocks."""
    chunks = []
    for piece, opened, still_open in _cut(text, limit):
        body = _render(piece, opened, still_open)
        if body.strip():
            chunks.append(body)
    return chunks


def split_points(text: str, limit: int = DISCORD_LIMIT) -> list[str]:
    """The consecutive slices of text that split_message renders; they join back to text."""
    return [piece for piece, _, _ in _cut(text, limit)]


def _render(piece: str, opened: _Fence | None, still_open: _Fence | None) -> str:
    body = (opened.opener if opened else "") + piece.rstrip()
    return body + still_open.closer if still_open else body


def _cut(text: str, limit: int) -> list[tuple[str, _Fence | None, _Fence | None]]:
    """Slices of text, each with the code block open at its start and at its end."""
    if limit < 64:
        raise ValueError("limit too small to hold a code fence and some text")
    result: list[tuple[str, _Fence | None, _Fence | None]] = []
    fence: _Fence | None = None
    start = 0
    while start < len(text):
        budget = limit - (len(fence.opener) if fence else 0)
        while True:
            end = len(text) if len(text) - start <= budget else _best_cut(text, start, budget)
            piece = text[start:end]
            after = _fence_after(piece, fence)
            excess = len(_render(piece, fence, after)) - limit
            if excess <= 0 or budget <= 1:
                break
            # The closing fence did not fit: cut earlier by what is missing.
            budget = max(1, budget - excess)
        end = _avoid_dangling_opener(text, start, end, fence, after)
        piece = text[start:end]
        after = _fence_after(piece, fence)
        result.append((piece, fence, after))
        fence = after
        start = end
    return result


def _avoid_dangling_opener(
    text: str, start: int, end: int, fence: _Fence | None, after: _Fence | None
) -> int:
    """Move a cut that falls just after a code block's opening line to before that line."""
    if after is None or after == fence or end >= len(text):
        return end
    piece = text[start:end].rstrip()
    line_start = piece.rfind("\n") + 1
    if _FENCE.match(piece[line_start:]) and line_start > 0:
        return start + line_start
    return end


def _best_cut(text: str, start: int, budget: int) -> int:
    window = text[start : start + budget]
    for separator in _SEPARATORS:
        at = window.rfind(separator)
        if at >= budget * _MIN_FILL:
            return start + at + len(separator)
    return start + budget


def _fence_after(piece: str, fence: _Fence | None) -> _Fence | None:
    """The code block still open at the end of piece, given the one open at its start."""
    for line in piece.split("\n"):
        match = _FENCE.match(line)
        if not match:
            continue
        marker, info = match.group(1), match.group(2).strip()
        if fence is None:
            # Only the language word is carried over when the block is reopened.
            fence = _Fence(marker, info.split(" ")[0][:_MAX_INFO] if info else "")
        elif marker[0] == fence.marker[0] and len(marker) >= len(fence.marker) and not info:
            fence = None
    return fence


def fences_balanced(chunk: str) -> bool:
    """Whether every code block opened in chunk is closed in it."""
    return _fence_after(chunk, None) is None


def clean_input(text: str) -> str:
    """User text without control characters and surrounding blank space."""
    text = unicodedata.normalize("NFC", text)
    return _CONTROL.sub("", text).strip()


def strip_mention(text: str, user_id: int) -> str:
    """Remove the bot's own mention (both forms) from a message."""
    return re.sub(rf"<@!?{user_id}>", "", text).strip()


def truncate(text: str, limit: int, marker: str = "…") -> str:
    """Text cut to at most limit characters, with a marker when cut."""
    if len(text) <= limit:
        return text
    return text[: limit - len(marker)].rstrip() + marker
