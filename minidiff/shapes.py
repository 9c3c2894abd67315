"""The procedural ``shapes`` world: scenes, their rendering, captions and the caption parser.

A shapes image shows one or two flat objects on a plain background. Every object has a shape,
colour, size and position; a position is one of five slots, and two objects never share a slot or
touch. Captions are written from ``TEMPLATES`` wordings and ``parse_caption`` reads any of them back
into the exact ``Scene``, which is what lets ``judge.py`` score prompt adherence exactly.

Words: captions are lowercase; a comma is glued to the word before it in the text and is a token
of its own after ``split_words`` ("circle, top" -> circle , top). ``vocabulary()`` lists them all.

Geometry is in image units (the image side is 1, ``y`` grows downwards); objects are drawn as
anti-aliased masks from signed distances, so one scene looks the same at every resolution.
"""


from __future__ import annotations

import difflib
import itertools
import re
from dataclasses import dataclass
from typing import Sequence

import torch
from torch.utils.data import Dataset

SHAPES = ("circle", "square", "triangle", "diamond")
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
SIZES = ("small", "large")
POSITIONS = ("top left", "top right", "bottom left", "bottom right", "center")
BACKGROUNDS = ("black", "white", "gray", "blue")
ATTRIBUTES = {"shape": SHAPES, "colour": COLOURS, "size": SIZES, "position": POSITIONS, "background": BACKGROUNDS}

RGB = {  # colours in [0, 1]; chosen to be far apart from each other and from every background
    "red": (0.90, 0.10, 0.10), "green": (0.10, 0.75, 0.20), "blue": (0.15, 0.30, 0.95),
    "yellow": (0.95, 0.90, 0.10), "purple": (0.60, 0.20, 0.80), "orange": (1.00, 0.55, 0.00),
    "black": (0.0, 0.0, 0.0), "white": (1.0, 1.0, 1.0), "gray": (0.5, 0.5, 0.5)}
SLOT_CENTRES = {"top left": (0.25, 0.25), "top right": (0.75, 0.25), "bottom left": (0.25, 0.75),
                "bottom right": (0.75, 0.75), "center": (0.5, 0.5)}  # (x, y) in image units
HALF_EXTENT = {"small": 0.09, "large": 0.19}  # half the side of an object's bounding box
MIN_GAP = 1 / 16  # bounding boxes of two objects stay >= 1 pixel apart at the smallest resolution
MIN_RESOLUTION, MAX_RESOLUTION = 16, 64
MAX_TRIES = 1000  # rejection rounds before a config is declared impossible
WORD_PATTERN = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*|[^\sa-z0-9]")  # words, or any single symbol
DROPPED = "."  # full stops carry no meaning in a caption and are dropped; commas are tokens
OBJECT_PHRASES = ("a {size} {colour} {shape} at the {where}", "{size} {colour} {shape}, {where}",
                  "a {size} {colour} {shape} in the {where}", "a {size} {shape} in {colour} at the {where}",
                  "a {size} {colour} {shape} sits at the {where}")  # one per caption template
SCENE_PHRASES = ("{objects} on a {bg} background", "{objects}, {bg} background", "a {bg} background with {objects}",
                 "{objects}, {bg} background", "on a {bg} background, {objects}")
TEMPLATES = len(SCENE_PHRASES)  # number of caption wordings; caption(scene, k) for k in range(TEMPLATES)
FILLER_WORDS = ("a", "at", "the", "on", "background", "with", "in", "corner", "sits", "and", ",")


def _check_resolution(resolution: int) -> None:
    if not (isinstance(resolution, int) and MIN_RESOLUTION <= resolution <= MAX_RESOLUTION):
        raise ValueError(f"resolution={resolution!r} is not allowed; use an int in {MIN_RESOLUTION}..{MAX_RESOLUTION}")


def _check_word(kind: str, word: str | None) -> None:
    if word is not None and word not in ATTRIBUTES[kind]:
        raise ValueError(f"{kind}={word!r} is not known; choose one of {ATTRIBUTES[kind]}")


@dataclass(frozen=True)
class Object:
    """One object. A field is None only in a parsed prompt that does not name it."""

    shape: str | None
    colour: str | None = None
    size: str | None = None
    position: str | None = None

    def __post_init__(self) -> None:
        for kind in ("shape", "colour", "size", "position"):
            _check_word(kind, getattr(self, kind))


@dataclass(frozen=True)
class Scene:
    """A background and its objects, kept sorted by slot (POSITIONS order) so equal scenes compare equal."""

    background: str | None
    objects: tuple[Object, ...] = ()

    def __post_init__(self) -> None:
        _check_word("background", self.background)
        order = sorted(self.objects, key=lambda o: len(POSITIONS) if o.position is None else POSITIONS.index(o.position))
        object.__setattr__(self, "objects", tuple(order))

    @property
    def complete(self) -> bool:
        """True when every attribute is named (every generated scene is complete)."""
        return self.background is not None and all(None not in (o.shape, o.colour, o.size, o.position) for o in self.objects)


