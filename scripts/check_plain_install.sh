#!/usr/bin/env bash
# A user's first minutes: a clean virtual environment, a plain `pip install .` (no extras),
# then the VecEnv and the gymnasium adapters must work (gymnasium comes with the package),
# and the gymnax adapter must fail only with a message naming its extra.
#
# Usage: scripts/check_plain_install.sh [python]   (builds the kernels: about 2 minutes on 2 cores)
set -euo pipefail
PYTHON=${1:-python3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

echo "[plain install] creating a clean virtual environment in $WORK"
"$PYTHON" -m venv "$WORK/venv"
PY="$WORK/venv/bin/python"
"$PY" -m pip install --quiet --upgrade pip
echo "[plain install] pip install $ROOT (building the kernels)"
"$PY" -m pip install --quiet "$ROOT"

echo "[plain install] using the VecEnv and the gymnasium env without any extra"
cd "$WORK"   # import the installed package, not the source tree
"$PY" - <<'PY'
import numpy as np

from megastep_jax.envs import Minimal
from megastep_jax.gym import GymnasiumEnv
from megastep_jax.vecenv import VecEnv

venv = VecEnv(Minimal(res=8), n_envs=2)
obs = venv.reset()
obs, rewards, dones, infos = venv.step(np.zeros(venv.num_envs, int))
assert obs["rgb"].shape == (2, 3, 1, 8), obs["rgb"].shape
env = GymnasiumEnv(Minimal(res=8))
env.reset(seed=0)
env.step(3)
print("[plain install] VecEnv and GymnasiumEnv work:", venv, env.action_space)

try:
    import megastep_jax.gymnax  # noqa: F401
except ImportError as e:
    print("[plain install] without the gymnax extra, megastep_jax.gymnax says:", e)
PY
echo "[plain install] ok"
