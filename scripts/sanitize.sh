#!/usr/bin/env bash
# Builds the CPU kernels and the emulated CUDA kernels (csrc/cuda_kernels.cu on the CPU, see
# csrc/cuda_emulation.h) with AddressSanitizer + UndefinedBehaviorSanitizer into build/asan
# and runs the kernel tests against that build, backend="cuda-emulated" included. Exits non-zero on any sanitizer report
# (ASan aborts on the first error; UBSan is built with -fno-sanitize-recover=all).
#
# Self-contained: installs the Debian sanitizer runtimes with apt-get if they are missing,
# configures its own build directory and loads the sanitized extension through a shadow
# copy of the package, so the regular build in megastep_jax/ is never touched.
#
# Environment: PYTHON (default: .venv/bin/python, else /tmp/venv/bin/python, else python3),
# SANITIZE_TESTS (pytest arguments; default: the kernel, collision, emulated-CUDA, core,
# scene, seen-texel and grid tests and the property tests, slow ones excluded).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=$ROOT/build/asan
SHADOW=$BUILD/pkg

if [[ -z "${PYTHON:-}" ]]; then
  for p in "$ROOT/.venv/bin/python" /tmp/venv/bin/python "$(command -v python3)"; do
    if [[ -x "$p" ]]; then PYTHON=$p; break; fi
  done
fi
echo "sanitize: python $PYTHON"
export PATH="$(dirname "$PYTHON"):$PATH"   # cmake and ninja from the venv, if installed there

# 1. Sanitizer runtimes (gcc links them dynamically; we preload libasan).
CXX=${CXX:-c++}
have_lib() { local f; f=$("$CXX" -print-file-name="$1"); [[ "$f" != "$1" && -e "$f" ]]; }
if ! have_lib libasan.so || ! have_lib libubsan.so; then
  GCC_MAJOR=$("$CXX" -dumpversion | cut -d. -f1)
  echo "sanitize: installing the sanitizer runtimes for gcc $GCC_MAJOR"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  # libasanN/libubsanN are the runtimes; libgcc-N-dev carries the libasan.so link symlinks.
  ASAN_PKG=$(apt-cache search --names-only '^libasan[0-9]+$' | awk '{print $1}' | sort -V | tail -1)
  $SUDO apt-get install -y -qq "$ASAN_PKG" libubsan1 "libgcc-${GCC_MAJOR}-dev"
fi
LIBASAN=$("$CXX" -print-file-name=libasan.so)
LIBASAN=$(readlink -f "$LIBASAN")
[[ -e "$LIBASAN" ]] || { echo "sanitize: libasan.so not found" >&2; exit 2; }
# libstdc++ is preloaded too: python does not link it, and without it ASan's __cxa_throw
# interceptor finds no real function and aborts at jaxlib's first C++ exception.
LIBSTDCXX=$(readlink -f "$("$CXX" -print-file-name=libstdc++.so.6)")
echo "sanitize: preloading $LIBASAN $LIBSTDCXX"

# 2. Build. -march=native -fexpensive-optimizations give the sanitized build the regular
# build's FMA contraction (at -O1 GCC forms no FMAs): the kernel-vs-reference tolerances of
# long bounce sequences hold for the regular build's rounding, not for a build without FMAs.
PYBIND11_DIR=$("$PYTHON" -c "import pybind11; print(pybind11.get_cmake_dir())")
GEN=()
command -v ninja >/dev/null && GEN=(-G Ninja)
cmake -S "$ROOT" -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMEGASTEP_SANITIZE=ON \
  -DMEGASTEP_CUDA=OFF -DPython_EXECUTABLE="$PYTHON" -Dpybind11_DIR="$PYBIND11_DIR" \
  -DCMAKE_CXX_FLAGS="-fsanitize=float-cast-overflow -march=native -fexpensive-optimizations" >/dev/null
cmake --build "$BUILD" --target _megastep_cpu _megastep_cuda_emulated
SOS=("$(ls "$BUILD"/_megastep_cpu*.so | head -1)" "$(ls "$BUILD"/_megastep_cuda_emulated*.so | head -1)")
for SO in "${SOS[@]}"; do
  ldd "$SO" | grep -c libasan >/dev/null || { echo "sanitize: $SO is not linked against libasan" >&2; exit 2; }
done

# 3. A shadow package: the sources linked in, the sanitized extension copied in.
rm -rf "$SHADOW"
mkdir -p "$SHADOW/megastep_jax"
for f in "$ROOT"/megastep_jax/*; do
  case "$f" in *.so) continue ;; esac
  ln -s "$f" "$SHADOW/megastep_jax/$(basename "$f")"
done
cp "${SOS[@]}" "$SHADOW/megastep_jax/"
ln -s "$ROOT/agents" "$SHADOW/agents"

# 4. Run the tests with the runtime preloaded. Leak checking is off: CPython and XLA keep
# allocations alive until exit by design. Any report aborts the process (non-zero exit).
read -r -a TESTS <<<"${SANITIZE_TESTS:-tests/test_kernels.py tests/test_collisions.py tests/test_cuda_emulated.py tests/test_core.py tests/test_scene.py tests/test_properties.py tests/test_seen.py tests/test_grid.py}"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:detect_odr_violation=0:alloc_dealloc_mismatch=0:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
export JAX_PLATFORMS=cpu  # no accelerator plugin probing (libtpu aborts under ASan)
LD_PRELOAD="$LIBASAN $LIBSTDCXX" "$PYTHON" - "$SHADOW" "${TESTS[@]}" <<'PY'
import sys

shadow, args = sys.argv[1], sys.argv[2:]
# Drop editable-install finders so the shadow package, not the regular build, is imported.
sys.meta_path = [f for f in sys.meta_path if "editable" not in type(f).__module__.lower()
                 and "scikit" not in type(f).__name__.lower()]
sys.path.insert(0, shadow)
import megastep_jax.kernels as k  # noqa: E402

for module in (k._megastep_cpu, k._megastep_cuda_emulated):
    so = getattr(module, "__file__", "(not built)")
    if not so.startswith(shadow):
        sys.exit(f"sanitize: imported {so}, not the sanitized build under {shadow}")
    print(f"sanitize: kernels from {so}", flush=True)
import pytest  # noqa: E402

sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "-m", "not slow", *args]))
PY
echo "sanitize: clean (no AddressSanitizer or UndefinedBehaviorSanitizer report)"