@dataclass
class ShapesConfig:
    """How shapes scenes are drawn.

    holdout: combinations never generated, each a tuple of object words, e.g. ``("triangle", "purple")``
    means "no purple triangles" (an object is excluded when it matches every word of a combination).
    skew: ``{attribute: {value: probability}}``; listed values get that probability, the unlisted
    values of the attribute share the rest equally (listed summing to >= 1: normalised). Scenes that
    break a rule (colour equal to background, held-out combination, overlapping slots) are redrawn,
    which shifts frequencies a little where a rule touches the skewed attribute.
    """

    resolution: int = 32
    max_objects: int = 2
    p_two: float = 0.5
    holdout: tuple[tuple[str, ...], ...] = ()
    skew: dict[str, dict[str, float]] | None = None
    backgrounds: tuple[str, ...] = BACKGROUNDS
    seed: int = 0

    def __post_init__(self) -> None:
        _check_resolution(self.resolution)
        if self.max_objects not in (1, 2) or not 0.0 <= self.p_two <= 1.0:
            raise ValueError(f"max_objects={self.max_objects!r}, p_two={self.p_two!r}: use max_objects 1 or 2 and p_two in [0, 1]")
        self.holdout, self.backgrounds = tuple(tuple(c) for c in self.holdout), tuple(self.backgrounds)
        object_words = SHAPES + COLOURS + SIZES + POSITIONS
        for word in (w for combo in self.holdout for w in combo if w not in object_words):
            raise ValueError(f"holdout word {word!r} in {self.holdout} is not an object attribute; choose from {object_words}")
        if not self.backgrounds:
            raise ValueError(f"backgrounds=() is empty; choose a non-empty subset of {BACKGROUNDS}")
        for bg in self.backgrounds:
            _check_word("background", bg)
        for attr, weights in (self.skew or {}).items():
            if attr not in ATTRIBUTES or any(w < 0 for w in weights.values()):
                raise ValueError(f"skew={self.skew!r}: use attributes from {tuple(ATTRIBUTES)} and weights >= 0")
            for value in weights:
                _check_word(attr, value)

    def probs(self, attr: str) -> torch.Tensor:
        """Proposal probabilities over ``ATTRIBUTES[attr]`` (before the rules redraw scenes)."""
        allowed = self.backgrounds if attr == "background" else ATTRIBUTES[attr]
        weights = dict((self.skew or {}).get(attr, {}))
        rest = [v for v in allowed if v not in weights]
        weights.update({v: max(0.0, 1.0 - sum(weights.values())) / len(rest) for v in rest})
        p = torch.tensor([weights.get(v, 0.0) if v in allowed else 0.0 for v in ATTRIBUTES[attr]], dtype=torch.float64)
        if p.sum() <= 0:
            raise ValueError(f"skew for {attr!r} leaves no value with positive probability")
        return p / p.sum()


def _slots_compatible() -> torch.Tensor:
    """(P, S, P, S) bool: may an object of size s1 at slot p1 share the image with size s2 at p2?"""
    def fits(p1: str, s1: str, p2: str, s2: str) -> bool:
        (x1, y1), (x2, y2) = SLOT_CENTRES[p1], SLOT_CENTRES[p2]
        return p1 != p2 and max(abs(x1 - x2), abs(y1 - y2)) - HALF_EXTENT[s1] - HALF_EXTENT[s2] >= MIN_GAP  # box gap
    table = [fits(*combo) for combo in itertools.product(POSITIONS, SIZES, POSITIONS, SIZES)]
    return torch.tensor(table).reshape(len(POSITIONS), len(SIZES), len(POSITIONS), len(SIZES))  # (P, S, P, S)


COMPATIBLE = _slots_compatible()


