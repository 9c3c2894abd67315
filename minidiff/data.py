"""Data sources: what every training stage reads.

A source holds (image, caption) pairs, knows its resolution and channel count, and draws batches
seeded by the training step, so a resumed run sees exactly the data the first one would have:

    source.batch(n, seed) -> images (n, C, H, W) in [-1, 1], captions (n strings)

Sources: the procedural ``shapes`` world (drawn afresh every batch), scikit-learn's handwritten
digits (1,797 real 8x8 scans, shipped inside scikit-learn), Hugging Face ``datasets`` (a hub name, or
a folder written by ``save_to_disk``) and image folders captioned by ``captions.txt`` or
``metadata.jsonl``. Labelled data is captioned by a template: "a handwritten digit {label_word}".
Stored sources keep a fixed held-out split that no training batch ever draws from.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from minidiff.captions import phrases as caption_phrases
from minidiff.shapes import (
    MAX_RESOLUTION,
    MIN_RESOLUTION,
    ShapesConfig,
    make_shapes,
    parse_caption,
    split_words,
)
from minidiff.shapes import vocabulary as shapes_vocabulary

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
HELD_OUT_SHARE = 0.1  # stored sources keep this share of their images for evaluation only
HELD_OUT_SEED = 2**62  # shapes evaluation seeds, far above any training batch's seed
SPLIT_SEED = 0  # the permutation that splits train from held-out; fixed so every stage agrees
DIGITS_RESOLUTION = 16  # 8x8 scans carry no detail beyond 16 px; 16 is the smallest side the U-Nets take
HUB_PRESETS = {  # hub names with the columns and caption templates that suit them
    "mnist": {"label_column": "label", "caption_template": "a handwritten digit {label_word}", "channels": 1},
    "fashion_mnist": {"label_column": "label", "caption_template": "a photo of a {label}", "channels": 1},
    "cifar10": {"image_column": "img", "label_column": "label", "caption_template": "a photo of a {label}"},
    "huggan/smithsonian_butterflies_subset": {"caption_column": "name", "caption_template": None},
}


def _check_image_size(resolution: int, channels: int) -> None:
    if not (isinstance(resolution, int) and MIN_RESOLUTION <= resolution <= MAX_RESOLUTION):
        raise ValueError(f"resolution={resolution!r} is not allowed; use an int in "
                         f"{MIN_RESOLUTION}..{MAX_RESOLUTION}")
    if channels not in (1, 3):
        raise ValueError(f"channels={channels!r} is not allowed; use 1 (grayscale) or 3 (RGB)")


class ShapesSource:
    """The procedural shapes world: every batch is drawn afresh from ``make_shapes``."""

    kind = "shapes"
    channels = 3
    label_names: tuple[str, ...] | None = None

    def __init__(self, config: ShapesConfig) -> None:
        self.config, self.resolution, self.name = config, config.resolution, "shapes"

    def batch(self, n: int, seed: int) -> tuple[torch.Tensor, list[str]]:
        """``n`` fresh images (n, 3, H, W) and captions, a function of ``seed`` only."""
        images, captions, _ = make_shapes(n, self.config, seed=seed)
        return images, captions

    def vocabulary(self) -> list[str]:
        """Every word a caption can contain."""
        return shapes_vocabulary()

    def phrases(self, captions: Sequence[str]) -> list[list[int | None]]:
        """Per caption, the object phrase of each word (``captions.phrases``), for ``text.phrase_loss``."""
        return [caption_phrases(c) for c in captions]

    def same(self, captions: Sequence[str]) -> torch.Tensor:
        """(B, B) bool: do captions i and j describe one scene? (Paraphrases of a scene are equal.)"""
        scenes = [parse_caption(c) for c in captions]
        return torch.tensor([[a == b for b in scenes] for a in scenes])

    def held_out(self, n: int) -> tuple[torch.Tensor, list[str]]:
        """``n`` images from seeds no training batch uses, each captioned with everything it shows.

        Training captions leave words out ("a small square"), and such a caption is true of many images:
        a retrieval that picked another true caption would be scored wrong. Held-out scenes are therefore
        all of the ``position`` kind (1 or 2 placed objects, every attribute named), so "the same scene"
        (``same``) and "true of this image" are one test.
        """
        images, captions, _ = make_shapes(n, replace(self.config, kinds={"position": 1.0}),
                                          seed=HELD_OUT_SEED + n)
        return images, captions


@dataclass
class StoredSource:
    """Images kept in memory as uint8 (N, C, H, W), with captions and, for labelled data, labels.

    A fixed share (``HELD_OUT_SHARE``) is held out; ``batch`` draws only from the rest.
    """

    name: str
    images: torch.Tensor  # (N, C, H, W) uint8
    captions: list[str]
    labels: torch.Tensor | None = None  # (N,) long, or None for captioned data
    label_names: tuple[str, ...] | None = None
    caption_template: str | None = None
    notes: list[str] = field(default_factory=list)  # conversions made while loading, said once
    kind: str = "stored"

    def __post_init__(self) -> None:
        if (self.images.ndim != 4 or self.images.dtype != torch.uint8
                or self.images.shape[2] != self.images.shape[3]):
            raise ValueError(f"images must be square uint8 (N, C, H, W); got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if len(self.captions) != len(self.images) or len(self.images) < 2:
            raise ValueError(f"need one caption per image and at least 2 images; got {len(self.images)} "
                             f"images and {len(self.captions)} captions")
        _check_image_size(self.images.shape[2], self.images.shape[1])
        order = torch.randperm(len(self.images), generator=torch.Generator().manual_seed(SPLIT_SEED))
        n_held = max(1, round(HELD_OUT_SHARE * len(order)))
        self.held_index, self.train_index = order[:n_held], order[n_held:]

    @property
    def resolution(self) -> int:
        return self.images.shape[-1]

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    def pixels(self, index: torch.Tensor) -> torch.Tensor:
        """Stored images ``index`` (M,) as floats (M, C, H, W) in [-1, 1]."""
        return self.images[index].float() / 127.5 - 1

    def draw(self, n: int, seed: int) -> torch.Tensor:
        """Indices (n,) of training images drawn with replacement, a function of ``seed`` only."""
        pick = torch.randint(len(self.train_index), (n,), generator=torch.Generator().manual_seed(seed))
        return self.train_index[pick]

    def batch(self, n: int, seed: int) -> tuple[torch.Tensor, list[str]]:
        """``n`` training images (n, C, H, W) and their captions, a function of ``seed`` only."""
        index = self.draw(n, seed)
        return self.pixels(index), [self.captions[i] for i in index.tolist()]

    def vocabulary(self) -> list[str]:
        """Every word of the training captions, sorted: the tokenizer's vocabulary for this data."""
        return sorted({w for c in self.captions for w in split_words(c)})

    def same(self, captions: Sequence[str]) -> torch.Tensor:
        """(B, B) bool: equal captions (labelled data has one caption per label)."""
        return torch.tensor([[a == b for b in captions] for a in captions])

    def held_out(self, n: int | None = None) -> tuple[torch.Tensor, list[str]]:
        """The first ``n`` held-out images (all of them by default) and their captions."""
        index = self.held_index[:n]
        return self.pixels(index), [self.captions[i] for i in index.tolist()]

    def label_prompts(self, per_label: int) -> tuple[list[str], list[int]]:
        """``per_label`` prompts for every label (the template filled in) and the labels they name."""
        if self.label_names is None or self.caption_template is None:
            raise ValueError(f"data set {self.name!r} has no labels; label prompts need a label column and "
                             "template")
        labels = [k for k in range(len(self.label_names)) for _ in range(per_label)]
        return [label_caption(self.caption_template, self.label_names[k]) for k in labels], labels


