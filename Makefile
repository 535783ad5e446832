# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BUILD_DEPS := scikit-build-core==0.11.6 pybind11==3.0.1 jax==0.10.2 jaxlib==0.10.2 cmake ninja
DEMO_MINUTES ?= 10

.PHONY: install test test-fast demo bench cuda-check gpu-check sanitize clean

$(STAMP): pyproject.toml CMakeLists.txt $(wildcard csrc/*)
	@echo "[install 1/4] creating the virtual environment $(VENV)"
	$(PYTHON) -m venv $(VENV)
	@echo "[install 2/4] upgrading pip"
	$(PY) -m pip install --quiet --upgrade pip
	@echo "[install 3/4] installing the build tools (jax, scikit-build-core, pybind11, cmake, ninja)"
	$(PY) -m pip install --progress-bar on $(BUILD_DEPS)
	@echo "[install 4/4] compiling the C++ kernels and installing megastep_jax with its test extra"
	@echo "              (about a minute and a half on 2 cores; the compiler's progress follows)"
	@( $(PY) -m pip install --verbose --no-build-isolation -e ".[test]" 2>&1; echo $$? > $(VENV)/.install-rc ) \
	  | tee $(VENV)/install.log | grep --line-buffered -E "^ *\[[0-9]+/[0-9]+\]|^Successfully installed" ; \
	  rc=$$(cat $(VENV)/.install-rc); [ "$$rc" = 0 ] || { tail -30 $(VENV)/install.log; echo "install failed (full log: $(VENV)/install.log)"; exit $$rc; }
	@echo "[install] done: $(VENV) holds megastep_jax and its kernels"
	touch $(STAMP)

install: $(STAMP)

# The optional real-client extra (stable-baselines3 on a CPU torch), for the SB3 test.
$(VENV)/.sb3: $(STAMP)
	$(PY) -c "import tomllib; print(' '.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['sb3']))" \
	  | xargs $(PY) -m pip install --quiet
	touch $@

# Test processes side by side (pytest-xdist): most of a test's time is one thread compiling.
# Whole files go to one process, so the jitted functions a file shares compile once; they are
# dealt longest first (tests/conftest.py), not by their number of tests.
TEST_WORKERS ?= 2
PYTEST := $(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The whole suite, slow extras included.
test: install $(VENV)/.sb3
	$(PYTEST) -ra

test-fast: install
	$(PYTEST) -m "not slow"

# The main job: train an agent on Explorer with procedural floorplans, on the CPU.
demo: install
	$(PY) -m agents.train --env explorer --res 128 --subsample 2 --small-convs --minutes $(DEMO_MINUTES) --out runs/demo --if-exists resume

bench: install
	$(PY) benchmarks/kernels.py

# Compile-only check of the CUDA kernels (there is no GPU on our machines).
cuda-check: install
	nvcc -std=c++17 --expt-relaxed-constexpr -Xcompiler -fPIC -c csrc/cuda_kernels.cu -o /tmp/megastep_cuda_check.o \
	  -Icsrc -I$$($(PY) -c "import jax; print(jax.ffi.include_dir())") \
	  $$($(PY) -m pybind11 --includes)

# One-shot check on a machine with an NVIDIA GPU and the CUDA toolkit: CUDA build, the kernel
# tests on the GPU, benchmarks at megastep's scale, within 8 minutes (scripts/gpu_check.sh says
# what it needs). Fails clearly without a GPU. `make gpu-check DRY_RUN=1` prints what it would run.
gpu-check:
	$(if $(wildcard $(PY)),PYTHON=$(abspath $(PY)) ,)scripts/gpu_check.sh $(if $(DRY_RUN),--dry-run,)

# The kernel tests against an AddressSanitizer + UndefinedBehaviorSanitizer build
# (the CPU kernels and the emulated CUDA kernels).
sanitize: install
	PYTHON=$(abspath $(PY)) scripts/sanitize.sh

clean:
	rm -rf $(VENV) build