def sample_scenes(n: int, config: ShapesConfig, generator: torch.Generator) -> list[Scene]:
    """Draw ``n`` valid scenes, deterministically for a given generator state. Background and count are
    drawn once (their frequencies are exact); object attributes are redrawn until every rule holds."""
    if n < 0:
        raise ValueError(f"n={n} is negative; ask for n >= 0 scenes")
    names = ("shape", "colour", "size", "position")
    probs = {a: config.probs(a) for a in (*names, "background")}
    bg_colour = torch.tensor([COLOURS.index(b) if b in COLOURS else -1 for b in BACKGROUNDS])
    held = [[(next(a for a in names if w in ATTRIBUTES[a]), w) for w in combo] for combo in config.holdout]
    # 1. the background and the number of objects (Bernoulli p_two)
    draw = {"background": torch.multinomial(probs["background"], max(n, 1), True, generator=generator)[:n],
            "two": torch.rand(n, generator=generator) < (config.p_two if config.max_objects == 2 else 0.0)}
    draw.update({f"{a}{k}": torch.zeros(n, dtype=torch.long) for k in range(2) for a in names})
    todo, tries = torch.arange(n), 0
    while len(todo) and tries < MAX_TRIES:
        tries, m = tries + 1, len(todo)
        # 2. propose every object attribute of every unfinished scene at once
        prop = {f"{a}{k}": torch.multinomial(probs[a], m, True, generator=generator) for k in range(2) for a in names}
        # 3. the rules: colour differs from background, no held-out combination, slots do not clash
        two, ok = draw["two"][todo], torch.ones(m, dtype=torch.bool)
        for k in range(2):
            bad = prop[f"colour{k}"] == bg_colour[draw["background"][todo]]
            for combo in held:
                bad |= torch.stack([prop[f"{a}{k}"] == ATTRIBUTES[a].index(w) for a, w in combo]).all(0)
            ok &= ~(bad & two) if k else ~bad
        ok &= ~two | COMPATIBLE[prop["position0"], prop["size0"], prop["position1"], prop["size1"]]
        for key, value in prop.items():  # 4. keep the valid proposals, redraw the rest
            draw[key][todo[ok]] = value[ok]
        todo = todo[~ok]
    if len(todo):
        raise ValueError(f"the rules of {config} leave (almost) no valid scene; relax holdout, skew or backgrounds")
    cols = {key: value.tolist() for key, value in draw.items()}
    return [Scene(BACKGROUNDS[cols["background"][i]], tuple(Object(*(ATTRIBUTES[a][cols[f"{a}{k}"][i]] for a in names))
                                                           for k in range(1 + cols["two"][i]))) for i in range(n)]


