# Two entry points for a newcomer (see README): `make repro` and `make test`.
# Both create .venv if needed and install the suite into it (torch pinned to the CPU build).
PYTHON ?= python3
VENV ?= .venv
# The data mirror: the verified copies beside the checkout, unless the caller set one.
export VAEBENCH_DATA_MIRRORS ?= $(abspath ../shared/data)
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: install repro test

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

install: $(VENV)/.installed

repro: install
	dvc repro

test: install
	pytest -q
