"""Drawing: image grids, denoising strips, schedule curves, 2-D point clouds, GIFs.

Figures are ``matplotlib.figure.Figure`` objects drawn with the Agg renderer, so nothing here needs
a display: a notebook shows the returned figure, a script saves it. The recipes that train models
and write ``figures/`` live in ``figures.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor

from minidiff.schedule import NoiseSchedule, q_sample

PANEL = 2.2  # inches per image panel
FRAME_GREY = 128  # grid gaps and panel frames: mid-grey, so white tiles do not melt into a white page
POINT_LIM = 2.6  # axis half-width for 2-D plots: every dataset lies within radius ~2.5
DATA_COLOUR, GAN_COLOUR, DIFF_COLOUR = "tab:gray", "tab:red", "tab:blue"


def to_uint8(images: Tensor) -> np.ndarray:
    """Images in [-1, 1], (..., 3, H, W) -> uint8 (..., H, W, 3): round((x + 1) * 127.5), clipped."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).numpy()  # (..., H, W, 3)


def image_grid(images: Tensor, nrow: int = 8, padding: int = 1, pad_value: int = FRAME_GREY) -> np.ndarray:
    """Tile images (N, 3, H, W) in [-1, 1] into one uint8 picture (rows * (H + p) + p, nrow * (W + p) + p, 3).

    Images fill rows left to right; ``padding`` pixels of ``pad_value`` separate them and frame the grid.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape (N, 3, H, W) or (N, 1, H, W); got {tuple(images.shape)}")
    images = images.expand(-1, 3, -1, -1)  # grayscale drawn as grey RGB
    if nrow < 1:
        raise ValueError(f"nrow={nrow} must be >= 1")
    n, _, h, w = images.shape
    cols, rows = min(nrow, n), -(-n // nrow)
    shape = (rows * (h + padding) + padding, cols * (w + padding) + padding, 3)
    grid = np.full(shape, pad_value, dtype=np.uint8)
    for i, img in enumerate(to_uint8(images)):  # img: (H, W, 3)
        r, c = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + c * (w + padding)
        grid[top:top + h, left:left + w] = img
    return grid


def save_grid(images: Tensor, path: str | Path, nrow: int = 8, scale: int = 1) -> Path:
    """Write image_grid(images (N, 3, H, W), nrow) to ``path`` (PNG, GIF, ... by suffix), every pixel
    repeated ``scale`` times each way (32 px images are hard to see at 1:1); return the path."""
    if not (isinstance(scale, int) and scale >= 1):
        raise ValueError(f"scale={scale!r} must be an integer >= 1")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = image_grid(images, nrow)  # (H', W', 3) uint8
    Image.fromarray(grid.repeat(scale, axis=0).repeat(scale, axis=1)).save(path)
    return path


def _figure(ncols: int, nrows: int = 1, size: float = PANEL) -> tuple[Figure, np.ndarray]:
    """A figure of nrows x ncols axes, returned as a 2-D array of Axes."""
    fig = Figure(figsize=(size * ncols, size * nrows), layout="constrained")
    axes = np.asarray(fig.subplots(nrows, ncols, squeeze=False))  # (nrows, ncols)
    return fig, axes


def _show_image(ax: Axes, image: Tensor, title: str = "") -> None:
    ax.imshow(to_uint8(image), interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([]), ax.set_yticks([])  # no ticks, but a grey frame around the image
    for spine in ax.spines.values():
        spine.set_edgecolor(str(FRAME_GREY / 255))


def denoising_strip(frames: Sequence[Tensor], titles: Sequence[str] | None = None) -> Figure:
    """One row of images, each (3, H, W) in [-1, 1]: for example xt, or predicted x0, along a sampling run."""
    fig, axes = _figure(len(frames))
    for i, (ax, frame) in enumerate(zip(axes[0], frames)):
        _show_image(ax, frame, titles[i] if titles else "")
    return fig


def plot_schedules(schedules: Sequence[NoiseSchedule]) -> Figure:
    """alpha_bar and log-SNR against t / T, one line per schedule (Kingma et al. 2021 plot log-SNR)."""
    fig, axes = _figure(2, size=3.2)
    for s in schedules:
        frac = (torch.arange(s.T, dtype=torch.float64) + 1) / s.T  # (T,)
        axes[0, 0].plot(frac, s.alpha_bar, label=s.name)
        axes[0, 1].plot(frac, s.log_snr, label=s.name)
    titles = ("alpha_bar: share of signal variance", "log-SNR = log(alpha_bar / (1 - alpha_bar))")
    for ax, name in zip(axes[0], titles):
        ax.set_xlabel("t / T")
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def plot_noised(image: Tensor, schedule: NoiseSchedule, ts: Sequence[int], seed: int = 0) -> Figure:
    """One image (3, H, W) drawn from q(x_t | x_0) at each t in ``ts``, with the same noise for every t."""
    noise = torch.randn(image.shape, generator=torch.Generator().manual_seed(seed))  # (3, H, W)
    t = torch.tensor(list(ts))  # (n,)
    shape = (len(ts), *image.shape)  # (n, 3, H, W)
    xt = q_sample(schedule, image.expand(shape), t, noise.expand(shape))  # (n, 3, H, W)
    titles = [f"t={int(ti)}  alpha_bar={schedule.alpha_bar[ti]:.3f}" for ti in ts]
    return denoising_strip(list(xt), titles)


def plot_points(points: Tensor, ax: Axes | None = None, title: str = "", colour: str = DIFF_COLOUR,
                size: float = 2.0) -> Axes:
    """Scatter points (N, 2) on square axes of half-width POINT_LIM; draws into ``ax`` or a new figure."""
    if ax is None:
        ax = _figure(1, size=3.0)[1][0, 0]
    p = points.detach().cpu().numpy()
    ax.scatter(p[:, 0], p[:, 1], s=size, c=colour, alpha=0.5, linewidths=0)
    ax.set(xlim=(-POINT_LIM, POINT_LIM), ylim=(-POINT_LIM, POINT_LIM), aspect="equal", xticks=[], yticks=[])
    ax.set_title(title, fontsize=9)
    return ax


def plot_reverse_2d(trajectory: Sequence[Tensor], snapshots: int = 6,
                    labels: Sequence[str] | None = None) -> Figure:
    """Snapshots of a 2-D reverse process; trajectory is a list [x_T, ..., x_0] of (N, 2).

    The snapshots crowd towards the end (frame k of s is at 1 - (1 - k / (s - 1))^2 of the run),
    because the points move little while the noise is large. ``labels`` names every frame.
    """
    last = len(trajectory) - 1
    u = np.linspace(0, 1, min(snapshots, len(trajectory)))
    idx = np.unique((last * (1 - (1 - u) ** 2)).round().astype(int))
    fig, axes = _figure(len(idx), size=2.4)
    for ax, i in zip(axes[0], idx):
        plot_points(trajectory[i], ax, labels[i] if labels else f"step {i} of {last}")
    return fig


def coverage_title(name: str, coverage: dict) -> str:
    """'name: 8/8 modes, 1.1% off-mode' from a mode_coverage dict."""
    off_mode = 100 * coverage["off_mode"]
    return f"{name}: {coverage['covered']}/{coverage['modes']} modes, {off_mode:.1f}% off-mode"


def plot_gan_vs_diffusion(gan_pts: Tensor, diff_pts: Tensor, data_pts: Tensor, gan_cov: dict, diff_cov: dict,
                          data_cov: dict | None = None) -> Figure:
    """Data, GAN samples and diffusion samples side by side, titled with their mode coverage."""
    fig, axes = _figure(3, size=3.0)
    plot_points(data_pts, axes[0, 0], coverage_title("data", data_cov) if data_cov else "data", DATA_COLOUR)
    plot_points(gan_pts, axes[0, 1], coverage_title("GAN", gan_cov), GAN_COLOUR)
    plot_points(diff_pts, axes[0, 2], coverage_title("diffusion", diff_cov), DIFF_COLOUR)
    return fig


def figure_to_array(fig: Figure) -> np.ndarray:
    """Render a figure with Agg into a uint8 array (H, W, 3)."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_gif(frames: Sequence[Tensor | np.ndarray | Figure], path: str | Path,
             duration_ms: int = 100) -> Path:
    """Write an animated GIF; each frame an image (3, H, W) in [-1, 1], uint8 array (H, W, 3) or Figure."""
    if not frames:
        raise ValueError("frames is empty; pass at least one frame")

    def as_pil(frame: Tensor | np.ndarray | Figure) -> Image.Image:
        if isinstance(frame, Figure):
            return Image.fromarray(figure_to_array(frame))
        return Image.fromarray(to_uint8(frame) if isinstance(frame, Tensor) else frame)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [as_pil(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=duration_ms, loop=0)
    return path