DataSource = ShapesSource | StoredSource


def to_uint8(image: Image.Image, resolution: int, channels: int) -> torch.Tensor:
    """PIL image -> (channels, resolution, resolution) uint8: scale the short side, crop the centre."""
    image, scale = image.convert("L" if channels == 1 else "RGB"), resolution / min(image.size)
    w, h = max(resolution, round(image.width * scale)), max(resolution, round(image.height * scale))
    left, top = (w - resolution) // 2, (h - resolution) // 2
    image = image.resize((w, h), Image.BICUBIC).crop((left, top, left + resolution, top + resolution))
    pixels = np.array(image, dtype=np.uint8).reshape(resolution, resolution, channels)  # (H, W, C)
    return torch.from_numpy(pixels).permute(2, 0, 1)  # (C, H, W)


def _from_pil(name: str, images: Sequence[Image.Image], captions: list[str], resolution: int, channels: int,
              **labelled: Any) -> StoredSource:
    """A StoredSource from PIL images of any size and mode, converting them and saying so."""
    _check_image_size(resolution, channels)
    sizes, modes = {im.size for im in images}, {im.mode for im in images}
    want = "L" if channels == 1 else "RGB"
    notes = []
    if len(sizes) > 1 or sizes != {(resolution, resolution)}:
        notes.append(f"{len(sizes)} image size(s) {sorted(sizes)[:3]} resized and centre-cropped to "
                     f"{resolution}x{resolution}")
    if modes != {want}:
        notes.append(f"image mode(s) {sorted(modes)} converted to {want}")
    stacked = torch.stack([to_uint8(im, resolution, channels) for im in images])  # (N, C, H, W)
    return StoredSource(name, stacked, captions, notes=notes, **labelled)


