# The two commands of the README:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= demo_out
PIP    := $(BIN)/pip install --quiet --disable-pip-version-check -c requirements/constraints.txt

.PHONY: demo test install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml requirements/constraints.txt
	$(PIP) -e .
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) -e ".[dev]"
	@touch $@

# Where the command is: it is not on PATH until the venv is activated.
WHERE = @echo "m2cofs is installed as $(BIN)/m2cofs: run 'source $(BIN)/activate' to put it on your PATH, or call $(BIN)/m2cofs"

install: $(VENV)/.installed
	$(WHERE)
install-dev: $(VENV)/.installed-dev
	$(WHERE)

## make demo: the bundled model on the real held-out case (a phantom without ../shared/data) -> report
demo: $(VENV)/.installed
	$(BIN)/m2cofs demo --out $(OUT) --overwrite
	$(WHERE)

## make test: the test suite (CI runs exactly this through .ci/run)
test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -n 2 --dist loadfile

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
