"""Fault injection: kill training at every write boundary of a checkpoint, then resume.

A stand-in for ``os`` inside ``minidiff.checkpoint`` counts the calls that change files (open, write,
fsync, rename). At each call of the attacked checkpoint it forks, and the child dies right there with
``os._exit`` (as under SIGKILL: no cleanup runs); the folder as the dead child left it is copied
aside, and the parent carries on, so one uninterrupted run also gives the reference. Each copy is
then resumed: the final weights must be bitwise equal to the uninterrupted run's, or resume must
refuse with a clear message. Runs in its own process, since it forks.
"""

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import json, os, shutil, sys
    sys.path.insert(0, TESTS)
    import torch
    torch.set_num_threads(1)
    from test_training import tiny_setup
    import minidiff.checkpoint as ck
    from minidiff.training import train_denoiser

    BOUNDARIES = ("open", "write", "fsync", "replace")


    class KillAtEveryBoundary:
        def __init__(self, real, attacked, out, copies):
            self.real, self.attacked, self.out, self.copies = real, attacked, out, copies
            self.calls, self.kills = 0, []

        def __getattr__(self, name):
            return getattr(self.real, name)

        def boundary(self, name, *args):
            self.calls += 1
            if self.calls in self.attacked:
                pid = self.real.fork()
                if pid == 0:
                    self.real._exit(137)  # killed before this call: nothing is cleaned up
                _, status = self.real.waitpid(pid, 0)
                assert self.real.waitstatus_to_exitcode(status) == 137
                copy = os.path.join(self.copies, f"call{self.calls:03d}")
                shutil.copytree(self.out, copy)
                self.kills.append((copy, name, sorted(os.listdir(copy))))
            return getattr(self.real, name)(*args)

    for name in BOUNDARIES:
        setattr(KillAtEveryBoundary, name, lambda self, *a, _n=name: self.boundary(_n, *a))


    def load(folder, name):
        return ck.load_checkpoint(os.path.join(folder, name), verify=False)


    def same(a, b):
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


    config, encoder, tokenizer = tiny_setup(steps=STEPS, checkpoint_every=EVERY)
    count = KillAtEveryBoundary(os, (), None, None)  # a run of one checkpoint counts its calls
    ck.os = count
    train_denoiser(tiny_setup(steps=EVERY, checkpoint_every=EVERY)[0], os.path.join(ROOT, "count"), encoder,
                   tokenizer, device="cpu", progress=False)
    per_checkpoint = count.calls
    attacked = {i * per_checkpoint + k for i in ATTACK for k in range(1, per_checkpoint + 1)}
    run = os.path.join(ROOT, "run")
    killer = KillAtEveryBoundary(os, attacked, run, os.path.join(ROOT, "copies"))
    ck.os = killer
    train_denoiser(config, run, encoder, tokenizer, device="cpu", progress=False)  # the uninterrupted run
    ck.os = os
    want = {name: load(run, name)[0] for name in ("unet_state", "unet")}
    print(json.dumps({"per_checkpoint": per_checkpoint, "kills": len(killer.kills)}), flush=True)
    for copy, op, files in killer.kills:
        report = {"copy": copy, "op": op, "files": files}
        try:
            result = train_denoiser(config, copy, encoder, tokenizer, device="cpu", progress=False,
                                    resume=True)
        except ValueError as err:
            print(json.dumps({**report, "outcome": "refused", "message": str(err)}), flush=True)
            continue
        equal = all(same(load(copy, name)[0], want[name]) for name in want)
        ck.verify_run_manifest(copy)  # the manifest matches what resume left
        print(json.dumps({**report, "step": result["step"], "loss": result["loss"],
                          "outcome": "equal" if equal else "DIFFERENT",
                          "temporaries": [f for f in os.listdir(copy) if f.endswith(".tmp")],
                          "unet_step": load(copy, "unet")[1]["extra"]["step"]}), flush=True)
""")


def run_faults(tmp_path, steps, every, attack):
    script = tmp_path / "faults.py"
    header = (
        f"TESTS = {os.path.dirname(__file__)!r}\nROOT = {str(tmp_path)!r}\n"
        f"STEPS, EVERY, ATTACK = {steps}, {every}, {attack}\n"
    )
    script.write_text(header + SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=600, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    return lines[0], lines[1:]


def test_a_kill_at_every_write_boundary_of_a_checkpoint_resumes_exactly(tmp_path):
    """Steps 6, a checkpoint every 2. Attacked: the checkpoint at step 4 (one before it, one after) and
    the last, at step 6, where a kill after unet_state's rename but before unet's leaves a finished run
    whose sampling weights are a checkpoint behind: resume must write them, not only call it finished."""
    summary, kills = run_faults(tmp_path, steps=6, every=2, attack=(1, 2))
    # five atomic writes (unet_state, its .json, unet, its .json, manifest), each: open, write, fsync,
    # rename, then open and fsync the folder
    assert summary["per_checkpoint"] == 30 and summary["kills"] == 60 == len(kills)
    assert {k["op"] for k in kills} == {"open", "write", "fsync", "replace"}
    assert any(any(f.endswith(".tmp") for f in k["files"]) for k in kills), "no kill left a temporary file"
    for k in kills:
        assert k["outcome"] == "equal", k
        assert k["step"] == 6 and k["unet_step"] == 6 and k["temporaries"] == [], k
        assert k["loss"] == k["loss"], "a resumed run reports loss=nan"
