"""Checkpoints: safetensors weights + a JSON config, written atomically; device choice.

A checkpoint named ``runs/unet`` is two files, ``runs/unet.safetensors`` (the tensors) and
``runs/unet.json`` (the config dataclass as a dict, plus any extra metadata). Both are written to a
temporary file first and renamed, so a killed run never leaves half a checkpoint behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

DEVICES = ("auto", "cpu", "cuda", "mps")
FILE_MODE = 0o644  # mkstemp creates 0600 files; checkpoints are meant to be shared


def pick_device(name: str = "auto") -> torch.device:
    """Return the device called ``name``; ``auto`` picks CUDA, then MPS, then CPU."""
    if name not in DEVICES:
        raise ValueError(f"device={name!r} is not known; choose one of {DEVICES}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for but no CUDA GPU is visible; use 'auto' or 'cpu'")
    return torch.device(name)


def _stem(path: str | Path) -> Path:
    path = Path(path)
    return path.with_suffix("") if path.suffix in (".safetensors", ".json") else path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(
    path: str | Path,
    tensors: dict[str, torch.Tensor] | torch.nn.Module,
    config: Any,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Save ``tensors`` (a state dict or a module) and ``config`` as ``path``.safetensors/.json.

    ``config`` is a dataclass or a dict; ``extra`` is any JSON-serialisable metadata (step, kind...).
    Returns the stem path.
    """
    stem = _stem(path)
    state = tensors.state_dict() if isinstance(tensors, torch.nn.Module) else tensors
    state = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    cfg = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    meta = {"config": cfg, "extra": extra or {}}
    stem.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=stem.parent, suffix=".safetensors.tmp")
    os.close(fd)
    try:
        save_file(state, tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, stem.with_suffix(".safetensors"))
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    atomic_write_bytes(stem.with_suffix(".json"), json.dumps(meta, indent=2).encode())
    return stem


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load ``path``.safetensors and ``path``.json; return (state_dict, meta).

    ``meta["config"]`` is the config dict and ``meta["extra"]`` the extra metadata. A missing or
    corrupt file raises a ValueError that names the file.
    """
    stem = _stem(path)
    weights, config = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    for f in (weights, config):
        if not f.is_file():
            raise ValueError(f"checkpoint file {f} is missing; a checkpoint is a .safetensors and a .json with the same name")
    try:
        state = load_file(str(weights), device=str(map_location))
    except (SafetensorError, OSError, RuntimeError) as err:
        raise ValueError(f"checkpoint file {weights} is corrupt or not a safetensors file ({err})") from None
    try:
        meta = json.loads(config.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"checkpoint config {config} is not valid JSON ({err})") from None
    return state, meta


def load_into(module: torch.nn.Module, state: dict[str, torch.Tensor], name: str = "model") -> torch.nn.Module:
    """Load ``state`` into ``module``, naming every missing, unexpected or mis-shaped tensor."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing tensors {missing[:5]}")
        if unexpected:
            parts.append(f"unexpected tensors {unexpected[:5]}")
        if wrong:
            parts.append(f"wrong shapes {wrong[:5]}")
        raise ValueError(f"{name} checkpoint does not fit its config: " + "; ".join(parts))
    module.load_state_dict(state)
    return module


def sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(weights_dir: str | Path, commands: dict[str, str]) -> dict[str, Any]:
    """Write ``manifest.json``: sha256, size and reproducing command of each shipped checkpoint.

    ``commands`` maps a checkpoint name (``unet``, ``vae``, ...) to the exact command that rebuilds
    it from scratch; both of its files (.safetensors and .json) are listed.
    """
    folder = Path(weights_dir)
    files = {}
    for name, command in commands.items():
        for suffix in (".safetensors", ".json"):
            path = folder / f"{name}{suffix}"
            files[path.name] = {"sha256": sha256(path), "bytes": path.stat().st_size, "command": command}
    manifest = {"files": files, "total_bytes": sum(f["bytes"] for f in files.values())}
    atomic_write_bytes(folder / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
    return manifest
