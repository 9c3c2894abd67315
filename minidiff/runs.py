"""A run: every stage of a text-to-image model trained in order into one folder, each one checked.

    judge (labelled data; shapes when judge_steps > 0) -> text encoder -> VAE (latent runs) -> U-Net

Every stage trains with ``training.fit``. After each one, a bar it must reach before the next stage
starts: the judge's accuracy on real images; the text encoder's held-out retrieval; for the VAE, the
share of held-out reconstructions the judge still reads right. A stage that misses its bar stops the
run with a message saying what was measured and what was expected (``StageFailed``).

A stage whose checkpoint is already in the folder is reused, so ``resume=True`` after a kill skips
finished stages and continues the current one from its last checkpoint. ``run.json`` records the
TrainConfig, so ``sample`` and ``eval`` know what data a run was trained on. ``PRESETS`` names the
TrainConfigs of the shipped recipes and of the data sets.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch

from minidiff.checkpoint import atomic_write_bytes, checkpoint_exists, pick_device, write_run_manifest
from minidiff.training import distributed, fit, train_denoiser

STAGES = ("judge", "text_encoder", "vae", "unet")  # the checkpoints a run folder can hold, in training order
BAR_IMAGES = 256  # held-out images each bar is measured on
VAE_MSE_BAR = 0.01  # data without a judge: the VAE's held-out reconstruction MSE must stay below this
SAMPLE_PROMPTS = (
    "a large red circle at the top left on a blue background",
    "a small green square at the bottom right on a black background",
    "a large yellow triangle at the center on a gray background",
    "a small purple diamond at the top right on a white background",
)


@dataclasses.dataclass
class TrainConfig:
    """Everything that decides a text-to-image run: the data, then each stage's recipe.

    ``data`` names a source (see ``data.load_source``): "shapes", "digits", a folder or a Hub name;
    ``data_options`` are its options (ShapesConfig fields, or columns and caption template).
    """

    data: str = "shapes"
    data_options: dict[str, Any] = dataclasses.field(default_factory=lambda: {"max_objects": 1})
    resolution: int = 32
    channels: int | None = None  # stored data: 1 or 3 (default: the source's own, RGB for images)
    unet: str = "cpu-latent"
    latent: bool = True
    # with the cosine schedule, eps errors are amplified ~2e4x at t = T-1 (notebook 02)
    prediction_type: str = "v"
    schedule: str = "cosine"
    T: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 200
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    cond_dropout: float = 0.1  # Ho & Salimans 2022 train with p_uncond = 0.1-0.2
    steps: int = 6000
    seed: int = 0
    checkpoint_every: int = 250
    sample_every: int = 1000
    text_preset: str = "cpu"
    # nine-slot one-object world, full held-out captions: retrieval 0.81 at 600 steps, 0.97 at 1500
    text_steps: int = 1500
    text_bar: float = 0.9  # held-out retrieval (image -> caption) the text stage must reach
    vae_preset: str = "f4"
    vae_steps: int = 6000  # with vae_batch_size, the recipe of the shipped VAE (weights/README.md)
    vae_batch_size: int = 8
    vae_bar: float = 0.95  # share of held-out reconstructions the judge must read right
    judge_steps: int = 0  # the judge stage; 0 on shapes uses the shipped judge (labelled data needs > 0)
    judge_bar: float = 0.95  # its held-out accuracy (shapes: its lowest attribute accuracy)
    unet_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    # fine-tuning: a run folder ("shipped": the package's weights) whose U-Net starts this one; its text
    # encoder, VAE and judge are reused, since the U-Net learnt on their embeddings and latents
    init: str | None = None

    def __post_init__(self) -> None:
        from minidiff.schedule import PREDICTION_TYPES

        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type={self.prediction_type!r} is not known; choose one of "
                             f"{PREDICTION_TYPES}")
        for name in ("steps", "batch_size", "text_steps", "vae_steps", "vae_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if not 0 <= self.cond_dropout <= 1:
            raise ValueError(f"cond_dropout={self.cond_dropout} must lie in [0, 1]")


_TINY = dict(steps=20, batch_size=8, checkpoint_every=5, sample_every=0, text_steps=5, vae_steps=5,
             warmup_steps=5, judge_steps=5, text_bar=0.0, vae_bar=0.0, judge_bar=0.0,
             unet_overrides={"base_channels": 8, "channel_mults": (1, 2)})
_PIXEL_GPU = dict(unet="gpu-pixel", latent=False, batch_size=256, lr=2e-4, steps=20000, text_preset="gpu")
PRESETS: dict[str, TrainConfig] = {
    "shapes-latent": TrainConfig(),
    "shapes-pixel": TrainConfig(unet="cpu-pixel", latent=False, steps=3000),
    # the shipped weights: every stage on 1-4 objects, counts, relations; attention at 8x8 too, where
    # objects are placed; its judge stage is the shipped judge's recipe (README: 55 min on 2 cores).
    # Captions leave out words at 0.6, not 0.3, so that short prompts ("a red circle") are common
    "shapes-compositional": TrainConfig(data_options={"max_objects": 4, "p_omit": 0.6}, steps=16000,
                                        text_steps=2000, judge_steps=4000,
                                        unet_overrides={"attention_levels": (0, 1)}),
    "shapes-latent-gpu": TrainConfig(unet="gpu-latent", batch_size=256, lr=3e-4, steps=20000,
                                     text_preset="gpu"),
    "shapes-pixel-gpu": TrainConfig(**_PIXEL_GPU),
    "digits": TrainConfig(data="digits", data_options={}, resolution=16, unet="cpu-pixel", latent=False,
                          steps=1500, warmup_steps=100, sample_every=500, text_steps=150, judge_steps=300),
    # any stored data set: train --data PATH picks this
    "images": TrainConfig(data="digits", data_options={}, unet="cpu-pixel", latent=False, steps=3000,
                          text_steps=300, judge_steps=600),
    "digits-gpu": TrainConfig(data="digits", data_options={}, resolution=16, judge_steps=300,
                              **{**_PIXEL_GPU, "steps": 5000}),
    # 28 -> 32 px, 1 channel
    "mnist-gpu": TrainConfig(data="mnist", data_options={}, judge_steps=2000, **_PIXEL_GPU),
    "fashion-mnist-gpu": TrainConfig(data="fashion_mnist", data_options={}, judge_steps=2000, judge_bar=0.85,
                                     **_PIXEL_GPU),
    "cifar10-gpu": TrainConfig(data="cifar10", data_options={}, judge_steps=3000, judge_bar=0.6,
                               **_PIXEL_GPU),
    "butterflies-gpu": TrainConfig(data="huggan/smithsonian_butterflies_subset", data_options={},
                                   resolution=64, unet="gpu-latent", batch_size=64, lr=2e-4, steps=20000,
                                   text_preset="gpu", text_bar=0.0, vae_bar=0.0),
    "tiny": TrainConfig(**_TINY),
    "tiny-pixel": TrainConfig(**{**_TINY, "latent": False, "unet": "cpu-pixel",
                                 "unet_overrides": {**_TINY["unet_overrides"], "attention_levels": (1,)}}),
}


def train_config(preset: str, **overrides: Any) -> TrainConfig:
    """The TrainConfig called ``preset`` with ``overrides`` applied."""
    if preset not in PRESETS:
        raise ValueError(f"training preset {preset!r} is not known; choose one of {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[preset], **overrides)


def make_source(config: TrainConfig) -> Any:
    """The data source a run trains on (see ``data.load_source``)."""
    from minidiff.data import load_source

    return load_source(config.data, config.resolution, config.channels, **config.data_options)


class StageFailed(ValueError):
    """A stage trained without error but missed its quality bar; the run stops before the next stage."""


def _bar(stage: str, measured: float, bar: float, what: str, hint: str) -> dict[str, float]:
    print(f"{stage}: {what} {measured:.4f} (bar {bar:.2f})")
    if bar > 0 and measured < bar:  # a bar of 0 only reports
        raise StageFailed(f"{stage} stage missed its bar: {what} {measured:.4f}, expected >= {bar:.2f}; "
                          f"{hint}")
    return {f"{stage}_{what.split()[0]}": measured}


def run_config(folder: str | Path) -> TrainConfig | None:
    """The TrainConfig a run folder was trained with (None for folders without ``run.json``)."""
    path = Path(folder) / "run.json"
    if not path.is_file():
        return None
    try:
        fields = json.loads(path.read_text())["train_config"]
    except (json.JSONDecodeError, KeyError) as err:
        raise ValueError(f"run file {path} is not valid ({err}); retrain or restore it") from None
    return TrainConfig(**fields)


def _train_judge(config: TrainConfig, source: Any, out: Path, device: str, progress: bool,
                 resume: bool) -> dict[str, float]:
    from minidiff.judge import JUDGE_PRESET, JudgeConfig, evaluate_judge, judge_stage, save_judge
    from minidiff.label_judge import label_judge_stage, predict_labels, save_label_judge

    shapes = source.kind == "shapes"
    stage = (judge_stage(JudgeConfig.from_preset(JUDGE_PRESET), config.judge_steps, seed=config.seed)
             if shapes else label_judge_stage(source, config.judge_steps, seed=config.seed))
    fit(stage, out, checkpoint_every=250, resume=resume, progress=progress, device=pick_device(device))
    judge = stage.model.cpu().eval()
    if shapes:
        scores = evaluate_judge(judge, BAR_IMAGES * 4)
        report = _bar("judge", min(scores.values()), config.judge_bar, f"lowest attribute accuracy on "
                      f"{BAR_IMAGES * 4} real images", "train it longer (judge_steps)")
        if distributed()[0] == 0:
            save_judge(judge, out / "judge", {**report, "eval": scores})
        return report
    images, _ = source.held_out()
    accuracy = (predict_labels(judge, images) == source.labels[source.held_index]).float().mean().item()
    report = _bar("judge", accuracy, config.judge_bar, f"accuracy on {len(images)} held-out images",
                  "train it longer (judge_steps) or check the labels")
    if distributed()[0] == 0:
        save_label_judge(judge, out / "judge", source.label_names,
                         {**report, "caption_template": source.caption_template})
    return report


def _train_text(config: TrainConfig, source: Any, out: Path, device: str, progress: bool,
                resume: bool) -> dict[str, float]:
    from minidiff.text import clip_stage, retrieval_accuracy, save_text_encoder

    stage = clip_stage(config.text_preset, source, config.text_steps, seed=config.seed)
    fit(stage, out, checkpoint_every=200, resume=resume, progress=progress, device=pick_device(device))
    clip = stage.model.cpu().eval()
    images, captions = source.held_out(BAR_IMAGES)
    score = retrieval_accuracy(clip, images, captions, source=source)["image_to_text"]
    report = _bar("text_encoder", score, config.text_bar,
                  f"image-to-caption retrieval on {len(images)} held-out pairs",
                  "train it longer (text_steps)")
    if distributed()[0] == 0:
        save_text_encoder(clip, clip.tokenizer, out / "text_encoder", report)
    return report


def _vae_score(vae: Any, source: Any, out: Path) -> tuple[float, float, str]:
    """(score, bar scale, what): how well the run's judge reads back held-out reconstructions."""
    from minidiff.judge import load_judge
    from minidiff.label_judge import load_any_judge, predict_labels
    from minidiff.metrics import prompt_adherence
    from minidiff.vae import from_latent, to_latent

    images, captions = source.held_out(BAR_IMAGES)
    with torch.no_grad():
        recon = from_latent(vae, to_latent(vae, images))  # (N, C, H, W)
    if source.kind == "shapes":
        own = out is not None and checkpoint_exists(out / "judge")
        judge = load_judge(out / "judge") if own else load_judge()
        score = prompt_adherence(recon, captions, judge)["all"]
        return score, 1.0, f"share of {len(images)} held-out reconstructions the judge reads right"
    if source.label_names is not None:
        judge, labels = load_any_judge(out / "judge"), source.labels[source.held_index[:BAR_IMAGES]]
        real = (predict_labels(judge, images) == labels).float().mean().item()
        score = (predict_labels(judge, recon) == labels).float().mean().item()
        return score, real, (f"judge accuracy on {len(images)} held-out reconstructions "
                             f"(real images: {real:.3f})")
    mse = (recon - images).pow(2).mean().item()
    return 1 - mse / VAE_MSE_BAR, 1.0, (f"1 - MSE/{VAE_MSE_BAR} on {len(images)} held-out reconstructions "
                                        f"(MSE {mse:.5f})")


