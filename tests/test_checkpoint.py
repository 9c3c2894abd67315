"""Checkpoints: one atomic file with its metadata in the header, old two-file checkpoints still read,
stale temporaries removed, run manifests that catch a flipped byte, and resume's consistency checks."""

import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from minidiff import checkpoint
from minidiff.checkpoint import (
    META_KEY,
    check_writable,
    load_checkpoint,
    pick_device,
    read_metadata,
    save_checkpoint,
    verify_run_manifest,
    write_run_manifest,
)
from minidiff.pipeline import WEIGHTS_DIR, load_pipeline

SHIPPED = ("unet", "text_encoder", "vae", "judge")


def test_the_metadata_lives_in_the_safetensors_header(tmp_path):
    tensors = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.ones(2, dtype=torch.int64)}
    save_checkpoint(tmp_path / "model", tensors, {"dim": 3}, {"step": 7, "loss": 0.5})
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as f:
        header = json.loads(f.metadata()[META_KEY])
    assert header == {"config": {"dim": 3}, "extra": {"step": 7, "loss": 0.5}}
    # the .json beside it is a copy for people; it is never read back when the header has the metadata
    (tmp_path / "model.json").write_text(json.dumps({"config": {"dim": 99}, "extra": {"step": 1}}))
    state, meta = load_checkpoint(tmp_path / "model")
    assert meta == header and all(torch.equal(state[k], tensors[k]) for k in tensors)
    (tmp_path / "model.json").unlink()
    assert read_metadata(tmp_path / "model") == header


def test_checkpoints_in_the_old_two_file_format_still_load(tmp_path):
    save_file({"w": torch.ones(3)}, str(tmp_path / "old.safetensors"))  # no header metadata
    (tmp_path / "old.json").write_text(json.dumps({"config": {"a": 1}, "extra": {"step": 5}}))
    state, meta = load_checkpoint(tmp_path / "old")
    assert meta["extra"]["step"] == 5 and torch.equal(state["w"], torch.ones(3))
    (tmp_path / "old.json").write_text("{broken")
    with pytest.raises(ValueError, match="old.json is not valid JSON"):
        load_checkpoint(tmp_path / "old")
    (tmp_path / "old.json").unlink()
    with pytest.raises(ValueError, match="old.json is missing.*no header metadata"):
        load_checkpoint(tmp_path / "old")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_load_and_resave_bit_identically(tmp_path, name):
    """The shipped files are untouched (old format, checked by their manifest); written again in the new
    format they keep every tensor bit for bit and the same metadata."""
    state, meta = load_checkpoint(WEIGHTS_DIR / name)
    raw = load_file(str(WEIGHTS_DIR / f"{name}.safetensors"))
    assert state.keys() == raw.keys() and all(torch.equal(state[k], raw[k]) for k in raw)
    assert meta == json.loads((WEIGHTS_DIR / f"{name}.json").read_text())
    save_checkpoint(tmp_path / name, state, meta["config"], meta["extra"])
    again, meta_again = load_checkpoint(tmp_path / name)
    assert meta_again == meta
    assert all(again[k].dtype == raw[k].dtype and torch.equal(again[k], raw[k]) for k in raw)


def test_a_killed_save_leaves_no_temporary_behind_for_long(tmp_path):
    save_checkpoint(tmp_path / "unet", {"w": torch.ones(2)}, {})
    stale = [
        tmp_path / "unet.safetensors.dead1234.tmp",
        tmp_path / "unet.json.dead1234.tmp",
        tmp_path / "tmpab12cd.safetensors.tmp",
    ]  # the last: the name older versions used
    other = tmp_path / "vae.safetensors.beef5678.tmp"  # another checkpoint's save in flight
    for p in [*stale, other]:
        p.write_bytes(b"half a checkpoint")
    save_checkpoint(tmp_path / "unet", {"w": torch.zeros(2)}, {})
    assert not any(p.exists() for p in stale) and other.exists()


def test_a_failing_save_keeps_the_old_checkpoint_and_no_temporary(tmp_path, monkeypatch):
    save_checkpoint(tmp_path / "unet", {"w": torch.ones(2)}, {}, {"step": 1})

    def no_rename(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.os, "replace", no_rename)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "unet", {"w": torch.zeros(2)}, {}, {"step": 2})
    monkeypatch.undo()
    state, meta = load_checkpoint(tmp_path / "unet")
    assert meta["extra"]["step"] == 1 and torch.equal(state["w"], torch.ones(2))
    assert not list(tmp_path.glob("*.tmp"))


