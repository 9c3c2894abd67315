"""The procedural ``shapes`` world: scenes, their rendering and captions (read back by ``minidiff.captions``).

A shapes image shows one to four flat objects on a plain background, each with a shape, colour, size and
one of nine slots (a 3x3 grid); objects never share a slot or touch. A scene's kind decides what its
caption says: ``position`` (one or two objects with slots), ``objects`` (one to four, no slots), ``count``
(two to four identical objects: "three green triangles") or ``relation`` ("a red circle to the left of a
blue square"). ``describe`` turns a scene into what its caption says (a partial ``Scene``), ``caption``
writes that in one of ``TEMPLATES`` wordings and ``captions.parse_caption`` reads it back exactly. Words are
lowercase, a comma is a token (``split_words``). Geometry is in image units (side 1, ``y`` downwards);
objects are anti-aliased masks from signed distances, so a scene looks the same at every resolution.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from minidiff.words import split_words  # noqa: F401  (also importable from here, as before)

SHAPES = ("circle", "square", "triangle", "diamond")
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
SIZES = ("small", "large")
POSITIONS = ("top left", "top center", "top right", "center left", "center", "center right",
             "bottom left", "bottom center", "bottom right")  # the 3x3 grid, row by row
BACKGROUNDS = ("black", "white", "gray", "blue")
ATTRIBUTES = dict(shape=SHAPES, colour=COLOURS, size=SIZES, position=POSITIONS, background=BACKGROUNDS)
FIELDS = ("shape", "colour", "size", "position")  # the attributes of one object
OMITTABLE = ("colour", "size", "background")  # what a caption may leave out (``describe``)
RELATIONS = ("to the left of", "to the right of", "above", "below")  # objects[0] <relation> objects[1]
NUMBERS = ("a", "two", "three", "four")  # NUMBERS[k - 1] says k objects; "an" also says one
KINDS = ("position", "objects", "count", "relation")
KIND_WEIGHTS = {"position": 0.4, "objects": 0.25, "count": 0.15, "relation": 0.2}  # default mix of kinds

RGB = {"red": (0.90, 0.10, 0.10), "green": (0.10, 0.75, 0.20), "blue": (0.15, 0.30, 0.95),  # in [0, 1], far
       "yellow": (0.95, 0.90, 0.10), "purple": (0.60, 0.20, 0.80), "orange": (1.00, 0.55, 0.00),  # apart
       "black": (0.0, 0.0, 0.0), "white": (1.0, 1.0, 1.0), "gray": (0.5, 0.5, 0.5)}
GRID = (0.25, 0.5, 0.75)  # slot centres along each axis; the corners and center are the five slots of old
SLOT_CENTRES = {p: (GRID[i % 3], GRID[i // 3]) for i, p in enumerate(POSITIONS)}  # (x, y) in image units
HALF_EXTENT = {"small": 0.09, "large": 0.19}  # half the side of an object's bounding box
MIN_GAP = 1 / 16  # bounding boxes of two objects stay >= 1 pixel apart at the smallest resolution
MIN_RESOLUTION, MAX_RESOLUTION = 16, 64
MAX_TRIES = 1000  # rejection rounds before a config is declared impossible
NO_ARTICLE, COLOUR_LAST = 1, 3  # templates whose objects read "large red circle", "a large circle in red"
WHERE_PHRASES = ("at the {where}", ", {where}", "in the {where}", "at the {where}", "sits at the {where}")
CORNERS = ("top left", "top right", "bottom left", "bottom right")  # template 2 says "in the top left corner"
SCENE_PHRASES = ("{objects} on a {bg} background", "{objects}, {bg} background",
                 "a {bg} background with {objects}", "{objects}, {bg} background",
                 "on a {bg} background, {objects}")
TEMPLATES = len(SCENE_PHRASES)  # number of caption wordings; caption(scene, k) for k in range(TEMPLATES)
FILLER_WORDS = ("a", "an", "at", "the", "on", "background", "with", "in", "corner", "sits", "and", ",")


def _check_resolution(resolution: int) -> None:
    if not (isinstance(resolution, int) and MIN_RESOLUTION <= resolution <= MAX_RESOLUTION):
        raise ValueError(f"resolution={resolution!r}: use an int in {MIN_RESOLUTION}..{MAX_RESOLUTION}")


def _check_word(kind: str, word: str | None) -> None:
    if word is not None and word not in ATTRIBUTES[kind]:
        raise ValueError(f"{kind}={word!r} is not known; choose one of {ATTRIBUTES[kind]}")


@dataclass(frozen=True)
class Object:
    """One object. A field is None only in a partial scene (a prompt) that does not name it."""

    shape: str | None
    colour: str | None = None
    size: str | None = None
    position: str | None = None

    def __post_init__(self) -> None:
        for kind in FIELDS:
            _check_word(kind, getattr(self, kind))


@dataclass(frozen=True)
class Scene:
    """A background and its objects, sorted by slot (unplaced ones last, in order) so equal scenes compare
    equal; ``relation``: objects[0] <relation> objects[1] (prompts only); ``kind``: see ``describe``."""

    background: str | None
    objects: tuple[Object, ...] = ()
    relation: str | None = None
    kind: str | None = dataclasses.field(default=None, compare=False)

    def __post_init__(self) -> None:
        _check_word("background", self.background)
        by_slot = sorted(self.objects, key=lambda o: POSITIONS.index(o.position) if o.position else 9)
        object.__setattr__(self, "objects", tuple(by_slot))
        placed = [o.position for o in self.objects if o.position is not None]
        if len(set(placed)) < len(placed):
            raise ValueError(f"two objects of {self.objects} share a position; a slot holds at most one")
        if self.relation is not None and (self.relation not in RELATIONS or len(self.objects) != 2 or placed):
            raise ValueError(f"relation={self.relation!r} needs one of {RELATIONS} between two objects "
                             f"that name no position; got {self.objects}")
        if self.kind not in (None, *KINDS):
            raise ValueError(f"kind={self.kind!r} is not known; choose one of {KINDS}")

    @property
    def complete(self) -> bool:
        """True when every attribute is named (every drawn scene is complete)."""
        return self.background is not None and all(None not in vars(o).values() for o in self.objects)


def relation_holds(relation: str, a: str, b: str) -> bool:
    """Does an object at slot ``a`` stand in ``relation`` to one at slot ``b``? Only objects sharing a row
    (left of / right of) or a column (above / below) are related, so at most one relation holds."""
    (ax, ay), (bx, by) = SLOT_CENTRES[a], SLOT_CENTRES[b]
    return {"to the left of": ay == by and ax < bx, "to the right of": ay == by and ax > bx,
            "above": ax == bx and ay < by, "below": ax == bx and ay > by}[relation]


@dataclass
class ShapesConfig:
    """How shapes scenes are drawn (the single place of world options). max_objects: 1..4; p_two: share of
    two-object ``position`` scenes; kinds: ``{kind: weight}`` (default ``KIND_WEIGHTS``); p_omit: see
    ``describe``, one rate or ``{"colour": .., "size": .., "background": ..}`` (unlisted: 0.3).
    holdout: combinations never drawn, each a tuple of object words: ``("triangle", "purple")``
    is no purple triangles, ``("three", "square")`` no scene with exactly three squares. skew: ``{attribute:
    {value: probability}}``, unlisted values share the rest. Scenes breaking a rule (``breaks_rules``) are
    redrawn, which shifts frequencies a little."""

    resolution: int = 32
    max_objects: int = 4
    p_two: float = 0.5
    kinds: dict[str, float] | None = None
    p_omit: float | dict[str, float] = 0.3
    holdout: tuple[tuple[str, ...], ...] = ()
    skew: dict[str, dict[str, float]] | None = None
    backgrounds: tuple[str, ...] = BACKGROUNDS
    seed: int = 0

    def __post_init__(self) -> None:
        _check_resolution(self.resolution)
        rates = self.p_omit.values() if isinstance(self.p_omit, dict) else [self.p_omit]
        if (self.max_objects not in (1, 2, 3, 4) or not 0 <= self.p_two <= 1
                or not all(0 <= r <= 1 for r in rates)
                or isinstance(self.p_omit, dict) and not set(self.p_omit) <= set(OMITTABLE)):
            raise ValueError(f"max_objects={self.max_objects!r}, p_two={self.p_two!r}, "
                             f"p_omit={self.p_omit!r}: "
                             f"use max_objects in 1..4, p_two in [0, 1] and p_omit one rate in [0, 1] or "
                             f"{{attribute: rate}} for attributes in {OMITTABLE}")
        kinds = KIND_WEIGHTS if self.kinds is None else self.kinds
        if any(k not in KINDS or w < 0 for k, w in kinds.items()) or sum(kinds.values()) <= 0:
            raise ValueError(f"kinds={self.kinds!r}: use weights >= 0 (not all 0) for kinds from {KINDS}")
        self.holdout, self.backgrounds = tuple(tuple(c) for c in self.holdout), tuple(self.backgrounds)
        words = SHAPES + COLOURS + SIZES + POSITIONS + NUMBERS[1:]
        for word in (w for combo in self.holdout for w in combo if w not in words):
            raise ValueError(f"holdout word {word!r} in {self.holdout} is not an object word; use {words}")
        if not self.backgrounds:
            raise ValueError(f"backgrounds=() is empty; choose a non-empty subset of {BACKGROUNDS}")
        for attr, value in [("background", bg) for bg in self.backgrounds] + [
                (a, v) for a, weights in (self.skew or {}).items() if a in ATTRIBUTES for v in weights]:
            _check_word(attr, value)
        if any(a not in ATTRIBUTES or min(w.values(), default=0) < 0 for a, w in (self.skew or {}).items()):
            raise ValueError(f"skew={self.skew!r}: use attributes from {tuple(ATTRIBUTES)} and weights >= 0")
        if not self.kind_weights():
            raise ValueError(f"kinds={kinds} leaves no kind that fits max_objects={self.max_objects}")

    def kind_weights(self) -> dict[str, float]:
        """The kinds that can be drawn with max_objects objects, with their weights (> 0)."""
        kinds = KIND_WEIGHTS if self.kinds is None else self.kinds
        return {k: w for k, w in kinds.items() if w > 0 and (self.max_objects > 1 or k in KINDS[:2])}

    def probs(self, attr: str) -> torch.Tensor:
        """Proposal probabilities over ``ATTRIBUTES[attr]`` (before the rules redraw scenes)."""
        allowed = self.backgrounds if attr == "background" else ATTRIBUTES[attr]
        weights = dict((self.skew or {}).get(attr, {}))
        rest = [v for v in allowed if v not in weights]
        weights.update({v: max(0.0, 1.0 - sum(weights.values())) / len(rest) for v in rest})
        p = torch.tensor([weights.get(v, 0.0) * (v in allowed) for v in ATTRIBUTES[attr]]).double()
        if p.sum() <= 0:
            raise ValueError(f"skew for {attr!r} leaves no value with positive probability")
        return p / p.sum()


def fits(p1: str, s1: str, p2: str, s2: str) -> bool:
    """May an object of size s1 at slot p1 share the image with one of size s2 at p2 (boxes MIN_GAP apart)?"""
    (x1, y1), (x2, y2) = SLOT_CENTRES[p1], SLOT_CENTRES[p2]
    return p1 != p2 and max(abs(x1 - x2), abs(y1 - y2)) - HALF_EXTENT[s1] - HALF_EXTENT[s2] >= MIN_GAP


def breaks_rules(objects: Sequence[Object], background: str, holdout: Sequence[tuple[str, ...]] = ()) -> bool:
    """Does a drawn scene break a rule: an object the colour of the background, two that touch, or a
    held-out combination (see ShapesConfig.holdout)?"""
    if any(o.colour == background for o in objects) or not all(
            fits(a.position, a.size, b.position, b.size) for a, b in itertools.combinations(objects, 2)):
        return True
    for combo in holdout:
        count = next((NUMBERS.index(w) + 1 for w in combo if w in NUMBERS), None)
        matching = sum(all(w in (o.shape, o.colour, o.size, o.position) for w in combo if w not in NUMBERS)
                       for o in objects)
        if (matching == count) if count else matching:
            return True
    return False


def sample_scenes(n: int, config: ShapesConfig, generator: torch.Generator) -> list[Scene]:
    """Draw ``n`` valid complete scenes, deterministically for a given generator state. Kind, background
    and object count are drawn once per scene; the objects are redrawn until every rule holds."""
    if n < 0:
        raise ValueError(f"n={n} is negative; ask for n >= 0 scenes")
    rng = random.Random(int(torch.randint(2**62, (1,), generator=generator)))
    weights = {a: config.probs(a).tolist() for a in ATTRIBUTES}
    kinds, most, scenes = config.kind_weights(), config.max_objects, []
    for _ in range(n):
        # 1. the kind, the background and the number of objects
        kind = rng.choices(list(kinds), list(kinds.values()))[0]
        background = rng.choices(BACKGROUNDS, weights["background"])[0]
        count = {"position": 1 + (most > 1 and rng.random() < config.p_two), "relation": 2,
                 "objects": rng.randint(1, most), "count": rng.randint(2, max(2, most))}
        # 2. propose objects until none breaks a rule (rejection sampling); a relation's two objects share
        #    row `line` (< 3) or column `line - 3`; a count's objects share shape, colour and size
        for _ in range(MAX_TRIES):
            line = rng.randrange(6)
            slots = range(3 * line, 3 * line + 3) if line < 3 else range(line - 3, 9, 3)
            places = rng.sample(slots, 2) if kind == "relation" else rng.sample(range(9), count[kind])
            looks = [[rng.choices(ATTRIBUTES[a], weights[a])[0] for a in FIELDS[:3]] for _ in places]
            objects = [Object(*looks[(kind != "count") * i], POSITIONS[p]) for i, p in enumerate(places)]
            if not breaks_rules(objects, background, config.holdout):
                break
        else:
            raise ValueError(f"the rules of {config} leave (almost) no valid scene; relax holdout or skew")
        scenes.append(Scene(background, tuple(objects), kind=kind))
    return scenes


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
    for bad in (s for s in scenes if not s.complete):
        raise ValueError(f"every scene must name every attribute to be drawn; got {bad}")
    n, r = len(scenes), resolution
    pixels = torch.arange(r, dtype=torch.float32) + 0.5  # pixel centres in pixel units, (W,)
    img = torch.tensor([RGB[s.background] for s in scenes]).reshape(n, 3, 1, 1) * 2 - 1  # (N, 3, 1, 1)
    for k in range(max((len(s.objects) for s in scenes), default=0)):
        objs = [s.objects[k] if len(s.objects) > k else None for s in scenes]
        shape = torch.tensor([-1 if o is None else SHAPES.index(o.shape) for o in objs])  # (N,)
        centres = torch.tensor([SLOT_CENTRES[o.position] if o else (0.0, 0.0) for o in objs]) * r  # (N, 2)
        cx, cy = centres.T.reshape(2, n, 1)  # (N, 1) each
        h = torch.tensor([HALF_EXTENT[o.size] * r if o else 0.0 for o in objs]).reshape(n, 1, 1)  # (N, 1, 1)
        colour = torch.tensor([RGB[o.colour] if o else (0.0,) * 3 for o in objs]).reshape(n, 3, 1, 1) * 2 - 1
        alpha = torch.zeros(n, r, r)  # (N, H, W) share of each pixel covered by object k
        for j, name in enumerate(SHAPES):
            idx = (shape == j).nonzero().squeeze(1)  # (M,)
            if len(idx):
                dx, dy = (pixels - cx[idx]).unsqueeze(1), (pixels - cy[idx]).unsqueeze(2)  # (M,1,W), (M,H,1)
                alpha[idx] = _signed_distance(name, dx, dy, h[idx]).neg_().add_(0.5).clamp_(0, 1)  # (M, H, W)
        img = torch.lerp(img, colour, alpha.unsqueeze(1))  # (N, 3, H, W)
    return img.expand(n, 3, r, r).contiguous()


def describe(scene: Scene, p_omit: float | dict[str, float], generator: torch.Generator) -> Scene:
    """What a caption of ``scene`` says: a partial Scene. ``position`` scenes are named in full; the other
    kinds name no slot and leave out each size, colour (shared by identical objects) and the background
    with probability ``p_omit`` (one rate, or one per attribute of OMITTABLE: unlisted ones 0.3); a
    ``relation`` scene says how objects[0] stands to objects[1]."""
    if scene.kind in (None, "position"):
        return scene
    rate = {a: p_omit.get(a, 0.3) if isinstance(p_omit, dict) else p_omit for a in OMITTABLE}
    rng = random.Random(int(torch.randint(2**62, (1,), generator=generator)))
    keep: dict[tuple, tuple[bool, bool]] = {}  # (colour, size) named? Drawn once for identical objects
    for o in scene.objects:
        flag = rng.random() >= rate["colour"], rng.random() >= rate["size"]
        keep.setdefault((o.shape, o.colour, o.size), flag)
    flags = [keep[o.shape, o.colour, o.size] for o in scene.objects]
    named = [Object(o.shape, o.colour if c else None, o.size if z else None)
             for o, (c, z) in zip(scene.objects, flags)]
    background = scene.background if rng.random() >= rate["background"] else None
    if scene.kind == "relation":
        order = rng.sample((0, 1), 2)
        a, b = (scene.objects[i].position for i in order)
        relation = next(r for r in RELATIONS if relation_holds(r, a, b))
        return Scene(background, (named[order[0]], named[order[1]]), relation=relation)
    return Scene(background, tuple(sorted(named, key=named.index)))  # identical objects side by side


def _phrase(o: Object, count: int, template: int) -> str:
    """``count`` identical objects in the wording of ``template``: "a large red circle at the top left"."""
    shape = o.shape + ("s" if count > 1 else "")
    words = [o.size, shape, "in", o.colour] if template == COLOUR_LAST else [o.size, o.colour, shape]
    words = [w for w in words if w is not None and not (w == "in" and o.colour is None)]
    if count > 1 or template != NO_ARTICLE:
        words.insert(0, NUMBERS[count - 1] if count > 1 else "an" if words[0][0] in "aeiou" else "a")
    if o.position is not None:
        corner = template == 2 and o.position in CORNERS
        words.append(WHERE_PHRASES[template].format(where=o.position + " corner" * corner))
    return " ".join(words).replace(" ,", ",")


def caption(scene: Scene, template: int) -> str:
    """Caption a (partial) scene in wording ``template`` in 0..TEMPLATES-1 (_phrase, SCENE_PHRASES), e.g.
    0: "a large red circle at the top left on a blue background"; objects are joined by "and", identical
    unplaced objects make a count ("two red circles"), a relation stands between two."""
    if not (isinstance(template, int) and 0 <= template < TEMPLATES):
        raise ValueError(f"template={template!r} is not known; use an int in 0..{TEMPLATES - 1}")
    if not scene.objects or any(o.shape is None for o in scene.objects):
        raise ValueError(f"scene {scene} must have at least one object, each with a shape, to be captioned")
    if scene.relation is not None:
        objects = f" {scene.relation} ".join(_phrase(o, 1, template) for o in scene.objects)
    else:
        groups = itertools.groupby(scene.objects)
        objects = " and ".join(_phrase(o, len(list(g)), template) for o, g in groups)
    wording = SCENE_PHRASES[template] if scene.background else "{objects}"
    return wording.format(objects=objects, bg=scene.background)


def captions_for(scenes: Sequence[Scene], generator: torch.Generator,
                 p_omit: float | dict[str, float] = 0.3) -> list[str]:
    """One caption per scene: ``describe`` it, then write it in a template drawn uniformly."""
    templates = torch.randint(TEMPLATES, (len(scenes),), generator=generator).tolist()
    return [caption(describe(s, p_omit, generator), k) for s, k in zip(scenes, templates)]


def make_shapes(n: int, config: ShapesConfig | None = None,
                seed: int | None = None) -> tuple[torch.Tensor, list[str], list[Scene]]:
    """``n`` shapes images (N, 3, H, W) in [-1, 1], their captions and scenes; seed defaults to config's."""
    config = config or ShapesConfig()
    generator = torch.Generator().manual_seed(config.seed if seed is None else seed)
    scenes = sample_scenes(n, config, generator)
    return render(scenes, config.resolution), captions_for(scenes, generator, config.p_omit), scenes


def __getattr__(name: str):
    """``parse_caption`` and ``vocabulary`` live in ``minidiff.captions``; importable from here too."""
    if name in ("parse_caption", "vocabulary"):
        from minidiff import captions
        return getattr(captions, name)
    raise AttributeError(f"module 'minidiff.shapes' has no attribute {name!r}")
