"""The judge: a small CNN that reads a shapes Scene back from an image, so adherence is exact.

The judge looks at the nine slots of ``shapes.POSITIONS``; for each slot it predicts the shape (or
"none"), colour and size of the object there, and once per image the background; the count is the
number of slots not judged empty, and a relation is read from the slots of the two objects. On real shapes
images it is near-perfect (``evaluate_judge``), so on generated images its agreement with the prompt
(``adherence``) measures the generator: an exact CLIP score. Images of any size are resized to the
judge's own resolution first (bilinear, anti-aliased).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from minidiff.checkpoint import load_checkpoint, load_into, pick_device, refresh_manifest, save_checkpoint
from minidiff.shapes import (
    ATTRIBUTES,
    BACKGROUNDS,
    COLOURS,
    FIELDS,
    POSITIONS,
    SHAPES,
    SIZES,
    Object,
    Scene,
    ShapesConfig,
    caption,
    make_shapes,
    parse_caption,
    relation_holds,
    render,
    sample_scenes,
)

WEIGHTS = Path(__file__).parent / "weights" / "judge"  # the shipped judge (.safetensors + .json)
NONE = len(SHAPES)  # shape class meaning "this slot is empty"
IGNORE = -100  # target for colour/size of an empty slot (F.cross_entropy's ignore_index)
HEADS = {"shape": len(SHAPES) + 1, "colour": len(COLOURS), "size": len(SIZES)}  # classes per slot
SCORED = (*ATTRIBUTES, "count", "relation")  # what score_scene reports
EVAL_SEED = 1_000_003  # evaluation draws its own scenes, apart from the training stream


@dataclass
class JudgeConfig:
    """Judge architecture and training recipe. The augmentations make the judge tolerate what generated
    images get slightly wrong: ``noise`` is the max std of added Gaussian noise, ``blur`` the max share
    of a 3x3 box blur mixed in, ``jitter`` the max shift of each colour channel (all in [-1, 1] units)."""

    resolution: int = 32
    channels: tuple[int, ...] = (16, 32, 64)
    depth: int = 1  # convs per stage (the first one strides by 2)
    hidden: int = 128
    lr: float = 2e-3
    noise: float = 0.3
    blur: float = 1.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        self.channels = tuple(self.channels)
        if self.resolution % 2 ** len(self.channels):
            raise ValueError(f"resolution={self.resolution} must be divisible by "
                             f"2**len(channels)={2 ** len(self.channels)}")

    @classmethod
    def from_preset(cls, name: str) -> JudgeConfig:
        """The config called ``name`` in PRESETS."""
        if name not in PRESETS:
            raise ValueError(f"judge preset {name!r} is not known; choose one of {sorted(PRESETS)}")
        return dataclasses.replace(PRESETS[name])


JUDGE_PRESET = "default"  # the preset of the shipped judge and of a run's judge stage on shapes
PRESETS = {"tiny": JudgeConfig(channels=(8, 16, 16), hidden=32), "default": JudgeConfig(),
           "wide": JudgeConfig(channels=(32, 64, 64), depth=2)}


class Judge(nn.Module):
    """Conv stack (each stage halves H and W) -> MLP -> per-slot logits and background logits."""

    def __init__(self, config: JudgeConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = [nn.Conv2d(3, config.channels[0], 3, padding=1), nn.ReLU()]
        for c_in, c_out in zip(config.channels[:1] + config.channels[:-1], config.channels):
            for i in range(config.depth):
                conv = nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, stride=2 if i == 0 else 1, padding=1)
                layers += [conv, nn.BatchNorm2d(c_out), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        side = config.resolution // 2 ** len(config.channels)
        self.per_slot = sum(HEADS.values())
        out = len(POSITIONS) * self.per_slot + len(BACKGROUNDS)
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(config.channels[-1] * side * side, config.hidden),
                                 nn.ReLU(), nn.Linear(config.hidden, out))

    def hidden(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [-1, 1] -> the hidden layer (B, hidden), the input of the last linear."""
        return self.mlp[:-1](self.features(resize(images, self.config.resolution)))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images (B, 3, H, W) in [-1, 1] -> logits: shape (B, P, 5), colour (B, P, 6), size (B, P, 2)
        and background (B, 4)."""
        out = self.mlp[-1](self.hidden(images))  # (B, P * per_slot + n_backgrounds)
        slots, background = out.split([len(POSITIONS) * self.per_slot, len(BACKGROUNDS)], dim=1)
        slots = slots.reshape(len(images), len(POSITIONS), self.per_slot)  # (B, P, per_slot)
        return {**dict(zip(HEADS, slots.split(list(HEADS.values()), dim=-1))), "background": background}


def resize(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, resolution, resolution), bilinear and anti-aliased (as is if that size)."""
    if images.shape[-2:] == (resolution, resolution):
        return images
    size = (resolution, resolution)
    return F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)


