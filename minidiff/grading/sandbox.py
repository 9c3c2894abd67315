"""The child process of the grader: run one student function on the inputs it is given, send back outputs.

This file is copied into the exercise's private folder and run there as a script (``python -I
sandbox.py``); it imports only the standard library and torch, never minidiff. It knows nothing
about answers: it reads ``job.json`` and ``inputs.pt``, calls the student's function on each case,
and sends each case's record (plain tensors and strings) down the pipe ``job["results_fd"]`` as a
length-prefixed ``torch.save`` frame. The parent decides what they are worth.

Order of work (each step before any student code runs):
1. as root inside fresh PID, mount, IPC and network namespaces: build a minimal root (the OS, the
   Python installation, this folder; no minidiff, a small private /tmp and /dev/shm), chroot into it
   and become an unprivileged user of its own (``jail``);
2. import torch, then hard resource limits: memory, CPU time, processes, file size (hard = soft);
3. block imports of minidiff, replace fused kernels the exercise forbids by a tripwire, import the
   student's private copy.
"""

from __future__ import annotations

import ctypes
import importlib.abc
import importlib.util
import inspect
import io
import json
import os
import resource
import struct
import sys
import traceback

BLOCKED = ("minidiff",)  # packages student code may not import: the answer key and its grader
FORBIDDEN_MARK = "FORBIDDEN:"  # prefix of the error a tripwire raises; the parent flags the exercise on it
MAX_MESSAGE = 300  # characters of an exception message that are sent back
MAX_CALLS = 4  # model calls recorded per case (ex05)
MAX_ITEMS = 4  # elements of a returned tuple that are sent back (ex11 returns two)
FRAME_HEADER = "<Q"  # each record on the results pipe: its length as 8 little-endian bytes, then its bytes
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC = 1, 2, 4, 32, 4096, 16384  # <sys/mount.h>
PR_SET_NO_NEW_PRIVS = 38  # <linux/prctl.h>: no setuid binary can give root back


class TinyDenoiser:
    """A deterministic stand-in for an eps model: per-channel affine in xt plus terms in t and cond.

    Records each call (xt, t, cond) so the grader can see what the student passed in. Built in the child
    from plain tensors, and in the parent from the same tensors for the expected answer.
    """

    def __init__(self, w, b) -> None:
        self.w, self.b = w.clone().requires_grad_(True), b.clone().requires_grad_(True)
        self.calls: list = []

    def __call__(self, xt, t, cond=None):
        import torch

        if len(self.calls) < MAX_CALLS:
            self.calls.append(tuple(None if v is None else torch.as_tensor(v).detach().clone()
                                    for v in (xt, t, cond)))
        per_channel = (1, -1) + (1,) * (xt.ndim - 2)  # (1, C, 1, ..., 1)
        per_sample = (-1,) + (1,) * (xt.ndim - 1)  # (B, 1, ..., 1)
        out = xt * self.w.view(per_channel) + self.b.view(per_channel)
        out = out + 1e-3 * t.to(xt.dtype).view(per_sample)
        if cond is not None:
            out = out + cond.mean(dim=(1, 2)).to(xt.dtype).view(per_sample)  # (B, 1, ..., 1)
        return out


def materialise(inputs: dict) -> dict:
    """Inputs with every {"model": {"w", "b"}} spec turned into a TinyDenoiser and tensors cloned."""
    out = {}
    for name, value in inputs.items():
        if isinstance(value, dict) and "model" in value:
            out[name] = TinyDenoiser(value["model"]["w"], value["model"]["b"])
        else:
            out[name] = value.clone() if hasattr(value, "clone") else value
    return out