def test_a_run_manifest_lists_every_file_and_catches_a_flipped_byte(tmp_path):
    save_checkpoint(tmp_path / "unet", {"w": torch.arange(100.0)}, {"a": 1}, {"step": 3})
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "step_000001.png").write_bytes(b"png")
    (tmp_path / "unet.safetensors.x.tmp").write_bytes(b"in flight")
    manifest = write_run_manifest(tmp_path)
    assert set(manifest["files"]) == {"unet.safetensors", "unet.json", "samples/step_000001.png"}
    assert verify_run_manifest(tmp_path) == manifest
    data = bytearray((tmp_path / "unet.safetensors").read_bytes())
    data[-3] ^= 0x10  # inside the last tensor: safetensors alone would load it
    (tmp_path / "unet.safetensors").write_bytes(bytes(data))
    with pytest.raises(
        ValueError, match=r"unet\.safetensors is corrupt: its sha256 differs from .*manifest\.json"
    ):
        load_checkpoint(tmp_path / "unet")
    assert load_checkpoint(tmp_path / "unet", verify=False)[1]["extra"]["step"] == 3
    (tmp_path / "samples" / "step_000001.png").unlink()
    with pytest.raises(ValueError, match="step_000001.png is missing"):
        verify_run_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("not json")
    with pytest.raises(ValueError, match=r"manifest .*manifest\.json is not valid JSON"):
        load_checkpoint(tmp_path / "unet")


def copy_shipped(folder):
    shutil.copytree(WEIGHTS_DIR, folder)
    return folder


def flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def test_load_pipeline_refuses_a_run_copy_with_a_flipped_byte(tmp_path):
    run = copy_shipped(tmp_path / "run")
    (run / "manifest.json").unlink()
    write_run_manifest(run)
    assert load_pipeline(run, device="cpu").resolution == 32
    flip_last_byte(run / "vae.safetensors")
    with pytest.raises(ValueError, match=r"vae\.safetensors is corrupt"):
        load_pipeline(run, device="cpu")


def test_the_judge_loader_checks_the_manifest(tmp_path):
    from minidiff.judge import load_judge

    weights = copy_shipped(tmp_path / "weights")
    load_judge(weights / "judge")
    flip_last_byte(weights / "judge.safetensors")
    with pytest.raises(ValueError, match=r"judge\.safetensors is corrupt.*python -m minidiff judge train"):
        load_judge(weights / "judge")


def test_unwritable_outputs_are_named_before_any_work(tmp_path):
    (tmp_path / "file").write_text("x")
    assert (
        check_writable(tmp_path / "new" / "deeper" / "a.png", suffixes=(".png",))
        == tmp_path / "new/deeper/a.png"
    )
    assert not (tmp_path / "new").exists()
    for path, kwargs, message in [
        (tmp_path, {}, "is a folder"),
        (tmp_path / "file" / "a.png", {}, "is a file"),
        (tmp_path / "a.jpg", {"suffixes": (".png",)}, "extension '.jpg'"),
        (tmp_path / "file", {"folder": True}, "is a file; give a folder"),
    ]:
        with pytest.raises(ValueError, match=message):
            check_writable(path, **kwargs)


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_a_missing_device_is_called_unavailable():
    with pytest.raises(ValueError, match="device='mps' is unavailable"):
        pick_device("mps")


def test_rebuilding_a_listed_checkpoint_refreshes_only_its_manifest_entries(tmp_path):
    from minidiff.checkpoint import refresh_manifest, write_manifest

    save_checkpoint(tmp_path / "judge", {"w": torch.ones(2)}, {})
    save_checkpoint(tmp_path / "vae", {"w": torch.ones(2)}, {})
    write_manifest(tmp_path, {"judge": "python -m minidiff judge train", "vae": "python -m minidiff.vae"})
    flip_last_byte(tmp_path / "vae.safetensors")
    save_checkpoint(tmp_path / "judge", {"w": torch.zeros(2)}, {})
    refresh_manifest(tmp_path / "judge")
    load_checkpoint(tmp_path / "judge")  # its new hash is listed, its command kept
    assert json.loads((tmp_path / "manifest.json").read_text())["files"]["judge.json"]["command"]
    with pytest.raises(ValueError, match="vae.safetensors is corrupt"):  # nothing else is blessed
        load_checkpoint(tmp_path / "vae")
