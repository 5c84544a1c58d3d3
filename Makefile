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

demo: $(STAMP)
	$(BIN)/facedistill --config $(DEMO_CONFIG) data synth
	$(BIN)/facedistill --config $(DEMO_CONFIG) data check
	$(BIN)/facedistill --config $(DEMO_CONFIG) train
	$(BIN)/facedistill --config $(DEMO_CONFIG) eval runs/tnet
	$(BIN)/facedistill --config $(DEMO_CONFIG) select

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
