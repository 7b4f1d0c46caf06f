# Two commands do everything: `make demo` and `make test` (each runs `make setup` first).
.PHONY: setup demo test lint lock bench clean stack-down

VENV ?= .venv
export STREAMREC_HOME ?= $(CURDIR)/.streamrec

setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/bin/streamrec demo

test: setup
	$(VENV)/bin/pytest -q

lint: setup
	$(VENV)/bin/ruff check streamrec agents tests bench
	$(VENV)/bin/ruff format --check streamrec agents tests bench
	$(VENV)/bin/mypy

lock:  # re-resolve constraints.txt from pyproject.toml's ranges (then run make test)
	@bash scripts/lock.sh

stack-down:
	$(VENV)/bin/streamrec stack down

clean: stack-down
	rm -rf .streamrec/stack
