"""Tests for minidiff.shapes (scenes, rendering, captions, the parser) and the image-dataset adapters."""

from __future__ import annotations

import itertools
import time
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from minidiff.captions import phrases
from minidiff.shapes import (
    BACKGROUNDS,
    HALF_EXTENT,
    KIND_WEIGHTS,
    KINDS,
    RELATIONS,
    RGB,
    SHAPES,
    TEMPLATES,
    Object,
    Scene,
    ShapesConfig,
    caption,
    captions_for,
    describe,
    fits,
    make_shapes,
    parse_caption,
    relation_holds,
    render,
    sample_scenes,
    split_words,
    vocabulary,
)


def scenes(n: int, seed: int = 0, **kwargs) -> list[Scene]:
    return sample_scenes(n, ShapesConfig(**kwargs), torch.Generator().manual_seed(seed))


def value(colour: str) -> torch.Tensor:
    return torch.tensor(RGB[colour]) * 2 - 1  # (3,) in [-1, 1]


# ---- captions -------------------------------------------------------------------------------

@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), p_omit=st.sampled_from([0.0, 0.3, 1.0]), kind=st.sampled_from(KINDS))
def test_caption_parse_round_trip_every_template_and_kind(seed, p_omit, kind):
    """caption -> parse gives back exactly the described scene, for every wording and every kind."""
    g = torch.Generator().manual_seed(seed)
    for s in scenes(20, seed, kinds={kind: 1.0}):
        said = describe(s, p_omit, g)
        for k in range(TEMPLATES):
            assert parse_caption(caption(said, k)) == said
        if kind == "position":
            assert said == s  # position captions name everything
        else:
            assert all(o.position is None for o in said.objects) and len(said.objects) == len(s.objects)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31), p_omit=st.sampled_from([0.0, 0.6]), kind=st.sampled_from(KINDS))
def test_phrases_split_a_caption_into_its_objects(seed, p_omit, kind):
    """The words of phrase k, read alone, are exactly the k-th group of objects; words in no phrase
    name no object (they join phrases or say the background)."""
    g = torch.Generator().manual_seed(seed)
    for s in scenes(10, seed, kinds={kind: 1.0}):
        said = describe(s, p_omit, g)
        for k in range(TEMPLATES):
            text = caption(said, k)
            words, index = split_words(text), phrases(text)
            assert len(index) == len(words)
            count = max(i for i in index if i is not None) + 1
            groups = [" ".join(w for w, i in zip(words, index) if i == n) for n in range(count)]
            assert tuple(o for group in groups for o in parse_caption(group).objects) == said.objects
            outside = {w for w, i in zip(words, index) if i is None}
            assert outside <= {"and", "to", "the", "left", "right", "of", "above", "below", "background",
                               *BACKGROUNDS}, text


def test_phrases_hand_cases():
    assert phrases("a red circle to the left of a blue square") == [0, 0, 0] + [None] * 4 + [1, 1, 1]
    assert phrases("two red circles and a square, blue background") == [0, 0, 0, None, 1, 1, 1, None, None]
    assert phrases("a gray background with a circle") == [0, None, None, 0, 0, 0]
    assert phrases("") == []


def test_example_prompts_parse():
    want = Scene("blue", (Object("circle", "red", "large", "top left"),))
    assert parse_caption("a large red circle at the top left on a blue background") == want
    assert caption(want, 0) == "a large red circle at the top left on a blue background"
    assert caption(want, 1) == "large red circle, top left, blue background"
    assert caption(want, 2) == "a blue background with a large red circle in the top left corner"
    three = Scene(None, (Object("triangle", "green"),) * 3)
    assert parse_caption("three green triangles") == three and caption(three, 0) == "three green triangles"
    assert caption(three, 3) == "three triangles in green"
    left = Scene("white", (Object("circle", "red"), Object("square", "blue")), "to the left of")
    assert parse_caption("a red circle to the left of a blue square on a white background") == left
    assert caption(left, 0) == "a red circle to the left of a blue square on a white background"
    orange = Scene(None, (Object("circle", "orange"), Object("square")))
    assert caption(orange, 0) == "an orange circle and a square"
    two = parse_caption("a small red circle and a large blue square on a white background")
    assert two == Scene("white", (Object("circle", "red", "small"), Object("square", "blue", "large")))
    edge = parse_caption("a small blue diamond at the top center and a small yellow square at the center "
                         "right")
    assert [o.position for o in edge.objects] == ["top center", "center right"]