def _train_vae(config: TrainConfig, source: Any, out: Path, device: str, progress: bool,
               resume: bool) -> dict[str, float]:
    from minidiff.vae import VAEConfig, save_vae, train_vae

    vae = train_vae(VAEConfig.from_preset(config.vae_preset), config.vae_steps, config.vae_batch_size,
                    config.seed,
                    device, progress=progress, source=source, out=out, resume=resume).cpu().eval()
    score, scale, what = _vae_score(vae, source, out)
    report = _bar("vae", score, config.vae_bar * scale, what,
                  "lower the VAE lr or train it longer (vae_steps)")
    if distributed()[0] == 0:
        save_vae(vae, out / "vae", report)
    return report


def init_folder(init: str) -> Path:
    """The run folder ``TrainConfig.init`` names ("shipped": the package's weights); it must hold a U-Net."""
    from minidiff.pipeline import WEIGHTS_DIR

    folder = WEIGHTS_DIR if init == "shipped" else Path(init)
    if not checkpoint_exists(folder / "unet"):
        raise ValueError(f"init={init!r}: {folder} holds no U-Net checkpoint to start from; pass a finished "
                         "run folder or 'shipped'")
    return folder


def copy_frozen_stages(src: Path, out: Path, names: list[str]) -> None:
    """Copy the checkpoints ``names`` (judge, text encoder, VAE) that ``src`` holds and ``out`` lacks."""
    for name in (n for n in names if checkpoint_exists(src / n) and not checkpoint_exists(out / n)):
        for suffix in (".json", ".safetensors"):  # the .safetensors last: it marks the stage as done
            atomic_write_bytes(out / f"{name}{suffix}", (src / f"{name}{suffix}").read_bytes())
    write_run_manifest(out)


