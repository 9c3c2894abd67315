"""The figures of the project, behind ``python -m minidiff figures``: one recipe each, (out_dir, fast) -> PNG.

Recipes train the small models they draw (the 2-D diffusion model and GAN) or load the shipped
pipeline; ``fast`` trains tiny versions, for tests. Drawing itself lives in ``viz.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import torch
from matplotlib.figure import Figure

from minidiff.runs import SAMPLE_PROMPTS as TRAINING_PROMPTS
from minidiff.sampling import make_timesteps
from minidiff.schedule import SCHEDULES, make_schedule
from minidiff.shapes import make_shapes
from minidiff.toy2d import (
    MLPDenoiser,
    eight_gaussians,
    make_points,
    mode_coverage,
    reverse_trajectory,
    train_gan,
    train_toy,
)
from minidiff.viz import (
    denoising_strip,
    plot_gan_vs_diffusion,
    plot_noised,
    plot_reverse_2d,
    plot_schedules,
    save_grid,
)

TOY_STEPS, TOY_STEPS_FAST = 2000, 200  # diffusion training steps (train_toy default) and the quick version
GAN_STEPS, GAN_STEPS_FAST = 2000, 200
N_POINTS = 2000  # points per 2-D scatter
REVERSE_STEPS = 50  # DDIM steps for the 2-D figures
NOISING_TS = (0, 100, 250, 500, 750, 999)  # timesteps shown in figures/noising.png
DPI = 120


@lru_cache(maxsize=2)
def _toy_diffusion(fast: bool) -> MLPDenoiser:
    """The 8-Gaussian diffusion model shared by the 2-D figures (trained once per process)."""
    steps = TOY_STEPS_FAST if fast else TOY_STEPS
    return train_toy("gaussians8", steps=steps, schedule=make_schedule("linear"))[0]


def _save(fig: Figure, out_dir: Path, name: str) -> Path:
    path = out_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def figure_schedules(out_dir: Path, fast: bool) -> Path:
    """figures/schedules.png: alpha_bar and log-SNR of every schedule with T = 1000."""
    return _save(plot_schedules([make_schedule(name, 1000) for name in SCHEDULES]), out_dir, "schedules.png")


def figure_noising(out_dir: Path, fast: bool) -> Path:
    """figures/noising.png: one shapes image noised at several t under the cosine schedule."""
    image = make_shapes(1, seed=3)[0][0]  # (3, H, W)
    return _save(plot_noised(image, make_schedule("cosine", 1000), NOISING_TS), out_dir, "noising.png")


def figure_reverse_2d(out_dir: Path, fast: bool) -> Path:
    """figures/reverse_2d.png: 2000 points carried from noise to the 8-Gaussian ring by DDIM (50 steps)."""
    schedule = make_schedule("linear")
    _, trajectory = reverse_trajectory(_toy_diffusion(fast), N_POINTS, schedule, steps=REVERSE_STEPS)
    ts = make_timesteps(schedule.T, REVERSE_STEPS).tolist()
    labels = [f"step {i}: x_t, t={t}" for i, t in enumerate(ts)] + [f"step {REVERSE_STEPS}: x_0"]
    return _save(plot_reverse_2d(trajectory, labels=labels), out_dir, "reverse_2d.png")


def figure_gan_vs_diffusion(out_dir: Path, fast: bool) -> Path:
    """figures/gan_vs_diffusion.png: GAN and diffusion samples on the 8-Gaussian ring with modes covered."""
    mixture, generator = eight_gaussians(), torch.Generator().manual_seed(0)
    data = make_points("gaussians8", N_POINTS, generator)
    gan = train_gan("gaussians8", steps=GAN_STEPS_FAST if fast else GAN_STEPS)[0].sample(N_POINTS, generator)
    diff, _ = reverse_trajectory(_toy_diffusion(fast), N_POINTS, make_schedule("linear"), REVERSE_STEPS,
                                 seed=1)
    fig = plot_gan_vs_diffusion(gan, diff, data, mode_coverage(gan, mixture), mode_coverage(diff, mixture),
                                mode_coverage(data, mixture))
    return _save(fig, out_dir, "gan_vs_diffusion.png")


SAMPLE_PROMPTS = (*TRAINING_PROMPTS, "a large orange square at the bottom left on a black background")
GUIDANCE_SCALES = (0.0, 1.0, 3.0, 5.0, 7.5, 10.0)


def figure_samples(out_dir: Path, fast: bool) -> Path:
    """figures/samples.png: the shipped pipeline, one row per prompt, one column per seed (20 steps)."""
    from minidiff.pipeline import load_pipeline

    pipe, seeds = load_pipeline(device="cpu"), 3 if fast else 6
    images = pipe([p for p in SAMPLE_PROMPTS for _ in range(seeds)],
                  seeds=[s for _ in SAMPLE_PROMPTS for s in range(seeds)], steps=5 if fast else 20)
    return save_grid(images, out_dir / "samples.png", nrow=seeds, scale=4)


def figure_guidance(out_dir: Path, fast: bool) -> Path:
    """figures/guidance.png: one prompt and seed at guidance scales 0, 1, 3, 5, 7.5 and 10."""
    from minidiff.pipeline import load_pipeline

    pipe = load_pipeline(device="cpu")
    steps = 5 if fast else 20
    frames = [pipe(SAMPLE_PROMPTS[0], seeds=1, steps=steps, guidance_scale=w)[0] for w in GUIDANCE_SCALES]
    fig = denoising_strip(frames, [f"guidance {w:g}" for w in GUIDANCE_SCALES])
    return _save(fig, out_dir, "guidance.png")


FIGURES: list[Callable[[Path, bool], Path]] = [
    figure_schedules, figure_noising, figure_reverse_2d, figure_gan_vs_diffusion, figure_samples,
    figure_guidance,
]


def make_figures(out_dir: str | Path = "figures", fast: bool = False) -> list[Path]:
    """Regenerate every figure in FIGURES under ``out_dir``; ``fast`` trains tiny models (for tests)."""
    return [make(Path(out_dir), fast) for make in FIGURES]
