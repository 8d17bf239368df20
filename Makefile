# The two commands of the README. Both set everything up first (a no-op when it is already there).
VENV ?= .venv
NP ?= 4
ARGS ?=
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup train test
setup:
	HVD_MLP_VENV=$(abspath $(VENV)) bash scripts/install.sh

train: setup
	horovodrun -np $(NP) python -m hvd_mlp.train $(ARGS)

test: setup
	python -m pytest
