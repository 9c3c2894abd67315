"""A fork server for grading processes: import torch and every exercise once, then fork per job.

Started by ``runner`` as ``python -m minidiff.grading.zygote``. It speaks JSON lines: it writes
``{"ready": true}`` once imported, reads ``{"id", "job", "records", "output"}`` lines on stdin,
forks a child per job, and writes ``{"id", "pid"}`` when the child starts and ``{"id", "exitcode"}``
when it ends (a negative exit code is the signal that killed it). The server itself never runs
torch, so forking it is safe; each child is a separate process that can be killed on its own.
``python -m minidiff.grading.zygote --job JSON`` runs one job in this process instead, for systems
without fork.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import traceback
from typing import Any

from minidiff.grading.worker import Job, run_job

POLL_S = 0.02  # how often the server looks for finished children while it waits for work


def run_request(request: dict[str, Any]) -> int:
    """Run one request in this process; the exit status it should end with."""
    try:
        run_job(Job(**request["job"]), request["records"], request["output"])
        return 0
    except BaseException:  # noqa: BLE001 - the process is about to end; say why in its output file
        traceback.print_exc()
        return 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass


def _fork(request: dict[str, Any], protocol_fd: int) -> int:
    pid = os.fork()
    if pid == 0:  # the child: never return into the server's loop
        os.close(protocol_fd)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os._exit(run_request(request))
    return pid


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass  # already gone


def _exitcode(status: int) -> int:
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def serve() -> None:
    """The server loop: fork on each request, report starts and ends, stop when stdin closes."""
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # stray prints must not corrupt the protocol

    def say(**message: Any) -> None:
        try:
            out.write(json.dumps(message) + "\n")
            out.flush()
        except OSError:
            pass  # the runner has gone; keep reaping children until they are all gone

    say(ready=True)
    children: dict[int, int] = {}  # pid -> request id
    buffer, open_ = b"", True
    while open_ or children:
        if open_ and select.select([0], [], [], POLL_S)[0]:
            chunk = os.read(0, 65536)
            open_ = bool(chunk)
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                request = json.loads(line)
                pid = _fork(request, out.fileno())
                children[pid] = request["id"]
                say(id=request["id"], pid=pid)
        elif not open_:  # the runner is gone: nobody is left to time these out
            for pid in children:
                _kill_group(pid)
            select.select([], [], [], POLL_S)
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            if pid in children:
                say(id=children.pop(pid), exitcode=_exitcode(status))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--job":
        sys.exit(run_request(json.loads(sys.argv[2])))
    serve()
