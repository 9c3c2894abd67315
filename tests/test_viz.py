"""Image grids against hand-computed pixels; every figure written at its size, showing what it should."""

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from minidiff.figures import SAMPLE_PROMPTS, figure_samples, make_figures
from minidiff.pipeline import load_pipeline
from minidiff.schedule import make_schedule
from minidiff.viz import (
    denoising_strip,
    figure_to_array,
    image_grid,
    plot_gan_vs_diffusion,
    plot_noised,
    plot_points,
    plot_reverse_2d,
    plot_schedules,
    save_gif,
    save_grid,
    to_uint8,
)


def test_pixels_map_minus_one_to_0_and_one_to_255():
    x = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0, 3.0, -7.0]).view(1, 7, 1).expand(3, 7, 1)  # (3, 7, 1)
    # (x + 1) * 127.5 = 0, 63.75, 127.5, 191.25, 255; rounded half to even; out of range clipped
    assert to_uint8(x)[:, 0, 0].tolist() == [0, 64, 128, 191, 255, 255, 0]


def test_grid_places_each_image_after_the_padding():
    images = torch.stack([torch.full((3, 2, 3), v) for v in (-1.0, 0.0, 1.0)])  # (3, 3, 2, 3)
    grid = image_grid(images, nrow=2, padding=1, pad_value=7)
    # 2 columns of width 3 and 2 rows of height 2, each followed by 1 pixel of padding, plus the frame
    assert grid.shape == (2 * 3 + 1, 2 * 4 + 1, 3) and grid.dtype == np.uint8
    assert (grid[1:3, 1:4] == 0).all() and (grid[1:3, 5:8] == 128).all() and (grid[4:6, 1:4] == 255).all()
    assert (grid[0] == 7).all() and (grid[:, 4] == 7).all() and (grid[4:6, 5:8] == 7).all()


def test_grid_of_one_row_and_channel_order():
    img = torch.full((1, 3, 4, 4), -1.0)
    img[0, 0] = 1.0  # red channel full
    grid = image_grid(img, nrow=8, padding=0)
    assert grid.shape == (4, 4, 3) and grid[0, 0].tolist() == [255, 0, 0]


def test_grid_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\) or \(N, 1, H, W\)"):
        image_grid(torch.zeros(2, 2, 4, 4))
    grey = image_grid(torch.full((1, 1, 2, 2), 0.0), padding=0)  # grayscale is drawn as grey RGB
    assert grey.shape == (2, 2, 3) and (grey == 128).all()
    with pytest.raises(ValueError, match="nrow"):
        image_grid(torch.zeros(2, 3, 4, 4), nrow=0)


def test_save_grid_and_gif_round_trip(tmp_path):
    images = torch.rand(5, 3, 8, 8) * 2 - 1
    path = save_grid(images, tmp_path / "grid.png", nrow=5)
    assert np.array_equal(np.asarray(Image.open(path)), image_grid(images, 5))
    big = np.asarray(Image.open(save_grid(images, tmp_path / "big.png", nrow=5, scale=3)))
    assert big.shape == (3 * image_grid(images, 5).shape[0], 3 * image_grid(images, 5).shape[1], 3)
    assert np.array_equal(big[::3, ::3], image_grid(images, 5))
    assert np.array_equal(big[2::3, 1::3], big[::3, ::3])
    with pytest.raises(ValueError, match="scale=0"):
        save_grid(images, tmp_path / "c.png", scale=0)
    gif = save_gif([images[0], images[1], plot_points(torch.randn(10, 2)).figure], tmp_path / "a.gif")
    with pytest.raises(ValueError, match="empty"):
        save_gif([], tmp_path / "b.gif")
    frames = Image.open(gif)
    assert frames.n_frames == 3


def test_plots_return_figures_with_one_panel_per_item():
    schedules = [make_schedule(n, 100) for n in ("linear", "cosine")]
    assert len(plot_schedules(schedules).axes) == 2
    assert len(plot_noised(torch.zeros(3, 8, 8), schedules[0], [0, 50, 99]).axes) == 3
    assert len(denoising_strip([torch.zeros(3, 4, 4)] * 4).axes) == 4
    trajectory = [torch.randn(50, 2) for _ in range(11)]
    assert len(plot_reverse_2d(trajectory, snapshots=4).axes) == 4
    cov = {"covered": 3, "modes": 8, "off_mode": 0.25}
    fig = plot_gan_vs_diffusion(*trajectory[:3], cov, cov)
    assert isinstance(fig, Figure) and "GAN: 3/8 modes, 25.0% off-mode" in [ax.get_title() for ax in fig.axes]
    assert figure_to_array(fig).shape[2] == 3


def test_make_figures_fast_writes_every_png_at_its_size(tmp_path):
    paths = {p.name: p for p in make_figures(tmp_path, fast=True)}
    # width x height in pixels: panels x inches per panel x DPI (120); samples: 3 seeds of 32 px + 1 px
    # padding, drawn 4x, one row per prompt
    rows = len(SAMPLE_PROMPTS)
    assert {name: Image.open(p).size for name, p in paths.items()} == {
        "schedules.png": (768, 384), "noising.png": (1584, 264), "reverse_2d.png": (1728, 288),
        "gan_vs_diffusion.png": (1080, 360), "samples.png": (4 * (3 * 33 + 1), 4 * (rows * 33 + 1)),
        "guidance.png": (1584, 264),
    }
    assert all(p.parent == tmp_path for p in paths.values())
    # one line per schedule, in matplotlib's first three colours: blue, orange, green
    pixels = {tuple(c) for c in np.asarray(Image.open(paths["schedules.png"]).convert("RGB")).reshape(-1, 3)}
    assert {(31, 119, 180), (255, 127, 14), (44, 160, 44)} <= pixels


def test_figure_samples_shows_the_pipeline_prompt_by_row_and_seed_by_column(tmp_path):
    grid = np.asarray(Image.open(figure_samples(tmp_path, fast=True)).convert("RGB"))[::4, ::4]
    pipe = load_pipeline(device="cpu")
    # one batch, as the figure draws it: a batch of 3 adds in another order and can flip a rounded pixel
    images = pipe([p for p in SAMPLE_PROMPTS for _ in range(3)], seeds=[0, 1, 2] * len(SAMPLE_PROMPTS),
                  steps=5)
    assert np.array_equal(grid, image_grid(images, nrow=3))