def scene_targets(scenes: Sequence[Scene]) -> dict[str, torch.Tensor]:
    """Class indices for the judge's heads: shape/colour/size (B, P) and background (B,)."""
    shape = torch.full((len(scenes), len(POSITIONS)), NONE)  # (B, P)
    colour, size = torch.full_like(shape, IGNORE), torch.full_like(shape, IGNORE)  # (B, P)
    for i, s in enumerate(scenes):
        for o in s.objects:
            p = POSITIONS.index(o.position)
            shape[i, p], colour[i, p] = SHAPES.index(o.shape), COLOURS.index(o.colour)
            size[i, p] = SIZES.index(o.size)
    background = torch.tensor([BACKGROUNDS.index(s.background) for s in scenes])  # (B,)
    return {"shape": shape, "colour": colour, "size": size, "background": background}


def judge_loss(logits: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum over heads of the mean cross-entropy (empty slots are ignored by the colour and size heads)."""
    return sum(F.cross_entropy(logits[k].flatten(0, -2), targets[k].flatten().to(logits[k].device),
                               ignore_index=IGNORE) for k in logits)


def augment(images: torch.Tensor, config: JudgeConfig, generator: torch.Generator) -> torch.Tensor:
    """Per image (B, 3, H, W): mix in a box blur, shift each channel, add Gaussian noise (all ~ U(0, max))."""
    b = len(images)
    blurred = F.avg_pool2d(images, 3, stride=1, padding=1, count_include_pad=False)  # (B, 3, H, W)
    images = torch.lerp(images, blurred, torch.rand(b, 1, 1, 1, generator=generator) * config.blur)
    images = images + (torch.rand(b, 3, 1, 1, generator=generator) * 2 - 1) * config.jitter  # (B, 3, H, W)
    std = torch.rand(b, 1, 1, 1, generator=generator) * config.noise  # (B, 1, 1, 1)
    return images + std * torch.randn(images.shape, generator=generator)


def judge_stage(config: JudgeConfig, steps: int, batch_size: int = 128, seed: int = 0) -> Any:
    """The shapes judge's stage for the one training loop: fresh scenes of 1-4 objects (every kind and
    combination) each step, augmented as ``augment`` describes, and the summed cross-entropy of every head."""
    from minidiff.training import Stage, step_seed

    data = ShapesConfig(resolution=config.resolution)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        judge = Judge(config)

    def batch(step: int, rank: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        generator = torch.Generator().manual_seed(step_seed(seed, step, rank))
        scenes = sample_scenes(batch_size, data, generator)
        return augment(render(scenes, config.resolution), config, generator), scene_targets(scenes)

    def loss(model: nn.Module, b: tuple[torch.Tensor, dict[str, torch.Tensor]]) -> torch.Tensor:
        return judge_loss(model(b[0].to(next(model.parameters()).device)), b[1])

    return Stage("judge", judge, loss, batch, steps, config.lr, batch_size, grad_clip=math.inf,
                 min_lr_share=0.0, seed=seed)


def train_judge(config: JudgeConfig | None = None, steps: int = 3000, batch_size: int = 128, seed: int = 0,
                device: str = "cpu", log_every: int = 0,
                callback: Callable[[int, Judge], None] | None = None) -> Judge:
    """Train a judge with the one training loop (``judge_stage``): AdamW (Loshchilov & Hutter 2019) with
    a cosine-decayed learning rate, BatchNorm (Ioffe & Szegedy 2015) after each conv.
    ``callback(step, judge)`` runs every ``log_every`` steps."""
    from minidiff.training import fit

    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps={steps}, batch_size={batch_size}: both must be >= 1")
    stage = judge_stage(config or JudgeConfig(), steps, batch_size, seed)
    every = (log_every, callback) if log_every and callback is not None else None
    fit(stage, progress=log_every > 0, every=every, device=pick_device(device))
    return stage.model.eval()


@torch.no_grad()
def predict_scenes(judge: Judge, images: torch.Tensor, batch_size: int = 512) -> list[Scene]:
    """Read a Scene from every image (N, 3, H, W) in [-1, 1]; objects are the slots not judged empty."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W); got shape {tuple(images.shape)}")
    judge.eval()
    dev = next(judge.parameters()).device
    scenes: list[Scene] = []
    for chunk in images.split(batch_size):
        pred = {k: v.argmax(-1).cpu().tolist() for k, v in judge(chunk.to(dev)).items()}  # (B, P) or (B,)
        for i in range(len(chunk)):
            shape, colour, size = pred["shape"][i], pred["colour"][i], pred["size"][i]  # (P,) each
            objects = tuple(Object(SHAPES[shape[p]], COLOURS[colour[p]], SIZES[size[p]], slot)
                            for p, slot in enumerate(POSITIONS) if shape[p] != NONE)
            scenes.append(Scene(BACKGROUNDS[pred["background"][i]], objects))
    return scenes


