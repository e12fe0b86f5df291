# `make demo` and `make test` each create .venv if missing and install what they need into it.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test fuzz lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.core: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,torch,onnx]'
	touch $@ $(VENV)/.core

# The kernels compiled ahead of time (convscope/kernels/aot.py): processes load them without Numba's JIT.
# Without a C compiler the build fails and the kernels compile at first use instead.
KERNEL_LIBRARY := convscope/kernels/_aot/library.json
$(KERNEL_LIBRARY): $(wildcard convscope/kernels/*.py) convscope/models.py | $(VENV)/.core
	$(BIN)/python -m convscope.kernels.aot \
		|| echo "WARNING: the kernel library could not be built: kernels will compile at first use"

demo: $(VENV)/.core $(KERNEL_LIBRARY)
	$(BIN)/convscope demo

# The browser tests drive Debian's chromium with Playwright (never `playwright install`).
test: $(VENV)/.test $(KERNEL_LIBRARY)
	command -v chromium >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium) \
		|| echo "WARNING: chromium could not be installed with apt: the browser tests will be skipped"
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# The parsers' fuzz tests with a bigger budget: cases per parser (`make test` runs 2,000).
CONVSCOPE_FUZZ_EXAMPLES ?= 10000
fuzz: $(VENV)/.test
	CONVSCOPE_FUZZ_EXAMPLES=$(CONVSCOPE_FUZZ_EXAMPLES) $(BIN)/python -m pytest tests/fuzz -q

lint: $(VENV)/.test
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) demo-output convscope/kernels/_aot
