# Two commands do all the set-up on a fresh machine:
#   make run    trains the default DreamerV3 agent (recipe: see README)
#   make test   lint + the test suite (installs the benchmark suites' extras and the
#               Debian GL libraries headless MuJoCo rendering needs, see `suites`)
# Both build .venv first. Torch: if $(PYTHON) already imports a torch (a CUDA build, say),
# the venv sees it through --system-site-packages and keeps it; otherwise the venv gets
# $(TORCH_SPEC), the CPU build here. Either way the installed torch is pinned as a
# constraint, so no later requirement can swap it for a multi-GB download.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
# pytest-xdist workers for `make test` (one torch thread each; 0 runs in this process).
TEST_WORKERS ?= 2

# Debian packages for headless MuJoCo rendering (dm-control): EGL, with OSMesa as fallback.
GL_PACKAGES ?= libegl1 libegl-mesa0 libgl1 libosmesa6

.PHONY: setup suites test lint run clean gpu-wheels

setup: $(VENV)/.ready

$(VENV)/.ready: pyproject.toml Makefile
	@if $(PYTHON) -c "import torch" 2>/dev/null; then \
	  echo "make: keeping the torch already installed for $(PYTHON)"; \
	  $(PYTHON) -m venv --system-site-packages $(VENV); \
	else \
	  $(PYTHON) -m venv $(VENV) && $(BIN)/pip install -q $(TORCH_SPEC); \
	fi
	$(BIN)/python -W ignore -c "import torch; print('torch==' + torch.__version__)" > $(VENV)/constraints.txt
	$(BIN)/pip install -q -c $(VENV)/constraints.txt -e ".[test]"
	@$(BIN)/python -c "import torch, torchrl, tensordict; print('make: torch', torch.__version__, '| torchrl', torchrl.__version__, '| tensordict', tensordict.__version__)"
	@touch $@

# The benchmark suites (pip extras dmc, atari, crafter, minatar) and the GL libraries.
suites: $(VENV)/.suites

$(VENV)/.suites: $(VENV)/.ready
	@missing=$$(for p in $(GL_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    echo "make: installing $$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "make: headless rendering needs: sudo apt-get install $$missing (dmc tests will skip)"; \
	  fi; \
	fi
	$(BIN)/pip install -q -c $(VENV)/constraints.txt -e ".[test,all]"
	@touch $@

lint: setup
	$(BIN)/ruff format --check wmblocks tests recipes benchmarks
	$(BIN)/ruff check wmblocks tests recipes benchmarks

test: lint suites
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal

run: setup
	@test -f recipes/dreamer_v3.py || { echo "make run: recipes/dreamer_v3.py is not in this version yet (see README, Status)"; exit 1; }
	$(BIN)/python recipes/dreamer_v3.py $(ARGS)

# Wheels for the lent GPU machine (its Python 3.12 has torch but not these), into .whl/
# for benchmarks/gpu_check.sh: the versions installed here, for CPython 3.12 on x86-64.
GPU_WHEEL_PACKAGES ?= tensordict torchrl gymnasium farama-notifications pyvers hoptorch orjson importlib-metadata
GPU_PLATFORMS := $(foreach p,manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux1,--platform $(p)_x86_64) --platform any

gpu-wheels: setup
	@mkdir -p .whl
	@for p in $(GPU_WHEEL_PACKAGES); do \
	  v=$$($(BIN)/python -c "import importlib.metadata as m; print(m.version('$$p'))") || exit 1; \
	  $(BIN)/pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
	    --implementation cp $(GPU_PLATFORMS) -d .whl "$$p==$$v" || exit 1; \
	done
	@ls .whl

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
