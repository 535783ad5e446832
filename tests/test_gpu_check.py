"""scripts/gpu_check.sh's CPU-side steps: its plan (--dry-run) and its refusals without a GPU,
a CUDA toolkit or JAX's CUDA wheels. The check itself needs a GPU (`make gpu-check`)."""
import os
import pathlib
import subprocess
import sys

import jaxlib
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def run(*args, **env):
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHON": sys.executable, **env})


def test_dry_run_prints_the_plan_and_runs_nothing(tmp_path):
    out = run("--dry-run", NVIDIA_SMI=str(tmp_path / "absent"))
    assert out.returncode == 0, out.stderr
    plan = [line for line in out.stdout.splitlines() if line.startswith("+ ")]
    assert "-DMEGASTEP_CUDA=ON" in plan[0] and "-DCMAKE_CUDA_ARCHITECTURES=native" in plan[0]
    assert "_megastep_cuda" in plan[1]
    tests = next(line for line in plan if " pytest " in line)
    for name in ("tests/test_kernels.py", "tests/test_collisions.py", "tests/test_cuda_emulated.py",
                 "tests/test_seen.py",
                 "--require _megastep_cuda"):
        assert name in tests
    assert any("benchmarks/kernels.py" in line for line in plan)
    assert any("--envs explorer" in line and "--n-envs 8192" in line for line in plan)
    assert any("--envs deathmatch" in line and "--n-agents 4" in line and "--n-envs 2048" in line
               for line in plan)
    assert "nothing was run" in out.stdout
    # every planned benchmark command line parses with its script's own parser
    import importlib.util
    import shlex

    benches = [line for line in plan if "benchmarks/" in line]
    assert len(benches) >= 3
    for line in benches:
        words = shlex.split(line[2:])
        at = next(i for i, w in enumerate(words) if w.startswith("benchmarks/") or "/benchmarks/" in w)
        path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / pathlib.Path(words[at]).name
        spec = importlib.util.spec_from_file_location(f"_bench_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.build_parser().parse_args(words[at + 1:])  # SystemExit on an unknown flag


def test_unknown_argument_is_refused():
    out = run("--dryrun")
    assert out.returncode == 2 and "unknown argument --dryrun" in out.stderr


def test_fails_clearly_without_a_gpu(tmp_path):
    out = run(NVIDIA_SMI=str(tmp_path / "absent"))
    assert out.returncode == 3
    assert "no NVIDIA GPU here" in out.stderr and "cuda-emulated" in out.stderr


def _fake(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(f"#!/bin/sh\necho '{text}'\n")
    p.chmod(0o755)
    return str(p)


def test_fails_clearly_without_the_cuda_toolkit(tmp_path):
    smi = _fake(tmp_path, "nvidia-smi", "GPU 0: NVIDIA H200 (UUID: GPU-0)")
    out = run(NVIDIA_SMI=smi, NVCC=str(tmp_path / "absent-nvcc"))
    assert out.returncode == 4 and "no CUDA compiler" in out.stderr, out.stderr


@pytest.mark.skipif(os.environ.get("MEGASTEP_REQUIRE_GPU") == "1", reason="on the GPU machine")
def test_says_which_jax_wheels_it_needs_where_jax_sees_no_gpu(tmp_path):
    smi = _fake(tmp_path, "nvidia-smi", "GPU 0: NVIDIA H200 (UUID: GPU-0)")
    nvcc = _fake(tmp_path, "nvcc", "Build cuda_12.4")
    out = run(NVIDIA_SMI=smi, NVCC=nvcc, JAX_PLATFORMS="cpu")
    assert out.returncode == 4, out.stderr
    assert f'pip install "jax[cuda12]=={jaxlib.__version__}"' in out.stderr
    assert "+ cmake" not in out.stdout  # refused before building anything
