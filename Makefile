# rankswarm: the two set-up commands of the README.
#   make demo   install into .venv, then run the local demo
#   make test   install into .venv (with test extras), then run the whole test suite
#
# torch is installed first and on its own, so the right build lands on each kind of machine:
#   CPU machine (default here):   make demo
#   CUDA machine:                 make demo TORCH_SPEC="torch==2.13.0" TORCH_INDEX=<your CUDA wheel index>
# Any torch >= 2.4 works; pip keeps an already-installed torch instead of pulling another.

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
PIP = $(VENV)/bin/python -m pip
DEMO_ARGS ?=

.PHONY: install demo test clean-venv

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PIP) install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/rankswarm demo $(DEMO_ARGS)

test: install
	$(VENV)/bin/python -m pytest

clean-venv:
	rm -rf $(VENV)
