"""Running grading jobs, each in its own process with a wall-clock limit, a few at a time.

Jobs are forked from a server (``zygote``) that has imported torch and every exercise once, so a
job starts in milliseconds instead of re-importing torch for a few seconds, yet shares nothing with
the command that asked for it: the student's code is only ever loaded in the job's own process.
Where there is no fork (Windows) each job is a fresh interpreter instead: slower, just as isolated.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import minidiff
from minidiff.grading.worker import Job

OUTPUT_TAIL_CHARS = 2000  # how much of what a process printed is kept for a crash report
POLL_S = 0.02  # how often running jobs are checked against their deadline
STARTUP_TIMEOUT_S = 180.0  # importing torch in the server takes seconds, more on a loaded machine
KILL_GRACE_S = 10.0  # how long to wait for a killed job's exit to be reported
ZYGOTE = [sys.executable, "-m", "minidiff.grading.zygote"]


@dataclass
class JobResult:
    """What a grading process left behind."""

    job: Job
    records: list[dict]
    exitcode: Optional[int]
    timed_out: bool
    seconds: float
    output: str


def _env() -> dict[str, str]:
    """The parent's environment, one thread per job, and this copy of minidiff first on the path."""
    root = str(Path(minidiff.__file__).resolve().parent.parent)
    path = os.pathsep.join([root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    return dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def _kill(pid: int) -> None:
    """SIGKILL the job's process group (its code may have started processes), or just the job."""
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
            return
        except (OSError, AttributeError):
            continue


class _ForkServer:
    """Starts jobs by asking the zygote to fork; learns their pids and exit codes from it."""

    def __init__(self) -> None:
        self.errors = tempfile.TemporaryFile()
        self.process = subprocess.Popen(ZYGOTE, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errors,
                                        env=_env())
        self.buffer = b""
        self.pending: list[dict[str, Any]] = []
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not any(m.get("ready") for m in self.pending):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.errors.seek(0)
                raise RuntimeError("the grading server did not start:\n" + self.errors.read().decode(errors="replace"))
            self.pending += self._read(POLL_S)
        self.pending = [m for m in self.pending if not m.get("ready")]

    def _read(self, timeout: float) -> list[dict[str, Any]]:
        if not select.select([self.process.stdout], [], [], timeout)[0]:
            return []
        chunk = os.read(self.process.stdout.fileno(), 65536)
        if not chunk:
            raise RuntimeError("the grading server stopped unexpectedly")
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        return [json.loads(line) for line in lines if line.strip()]

    def start(self, key: int, request: dict[str, Any]) -> None:
        self.process.stdin.write((json.dumps(dict(request, id=key)) + "\n").encode())
        self.process.stdin.flush()

    def poll(self, timeout: float) -> list[dict[str, Any]]:
        messages, self.pending = self.pending + self._read(timeout), []
        return messages

    def close(self) -> None:
        self.process.stdin.close()
        try:
            self.process.wait(KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()
        self.errors.close()


class _Spawner:
    """Starts each job as a fresh interpreter (no fork on this system)."""

    def __init__(self) -> None:
        self.processes: dict[int, subprocess.Popen] = {}

    def start(self, key: int, request: dict[str, Any]) -> None:
        self.processes[key] = subprocess.Popen(ZYGOTE + ["--job", json.dumps(request)], env=_env(),
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                               start_new_session=True)

    def poll(self, timeout: float) -> list[dict[str, Any]]:
        time.sleep(timeout)
        messages = []
        for key, process in list(self.processes.items()):
            if not getattr(process, "reported", False):
                messages.append(dict(id=key, pid=process.pid))
                process.reported = True
            if process.poll() is not None:
                messages.append(dict(id=key, exitcode=process.returncode))
                del self.processes[key]
        return messages

    def close(self) -> None:
        for process in self.processes.values():
            process.kill()


def _read_records(path: Path) -> list[dict]:
    records = []
    if path.exists():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut short by a kill
    return records


def _tail(path: Path) -> str:
    return path.read_bytes()[-OUTPUT_TAIL_CHARS:].decode("utf-8", errors="replace").strip() if path.exists() else ""


def run_jobs(jobs: list[Job], parallel: int = 2) -> list[JobResult]:
    """Run every job (at most ``parallel`` at once) and return their results in the order given."""
    if not jobs:
        return []
    results: list[Optional[JobResult]] = [None] * len(jobs)
    with tempfile.TemporaryDirectory(prefix="minidiff-grade-") as tmp:
        paths = [(Path(tmp) / f"{i}.jsonl", Path(tmp) / f"{i}.out") for i in range(len(jobs))]
        launcher = _ForkServer() if hasattr(os, "fork") else _Spawner()
        pending, running = list(range(len(jobs))), set()
        pids: dict[int, int] = {}
        started: dict[int, float] = {}
        killed: dict[int, float] = {}
        try:
            while pending or running:
                while pending and len(running) < max(1, parallel):
                    i = pending.pop(0)
                    launcher.start(i, dict(job=asdict(jobs[i]), records=str(paths[i][0]), output=str(paths[i][1])))
                    running.add(i)
                for message in launcher.poll(POLL_S):
                    i = message["id"]
                    if "pid" in message:
                        pids[i], started[i] = message["pid"], time.monotonic()
                    elif "exitcode" in message and i in running:
                        running.discard(i)
                        results[i] = JobResult(jobs[i], _read_records(paths[i][0]),
                                               None if i in killed else message["exitcode"], i in killed,
                                               time.monotonic() - started.get(i, time.monotonic()), _tail(paths[i][1]))
                now = time.monotonic()
                for i in list(running):
                    if i in started and i not in killed and now - started[i] > jobs[i].timeout:
                        _kill(pids[i])
                        killed[i] = now
                    elif i in killed and now - killed[i] > KILL_GRACE_S:  # its end was never reported
                        running.discard(i)
                        results[i] = JobResult(jobs[i], _read_records(paths[i][0]), None, True,
                                               now - started[i], _tail(paths[i][1]))
        finally:
            for i in running:
                if i in pids:
                    _kill(pids[i])
            launcher.close()
    return [result for result in results if result is not None]
