"""Tests for minidiff.data: scenes, rendering, captions, and the image-dataset adapters."""

from __future__ import annotations

import time
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from minidiff.shapes import BACKGROUNDS, COMPATIBLE, HALF_EXTENT, POSITIONS, RGB, SHAPES, SIZES, TEMPLATES, Object, Scene, ShapesConfig, ShapesDataset, caption, captions_for, make_shapes, parse_caption, render, sample_scenes, split_words, vocabulary


def scenes(n: int, seed: int = 0, **kwargs) -> list[Scene]:
    return sample_scenes(n, ShapesConfig(**kwargs), torch.Generator().manual_seed(seed))


def value(colour: str) -> torch.Tensor:
    return torch.tensor(RGB[colour]) * 2 - 1  # (3,) in [-1, 1]


# ---- captions -------------------------------------------------------------------------------

def test_caption_round_trip_every_template():
    for s in scenes(600):
        for k in range(TEMPLATES):
            assert parse_caption(caption(s, k)) == s


def test_example_prompt_parses():
    want = Scene("blue", (Object("circle", "red", "large", "top left"),))
    assert parse_caption("a large red circle at the top left on a blue background") == want
    assert caption(want, 0) == "a large red circle at the top left on a blue background"
    assert caption(want, 1) == "large red circle, top left, blue background"


def test_templates_are_distinct_and_vocabulary_covers_them():
    s = scenes(50, seed=1)
    vocab = set(vocabulary())
    for scene in s:
        texts = {caption(scene, k) for k in range(TEMPLATES)}
        assert len(texts) == TEMPLATES >= 4
        assert all(set(split_words(t)) <= vocab for t in texts)
    two = next(x for x in s if len(x.objects) == 2)
    assert all(" and " in caption(two, k) for k in range(TEMPLATES))


def test_split_words_keeps_commas_as_tokens():
    assert split_words("Small red circle, top left") == ["small", "red", "circle", ",", "top", "left"]


def test_captions_for_draws_every_template_deterministically():
    s = scenes(400)
    a, b = captions_for(s, torch.Generator().manual_seed(5)), captions_for(s, torch.Generator().manual_seed(5))
    assert a == b
    used = {k for scene, text in zip(s, a) for k in range(TEMPLATES) if caption(scene, k) == text}
    assert used == set(range(TEMPLATES))


def test_partial_prompt_leaves_unnamed_attributes_none():
    got = parse_caption("a red circle and a small square")
    assert got == Scene(None, (Object("circle", "red"), Object("square", None, "small")))
    assert not got.complete


@pytest.mark.parametrize("text, word", [("a red circel", "circel"), ("a huge red circle", "huge"),
                                        ("a red circle on a pink background", "pink")])
def test_unknown_word_is_named(text, word):
    with pytest.raises(ValueError, match=f"'{word}'"):
        parse_caption(text)


@pytest.mark.parametrize("text", ["a red blue circle", "a red at the top left", "a circle at the top", "red background"])
def test_malformed_prompt_raises(text):
    with pytest.raises(ValueError):
        parse_caption(text)


# ---- sampling -------------------------------------------------------------------------------

def test_rules_hold():
    for s in scenes(3000, seed=2):
        assert 1 <= len(s.objects) <= 2
        assert all(o.colour != s.background for o in s.objects)
        if len(s.objects) == 2:
            a, b = s.objects
            assert COMPATIBLE[POSITIONS.index(a.position), SIZES.index(a.size), POSITIONS.index(b.position), SIZES.index(b.size)]


@pytest.mark.parametrize("resolution, margin", [(16, 0), (32, 1)])
def test_objects_never_overlap(resolution, margin):
    """No pixel is shared at 16 px; at 32 px a clean background pixel always separates two objects."""
    two = [s for s in scenes(600, seed=3) if len(s.objects) == 2]
    bg = render([Scene(s.background, ()) for s in two], resolution)  # (N, 3, H, W)
    masks = [(render([Scene(s.background, (s.objects[k],)) for s in two], resolution) - bg).abs().sum(1) > 0
             for k in range(2)]  # (N, H, W) each
    grown = F.max_pool2d(masks[0].float().unsqueeze(1), 2 * margin + 1, stride=1, padding=margin).squeeze(1)
    assert (grown * masks[1]).sum() == 0


def test_holdout_never_appears():
    s = scenes(5000, seed=4, holdout=(("triangle", "purple"), ("large", "center")))
    objects = [o for x in s for o in x.objects]
    assert not any(o.shape == "triangle" and o.colour == "purple" for o in objects)
    assert not any(o.size == "large" and o.position == "center" for o in objects)
    assert any(o.shape == "triangle" for o in objects) and any(o.colour == "purple" for o in objects)


