# facedistill - the two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The CPU wheel of torch that lies on these machines; an unpinned torch pulls a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
DEMO_CONFIG ?= configs/demo.toml
WILD_CONFIG ?= configs/wild.toml
# The exact versions `make test` and `make demo` install (pip constraints); `make lock` refreshes.
LOCK   := requirements/lock.txt
LOCK_VENV ?= /tmp/facedistill-lock-venv

.PHONY: install demo wild test test-fast lint lock clean

$(STAMP): pyproject.toml Makefile $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c $(LOCK) pip
	$(BIN)/python -m pip install -q -c $(LOCK) "$(TORCH)"
	$(BIN)/python -m pip install -q -c $(LOCK) -e ".[train,dev]"
	touch $(STAMP)

install: $(STAMP)

# The main job: data -> teacher -> selection -> students -> export -> bench -> report, resumable.
demo: $(STAMP)
	$(BIN)/facedistill --config $(DEMO_CONFIG) pipeline

# The cascade for unaligned faces on synthetic wild photos (configs/wild.toml), resumable.
wild: $(STAMP)
	$(BIN)/facedistill --config $(WILD_CONFIG) pipeline

# ruff, then the layer map of pyproject's [tool.importlinter] (CONTRIBUTING.md)
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q

# the suite without the tests marked slow (kill/resume, torchrun, whole pipelines)
test-fast: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q -m 'not slow'

# Resolve pyproject's ranges anew (newest releases) in a scratch venv, run lint and the tests
# there, and only then rewrite the lock with what was installed (torch without its +cpu label);
# the next `make test` reinstalls .venv from it.
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install -q "$(TORCH)"
	$(LOCK_VENV)/bin/python -m pip install -q -e ".[train,dev]" "$(TORCH)"
	$(LOCK_VENV)/bin/ruff check .
	$(LOCK_VENV)/bin/lint-imports --no-cache
	$(LOCK_VENV)/bin/python -m pytest -q
	{ grep '^#' $(LOCK); $(LOCK_VENV)/bin/python -m pip freeze --all --exclude-editable \
	  | sed -E 's/^(torch==[0-9.]+)[+].*$$/\1/' | grep -vi '^facedistill'; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf $(LOCK_VENV)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