def finish(value, inputs: dict):
    """A returned module (ex14) run as the case says: (output, number of parameters); anything else as is.

    ``inputs["forward"]`` holds ``state`` (loaded with ``strict=True``, so the parameter names must be
    the stub's) and ``args``, the arguments of ``forward``; without them only the parameters are counted.
    """
    import torch

    if not isinstance(value, torch.nn.Module) or "forward" not in inputs:
        return value
    forward = inputs["forward"]
    if forward.get("state") is not None:
        try:
            value.load_state_dict({k: v.clone() for k, v in forward["state"].items()}, strict=True)
        except RuntimeError as error:  # its message lists the missing and unexpected names over many lines
            raise RuntimeError(" ".join(str(error).split())) from None
    with torch.no_grad():
        out = value(*[a.clone() for a in forward["args"]]) if forward.get("args") else None
    return out, torch.tensor(sum(p.numel() for p in value.parameters()))


def _mount(source, target, fstype=None, flags=0, data=None) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    args = [a.encode() if isinstance(a, str) else a for a in (source, target, fstype)]
    if libc.mount(args[0], args[1], args[2], flags, data.encode() if data else None) != 0:
        raise OSError(ctypes.get_errno(), f"mount {source} on {target}: {os.strerror(ctypes.get_errno())}")


def _bind(path: str, root: str, writable: bool = False) -> None:
    target = root + path
    if os.path.islink(path):  # e.g. /bin -> usr/bin on merged-/usr systems
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.symlink(os.readlink(path), target)
        return
    if os.path.isdir(path):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    _mount(path, target, flags=MS_BIND | MS_REC)
    if not writable:
        _mount(None, target, flags=MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def jail(job: dict, here: str) -> None:
    """Chroot into a minimal root (the OS, Python, this folder at /job) and drop to uid ``job["uid"]``."""
    root = os.path.join(here, "root")
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
    for path, size in (("/tmp", job["tmp_bytes"]), ("/dev/shm", job["tmp_bytes"])):  # first: a Python
        os.makedirs(root + path, exist_ok=True)  # installed under /tmp is bound on top of them below
        _mount("tmpfs", root + path, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size},mode=1777")
    for path in job["binds"]:
        _bind(path, root)
    for path in job["hide"]:  # e.g. a minidiff installed into site-packages
        _mount("tmpfs", root + path, "tmpfs", MS_RDONLY, "size=4k,mode=555")
    for device in ("null", "zero", "full", "random", "urandom"):
        _bind(f"/dev/{device}", root, writable=True)
    os.makedirs(root + "/proc", exist_ok=True)
    _mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV)
    os.makedirs(root + "/job", exist_ok=True)
    _mount(here, root + "/job", flags=MS_BIND)
    _mount(None, root + "/job", flags=MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chroot(root)
    os.chdir("/job")
    os.setgroups([])
    os.setgid(job["uid"])
    os.setuid(job["uid"])
    ctypes.CDLL(None).prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)


def limit(job: dict) -> None:
    """Hard resource limits (soft = hard, so the code cannot raise them) from the memory used so far."""
    with open("/proc/self/statm") as statm:
        used = int(statm.read().split()[0]) * resource.getpagesize()
    for name, value in (("RLIMIT_AS", used + job["memory_bytes"]), ("RLIMIT_CPU", job["cpu_s"]),
                        ("RLIMIT_NPROC", job["nproc"]), ("RLIMIT_FSIZE", job["file_bytes"]),
                        ("RLIMIT_CORE", 0), ("RLIMIT_NOFILE", 64)):
        if value is not None:
            resource.setrlimit(getattr(resource, name), (value, value))


