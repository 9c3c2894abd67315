"""Reading a shapes caption back: ``parse_caption`` is the exact inverse of ``shapes.caption`` for every
template and kind, and reads free prompts too, naming any unknown word and the closest known ones."""

from __future__ import annotations

import difflib
import itertools

from minidiff.shapes import (
    ATTRIBUTES,
    BACKGROUNDS,
    FIELDS,
    FILLER_WORDS,
    NUMBERS,
    POSITIONS,
    RELATIONS,
    SHAPES,
    Object,
    Scene,
)
from minidiff.words import split_words


def vocabulary() -> list[str]:
    """Every token (see ``split_words``) that any caption can contain, sorted."""
    words = {w for values in ATTRIBUTES.values() for v in values for w in v.split()}
    words |= {s + "s" for s in SHAPES} | {w for r in RELATIONS for w in r.split()}
    return sorted(words | set(NUMBERS) | set(FILLER_WORDS))


def _parse_objects(words: list[str], text: str) -> list[Object]:
    """The object(s) one segment names: "a red circle" -> one, "three red circles" -> three identical."""
    found: dict[str, str] = {}
    count, plural = 1, False
    for word in words:
        if word in NUMBERS[1:]:
            if count > 1:
                raise ValueError(f"{text!r} gives two numbers for one group of objects; join with 'and'")
            count = NUMBERS.index(word) + 1
            continue
        if word.endswith("s") and word[:-1] in SHAPES:
            word, plural = word[:-1], True
        kind = next((a for a in FIELDS if word in ATTRIBUTES[a]), None)
        if kind in found:
            raise ValueError(f"{text!r} names two {kind}s ({found[kind]!r}, {word!r}) for one object; "
                             "join objects with 'and'")
        if kind is not None:
            found[kind] = word
    if (found or count > 1) and "shape" not in found:
        raise ValueError(f"{text!r} describes an object ({found}) without its shape; choose one of {SHAPES}")
    if found and plural != (count > 1):
        raise ValueError(f"{text!r}: say 'a {found['shape']}' for one object and a number with the plural "
                         f"('two {found['shape']}s') for more; numbers allowed: {NUMBERS[1:]}")
    if count > 1 and "position" in found:
        raise ValueError(f"{text!r} puts {count} objects at one position; each slot holds at most one object")
    return [Object(**found)] * count if found else []


def parse_caption(text: str) -> Scene:
    """Read a caption back into a Scene; the exact inverse of ``caption`` for every template and kind. In
    free prompts an attribute the text leaves out is None ("a red circle"); unknown words raise ValueError."""
    vocab, words = vocabulary(), []
    for word in split_words(text):
        if word not in vocab:
            close = difflib.get_close_matches(word, vocab, n=3)
            hint = f"; did you mean {close}?" if close else ""
            raise ValueError(f"unknown word {word!r} in prompt {text!r}{hint}; known words: {vocab}")
        if words[-3:-1] == ["to", "the"] and word == "of" and words[-1] in ("left", "right"):
            words[-3:] = [f"to the {words[-1]} of"]  # a relation
        elif words and words[-1] in ("top", "center", "bottom") and f"{words[-1]} {word}" in POSITIONS:
            words[-1] = f"{words[-1]} {word}"  # "top" + "left" -> "top left"
        else:
            words.append(word)
    if any(word in words for word in ("top", "bottom", "left", "right", "to", "of")):
        raise ValueError(f"{text!r} names half a position or relation; use one of {POSITIONS} or {RELATIONS}")
    background, i = None, words.index("background") if "background" in words else -1
    if words.count("background") > 1 or i == 0 or (i > 0 and words[i - 1] not in BACKGROUNDS):
        raise ValueError(f"{text!r} must name at most one background, as '<colour> background' with a colour "
                         f"in {BACKGROUNDS}")
    if i > 0:
        background, words = words[i - 1], words[: i - 1] + words[i + 1:]
    relations = [w for w in words if w in RELATIONS]
    cuts = itertools.groupby(words, key=lambda w: w == "and" or w in RELATIONS)
    objects = [seg for seg in (_parse_objects(list(g), text) for cut, g in cuts if not cut) if seg]
    if relations and (len(relations) > 1 or "and" in words or [len(s) for s in objects] != [1, 1]
                      or any(s[0].position for s in objects)):
        raise ValueError(f"{text!r}: a relation ({RELATIONS}) goes between two single objects without "
                         "positions, e.g. 'a red circle to the left of a blue square'")
    return Scene(background, tuple(o for seg in objects for o in seg), relations[0] if relations else None)


def phrases(text: str) -> list[int | None]:
    """Which object phrase each word of ``split_words(text)`` belongs to: 0, 1, ... in the order
    ``parse_caption`` reads the objects (a count, "three red circles", is one phrase), or None for the
    words between phrases ("and", a relation) and for the background ("on a gray background").

    "a red circle to the left of a blue square" -> [0, 0, 0, None, None, None, None, 1, 1, 1]. It is what
    the text encoder's phrase loss (``text.phrase_loss``) learns from: the words that share a phrase
    describe one object, so "circle" must know it is the red one.
    """
    words = split_words(text)
    joins = {i for i, word in enumerate(words) if word in ("and", "above", "below")}
    joins |= {j for i, word in enumerate(words) if word == "of" and words[i - 3: i - 1] == ["to", "the"]
              for j in range(i - 3, i + 1)}  # "to the left of", "to the right of"
    background = {j for i, word in enumerate(words) if word == "background" for j in (i - 1, i)}
    out: list[int | None] = []
    phrase = 0
    for i in range(len(words)):
        out.append(None if i in joins or i in background else phrase)
        phrase += i in joins and i + 1 not in joins  # a join ends the phrase before it
    return out
