"""Running one submission in a child process tree of its own, with hard limits, and reading back its outputs.

On Linux as root, each child gets fresh PID, mount, IPC and network namespaces (``unshare`` from
util-linux), a memory and a process cgroup, and a user id of its own: it can see and signal nothing
outside its tree, and the tree ends with it (``--kill-child``). Elsewhere it falls back to a process
group and rlimits, and every report says which isolation was used. The parent reads at most
``OUTPUT_BYTES`` of what the child prints, and loads its results, sent down a pipe, with
``torch.load(weights_only=True)``: nothing a submission sends is ever run.
"""

from __future__ import annotations

import ctypes
import io
import json
import os
import re
import shutil
import signal
import site
import struct
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from minidiff.grading import sandbox

OUTPUT_BYTES = 64 * 1024  # of stdout + stderr kept from a child; the rest is read and dropped
RESULTS_BYTES = 64 * 2**20  # results beyond this many bytes are refused; also the child's RLIMIT_FSIZE
READ_GRACE_S = 5.0  # how long to wait for the pipes to close once the child's tree is gone
MEMORY_BYTES = 1 * 2**30  # memory a child tree may use beyond torch (cgroup; RLIMIT_AS per process)
TMP_BYTES = 16 * 2**20  # size of the child's private /tmp and /dev/shm
NPROC = 32  # processes and threads of the child's own user id (torch starts a few threads)
UID_BASE = 1_960_000_000  # child i runs as this + i: a user id no one else has (Linux allows up to 2**32 - 2)
CGROUP_ROOT = Path("/sys/fs/cgroup")
SHELL_SIGNAL = 128  # a POSIX shell reports a child killed by signal N as exit status 128 + N
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>: the child tree is killed if the grader itself dies
UNSHARE = ["unshare", "--pid", "--fork", "--kill-child", "--mount", "--mount-proc", "--ipc", "--net"]
SANDBOX = Path(sandbox.__file__)


@dataclass
class Outcome:
    """What one child left behind: its results (or None), how it ended, and the first bytes it printed."""

    results: dict | None
    ended: str  # "finished", "timed out", "killed by SIGKILL (out of memory)", "exit status 1", ...
    seconds: float
    output: str
    problems: list[str] = field(default_factory=list)  # results that were refused, and why


def isolation() -> tuple[str, str]:
    """("namespaces", what holds) when PID namespaces can be had here, else ("process group", why not)."""
    if sys.platform != "linux" or os.geteuid() != 0 or shutil.which("unshare") is None:
        return "process group", "no PID namespace: needs Linux, root and util-linux's unshare"
    probe = subprocess.run(UNSHARE + ["true"], capture_output=True, timeout=30, check=False)
    if probe.returncode != 0:
        return "process group", f"no PID namespace: unshare failed ({probe.stderr.decode().strip()[:100]})"
    cgroups = _Cgroups(f"minidiff-probe-{os.getpid()}")
    kinds = sorted(path.parent.name if path.parent != CGROUP_ROOT else "v2" for path in cgroups.dirs)
    cgroups.kill_and_remove()
    memory = (f"cgroups ({', '.join(kinds)})" if kinds
              else "no writable cgroup: RLIMIT_AS and RLIMIT_NPROC only")
    return "namespaces", f"PID, mount, IPC and network namespaces, chroot, own uid; tree memory: {memory}"


def _binds() -> list[str]:
    """What a jailed child sees, read-only: the OS and the Python installation (minidiff lives elsewhere)."""
    paths = ["/usr", "/etc", "/bin", "/lib", "/lib64", "/sys", sys.base_prefix, sys.prefix]
    return [p for p in dict.fromkeys(paths) if os.path.lexists(p)]


def _hidden() -> list[str]:
    """A minidiff installed inside the Python installation (not an editable one) is covered up."""
    return [str(p) for d in site.getsitepackages() for p in Path(d).glob("minidiff*") if p.is_dir()]