def _signed_distance(shape: str, dx: torch.Tensor, dy: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Signed distance (negative inside; Quilez, "2D distance functions") to a shape of half-extent h
    (M, 1, 1) centred at 0, from offsets dx (M, 1, W) and dy (M, H, 1); returns (M, H, W)."""
    if shape == "circle":
        return torch.sqrt(dx**2 + dy**2) - h
    if shape == "square":
        return torch.maximum(dx.abs(), dy.abs()) - h
    if shape == "diamond":
        return (dx.abs() / 2**0.5 + (dy.abs() - h) / 2**0.5)
    # triangle pointing up, vertices (0, -h), (-h, h), (h, h): the max over its three edge half-planes
    return torch.maximum(dy - h, 2 * dx.abs() / 5**0.5 - (dy + h) / 5**0.5)


def render(scenes: Sequence[Scene], resolution: int) -> torch.Tensor:
    """Draw scenes as images (N, 3, H=resolution, W=resolution) in [-1, 1], anti-aliased over ~1 pixel."""
    _check_resolution(resolution)
    if not all(s.complete for s in scenes):
        bad = next(s for s in scenes if not s.complete)
        raise ValueError(f"every scene must name every attribute to be drawn; got {bad}")
    n, r = len(scenes), resolution
    pixels = torch.arange(r, dtype=torch.float32) + 0.5  # pixel centres in pixel units, (W,)
    img = torch.tensor([RGB[s.background] for s in scenes]).reshape(n, 3, 1, 1) * 2 - 1  # (N, 3, 1, 1)
    for k in range(max((len(s.objects) for s in scenes), default=0)):
        objs = [s.objects[k] if len(s.objects) > k else None for s in scenes]
        shape = torch.tensor([-1 if o is None else SHAPES.index(o.shape) for o in objs])  # (N,)
        cx, cy = (torch.tensor([SLOT_CENTRES[o.position] if o else (0.0, 0.0) for o in objs]) * r).T.reshape(2, n, 1)  # (N, 1)
        h = torch.tensor([HALF_EXTENT[o.size] * r if o else 0.0 for o in objs]).reshape(n, 1, 1)  # (N, 1, 1)
        colour = torch.tensor([RGB[o.colour] if o else (0.0, 0.0, 0.0) for o in objs]).reshape(n, 3, 1, 1) * 2 - 1  # (N, 3, 1, 1)
        alpha = torch.zeros(n, r, r)  # (N, H, W) share of each pixel covered by object k
        for j, name in enumerate(SHAPES):
            idx = (shape == j).nonzero().squeeze(1)  # (M,)
            if len(idx):
                dx, dy = (pixels - cx[idx]).unsqueeze(1), (pixels - cy[idx]).unsqueeze(2)  # (M, 1, W), (M, H, 1)
                d = _signed_distance(name, dx, dy, h[idx])  # (M, H, W) in pixels
                alpha[idx] = d.neg_().add_(0.5).clamp_(0, 1)
        img = torch.lerp(img, colour, alpha.unsqueeze(1))  # (N, 3, H, W)
    return img.expand(n, 3, r, r).contiguous()


def caption(scene: Scene, template: int) -> str:
    """Caption ``scene`` with wording ``template`` in 0..TEMPLATES-1 (see OBJECT_PHRASES, SCENE_PHRASES),
    e.g. 0: "a large red circle at the top left on a blue background"; objects are joined by "and"."""
    if not (isinstance(template, int) and 0 <= template < TEMPLATES):
        raise ValueError(f"template={template!r} is not known; use an int in 0..{TEMPLATES - 1}")
    if not scene.complete or not scene.objects:
        raise ValueError(f"scene {scene} must name every attribute and have at least one object to be captioned")
    phrases = [OBJECT_PHRASES[template].format(**vars(o), where=(o.position + (" corner" if template == 2 else ""))
                                               if o.position != "center" else "center") for o in scene.objects]
    return SCENE_PHRASES[template].format(objects=" and ".join(phrases), bg=scene.background)


def captions_for(scenes: Sequence[Scene], generator: torch.Generator) -> list[str]:
    """One caption per scene, each with a template drawn uniformly from ``generator``."""
    templates = torch.randint(TEMPLATES, (len(scenes),), generator=generator).tolist()
    return [caption(s, k) for s, k in zip(scenes, templates)]


def split_words(text: str) -> list[str]:
    """Lower-case ``text`` and split it into words; commas are tokens, full stops are dropped.

    The one definition of a word: the caption parser and the text tokenizer both use it.
    """
    return [w for w in WORD_PATTERN.findall(text.lower()) if w not in DROPPED]


def vocabulary() -> list[str]:
    """Every token (see ``split_words``) that any caption can contain, sorted."""
    words = {w for values in ATTRIBUTES.values() for v in values for w in v.split()}
    return sorted(words | set(FILLER_WORDS))


def _parse_object(words: list[str], text: str) -> Object | None:
    found: dict[str, str] = {}
    for word in words:
        kind = next((a for a in ("shape", "colour", "size", "position") if word in ATTRIBUTES[a]), None)
        if kind in found:
            raise ValueError(f"{text!r} names two {kind}s ({found[kind]!r}, {word!r}) for one object; join objects with 'and'")
        if kind is not None:
            found[kind] = word
    if found and "shape" not in found:
        raise ValueError(f"{text!r} describes an object ({found}) without naming its shape; choose one of {SHAPES}")
    return Object(**found) if found else None


def parse_caption(text: str) -> Scene:
    """Read a caption back into a Scene; the exact inverse of ``caption`` for every template. In free
    prompts an attribute the text leaves out is None ("a red circle"); unknown words raise ValueError."""
    vocab, words = vocabulary(), []
    for word in split_words(text):
        if word not in vocab:
            close = difflib.get_close_matches(word, vocab, n=3)
            hint = f"; did you mean {close}?" if close else ""
            raise ValueError(f"unknown word {word!r} in prompt {text!r}{hint}; known words: {vocab}")
        if words and f"{words[-1]} {word}" in POSITIONS:  # "top" + "left" -> "top left"
            words[-1] = f"{words[-1]} {word}"
        else:
            words.append(word)
    if any(word in words for word in ("top", "bottom", "left", "right")):
        raise ValueError(f"{text!r} names half a position; use one of {POSITIONS}")
    background, i = None, words.index("background") if "background" in words else -1
    if words.count("background") > 1 or i == 0 or (i > 0 and words[i - 1] not in BACKGROUNDS):
        raise ValueError(f"{text!r} must name at most one background, as '<colour> background' with a colour in {BACKGROUNDS}")
    if i > 0:
        background, words = words[i - 1], words[: i - 1] + words[i + 1:]
    segments = [list(g) for is_and, g in itertools.groupby(words, key=lambda w: w == "and") if not is_and]
    return Scene(background, tuple(o for o in (_parse_object(seg, text) for seg in segments) if o is not None))


def make_shapes(n: int, config: ShapesConfig | None = None, seed: int | None = None) -> tuple[torch.Tensor, list[str], list[Scene]]:
    """``n`` shapes images (N, 3, H, W) in [-1, 1], their captions and scenes; ``seed`` defaults to config.seed."""
    config = config or ShapesConfig()
    generator = torch.Generator().manual_seed(config.seed if seed is None else seed)
    scenes = sample_scenes(n, config, generator)
    return render(scenes, config.resolution), captions_for(scenes, generator), scenes


class ShapesDataset(Dataset):
    """``n`` shapes images rendered once and kept in memory; item i is (image (3, H, W), caption)."""

    def __init__(self, n: int, config: ShapesConfig | None = None, seed: int | None = None) -> None:
        self.images, self.captions, self.scenes = make_shapes(n, config, seed)

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        return self.images[i], self.captions[i]