def test_templates_are_distinct_and_vocabulary_covers_them():
    vocab = set(vocabulary())
    g = torch.Generator().manual_seed(1)
    longest = 0
    for scene in scenes(300, seed=1):
        said = describe(scene, 0.0, g)
        texts = {caption(said, k) for k in range(TEMPLATES)}
        assert len(texts) == TEMPLATES >= 4
        assert all(set(split_words(t)) <= vocab for t in texts)
        longest = max(longest, *(len(split_words(t)) for t in texts))
    assert longest <= 30  # the text encoder takes 32 tokens with <bos> and <eos>


def test_split_words_keeps_commas_as_tokens():
    assert split_words("Small red circle, top left") == ["small", "red", "circle", ",", "top", "left"]


def test_captions_for_draws_every_template_deterministically():
    s = scenes(400, kinds={"position": 1.0})
    a = captions_for(s, torch.Generator().manual_seed(5))
    assert a == captions_for(s, torch.Generator().manual_seed(5))
    used = {k for scene, text in zip(s, a) for k in range(TEMPLATES) if caption(scene, k) == text}
    assert used == set(range(TEMPLATES))


def test_captions_leave_out_attributes_at_p_omit():
    g = torch.Generator().manual_seed(2)
    said = [describe(s, 0.3, g) for s in scenes(3000, seed=2, kinds={"objects": 1.0})]
    assert abs(sum(d.background is None for d in said) / 3000 - 0.3) < 0.03
    objects = [o for d in said for o in d.objects]
    assert abs(sum(o.size is None for o in objects) / len(objects) - 0.3) < 0.03


def test_captions_leave_out_each_attribute_at_its_own_rate():
    g = torch.Generator().manual_seed(3)
    said = [describe(s, {"colour": 0.0, "size": 1.0}, g)
            for s in scenes(3000, seed=3, kinds={"objects": 1.0})]
    objects = [o for d in said for o in d.objects]
    assert all(o.colour is not None and o.size is None for o in objects)
    assert abs(sum(d.background is None for d in said) / 3000 - 0.3) < 0.03  # unlisted: 0.3


def test_partial_prompt_leaves_unnamed_attributes_none():
    got = parse_caption("a red circle and a small square")
    assert got == Scene(None, (Object("circle", "red"), Object("square", None, "small")))
    assert not got.complete


@pytest.mark.parametrize("text, word", [("a red circel", "circel"), ("a huge red circle", "huge"),
                                        ("a red circle on a pink background", "pink")])
def test_unknown_word_is_named(text, word):
    with pytest.raises(ValueError, match=f"'{word}'"):
        parse_caption(text)


@pytest.mark.parametrize("text, says", [
    ("a red blue circle", "two colours"), ("a red at the top left", "shape"), ("a circle at the top", "half"),
    ("red background", "background"), ("two circle", "plural"), ("circles", "plural"),
    ("two three circles", "numbers"), ("two circles at the center", "one position"),
    ("a circle to the left of", "relation"), ("a circle to the left of a square and a diamond", "relation"),
    ("a circle above a square below a diamond", "relation"), ("a circle to the left a square", "half"),
    ("a circle at the top left to the left of a square", "relation"),
    ("a circle at the center and a square at the center", "share a position")])
def test_malformed_prompt_raises(text, says):
    with pytest.raises(ValueError, match=says):
        parse_caption(text)


# ---- sampling -------------------------------------------------------------------------------

def test_rules_hold_for_every_kind():
    for s in scenes(4000, seed=2):
        n = len(s.objects)
        assert 1 <= n <= 4 and all(o.colour != s.background for o in s.objects) and s.complete
        assert len({o.position for o in s.objects}) == n
        pairs = itertools.combinations(s.objects, 2)
        assert all(fits(a.position, a.size, b.position, b.size) for a, b in pairs)
        if s.kind == "position":
            assert n <= 2
        if s.kind == "count":
            assert n >= 2 and len({(o.shape, o.colour, o.size) for o in s.objects}) == 1
        if s.kind == "relation":
            a, b = s.objects
            assert n == 2 and sum(relation_holds(r, a.position, b.position) for r in RELATIONS) == 1