def score_scene(want: Scene, got: Scene) -> dict[str, tuple[int, int]]:
    """(correct, named) per attribute of ``want`` (a parsed prompt, maybe partial) against ``got``.

    Objects are paired to maximise agreement (a prompt without positions matches any slot; a relation
    counts as one more attribute of the pair); a prompt object with no partner gets all its named
    attributes wrong. Count is always named: ``got`` must hold exactly as many objects as ``want``.
    """
    out = {a: (0, 0) for a in SCORED}
    if want.background is not None:
        out["background"] = (int(got.background == want.background), 1)
    out["count"] = (int(len(got.objects) == len(want.objects)), 1)
    candidates = list(got.objects) + [None] * max(0, len(want.objects) - len(got.objects))
    best, best_hits = [], -1
    for partners in itertools.permutations(candidates, len(want.objects)):
        hits = _related(want, partners) + sum(g is not None and getattr(g, f) == getattr(w, f)
                                              for w, g in zip(want.objects, partners) for f in FIELDS)
        if hits > best_hits:
            best, best_hits = partners, hits
    for w, g in zip(want.objects, best):
        for f in FIELDS:
            if getattr(w, f) is not None:
                c, n = out[f]
                out[f] = (c + int(g is not None and getattr(g, f) == getattr(w, f)), n + 1)
    if want.relation is not None:
        out["relation"] = (int(_related(want, best)), 1)
    return out


def _related(want: Scene, partners: Sequence[Object | None]) -> bool:
    """Do the objects paired with want.objects[0] and [1] stand in want.relation to each other?"""
    if want.relation is None or None in partners[:2]:
        return False
    return relation_holds(want.relation, partners[0].position, partners[1].position)


def all_right(score: dict[str, tuple[int, int]]) -> bool:
    """True when a ``score_scene`` result has every named attribute, and the object count, right."""
    return all(c == n for c, n in score.values())


