"""Splitting answers for Discord and cleaning user text."""

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.render import (
    DISCORD_LIMIT,
    clean_input,
    fences_balanced,
    split_message,
    split_points,
    strip_mention,
    truncate,
)


def test_short_text_is_one_message() -> None:
    assert split_message("Hello there") == ["Hello there"]
    assert split_message("") == []
    assert split_message("   \n ") == []


def test_prefers_paragraphs_then_lines_then_words() -> None:
    paragraph = "word " * 300  # 1500 characters
    chunks = split_message(paragraph.strip() + "\n\n" + paragraph.strip())
    assert len(chunks) == 2 and chunks[0] == paragraph.strip()
    lines = "\n".join(f"line {i:04d} " + "x" * 60 for i in range(40))
    for chunk in split_message(lines):
        assert chunk.split("\n")[-1].startswith("line") and len(chunk.split("\n")[-1]) == 70
    words = " ".join(["abcdefghi"] * 500)
    assert all(c.endswith("abcdefghi") for c in split_message(words))


def test_a_4500_character_answer_fits_three_messages() -> None:
    text = ("The quick brown fox jumps over the lazy dog. " * 100)[:4500]
    chunks = split_message(text)
    assert len(chunks) == 3
    assert all(len(c) <= DISCORD_LIMIT for c in chunks)
    assert " ".join(chunks).split() == text.split()


def test_code_block_is_closed_and_reopened_with_its_language() -> None:
    code = "\n".join(f"print('line {i}')  # some padding text" for i in range(120))
    text = f"Here you go:\n\n```python\n{code}\n```\n\nThat is all."
    chunks = split_message(text)
    assert len(chunks) >= 3
    for chunk in chunks:
        assert len(chunk) <= DISCORD_LIMIT
        assert fences_balanced(chunk), chunk[-50:]
    assert chunks[0].endswith("\n```")
    assert chunks[1].startswith("```python\n")
    assert chunks[-1].endswith("That is all.")


def test_a_cut_never_leaves_an_empty_code_block() -> None:
    text = "a" * 1980 + "\n```js\n" + "let x = 1;\n" * 50 + "```"
    chunks = split_message(text)
    assert not any(re.fullmatch(r"```\w*\n```", c) for c in chunks)
    assert chunks[1].startswith("```js\n")


def test_unbroken_text_is_cut_hard() -> None:
    chunks = split_message("x" * 4100)
    assert [len(c) for c in chunks] == [2000, 2000, 100]


def test_longer_fence_markers_are_kept() -> None:
    text = "````md\n" + "```\nnested\n```\n" * 300 + "````"
    for chunk in split_message(text):
        assert len(chunk) <= DISCORD_LIMIT
        assert fences_balanced(chunk)


_alphabet = st.sampled_from(
    ["a", "b", " ", "\n", "```", "```py\n", "~~~", "é", "🙂", "`", "x" * 50]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_alphabet, max_size=400).map("".join), st.integers(min_value=64, max_value=2000))
def test_split_properties(text: str, limit: int) -> None:
    pieces = split_points(text, limit)
    assert "".join(pieces) == text  # nothing lost, nothing reordered
    chunks = split_message(text, limit)
    for chunk in chunks:
        assert 0 < len(chunk) <= limit
        assert chunk.strip()
    # Each slice's text appears in the messages, in order: only fences are added.
    joined, position = "\n".join(chunks), 0
    for piece in pieces:
        found = joined.find(piece.strip(), position)
        assert found >= 0, piece
        position = found + len(piece.strip())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["word", " ", "\n", "\n\n", "```c\n", "\n```\n"]), max_size=800))
def test_every_chunk_has_balanced_fences_when_the_text_does(parts: list[str]) -> None:
    text = "".join(parts)
    if not fences_balanced(text):
        text += "\n```"
    for chunk in split_message(text, 200):
        assert fences_balanced(chunk)
        assert len(chunk) <= 200


def test_clean_input_and_mentions() -> None:
    assert clean_input("  hi\x00 there\x07\n") == "hi there"
    assert clean_input("tab\tand\nnewline") == "tab\tand\nnewline"
    assert strip_mention("<@42> hello <@!42>", 42) == "hello"
    assert strip_mention("<@43> hello", 42) == "<@43> hello"
    assert truncate("abcdef", 4) == "abc…"
    assert truncate("abc", 4) == "abc"
