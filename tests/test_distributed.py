"""The training command across 2 processes joined with jax.distributed (CPU, gloo
collectives): the same result as one process with the same total envs and keys."""
import csv
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from agents import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.dirname(os.path.abspath(__file__))
ARGS = ["--env", "test_ppo:CueEnv", "--n-envs", "4", "--n-steps", "8", "--width", "8",
        "--core", "lstm", "--minibatches", "2", "--epochs", "2", "--small-convs", "--chunk", "2",
        "--reset-ratio", "1", "--updates", "4", "--no-eval", "--no-video", "--no-progress"]


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two fresh processes compile the trainer (about a minute on 2 idle cores)
def test_two_processes_match_one(tmp_path):
    one = str(tmp_path / "one")
    train.main(ARGS + ["--out", one])

    two = str(tmp_path / "two")
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
    env["PYTHONPATH"] = os.pathsep.join([ROOT, TESTS, env.get("PYTHONPATH", "")])
    port = _free_port()
    procs = [subprocess.Popen(
        [sys.executable, "-m", "agents.train", *ARGS, "--out", two,
         "--coordinator", f"localhost:{port}", "--num-processes", "2", "--process-id", str(i)],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)]
    try:
        outs = [p.communicate(timeout=420) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert "2 devices" in outs[0][1] or "id=2048" in outs[0][1] or "CpuDevice(id=1" in outs[0][1]
    assert "metrics:" in outs[0][1] and "metrics:" not in outs[1][1]  # process 0 alone writes

    a, b = _rows(os.path.join(one, "metrics.csv")), _rows(os.path.join(two, "metrics.csv"))
    assert [r["update"] for r in a] == [r["update"] for r in b] == ["1", "2", "3", "4"]
    for r, s in zip(a, b):
        for k in r:
            if k in ("time", "steps_per_s"):
                continue
            x, y = float(r[k]), float(s[k])
            np.testing.assert_allclose(y, x, rtol=1e-4, atol=1e-6, err_msg=k)
    assert os.path.getsize(os.path.join(two, "checkpoint.msgpack")) == \
        os.path.getsize(os.path.join(one, "checkpoint.msgpack"))