def test_skew_sets_frequencies():
    s = scenes(6000, seed=5, skew={"shape": {"circle": 0.7}})
    shapes = Counter(o.shape for x in s for o in x.objects)
    total = sum(shapes.values())
    assert abs(shapes["circle"] / total - 0.7) < 0.03  # binomial sd ~0.005
    assert all(abs(shapes[k] / total - 0.1) < 0.02 for k in SHAPES[1:])
    s = scenes(6000, seed=6, skew={"colour": {"red": 0.5}}, backgrounds=("black", "white"))
    colours = Counter(o.colour for x in s for o in x.objects)
    assert abs(colours["red"] / sum(colours.values()) - 0.5) < 0.03
    assert set(x.background for x in s) == {"black", "white"}


def test_count_and_background_frequencies():
    s = scenes(6000, seed=7, p_two=0.3)
    assert abs(sum(len(x.objects) == 2 for x in s) / 6000 - 0.3) < 0.03
    bgs = Counter(x.background for x in s)
    assert all(abs(bgs[b] / 6000 - 1 / len(BACKGROUNDS)) < 0.03 for b in BACKGROUNDS)
    assert all(len(x.objects) == 1 for x in scenes(300, max_objects=1))


def test_determinism_by_seed():
    a, b, c = make_shapes(64, seed=3), make_shapes(64, seed=3), make_shapes(64, seed=4)
    assert torch.equal(a[0], b[0]) and a[1] == b[1] and a[2] == b[2]
    assert a[2] != c[2]
    assert make_shapes(8, ShapesConfig(seed=9))[1] == make_shapes(8, seed=9)[1]


# ---- rendering ------------------------------------------------------------------------------

def test_render_hand_computed_pixels():
    big = Scene("blue", (Object("circle", "red", "large", "top left"),))
    img = render([big], 32)[0]  # (3, 32, 32)
    assert torch.allclose(img[:, 8, 8], value("red"))  # pixel centre (8.5, 8.5) is 0.7 px from the circle centre
    assert torch.allclose(img[:, 0, 0], value("blue")) and torch.allclose(img[:, 31, 31], value("blue"))
    # small square at the centre: half-extent 0.09 * 32 = 2.88 px, centre 16 px. Column 18 has its pixel
    # centre 2.5 px out, signed distance -0.38 px, coverage 0.5 + 0.38 = 0.88; column 19 is outside.
    small = Scene("white", (Object("square", "green", "small", "center"),))
    img = render([small], 32)[0]
    want = 0.88 * value("green") + 0.12 * value("white")
    assert torch.allclose(img[:, 16, 18], want, atol=1e-5)
    assert torch.allclose(img[:, 16, 19], value("white"))
    assert HALF_EXTENT["small"] * 32 == pytest.approx(2.88)


def test_render_shapes_symmetries_and_range():
    s = [Scene("black", (Object(shape, "yellow", "large", "top left"),)) for shape in SHAPES]
    s = [Scene("gray", (Object(shape, "orange", "small", "center"),)) for shape in SHAPES]
    img = render(s, 48)  # (4, 3, 48, 48)
    assert img.shape == (4, 3, 48, 48) and img.dtype == torch.float32
    assert torch.allclose(img, img.flip(-1), atol=1e-5)  # every shape is mirror-symmetric left-right
    circle, square, triangle, diamond = (img[i].ne(value("gray").reshape(3, 1, 1)).any(0).sum() for i in range(4))
    assert square > circle > diamond and square > triangle  # areas 4h^2 > pi h^2 > 2h^2
    x = make_shapes(200, ShapesConfig(resolution=16))[0]
    assert x.min() >= -1 and x.max() <= 1


def test_render_is_fast():
    """Vectorised drawing: ~0.05 s for 2000 images on one idle core; the bound leaves room for a busy CI."""
    _, _, s = make_shapes(2000)
    start = time.perf_counter()
    render(s, 32)
    assert time.perf_counter() - start < 2.0


def test_shapes_dataset():
    ds = ShapesDataset(10, ShapesConfig(resolution=16), seed=1)
    image, text = ds[3]
    assert len(ds) == 10 and image.shape == (3, 16, 16) and parse_caption(text) == ds.scenes[3]


@pytest.mark.parametrize("kwargs, name", [({"resolution": 8}, "resolution"), ({"resolution": 100}, "resolution"),
                                          ({"max_objects": 3}, "max_objects"), ({"p_two": 1.5}, "p_two"),
                                          ({"holdout": (("triangle", "pink"),)}, "holdout"),
                                          ({"skew": {"texture": {"red": 1.0}}}, "skew"),
                                          ({"skew": {"colour": {"pink": 1.0}}}, "colour"),
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


# ---- image-dataset adapters -----------------------------------------------------------------