class _Cgroups:
    """A memory and a pids cgroup (v1 or v2) for one child tree, where this machine lets us make them."""

    def __init__(self, name: str) -> None:
        self.dirs: list[Path] = []
        v2 = {"memory.max": MEMORY_BYTES, "memory.swap.max": 0, "pids.max": NPROC}
        v1 = {"memory": {"memory.limit_in_bytes": MEMORY_BYTES}, "pids": {"pids.max": NPROC}}
        plan = [(CGROUP_ROOT, v2)] if (CGROUP_ROOT / "cgroup.controllers").exists() else [
            (CGROUP_ROOT / kind, settings) for kind, settings in v1.items()]
        for parent, settings in plan:
            try:
                (parent / name).mkdir()
                self.dirs.append(parent / name)
                for key, value in settings.items():
                    (parent / name / key).write_text(str(value))
            except OSError:
                continue

    def enter(self) -> None:
        """Join every cgroup (run in the child between fork and exec)."""
        for path in self.dirs:
            (path / "cgroup.procs").write_text(str(os.getpid()))

    def out_of_memory(self) -> bool:
        """Whether the kernel refused or killed for memory in this tree."""
        texts = [(path / n).read_text() for path in self.dirs for n in ("memory.failcnt", "memory.events")
                 if (path / n).exists()]
        return any(re.search(r"^[1-9]|oom_kill [1-9]", text, re.MULTILINE) for text in texts)

    def kill_and_remove(self) -> None:
        for path in self.dirs:
            for _ in range(100):
                try:
                    pids = [int(p) for p in (path / "cgroup.procs").read_text().split()]
                except OSError:
                    break
                if not pids:
                    break
                for pid in pids:
                    _signal(pid, signal.SIGKILL)
                time.sleep(0.01)
            try:
                path.rmdir()
            except OSError:
                pass


def _start(cgroups: _Cgroups | None) -> None:
    """Run in the child between fork and exec: join the cgroups; die with the grader, should it die."""
    if cgroups:
        cgroups.enter()
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except OSError:
        pass


def _user_tasks() -> int:
    """Processes and threads of this user now (RLIMIT_NPROC counts them all), or 0 without /proc."""
    tasks = 0
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if entry.stat().st_uid == os.getuid():
                tasks += len(os.listdir(entry / "task"))
        except OSError:
            continue
    return tasks


def _drain(fd: int, keep: bytearray, limit: int) -> None:
    """Read a pipe to its end, keeping its first ``limit`` bytes and dropping the rest."""
    while chunk := os.read(fd, 1 << 16):
        if len(keep) < limit:
            keep += chunk[:limit - len(keep)]
    os.close(fd)


def _read_results(data: bytes) -> tuple[dict | None, list[str]]:
    """The child's frames (a load record, then one per case) as {"load", "cases"}, and any problems."""
    records, offset, header = [], 0, struct.calcsize(sandbox.FRAME_HEADER)
    while offset + header <= len(data):
        (size,) = struct.unpack_from(sandbox.FRAME_HEADER, data, offset)
        frame = data[offset + header:offset + header + size]
        try:
            if len(frame) < size:
                raise ValueError("cut short")
            records.append(torch.load(io.BytesIO(frame), weights_only=True))
        except Exception as error:  # noqa: BLE001 - garbage written into the pipe by student code
            problem = f"its results could not be read after record {len(records)} ({type(error).__name__})"
            return (dict(load=records[0], cases=records[1:]) if records else None), [problem]
        offset += header + size
    if len(data) >= RESULTS_BYTES:
        return None, [f"it sent more than {RESULTS_BYTES} bytes of results"]
    return (dict(load=records[0], cases=records[1:]) if records else None), []


def _copy_submission(source: Path, filename: str, target: Path) -> None:
    """A private, readable copy: the whole exercise folder when ``source`` is its file, else that file alone.

    Symbolic links are left out, so a submission cannot have the grader copy files it may not read.
    """
    if source.name == filename:
        shutil.copytree(source.parent, target, ignore=lambda d, names: [
            n for n in names if os.path.islink(os.path.join(d, n)) or n == "__pycache__"])
    else:
        target.mkdir()
        shutil.copyfile(source, target / filename)
    for path in [target, *target.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)


