"""Checkpoints: one safetensors file per checkpoint, written atomically; run manifests; device choice.

A checkpoint named ``runs/unet`` is the file ``runs/unet.safetensors``: the tensors, and in its
header the config dataclass as a dict plus any extra metadata (step, loss, kind...). The file is
written to a temporary name in the same folder, fsync'd and renamed, so a killed run leaves either
the old checkpoint or the new one, never a mix. ``runs/unet.json`` is a copy of the metadata for
people to read; it is written after the rename and never read back, except for checkpoints saved
before the metadata moved into the header (those have no header metadata).

A folder's ``manifest.json`` lists the sha256 of its files (``write_run_manifest``, or
``write_manifest`` for the shipped weights); ``load_checkpoint`` refuses a file whose hash differs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

DEVICES = ("auto", "cpu", "cuda", "mps")
FILE_MODE = 0o644  # checkpoints are meant to be shared
META_KEY = "minidiff"  # the safetensors header key that holds {"config": ..., "extra": ...} as JSON
MANIFEST = "manifest.json"
TMP_SUFFIX = ".tmp"  # a save in flight; one left behind was killed and is removed by the next save


def pick_device(name: str = "auto") -> torch.device:
    """Return the device called ``name``; ``auto`` picks CUDA, then MPS, then CPU.

    A device that this machine does not have is a ValueError that says so.
    """
    if name not in DEVICES:
        raise ValueError(f"device={name!r} is not known; choose one of {', '.join(DEVICES)}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' is unavailable: this machine shows no CUDA GPU; use auto or cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device='mps' is unavailable: this machine has no Apple GPU (MPS); use auto or cpu")
    return torch.device(name)


def _stem(path: str | Path) -> Path:
    path = Path(path)
    return path.with_suffix("") if path.suffix in (".safetensors", ".json") else path


def checkpoint_exists(path: str | Path) -> bool:
    """Whether the checkpoint ``path`` (a stem, or its .safetensors/.json) has been written."""
    return _stem(path).with_suffix(".safetensors").is_file()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` as one step: a unique temporary file in the same folder, written,
    fsync'd, renamed over ``path``, then the folder fsync'd so the rename itself survives a crash."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":  # Windows cannot open a folder; its renames are durable enough
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_writable(path: str | Path, folder: bool = False, suffixes: Iterable[str] = ()) -> Path:
    """Raise a ValueError (worded to follow the path) unless ``path`` can be written: as a file ending in
    one of ``suffixes`` (any suffix if empty), or as a folder with ``folder``. Creates nothing, so it
    can run before any work; returns ``path`` as a Path."""
    path, suffixes = Path(path), tuple(suffixes)
    if folder and path.exists() and not path.is_dir():
        raise ValueError("is a file; give a folder")
    if not folder and (path.is_dir() or str(path).endswith(("/", os.sep)) or str(path) in ("", ".")):
        ending = f" ending in {', '.join(suffixes)}" if suffixes else ""
        raise ValueError(f"is a folder; give a file path{ending}")
    if suffixes and path.suffix.lower() not in suffixes:
        raise ValueError(f"has the file extension {path.suffix!r}; allowed: {', '.join(suffixes)}")
    existing = path if folder else path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"cannot be written: {existing} is a file, not a folder")
    probe = existing / f".minidiff-probe-{uuid.uuid4().hex[:8]}{TMP_SUFFIX}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
        probe.unlink()
    except OSError as err:
        raise ValueError(f"cannot be written: no file can be made in {existing} ({err.strerror})") from None
    if not folder and path.exists() and not os.access(path, os.W_OK):
        raise ValueError("cannot be written: the file exists and is read-only")
    return path


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Delete temporary files that a killed save of checkpoint ``path`` left in its folder; return them.

    Only this checkpoint's own temporaries are touched (and the ``tmp*.safetensors.tmp`` names of
    older minidiff versions), so a save of another checkpoint in flight in the same folder is safe.
    """
    stem = _stem(path)
    if not stem.parent.is_dir():
        return []
    stale = [p for pattern in (f"{stem.name}.safetensors.*{TMP_SUFFIX}", f"{stem.name}.json.*{TMP_SUFFIX}",
                               f"tmp*.safetensors{TMP_SUFFIX}") for p in stem.parent.glob(pattern)]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def save_checkpoint(
    path: str | Path,
    tensors: dict[str, torch.Tensor] | torch.nn.Module,
    config: Any,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Save ``tensors`` (a state dict or a module) with ``config`` and ``extra`` as ``path``.safetensors.

    ``config`` is a dataclass or a dict; ``extra`` is any JSON-serialisable metadata (step, kind...).
    Both go into the safetensors header, so the checkpoint is one atomic write; ``path``.json gets a
    copy for people to read. Returns the stem path.
    """
    stem = _stem(path)
    state = tensors.state_dict() if isinstance(tensors, torch.nn.Module) else tensors
    state = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    cfg = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    meta = {"config": cfg, "extra": extra or {}}
    text = json.dumps(meta, indent=2)
    remove_stale_temporaries(stem)
    atomic_write_bytes(stem.with_suffix(".safetensors"), save(state, metadata={META_KEY: text}))
    atomic_write_bytes(stem.with_suffix(".json"), (text + "\n").encode())
    return stem


def read_metadata(path: str | Path, verify: bool = True) -> dict[str, Any]:
    """The metadata ``{"config": ..., "extra": ...}`` of checkpoint ``path``, without loading its tensors.

    Read from the safetensors header; checkpoints saved before the header held it are read from their
    .json. With ``verify``, files listed in the folder's manifest.json must match their sha256.
    """
    stem = _stem(path)
    weights, sidecar = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    if not weights.is_file():
        raise ValueError(f"checkpoint file {weights} is missing; a checkpoint is a .safetensors file "
                         f"(and a .json copy of its metadata) with the same name")
    if verify:
        verify_run_manifest(stem.parent, names=[weights.name, sidecar.name])
    try:
        with safe_open(str(weights), framework="pt") as f:
            header = (f.metadata() or {}).get(META_KEY)
    except (SafetensorError, OSError, RuntimeError) as err:
        raise ValueError(f"checkpoint file {weights} is corrupt or not a safetensors file ({err})") from None
    source, text = (weights, header) if header is not None else (sidecar, None)
    if text is None:
        if not sidecar.is_file():
            raise ValueError(f"checkpoint file {sidecar} is missing, and {weights} has no header metadata")
        text = sidecar.read_text()
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"checkpoint metadata in {source} is not valid JSON ({err})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise ValueError(f"checkpoint metadata in {source} must be an object with a 'config' object")
    meta.setdefault("extra", {})
    return meta


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    verify: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load checkpoint ``path``; return (state_dict, meta).

    ``meta["config"]`` is the config dict and ``meta["extra"]`` the extra metadata (see
    ``read_metadata``). A missing or corrupt file, or one whose sha256 differs from the folder's
    manifest.json (with ``verify``), raises a ValueError that names the file.
    """
    meta = read_metadata(path, verify=verify)
    weights = _stem(path).with_suffix(".safetensors")
    try:
        state = load_file(str(weights), device=str(map_location))
    except (SafetensorError, OSError, RuntimeError) as err:
        raise ValueError(f"checkpoint file {weights} is corrupt or not a safetensors file ({err})") from None
    return state, meta


def load_into(module: torch.nn.Module, state: dict[str, torch.Tensor],
              name: str = "model") -> torch.nn.Module:
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
    names = {f"{name}{suffix}": cmd for name, cmd in commands.items() for suffix in (".safetensors", ".json")}
    return _write_manifest(folder, names)


def write_run_manifest(folder: str | Path) -> dict[str, Any]:
    """Write ``folder``/manifest.json: the sha256 and size of every file in a run folder (sub-folders
    included, the manifest itself left out); return the manifest. A run folder has one writer, the run,
    which calls this between saves: temporaries left in it by a killed save are deleted first."""
    folder = Path(folder)
    for stale in folder.glob(f"*{TMP_SUFFIX}"):
        stale.unlink(missing_ok=True)
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                   if p.is_file() and p.name != MANIFEST and not p.name.endswith(TMP_SUFFIX))
    return _write_manifest(folder, dict.fromkeys(names))