def shows_prompt(got: Scene, prompt: str) -> bool:
    """True when ``got`` has everything ``prompt`` names right, and its object count (``all_right``)."""
    return all_right(score_scene(parse_caption(prompt), got))


def adherence(judge: Judge, images: torch.Tensor, captions: Sequence[str]) -> dict[str, float]:
    """Prompt adherence of images (N, 3, H, W) to their captions, read by the judge.

    Per attribute: the share of attributes the captions name that the images show (micro-averaged;
    NaN if no caption names it). "all": the share of images that get every named attribute and the
    object count right; for full captions, the share whose judged Scene equals the caption's Scene.
    """
    if len(images) != len(captions):
        raise ValueError(f"got {len(images)} images but {len(captions)} captions; give one caption per image")
    wanted = [parse_caption(c) for c in captions]
    totals = {a: [0, 0] for a in SCORED}
    perfect = 0
    for want, got in zip(wanted, predict_scenes(judge, images)):
        score = score_scene(want, got)
        perfect += all_right(score)
        for a, (c, n) in score.items():
            totals[a][0] += c
            totals[a][1] += n
    result = {a: c / n if n else math.nan for a, (c, n) in totals.items()}
    result["all"] = perfect / max(len(captions), 1)
    return result


def evaluate_judge(judge: Judge, n: int = 2000, seed: int = EVAL_SEED,
                   resolution: int | None = None) -> dict[str, float]:
    """Accuracy of the judge on ``n`` fresh real shapes images (``adherence`` to their true captions)."""
    config = ShapesConfig(resolution=resolution or judge.config.resolution)
    images, captions, _ = make_shapes(n, config, seed=seed)
    return adherence(judge, images, captions)


def save_judge(judge: Judge, path: str | Path = WEIGHTS, extra: dict | None = None) -> Path:
    """Write ``path``.safetensors + ``path``.json."""
    return save_checkpoint(path, judge, judge.config, {"kind": "judge", **(extra or {})})


def load_judge(path: str | Path = WEIGHTS, device: str = "cpu") -> Judge:
    """Load a judge saved by ``save_judge`` (by default the shipped one), in eval mode."""
    state, meta = load_checkpoint(path)
    judge = load_into(Judge(JudgeConfig(**meta["config"])), state, name="judge")
    return judge.to(pick_device(device)).eval()


def train_and_save(path: str | Path = WEIGHTS, preset: str = "default", steps: int = 3000,
                   batch_size: int = 128, seed: int = 0, device: str = "cpu", n: int = 2000) -> dict:
    """Train a judge, score it on ``n`` real images and save it with the numbers; return them.

    The defaults reproduce the shipped judge (``python -m minidiff judge train``).
    """
    start = time.perf_counter()
    judge = train_judge(JudgeConfig.from_preset(preset), steps, batch_size, seed, device, log_every=100).cpu()
    report = {"steps": steps, "batch_size": batch_size, "seed": seed,
              "train_seconds": round(time.perf_counter() - start, 1), "eval": evaluate_judge(judge, n)}
    save_judge(judge, path, report)
    refresh_manifest(path)  # rebuilding the shipped judge updates its entry in weights/manifest.json
    return report


def judge_lines(images: torch.Tensor, prompts: list[str], seeds: list[int]) -> list[str]:
    """What the shipped judge reads back from each image (N, 3, H, W) in [-1, 1], one line per image:
    its seed, "ok" or "MISSED" (every attribute the prompt names, and the object count), and the scene
    it read, as a caption, e.g.
    ``judge, seed 0: ok     a large red circle at the top left on a blue background``.
    """
    lines = []
    for prompt, seed, got in zip(prompts, seeds, predict_scenes(load_judge(), images)):
        right = shows_prompt(got, prompt)
        read = caption(got, 0) if got.objects else f"no object on a {got.background} background"
        lines.append(f"judge, seed {seed}: {'ok    ' if right else 'MISSED'} {read}")
    return lines
