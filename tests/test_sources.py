"""Data sources: shapes, scikit-learn's digits, saved Hugging Face data sets and image folders."""

import json
from dataclasses import replace

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from minidiff.data import (
    HELD_OUT_SEED,
    HELD_OUT_SHARE,
    ShapesSource,
    StoredSource,
    digits_source,
    folder_source,
    hf_source,
    label_caption,
    load_source,
)
from minidiff.shapes import RGB, ShapesConfig, make_shapes, parse_caption


def striped(colours, height=20):
    """An image of vertical stripes, one per colour, each ``height`` wide."""
    img = Image.new("RGB", (height * len(colours), height))
    for i, c in enumerate(colours):
        img.paste(tuple(round(255 * v) for v in RGB[c]), (i * height, 0, (i + 1) * height, height))
    return img


def as_pixels(colour):
    return torch.round(torch.tensor(RGB[colour]) * 255) / 127.5 - 1


def test_shapes_source_is_make_shapes():
    config = ShapesConfig(resolution=16, max_objects=1)
    images, captions = ShapesSource(config).batch(5, seed=123)
    ref_images, ref_captions, _ = make_shapes(5, config, seed=123)
    assert torch.equal(images, ref_images) and captions == ref_captions
    same = ShapesSource(config).same(["a large red circle at the top left on a blue background",
                                      "large red circle, top left, blue background",
                                      "a small red circle at the top left on a blue background"])
    assert same.tolist() == [[True, True, False], [True, True, False], [False, False, True]]


def test_shapes_held_out_captions_name_everything_the_image_shows():
    # a partial caption ("a small square") is true of many images, so retrieval scored against it is unfair
    config = ShapesConfig(resolution=16, max_objects=4, p_omit=0.9)
    images, captions = ShapesSource(config).held_out(64)
    ref_images, _, scenes = make_shapes(64, ShapesConfig(resolution=16, max_objects=4, kinds={"position": 1}),
                                        seed=HELD_OUT_SEED + 64)
    assert torch.equal(images, ref_images)
    assert [parse_caption(c) for c in captions] == [replace(s, kind=None) for s in scenes]  # the scene
    assert all(parse_caption(c).complete for c in captions)
    train_captions = ShapesSource(config).batch(64, seed=0)[1]
    assert not all(parse_caption(c).complete for c in train_captions)  # training still leaves words out


def test_digits_are_the_real_scans_upscaled():
    from sklearn.datasets import load_digits

    source = digits_source(16)
    ref = load_digits()
    assert source.images.shape == (1797, 1, 16, 16) and source.images.dtype == torch.uint8
    assert source.labels.tolist() == ref.target.tolist()
    # bilinear upscaling with align_corners=False: output corner (0, 0) samples the input corner exactly
    corners = torch.from_numpy(ref.images[:, 0, 0] / 16 * 255).round().to(torch.uint8)
    assert torch.equal(source.images[:, 0, 0, 0], corners)
    # the mean grey level survives the upscaling to within rounding (bilinear preserves it away from edges)
    assert abs(source.images.float().mean().item() / 255 - ref.images.mean() / 16) < 0.02
    assert source.captions[0] == "a handwritten digit zero"
    assert source.captions[ref.target.tolist().index(7)].endswith("seven")
    assert source.vocabulary() == sorted({"a", "handwritten", "digit", "zero", "one", "two", "three", "four",
                                          "five", "six", "seven", "eight", "nine"})


def test_batches_are_seeded_and_never_draw_held_out_images():
    source = digits_source(16)
    a, ca = source.batch(64, seed=7)
    b, cb = source.batch(64, seed=7)
    assert torch.equal(a, b) and ca == cb and a.shape == (64, 1, 16, 16) and a.min() >= -1 and a.max() <= 1
    assert not torch.equal(a, source.batch(64, seed=8)[0])
    drawn = torch.cat([source.draw(256, seed) for seed in range(50)])
    assert not set(drawn.tolist()) & set(source.held_index.tolist())
    assert len(source.held_index) == round(HELD_OUT_SHARE * 1797)
    held, captions = source.held_out()
    assert torch.equal(held, source.pixels(source.held_index)) and len(captions) == len(held)


def test_label_caption_templates():
    assert label_caption("a handwritten digit {label_word}", "7") == "a handwritten digit seven"
    assert label_caption("a photo of a {label}", "dog") == "a photo of a dog"
    with pytest.raises(ValueError, match=r"must contain \{label\} or \{label_word\}"):
        label_caption("a photo", "dog")


def save_labelled(path, n=12, split=None):
    names = ["cat", "dog"]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    ds = datasets.Dataset.from_dict({"image": [striped(["gray"])] * n, "label": [i % 2 for i in range(n)]},
                                    features=features)
    (datasets.DatasetDict({split: ds}) if split else ds).save_to_disk(str(path))