def label_caption(template: str, name: str) -> str:
    """Fill ``{label}`` with a class name and ``{label_word}`` with its number word for digit
    names ("7" -> "seven", as in MNIST); other names are used as they are."""
    if "{label}" not in template and "{label_word}" not in template:
        raise ValueError(f"caption_template={template!r} must contain {{label}} or {{label_word}}")
    word = NUMBER_WORDS[int(name)] if name.isdigit() and int(name) < len(NUMBER_WORDS) else name
    return template.format(label=name, label_word=word)


def digits_source(resolution: int = DIGITS_RESOLUTION,
                  caption_template: str = "a handwritten digit {label_word}") -> StoredSource:
    """scikit-learn's 1,797 handwritten digits (8x8, 17 grey levels, ink bright on black) upscaled
    bilinearly to (1, resolution, resolution); captions from ``caption_template``."""
    from sklearn.datasets import load_digits

    _check_image_size(resolution, 1)
    digits = load_digits()
    scans = torch.from_numpy(digits.images).float().unsqueeze(1) / 16  # (1797, 1, 8, 8) in [0, 1]
    up = F.interpolate(scans, size=(resolution, resolution), mode="bilinear", align_corners=False)
    images = (up * 255).round().clamp(0, 255).to(torch.uint8)  # (1797, 1, R, R)
    names = tuple(str(k) for k in range(10))
    labels = torch.from_numpy(digits.target).long()  # (1797,)
    return StoredSource("digits", images,
                        [label_caption(caption_template, names[y]) for y in labels.tolist()],
                        labels, names, caption_template)


def hf_source(name_or_path: str, split: str = "train", image_column: str = "image",
              caption_column: str | None = None,
              label_column: str | None = None, caption_template: str | None = "a photo of a {label}",
              resolution: int = 32, channels: int = 3, max_images: int | None = None) -> StoredSource:
    """A Hugging Face ``datasets`` image data set as a source.

    A folder written by ``save_to_disk`` is read with ``datasets.load_from_disk``; any other name is
    fetched from the Hub with ``datasets.load_dataset(name_or_path, split=split)`` (this needs the
    internet once; ``datasets`` caches it). Captions come from ``caption_column``, or from
    ``label_column`` (a ``ClassLabel`` or integers) through ``caption_template``.
    """
    import datasets

    if (caption_column is None) == (label_column is None):
        raise ValueError(f"give exactly one of caption_column={caption_column!r} and "
                         f"label_column={label_column!r}")
    if Path(name_or_path).is_dir():
        ds = datasets.load_from_disk(name_or_path)
    else:
        try:
            ds = datasets.load_dataset(name_or_path, split=split)
        except Exception as err:  # offline, unknown name, private repo: the library's own message says which
            raise ValueError(f"could not load data set {name_or_path!r} from the Hugging Face Hub "
                             f"({type(err).__name__}: {str(err).splitlines()[0][:200]}); pass a folder "
                             f"written by save_to_disk or an image folder instead, or one of "
                             f"{sorted(HUB_PRESETS)} when online") from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise ValueError(f"split={split!r} is not in {name_or_path}; choose one of {list(ds)}")
        ds = ds[split]
    for role, column in (("image_column", image_column), ("caption_column", caption_column),
                         ("label_column", label_column)):
        if column is not None and column not in ds.column_names:
            raise ValueError(f"{role}={column!r} is not a column of {name_or_path}; choose one of "
                             f"{ds.column_names}")
    if max_images is not None:
        ds = ds.select(range(min(max_images, len(ds))))
    images = list(ds[image_column])
    if caption_column is not None:
        return _from_pil(Path(name_or_path).name, images, [str(c) for c in ds[caption_column]], resolution,
                         channels)
    if caption_template is None:
        raise ValueError("label_column needs a caption_template with {label} or {label_word}")
    feature = ds.features[label_column]
    raw = list(ds[label_column])
    class_label = isinstance(feature, datasets.ClassLabel)
    names = tuple(feature.names) if class_label else tuple(str(v) for v in sorted(set(raw)))
    labels = torch.tensor([y if class_label else names.index(str(y)) for y in raw])
    captions = [label_caption(caption_template, names[y]) for y in labels.tolist()]
    return _from_pil(Path(name_or_path).name, images, captions, resolution, channels, labels=labels,
                     label_names=names, caption_template=caption_template)


