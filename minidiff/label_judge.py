"""The judge of labelled data sets: a small classifier trained on the data set's own real images.

Where ``judge.py`` reads a whole shapes Scene back, a run on stored labelled data gets this judge
instead: it reads one label per image, so label adherence is the share of images read as the label
their prompt names, and its hidden layer is the feature space of that run's Frechet distance.
``load_any_judge`` loads either kind of judge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from minidiff.checkpoint import load_checkpoint, load_into, pick_device, save_checkpoint
from minidiff.data import label_caption
from minidiff.judge import Judge, JudgeConfig, resize
from minidiff.words import split_words


@dataclass
class LabelJudgeConfig:
    """A small CNN classifier: conv stages that halve H and W, then a hidden layer (the features
    that Frechet distance uses) and one logit per label."""

    resolution: int = 16
    in_channels: int = 1
    num_labels: int = 10
    channels: tuple[int, ...] = (32, 64)
    hidden: int = 64
    lr: float = 2e-3
    noise: float = 0.2  # max std of Gaussian noise added in training, so generated images' grain is tolerated

    def __post_init__(self) -> None:
        self.channels = tuple(self.channels)


class LabelJudge(nn.Module):
    """images (B, C, H, W) in [-1, 1] -> label logits (B, num_labels); ``features`` gives (B, hidden)."""

    def __init__(self, config: LabelJudgeConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        for c_in, c_out in zip((config.in_channels, *config.channels[:-1]), config.channels):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
        side = config.resolution // 2 ** len(config.channels)
        self.body = nn.Sequential(*layers, nn.Flatten(),
                                  nn.Linear(config.channels[-1] * side * side, config.hidden), nn.ReLU())
        self.head = nn.Linear(config.hidden, config.num_labels)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, hidden); images of another size are resized to the judge's first."""
        return self.body(resize(images, self.config.resolution))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))  # (B, num_labels)


def label_judge_stage(source: Any, steps: int, batch_size: int = 128, seed: int = 0) -> Any:
    """The label judge's stage for the one training loop: cross-entropy on the source's training
    images (never its held-out ones), with Gaussian noise of std ~ U(0, config.noise) added."""
    from minidiff.training import Stage, step_seed

    config = LabelJudgeConfig(source.resolution, source.channels, len(source.label_names))
    torch.manual_seed(seed)
    judge = LabelJudge(config)

    def batch(step: int, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
        data_seed = step_seed(seed, step, rank)
        index = source.draw(batch_size, data_seed)  # (B,)
        g = torch.Generator().manual_seed(data_seed)
        images = source.pixels(index)  # (B, C, H, W)
        std = torch.rand(len(index), 1, 1, 1, generator=g) * config.noise
        return images + std * torch.randn(images.shape, generator=g), source.labels[index]

    def loss(model: nn.Module, b: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        dev = next(model.parameters()).device
        return F.cross_entropy(model(b[0].to(dev)), b[1].to(dev))

    return Stage("judge", judge, loss, batch, steps, config.lr, batch_size, warmup_steps=min(50, steps),
                 seed=seed)


@torch.no_grad()
def predict_labels(judge: LabelJudge, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """The label the judge reads in every image (N, C, H, W): (N,) long."""
    judge.eval()
    dev = next(judge.parameters()).device
    return torch.cat([judge(x.to(dev)).argmax(-1).cpu() for x in images.split(batch_size)])


def save_label_judge(judge: LabelJudge, path: str | Path, label_names: Sequence[str],
                     extra: dict | None = None) -> Path:
    """Write ``path``.safetensors + ``path``.json, with the label names."""
    info = {"kind": "label_judge", "label_names": list(label_names), **(extra or {})}
    return save_checkpoint(path, judge, judge.config, info)


def load_any_judge(path: str | Path, device: str = "cpu") -> Judge | LabelJudge:
    """Load a shapes Judge or a LabelJudge, whichever ``path`` holds, in eval mode."""
    state, meta = load_checkpoint(path)
    if meta["extra"].get("kind") == "label_judge":
        judge: nn.Module = LabelJudge(LabelJudgeConfig(**meta["config"]))
        judge.label_names = tuple(meta["extra"]["label_names"])
    else:
        judge = Judge(JudgeConfig(**meta["config"]))
    return load_into(judge, state, name="judge").to(pick_device(device)).eval()


def label_judge_lines(path: str | Path, images: torch.Tensor, prompts: list[str],
                      seeds: list[int]) -> list[str]:
    """What a run's label judge reads in each image (N, C, H, W): ``judge, seed 0: ok     7`` when the
    prompt is the caption of the label read, ``MISSED`` when it is another label's caption."""
    judge = load_any_judge(path)
    template = load_checkpoint(path)[1]["extra"].get("caption_template")
    captions = [split_words(label_caption(template, n)) for n in judge.label_names] if template else []
    lines = []
    for prompt, seed, k in zip(prompts, seeds, predict_labels(judge, images).tolist()):
        want = captions.index(split_words(prompt)) if split_words(prompt) in captions else None
        verdict = "      " if want is None else "ok    " if want == k else "MISSED"
        lines.append(f"judge, seed {seed}: {verdict} {judge.label_names[k]}")
    return lines