def test_hf_source_caption_column_resizes_and_crops(tmp_path):
    images = [striped(["red", "green", "blue"]), striped(["white"], height=40)]
    ds = datasets.Dataset.from_dict({"image": images, "text": ["a wide image", "a white square"]},
                                    features=datasets.Features({"image": datasets.Image(),
                                                                "text": datasets.Value("string")}))
    ds.save_to_disk(str(tmp_path / "ds"))
    got = hf_source(str(tmp_path / "ds"), caption_column="text", resolution=16)
    assert got.captions == ["a wide image", "a white square"] and got.label_names is None
    x = got.pixels(torch.arange(2))
    assert x.shape == (2, 3, 16, 16)
    # the centre crop keeps the middle stripe
    assert torch.allclose(x[0, :, 8, 8], as_pixels("green"), atol=0.02)
    assert torch.allclose(x[1], torch.ones_like(x[1]), atol=0.01)
    assert any("resized" in note for note in got.notes)


def test_hf_source_label_column_with_classlabel(tmp_path):
    save_labelled(tmp_path / "pets", split="test")
    got = hf_source(str(tmp_path / "pets"), split="test", label_column="label",
                    caption_template="a photo of a {label}", resolution=16, channels=1)
    assert got.captions[:3] == ["a photo of a cat", "a photo of a dog", "a photo of a cat"]
    assert got.label_names == ("cat", "dog") and got.labels.tolist()[:4] == [0, 1, 0, 1] and got.channels == 1
    assert any("converted to L" in note for note in got.notes)
    assert got.label_prompts(2) == (["a photo of a cat"] * 2 + ["a photo of a dog"] * 2, [0, 0, 1, 1])
    with pytest.raises(ValueError, match="split='train' is not in .*choose one of \\['test'\\]"):
        hf_source(str(tmp_path / "pets"), split="train", label_column="label")
    with pytest.raises(ValueError, match=r"caption_column='text' is not a column .*\['image', 'label'\]"):
        hf_source(str(tmp_path / "pets"), split="test", caption_column="text")
    with pytest.raises(ValueError, match="exactly one"):
        hf_source(str(tmp_path / "pets"), split="test")
    with pytest.raises(ValueError, match=r"\{label\}"):
        hf_source(str(tmp_path / "pets"), split="test", label_column="label", caption_template="a pet")


@pytest.mark.parametrize("fmt", ["txt", "jsonl"])
def test_image_folder_source(tmp_path, fmt):
    striped(["red"]).save(tmp_path / "a.png")
    striped(["blue", "yellow"]).convert("L").save(tmp_path / "b b.png")
    rows = [("a.png", "a red image"), ("b b.png", "blue, then yellow")]
    if fmt == "txt":
        (tmp_path / "captions.txt").write_text("".join(f"{n}\t{c}\n" for n, c in rows))
    else:
        (tmp_path / "metadata.jsonl").write_text("".join(json.dumps({"file_name": n, "text": c}) + "\n"
                                                         for n, c in rows))
    got = folder_source(tmp_path, resolution=16)
    assert got.captions == ["a red image", "blue, then yellow"] and got.images.shape == (2, 3, 16, 16)
    assert torch.allclose(got.pixels(torch.tensor([0]))[0, :, 4, 4], as_pixels("red"), atol=0.02)
    assert any("mode" in note and "RGB" in note for note in got.notes), got.notes
    assert got.vocabulary() == [",", "a", "blue", "image", "red", "then", "yellow"]


def test_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="has no captions; put a captions.txt"):
        folder_source(tmp_path)
    (tmp_path / "captions.txt").write_text("missing.png\ta thing\n")
    with pytest.raises(ValueError, match="'missing.png' named in .* is missing"):
        folder_source(tmp_path)
    (tmp_path / "captions.txt").write_text("no tab here\n")
    with pytest.raises(ValueError, match="file_name<TAB>caption"):
        folder_source(tmp_path)


def test_load_source_dispatch(tmp_path, monkeypatch):
    assert isinstance(load_source("shapes", 16), ShapesSource) and load_source("digits").resolution == 16
    save_labelled(tmp_path / "saved")
    got = load_source(str(tmp_path / "saved"), 16, 1, label_column="label", caption_template="a {label}")
    assert isinstance(got, StoredSource) and got.captions[1] == "a dog"
    with pytest.raises(ValueError, match="neither a saved data set"):
        load_source(str(tmp_path))
    with pytest.raises(ValueError, match="does not exist"):
        load_source(str(tmp_path / "nope.png"))
    with pytest.raises(ValueError, match="resolution=8 is not allowed"):
        load_source("digits", 8)
    with pytest.raises(ValueError, match="channels=2 is not allowed"):
        load_source(str(tmp_path / "saved"), 16, 2, label_column="label")

    def offline(*args, **kwargs):
        raise ConnectionError("no internet")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(ValueError,
                       match="could not load data set 'mnist' from the Hugging Face Hub .*ConnectionError"):
        load_source("mnist")


def test_stored_source_checks_its_arrays():
    with pytest.raises(ValueError, match="square uint8"):
        StoredSource("x", torch.zeros(4, 3, 16, 16), ["a"] * 4)
    with pytest.raises(ValueError, match="one caption per image"):
        StoredSource("x", torch.zeros(4, 3, 16, 16, dtype=torch.uint8), ["a"] * 3)
    source = StoredSource("x", torch.from_numpy(np.full((4, 1, 16, 16), 255, np.uint8)), ["a b"] * 4)
    assert source.pixels(torch.tensor([0])).unique().tolist() == [1.0] and source.vocabulary() == ["a", "b"]