def folder_source(folder: str | Path, resolution: int = 32, channels: int = 3) -> StoredSource:
    """Images in ``folder`` captioned by ``captions.txt`` (lines "file_name<TAB>caption") or
    ``metadata.jsonl`` (lines {"file_name": ..., "text": ...}, Hugging Face imagefolder's keys)."""
    folder = Path(folder)
    txt, jsonl = folder / "captions.txt", folder / "metadata.jsonl"
    if not txt.is_file() and not jsonl.is_file():
        raise ValueError(f"image folder {str(folder)!r} has no captions; put a captions.txt "
                         "(file_name<TAB>caption per line) or a metadata.jsonl beside the images")
    path = jsonl if jsonl.is_file() else txt
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    try:
        rows = ([(r["file_name"], r["text"]) for r in map(json.loads, lines)] if path == jsonl
                else [tuple(line.split("\t", 1)) for line in lines])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"every line of {path} must be a JSON object with 'file_name' and 'text' "
                         f"({err})") from None
    if any(len(r) != 2 for r in rows):
        raise ValueError(f"every line of {path} must read 'file_name<TAB>caption'")
    missing = [name for name, _ in rows if not (folder / name).is_file()]
    if missing:
        raise ValueError(f"image {missing[0]!r} named in {path} is missing from {folder} ({len(missing)} "
                         "missing)")
    images = []
    for name, _ in rows:
        with Image.open(folder / name) as im:
            im.load()
            images.append(im)
    return _from_pil(folder.name, images, [text for _, text in rows], resolution, channels)


def load_source(data: str, resolution: int | None = None, channels: int | None = None,
                **options: Any) -> DataSource:
    """The source that ``data`` names: "shapes", "digits", a folder (saved data set or image folder) or
    a Hub name. ``options``: ShapesConfig fields for shapes; hf_source's arguments for Hub/saved data."""
    if data == "shapes":
        return ShapesSource(ShapesConfig(resolution=resolution or 32, **options))
    if data == "digits":
        return digits_source(resolution or DIGITS_RESOLUTION, **options)
    path = Path(data)
    size = {"resolution": resolution or 32, "channels": channels or 3}
    if path.is_dir():
        if (path / "captions.txt").is_file() or (path / "metadata.jsonl").is_file():
            return folder_source(path, **size)
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            return hf_source(str(path), **{**size, **options})
        raise ValueError(f"--data {data!r} is a folder but neither a saved data set (dataset_info.json) nor "
                         "an image folder (captions.txt or metadata.jsonl)")
    if path.suffix or "/" in data and data not in HUB_PRESETS and path.parent.exists():
        raise ValueError(f"--data {data!r} does not exist; pass shapes, digits, a folder, or a Hub name such "
                         f"as {sorted(HUB_PRESETS)}")
    preset = dict(HUB_PRESETS.get(data, {}))
    size["channels"] = channels or preset.pop("channels", 3)
    preset.pop("channels", None)
    return hf_source(data, **{**size, **preset, **options})
