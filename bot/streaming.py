"""Pure helpers for streamed answers: SSE lines, event parsing, and incremental filters.

Text-generation streams are parsed the way huggingface_hub does (ignore lines that are not
`data:`, stop at `[DONE]`, raise on an `error` payload); see API-NOTES.md for the quirks.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

PieceKind = Literal["text", "reasoning"]
DONE = "[DONE]"
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


@dataclass(frozen=True)
class Piece:
    """A part of a streamed answer: text to show, or reasoning to keep out of sight."""

    kind: PieceKind
    text: str


class StreamFailed(Exception):
    """The endpoint reported an error inside an HTTP 200 stream."""

    def __init__(self, message: str, status: int | None = None) -> None:
        self.message = message
        self.status = status
        super().__init__(message)


def sse_data(line: str) -> str | None:
    """The payload of an SSE `data:` line, or None for any other line (comments, events)."""
    line = line.rstrip("\r\n")
    if not line.startswith("data:"):
        return None
    # Both "data:{" and "data: {" occur; lstrip("data:") would eat payload characters.
    return line[len("data:") :].lstrip(" ")


def _event(data: str) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        raise StreamFailed("an unreadable stream event") from None


@dataclass(frozen=True)
class Event:
    """What one stream event brought: pieces, and whether the answer (or stream) ended."""

    pieces: list[Piece]
    finished: bool = False  # the answer is complete (finish_reason, generated_text)
    done: bool = False  # nothing more will come ([DONE])


def chat_event(data: str) -> Event:
    """One chat-completions chunk."""
    if data == DONE:
        return Event([], finished=True, done=True)
    event = _event(data)
    if not isinstance(event, dict):
        raise StreamFailed("an unexpected stream event")
    error = event.get("error")
    if error is not None:
        if isinstance(error, dict):
            raise StreamFailed(str(error.get("message", "error")), error.get("http_status_code"))
        raise StreamFailed(str(error))
    pieces: list[Piece] = []
    finished = False
    for choice in event.get("choices") or []:  # a usage-only chunk has choices: []
        delta = choice.get("delta") or {}
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            pieces.append(Piece("reasoning", reasoning))
        content = delta.get("content")
        if isinstance(content, str) and content:
            pieces.append(Piece("text", content))
        finished = finished or choice.get("finish_reason") is not None
    return Event(pieces, finished=finished)


def text_event(data: str) -> Event:
    """One /generate_stream event; the last one carries the whole generated_text."""
    event = _event(data)
    if not isinstance(event, dict):
        raise StreamFailed("an unexpected stream event")
    if event.get("error") is not None:
        raise StreamFailed(str(event["error"]))
    token = event.get("token") or {}
    pieces = []
    text = token.get("text")
    # Special tokens (<|eot_id|> ...) are part of the stream, not of the answer.
    if isinstance(text, str) and text and not token.get("special"):
        pieces.append(Piece("text", text))
    last = event.get("generated_text") is not None
    return Event(pieces, finished=last, done=last)


def _held_back(buffer: str, markers: Sequence[str]) -> int:
    """Where the longest tail of buffer that could still grow into a marker starts."""
    for start in range(max(0, len(buffer) - max(map(len, markers)) + 1), len(buffer)):
        tail = buffer[start:]
        if any(marker.startswith(tail) for marker in markers):
            return start
    return len(buffer)


class ThinkFilter:
    """Splits streamed text into answer and `<think>...</think>` reasoning, across chunks."""

    def __init__(self) -> None:
        self._buffer = ""
        self.thinking = False

    def feed(self, text: str) -> list[Piece]:
        """Pieces that are certain given everything fed so far."""
        self._buffer += text
        pieces: list[Piece] = []
        while True:
            marker = THINK_CLOSE if self.thinking else THINK_OPEN
            kind: PieceKind = "reasoning" if self.thinking else "text"
            at = self._buffer.find(marker)
            if at == -1:
                keep = _held_back(self._buffer, [marker])
                if keep:
                    pieces.append(Piece(kind, self._buffer[:keep]))
                self._buffer = self._buffer[keep:]
                return pieces
            if at:
                pieces.append(Piece(kind, self._buffer[:at]))
            self._buffer = self._buffer[at + len(marker) :]
            self.thinking = not self.thinking

    def flush(self) -> list[Piece]:
        """Whatever is still held back, at the end of the stream."""
        rest, self._buffer = self._buffer, ""
        if not rest:
            return []
        return [Piece("reasoning" if self.thinking else "text", rest)]


class StopFilter:
    """Cuts streamed text at the first stop sequence, which TGI leaves in its output."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [s for s in stops if s]
        self._buffer = ""
        self._started = False
        self.stopped = False

    def feed(self, text: str) -> str:
        """Text that is certain not to belong to a stop sequence."""
        if self.stopped or not self._stops:
            return "" if self.stopped else text
        self._buffer += text
        cut = min((i for i in (self._buffer.find(s) for s in self._stops) if i != -1), default=-1)
        if not self._started:
            # An answer that opens with the next turn's prefix has nothing before it.
            heads = [h for h in (s.lstrip() for s in self._stops) if h]
            if any(self._buffer.startswith(h) for h in heads):
                cut = 0
            elif any(h.startswith(self._buffer) for h in heads):
                return ""
        if cut != -1:
            out, self._buffer, self.stopped = self._buffer[:cut], "", True
            return out
        keep = _held_back(self._buffer, self._stops)
        out, self._buffer = self._buffer[:keep], self._buffer[keep:]
        self._started = self._started or bool(out)
        return out

    def flush(self) -> str:
        """Held-back text at the end of the stream (it never became a stop sequence)."""
        rest, self._buffer = ("" if self.stopped else self._buffer), ""
        return rest