class _Blocker(importlib.abc.MetaPathFinder):
    """Refuses to find minidiff (the answer key) under any name that starts with it."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in BLOCKED:
            raise ImportError(f"{fullname} cannot be imported while grading: minidiff is the answer key")


def _tripwire(name: str):
    def forbidden(*args, **kwargs):
        raise RuntimeError(f"{FORBIDDEN_MARK} uses {name}, which does the exercise for you")
    return forbidden


def arm(forbidden: list[str]) -> None:
    """Replace each forbidden torch object (a dotted path from torch) by a function that raises when used."""
    import torch

    for dotted in forbidden:
        owner = torch
        *path, name = dotted.split(".")[1:]
        for part in path:
            owner = getattr(owner, part)
        setattr(owner, name, _tripwire(dotted))


def _error(error: BaseException, source: str) -> str:
    text = f"{type(error).__name__}: {error}".strip().splitlines()[0][:MAX_MESSAGE]
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == source]
    if frames:
        line = (frames[-1].line or "").strip()
        text += f" (line {frames[-1].lineno} of {os.path.basename(source)}: {line})"
    return text


def _plain(value):
    """What travels back: a plain CPU tensor, or the name of the type that came instead."""
    import torch

    if isinstance(value, torch.Tensor):
        plain = torch.Tensor.as_subclass(value, torch.Tensor)
        return dict(type="Tensor", tensor=plain.detach().cpu().clone())
    if type(value) is tuple:  # ex11's (z, kl), ex14's (output, parameter count)
        return dict(type="tuple", tensor=None, items=[_plain(v) for v in value[:MAX_ITEMS]])
    return dict(type=type(value).__name__, tensor=None)


def run_case(fn, params: list[str], inputs: dict, source: str) -> dict:
    """Call ``fn`` on one case and describe the outcome with plain values only."""
    args = materialise(inputs)
    try:
        value = finish(fn(*[args[p] for p in params]), args)
    except NotImplementedError as error:
        return dict(status="not started", message=str(error)[:MAX_MESSAGE])
    except BaseException as error:
        return dict(status="raised", message=_error(error, source))
    try:
        result = dict(status="returned", value=_plain(value))
    except BaseException as error:  # noqa: BLE001 - e.g. a tensor on the meta device
        return dict(status="raised", message=f"its result could not be copied: {_error(error, source)}")
    models = [a for a in args.values() if isinstance(a, TinyDenoiser)]
    if models:  # ex05: what the model saw, and the gradient the loss sends back
        model = models[0]
        result["calls"] = [list(call) for call in model.calls]
        try:
            value.backward()
            result["grads"] = [_plain(model.w.grad)["tensor"], _plain(model.b.grad)["tensor"]]
        except BaseException as error:
            result["backward_error"] = _error(error, source)
    return result


def main(here: str) -> None:
    with open(os.path.join(here, "job.json")) as f:
        job = json.load(f)
    if job.get("uid") is not None:
        jail(job, here)
        here = "/job"
    import torch

    torch.set_num_threads(1)
    inputs = torch.load(os.path.join(here, "inputs.pt"), weights_only=True)
    limit(job)
    source = os.path.join(here, "student", job["filename"])
    kept = [p for p in sys.path if os.path.isabs(p) and "minidiff" not in p]  # no cwd, no copy of minidiff
    sys.path[:] = [os.path.dirname(source)] + kept
    sys.meta_path.insert(0, _Blocker())
    sys.dont_write_bytecode = True
    arm(job["forbidden"])
    pipe = os.fdopen(job["results_fd"], "wb", buffering=0)

    def send(record: dict) -> None:
        frame = io.BytesIO()
        torch.save(record, frame)
        pipe.write(struct.pack(FRAME_HEADER, frame.tell()) + frame.getvalue())

    try:
        spec = importlib.util.spec_from_file_location("submission", source)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        fn = getattr(module, job["function"])
        send(dict(status="ok", params=list(inspect.signature(fn).parameters)))
    except BaseException as error:  # noqa: BLE001
        send(dict(status="error", message=_error(error, source)))
        return
    for case in inputs:
        send(run_case(fn, job["params"], case, source))


if __name__ == "__main__":
    main(os.path.dirname(os.path.abspath(__file__)))
    sys.stdout.flush()
    os._exit(0)  # no interpreter shutdown: student atexit hooks and finalizers do not run
