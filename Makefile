# `make demo` and `make test` each create .venv if missing and install what they need into it.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.core: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,torch,onnx]'
	touch $@ $(VENV)/.core

demo: $(VENV)/.core
	$(BIN)/convscope demo

test: $(VENV)/.test
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(VENV)/.test
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) demo-output