def test_relation_geometry_hand_cases():
    assert relation_holds("to the left of", "top left", "top right")
    assert relation_holds("above", "top center", "center")
    assert relation_holds("below", "bottom right", "top right")
    assert relation_holds("to the right of", "center", "center left")
    assert not relation_holds("to the left of", "top left", "bottom right")  # diagonal: no relation
    assert not relation_holds("above", "center", "center")


@pytest.mark.parametrize("resolution, margin", [(16, 0), (32, 1)])
def test_objects_never_overlap(resolution, margin):
    """No pixel is shared at 16 px; at 32 px a clean background pixel always separates two objects."""
    crowded = [s for s in scenes(600, seed=3) if len(s.objects) >= 2]
    for a, b in itertools.combinations(range(4), 2):
        pairs = [s for s in crowded if len(s.objects) > b]
        bg = render([Scene(s.background, ()) for s in pairs], resolution)  # (N, 3, H, W)
        alone = [render([Scene(s.background, (s.objects[k],)) for s in pairs], resolution) for k in (a, b)]
        masks = [(img - bg).abs().sum(1) > 0 for img in alone]  # (N, H, W) each
        grown = F.max_pool2d(masks[0].float().unsqueeze(1), 2 * margin + 1, stride=1, padding=margin)
        grown = grown.squeeze(1)
        assert (grown * masks[1]).sum() == 0


def test_holdout_never_appears():
    s = scenes(5000, seed=4, holdout=(("triangle", "purple"), ("large", "center"), ("three", "square")))
    objects = [o for x in s for o in x.objects]
    assert not any(o.shape == "triangle" and o.colour == "purple" for o in objects)
    assert not any(o.size == "large" and o.position == "center" for o in objects)
    assert any(o.shape == "triangle" for o in objects) and any(o.colour == "purple" for o in objects)
    squares = Counter(sum(o.shape == "square" for o in x.objects) for x in s)
    assert squares[3] == 0 and squares[2] > 100 and squares[4] > 10


def test_skew_sets_frequencies():
    s = scenes(6000, seed=5, skew={"shape": {"circle": 0.7}}, kinds={"position": 1.0})
    shapes = Counter(o.shape for x in s for o in x.objects)
    total = sum(shapes.values())
    assert abs(shapes["circle"] / total - 0.7) < 0.03  # binomial sd ~0.005
    assert all(abs(shapes[k] / total - 0.1) < 0.02 for k in SHAPES[1:])
    s = scenes(6000, seed=6, skew={"colour": {"red": 0.5}}, backgrounds=("black", "white"))
    colours = Counter(o.colour for x in s for o in x.objects)
    assert abs(colours["red"] / sum(colours.values()) - 0.5) < 0.03
    assert set(x.background for x in s) == {"black", "white"}


def test_kind_count_and_background_frequencies():
    s = scenes(6000, seed=7, p_two=0.3)
    kinds = Counter(x.kind for x in s)
    assert all(abs(kinds[k] / 6000 - w) < 0.03 for k, w in KIND_WEIGHTS.items())
    placed = [x for x in s if x.kind == "position"]
    assert abs(sum(len(x.objects) == 2 for x in placed) / len(placed) - 0.3) < 0.04
    counts = Counter(len(x.objects) for x in s if x.kind == "count")
    assert set(counts) == {2, 3, 4} and min(counts.values()) > 250
    bgs = Counter(x.background for x in s)
    assert all(abs(bgs[b] / 6000 - 1 / len(BACKGROUNDS)) < 0.03 for b in BACKGROUNDS)
    one = scenes(300, max_objects=1)
    assert all(len(x.objects) == 1 for x in one) and {x.kind for x in one} == {"position", "objects"}


def test_determinism_by_seed():
    a, b, c = make_shapes(64, seed=3), make_shapes(64, seed=3), make_shapes(64, seed=4)
    assert torch.equal(a[0], b[0]) and a[1] == b[1] and a[2] == b[2]
    assert a[2] != c[2]
    assert make_shapes(8, ShapesConfig(seed=9))[1] == make_shapes(8, seed=9)[1]


# ---- rendering ------------------------------------------------------------------------------