def run_child(job: dict[str, Any], inputs: list[dict], source: Path, workdir: Path, index: int,
              mode: str, timeout: float) -> Outcome:
    """Run the sandbox on ``inputs`` with a private copy of ``source``; wait at most ``timeout`` s."""
    here = workdir / f"job{index}"
    (here / "root").mkdir(parents=True)
    _copy_submission(source, job["filename"], here / "student")
    shutil.copy(SANDBOX, here / "sandbox.py")
    torch.save(inputs, here / "inputs.pt")
    uid = UID_BASE + index if mode == "namespaces" else None
    nproc = NPROC + (0 if uid else _user_tasks())  # RLIMIT_NPROC counts every process of the user id
    config = dict(job, uid=uid, binds=_binds(), hide=_hidden(), tmp_bytes=TMP_BYTES,
                  memory_bytes=MEMORY_BYTES, cpu_s=int(timeout) + 1, nproc=nproc, file_bytes=RESULTS_BYTES)
    results_read, results_write = os.pipe()
    (here / "job.json").write_text(json.dumps(dict(config, results_fd=results_write)))
    command = [sys.executable, "-I", str(here / "sandbox.py")]
    cgroups = _Cgroups(f"minidiff-grade-{os.getpid()}-{index}") if uid is not None else None
    if uid is not None:  # sh is the namespace's init, so that Python is an ordinary process
        command = UNSHARE + ["/bin/sh", "-c", '"$@"; exit $?', "sh"] + command
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "LANG": "C.UTF-8"}
    start, output, results = time.monotonic(), bytearray(), bytearray()
    process = subprocess.Popen(command, cwd=here, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, start_new_session=True, pass_fds=(results_write,),
                               preexec_fn=lambda: _start(cgroups))  # noqa: PLW1509 - two syscalls, no locks
    os.close(results_write)
    pipes = ((os.dup(process.stdout.fileno()), output, OUTPUT_BYTES), (results_read, results, RESULTS_BYTES))
    readers = [threading.Thread(target=_drain, args=pipe, daemon=True) for pipe in pipes]
    process.stdout.close()
    for reader in readers:
        reader.start()
    try:
        process.wait(timeout)
        ended = "finished" if process.returncode == 0 else _how(process.returncode)
    except subprocess.TimeoutExpired:
        ended = f"timed out after the {timeout:g} s time limit (an endless loop?)"
    _signal(-process.pid, signal.SIGKILL)  # the whole process group, however it ended
    process.kill()
    process.wait()
    if cgroups:
        oom = cgroups.out_of_memory()
        cgroups.kill_and_remove()
        if oom and ended != "finished":
            ended = f"was killed for using more than {MEMORY_BYTES // 2**20} MiB of memory"
    for reader in readers:
        reader.join(READ_GRACE_S)
    records, problems = _read_results(bytes(results))
    printed = output.decode("utf-8", errors="replace")
    text = "".join(c if c.isprintable() or c in "\n\t" else "?" for c in printed)
    return Outcome(records, ended, time.monotonic() - start, text, problems)


def _how(code: int) -> str:
    """How a child ended, from its exit status: -N (killed by signal N) or, through the shell, 128 + N."""
    number = -code if code < 0 else code - SHELL_SIGNAL if code > SHELL_SIGNAL else 0
    if number:
        try:
            return f"was killed by {signal.Signals(number).name}"
        except ValueError:
            return f"was killed by signal {number}"
    return f"ended with exit status {code}"


def run_all(tasks: list[tuple[dict[str, Any], list[dict], Path]], timeout: float, parallel: int,
            mode: str) -> list[Outcome]:
    """Run every (job, inputs, file) task, ``parallel`` at a time; outcomes in the order given."""
    workdir = Path(tempfile.mkdtemp(prefix="minidiff-grade-"))
    os.chmod(workdir, 0o711)
    try:
        with ThreadPoolExecutor(max(1, parallel)) as pool:
            futures = [pool.submit(run_child, job, inputs, source, workdir, i, mode, timeout)
                       for i, (job, inputs, source) in enumerate(tasks)]
            return [f.result() for f in futures]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
