# facedistill - the two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The CPU wheel of torch that lies on these machines; an unpinned torch pulls a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
DEMO_CONFIG ?= configs/demo.toml

.PHONY: install demo test lint clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[train,dev]" "$(TORCH)"
	touch $(STAMP)

install: $(STAMP)

# The main job: data -> teacher -> selection -> students -> export -> bench -> report, resumable.
demo: $(STAMP)
	$(BIN)/facedistill pipeline --config $(DEMO_CONFIG)

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
