"""Captioned image data from outside the project: Hugging Face ``datasets``, image folders, labelled data.

Every adapter returns (image (3, H, W) in [-1, 1], caption) pairs. The procedural ``shapes`` world
lives in ``shapes.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def image_to_tensor(image: Image.Image, resolution: int) -> torch.Tensor:
    """PIL image -> (3, resolution, resolution) in [-1, 1]: scale the short side, crop the centre."""
    image, scale = image.convert("RGB"), resolution / min(image.size)
    w, h = max(resolution, round(image.width * scale)), max(resolution, round(image.height * scale))
    left, top = (w - resolution) // 2, (h - resolution) // 2
    image = image.resize((w, h), Image.BICUBIC).crop((left, top, left + resolution, top + resolution))
    return torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1  # (3, H, W)


@dataclass
class ImageCaptionDataset(Dataset):
    """(image (3, H, W) in [-1, 1], caption) pairs; ``load(i)`` returns the i-th PIL image."""

    load: Callable[[int], Image.Image]
    captions: list[str]
    resolution: int = 32

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        return image_to_tensor(self.load(i), self.resolution), self.captions[i]


def label_caption(template: str, name: str) -> str:
    """Fill ``{label}`` with a class name and ``{label_word}`` with its number word for digit
    names ("7" -> "seven", as in MNIST); other names are used as they are."""
    word = NUMBER_WORDS[int(name)] if name.isdigit() and int(name) < len(NUMBER_WORDS) else name
    return template.format(label=name, label_word=word)


def hf_dataset(name_or_path: str, split: str = "train", image_column: str = "image", caption_column: str | None = None,
               label_column: str | None = None, caption_template: str = "a photo of a {label}", resolution: int = 32) -> ImageCaptionDataset:
    """A Hugging Face ``datasets`` image dataset as (image, caption) pairs.

    A saved dataset directory is read with ``datasets.load_from_disk``; any other name is fetched
    from the Hub with ``datasets.load_dataset(name_or_path, split=split)``, e.g. ``hf_dataset("mnist",
    label_column="label", caption_template="a handwritten digit {label_word}")``. Captions come from
    ``caption_column``, or from ``label_column`` through ``caption_template`` (see ``label_caption``).
    """
    import datasets

    if (caption_column is None) == (label_column is None):
        raise ValueError(f"give exactly one of caption_column={caption_column!r} and label_column={label_column!r}")
    ds = datasets.load_from_disk(name_or_path) if Path(name_or_path).is_dir() else datasets.load_dataset(name_or_path, split=split)
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise ValueError(f"split={split!r} is not in {name_or_path}; choose one of {list(ds)}")
        ds = ds[split]
    for role, column in (("image_column", image_column), ("caption_column", caption_column), ("label_column", label_column)):
        if column is not None and column not in ds.column_names:
            raise ValueError(f"{role}={column!r} is not a column of {name_or_path}; choose one of {ds.column_names}")
    if caption_column is not None:
        captions = [str(c) for c in ds[caption_column]]
    else:
        feature = ds.features[label_column]
        names = feature.names if isinstance(feature, datasets.ClassLabel) else None
        captions = [label_caption(caption_template, names[y] if names else str(y)) for y in ds[label_column]]
    return ImageCaptionDataset(lambda i: ds[i][image_column], captions, resolution)


def image_folder_dataset(folder: str | Path, captions_file: str = "captions.txt", resolution: int = 32) -> ImageCaptionDataset:
    """Images in ``folder`` captioned by ``captions_file``: ``.txt`` lines "file_name<TAB>caption", or
    ``.jsonl`` lines {"file_name": ..., "text": ...} (the keys of Hugging Face imagefolder metadata)."""
    folder, path = Path(folder), Path(folder) / captions_file
    if not path.is_file():
        raise ValueError(f"captions_file={str(path)!r} does not exist; put a captions.txt or metadata.jsonl beside the images")
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if path.suffix == ".jsonl":
        rows = [(r["file_name"], r["text"]) for r in map(json.loads, lines)]
    elif all("\t" in line for line in lines):
        rows = [tuple(line.split("\t", 1)) for line in lines]
    else:
        raise ValueError(f"every line of {path} must read 'file_name<TAB>caption' (or use a .jsonl captions_file)")
    for name, _ in rows:
        if not (folder / name).is_file():
            raise ValueError(f"image {name!r} named in {path} is missing from {folder}")
    return ImageCaptionDataset(lambda i: Image.open(folder / rows[i][0]), [text for _, text in rows], resolution)