def _write_manifest(folder: Path, names: dict[str, str | None]) -> dict[str, Any]:
    files = {}
    for name, command in names.items():
        path = folder / name
        files[name] = {"sha256": sha256(path), "bytes": path.stat().st_size}
        if command is not None:
            files[name]["command"] = command
    manifest = {"files": files, "total_bytes": sum(f["bytes"] for f in files.values())}
    atomic_write_bytes(folder / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
    return manifest


def refresh_manifest(path: str | Path) -> None:
    """After checkpoint ``path`` was rebuilt on purpose, update its entries in the folder's manifest.json
    (if it lists them), keeping their commands; other entries stay as they are."""
    stem = _stem(path)
    manifest = read_manifest(stem.parent)
    if manifest is None:
        return
    files = manifest["files"]
    for name in [n for n in (stem.name + ".safetensors", stem.name + ".json") if n in files]:
        files[name] |= {"sha256": sha256(stem.parent / name), "bytes": (stem.parent / name).stat().st_size}
    manifest["total_bytes"] = sum(e.get("bytes", 0) for e in files.values())
    atomic_write_bytes(stem.parent / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    """``folder``/manifest.json as a dict, or None when there is none; a malformed one is a ValueError."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"manifest {path} is not valid JSON ({err}); restore it or delete it") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not all(isinstance(e, dict) and "sha256" in e for e in files.values()):
        raise ValueError(f"manifest {path} must be an object whose 'files' map each name to its sha256")
    return manifest


def verify_run_manifest(folder: str | Path, names: Iterable[str] | None = None,
                        required: bool = False) -> dict[str, Any] | None:
    """Check files of ``folder`` against its manifest.json; return the manifest (None if there is none).

    ``names`` (default: every listed file) limits the check; a name the manifest does not list is not
    checked. A listed file that is missing, or whose sha256 differs, raises a ValueError naming it.
    ``required`` makes a missing manifest an error too.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        if required:
            raise ValueError(f"no manifest at {folder / MANIFEST}; its files cannot be checked")
        return None
    listed = manifest["files"]
    checked = [n for n in (listed if names is None else names) if n in listed]

    def fix(name: str) -> str:
        command = listed[name].get("command")
        return f"; rebuild it with: {command}" if command else (
            "; copy the run folder again, or if its training was killed while saving, finish it: --resume")

    for name in checked:  # every missing file first: a half-copied folder is named as such
        if not (folder / name).is_file():
            raise ValueError(f"file {folder / name} is missing, but {folder / MANIFEST} lists it{fix(name)}")
    for name in checked:
        if sha256(folder / name) != listed[name]["sha256"]:
            raise ValueError(f"file {folder / name} is corrupt: its sha256 differs from {folder / MANIFEST}"
                             f"{fix(name)}")
    return manifest
