"""The one definition of a word, shared by the caption parser (``shapes``) and the tokenizer (``text``)."""

from __future__ import annotations

import re

WORD_PATTERN = re.compile(r"[^\W_]+(?:[-'][^\W_]+)*|[^\s\w]|_")  # words (any alphabet), or one symbol
DROPPED = "."  # full stops carry no meaning in a caption and are dropped; commas are tokens


def split_words(text: str) -> list[str]:
    """Lower-case ``text`` and split it into words; commas are tokens, full stops are dropped."""
    return [w for w in WORD_PATTERN.findall(text.lower()) if w not in DROPPED]