def test_render_hand_computed_pixels():
    big = Scene("blue", (Object("circle", "red", "large", "top left"),))
    img = render([big], 32)[0]  # (3, 32, 32)
    assert torch.allclose(img[:, 8, 8], value("red"))  # pixel centre (8.5, 8.5): 0.7 px from the circle's
    assert torch.allclose(img[:, 0, 0], value("blue")) and torch.allclose(img[:, 31, 31], value("blue"))
    # small square at the centre: half-extent 0.09 * 32 = 2.88 px, centre 16 px. Column 18 has its pixel
    # centre 2.5 px out, signed distance -0.38 px, coverage 0.5 + 0.38 = 0.88; column 19 is outside.
    small = Scene("white", (Object("square", "green", "small", "center"),))
    img = render([small], 32)[0]
    want = 0.88 * value("green") + 0.12 * value("white")
    assert torch.allclose(img[:, 16, 18], want, atol=1e-5)
    assert torch.allclose(img[:, 16, 19], value("white"))
    assert HALF_EXTENT["small"] * 32 == pytest.approx(2.88)
    edge = render([Scene("white", (Object("square", "green", "small", "center right"),))], 32)[0]
    assert torch.allclose(edge[:, 16, 24], value("green")) and torch.allclose(edge[:, 16, 16], value("white"))


def test_render_shapes_symmetries_and_range():
    s = [Scene("gray", (Object(shape, "orange", "small", "center"),)) for shape in SHAPES]
    img = render(s, 48)  # (4, 3, 48, 48)
    assert img.shape == (4, 3, 48, 48) and img.dtype == torch.float32
    assert torch.allclose(img, img.flip(-1), atol=1e-5)  # every shape is mirror-symmetric left-right
    gray = value("gray").reshape(3, 1, 1)
    circle, square, triangle, diamond = (img[i].ne(gray).any(0).sum() for i in range(4))
    assert square > circle > diamond and square > triangle  # areas 4h^2 > pi h^2 > 2h^2
    x = make_shapes(200, ShapesConfig(resolution=16))[0]
    assert x.min() >= -1 and x.max() <= 1


def test_render_is_fast():
    """Vectorised drawing: ~0.05 s for 2000 images on one idle core; the bound leaves room for a busy CI."""
    _, _, s = make_shapes(2000)
    start = time.perf_counter()
    render(s, 32)
    assert time.perf_counter() - start < 2.0


@pytest.mark.parametrize("kwargs, name", [
    ({"resolution": 8}, "resolution"), ({"resolution": 100}, "resolution"),
    ({"max_objects": 5}, "max_objects"), ({"p_two": 1.5}, "p_two"), ({"p_omit": -0.1}, "p_omit"),
    ({"p_omit": {"shape": 0.5}}, "p_omit"), ({"p_omit": {"size": 1.5}}, "p_omit"),
    ({"kinds": {"pairs": 1.0}}, "kinds"), ({"kinds": {"count": 1.0}, "max_objects": 1}, "max_objects=1"),
    ({"holdout": (("triangle", "pink"),)}, "holdout"),
    ({"skew": {"texture": {"red": 1.0}}}, "skew"), ({"skew": {"colour": {"pink": 1.0}}}, "colour"),
    ({"backgrounds": ("pink",)}, "background")])
def test_bad_config_names_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ShapesConfig(**kwargs)


def test_bad_calls_name_parameter():
    s = scenes(2)
    with pytest.raises(ValueError, match="template"):
        caption(s[0], TEMPLATES)
    with pytest.raises(ValueError, match="resolution"):
        render(s, 65)
    with pytest.raises(ValueError, match="n=-1"):
        sample_scenes(-1, ShapesConfig(), torch.Generator())
    with pytest.raises(ValueError, match="shape"):
        Object("hexagon", "red", "small", "center")
    with pytest.raises(ValueError, match="holdout"):
        scenes(10, holdout=tuple((shape,) for shape in SHAPES))
    with pytest.raises(ValueError, match="every attribute"):
        render([Scene("blue", (Object("circle"),))], 32)
    with pytest.raises(ValueError, match="relation"):
        Scene(None, (Object("circle"),), "above")
    with pytest.raises(ValueError, match="kind"):
        Scene(None, (), kind="pairs")


# ---- image-dataset adapters -----------------------------------------------------------------
