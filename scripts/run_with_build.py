"""Runs pytest or a Python script with megastep_jax imported from a shadow package.

    python scripts/run_with_build.py SHADOW [--require MODULE ...] pytest [PYTEST ARGS]
    python scripts/run_with_build.py SHADOW [--require MODULE ...] SCRIPT.py [SCRIPT ARGS]

SHADOW is a folder holding a ``megastep_jax`` package (the sources linked in, a build's
extension modules copied in), as scripts/gpu_check.sh makes. Editable-install finders are
dropped so that package, not an installed one, is imported; each ``--require``d extension
module (e.g. ``_megastep_cuda``) must import from SHADOW, or this exits non-zero.
"""
from __future__ import annotations

import importlib
import os
import runpy
import sys


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        sys.exit(__doc__)
    shadow, rest = argv[0], argv[1:]
    required = []
    while rest and rest[0] == "--require":
        required.append(rest[1])
        rest = rest[2:]
    sys.meta_path = [f for f in sys.meta_path if "editable" not in type(f).__module__.lower()
                     and "scikit" not in type(f).__name__.lower()]
    sys.path.insert(0, shadow)
    for name in required:
        module = importlib.import_module(f"megastep_jax.{name}")
        if not module.__file__.startswith(shadow):
            sys.exit(f"run_with_build: imported {module.__file__}, not the build under {shadow}")
        print(f"run_with_build: {name} from {module.__file__}", flush=True)
    if rest[0] == "pytest":
        import pytest

        return pytest.main(rest[1:])
    sys.argv = rest
    sys.path.insert(0, os.path.dirname(os.path.abspath(rest[0])))  # as `python SCRIPT` does
    runpy.run_path(rest[0], run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
