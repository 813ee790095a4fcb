# rankswarm: the two set-up commands of the README.
#   make demo   install into .venv, then run the local demo
#   make test   install into .venv (test and deploy extras), then lint (ruff) and run every test tier
#               on $(TEST_WORKERS) pytest-xdist workers (a test module stays on one worker; the deploy tier
#               runs on one worker, test after test); TEST_WORKERS=0 runs them all in this process
#   make test-fast   lint and the unit tier only (about a minute): the loop while you change code
#   make test-deploy the deploy tier alone (image, Compose, Kubernetes, Slurm; root and podman, see .ci/run)
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
EXTRAS ?= test,deploy
# two workers on CI's two cores: most of a swarm test's time is spent waiting (matchmaking, rounds, timeouts)
TEST_WORKERS ?= 2
PYTEST_PARALLEL = -n $(TEST_WORKERS) --dist loadscope

.PHONY: install demo lint test test-fast test-deploy clean-venv

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PIP) install -q -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/rankswarm demo $(DEMO_ARGS)

lint: install
	$(VENV)/bin/ruff check .

test: install lint
	$(VENV)/bin/python -m pytest $(PYTEST_PARALLEL)

test-fast: install lint
	$(VENV)/bin/python -m pytest -m "not integration and not slow and not deploy"

test-deploy: install
	$(VENV)/bin/python -m pytest -m deploy

clean-venv:
	rm -rf $(VENV)