def train_preset(preset: str | TrainConfig, out_dir: str | Path, device: str = "auto", resume: bool = False,
                 max_minutes: float | None = None, progress: bool = True) -> dict[str, Any]:
    """Train every stage a run needs, in order, into ``out_dir``; return each stage's seconds and bar.

    ``max_minutes`` bounds the U-Net stage. Finished stages in ``out_dir`` are reused.
    """
    from minidiff.pipeline import Pipeline
    from minidiff.schedule import make_schedule
    from minidiff.text import load_text_encoder
    from minidiff.unet import UNetConfig
    from minidiff.vae import VAEConfig, load_vae
    from minidiff.viz import save_grid

    config = train_config(preset) if isinstance(preset, str) else preset
    pick_device(device)  # an unavailable device is refused before any folder is made
    out = Path(out_dir)
    factor = UNetConfig.from_preset(config.unet, **config.unet_overrides).downsample_factor
    factor *= VAEConfig.from_preset(config.vae_preset).downsample_factor if config.latent else 1
    if config.resolution % factor:
        raise ValueError(f"--resolution {config.resolution} is not a multiple of {factor}, which the U-Net "
                         f"{config.unet!r}{' with the VAE' if config.latent else ''} needs; use e.g. "
                         f"{factor * max(1, round(config.resolution / factor))}")
    source = make_source(config)
    for note in getattr(source, "notes", []):
        print(f"data: {note}")
    out.mkdir(parents=True, exist_ok=True)
    rank, world = distributed()
    if rank == 0:
        atomic_write_bytes(out / "run.json",
                           json.dumps({"train_config": dataclasses.asdict(config)}, indent=2).encode())
    report: dict[str, Any] = {}
    judged = source.label_names is not None or (source.kind == "shapes" and config.judge_steps > 0)
    stages = [("judge", _train_judge)] if judged else []
    stages += [("text_encoder", _train_text)] + ([("vae", _train_vae)] if config.latent else [])
    if config.init is not None:
        if rank == 0:
            copy_frozen_stages(init_folder(config.init), out, [name for name, _ in stages])
        if world > 1:
            torch.distributed.barrier()  # no rank looks for the stages before they are copied
    for name, train in stages:
        if not checkpoint_exists(out / name):
            start = time.perf_counter()
            report.update(train(config, source, out, device, progress and rank == 0, resume))
            report[f"{name}_s"] = round(time.perf_counter() - start, 1)
            if rank == 0:
                write_run_manifest(out)
        if world > 1:
            torch.distributed.barrier()  # every rank loads what rank 0 saved
    text_encoder, tokenizer = load_text_encoder(out / "text_encoder")
    vae = load_vae(str(out / "vae")) if config.latent else None
    schedule = make_schedule(config.schedule, config.T)
    prompts = SAMPLE_PROMPTS if source.kind == "shapes" else sorted(set(source.held_out(64)[1]))[:4]

    def write_grid(ema: Any, step: int) -> None:
        pipe = Pipeline(ema, text_encoder, tokenizer, schedule, vae, config.resolution)
        save_grid(pipe([p for p in prompts for _ in range(2)], seeds=0, steps=20),
                  out / "samples" / f"step_{step:06d}.png", nrow=2, scale=4)

    result = train_denoiser(config, out, text_encoder, tokenizer, vae, device=device, resume=resume,
                            max_minutes=max_minutes, progress=progress, sample_fn=write_grid, source=source)
    report.update(unet_s=round(result["seconds"], 1), step=result["step"], loss=result["loss"],
                  images_per_s=round(result["images_per_s"], 1))
    return report

