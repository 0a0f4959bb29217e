# hft-deploy: the two commands are `make lab` and `make test` (see README.md).
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := venv
STAMP := $(VENV)/.requirements.sha256

.PHONY: help deps venv tools env lab test test-unit clean-venv

help:
	@echo "make lab    set everything up and deploy the lab stack on local lab hosts"
	@echo "make test   set up what the tests need and run the whole suite"
	@echo "make tools  find or build the pinned Pulumi toolchain (cached outside the tree)"
	@echo "make env    print exports: eval \"\$$(make -s env)\"; shared state: make -s env BACKEND=s3://..."

deps:
	@tools/install-apt-deps.sh

# The virtualenv named in Pulumi.yaml, rebuilt only when requirements.txt changes.
venv: $(STAMP)
$(STAMP): requirements.txt
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements.txt
	@sha256sum requirements.txt > $(STAMP)
	@echo "venv: $(VENV) ready"

tools:
	@tools/build-toolchain.sh

env:
	@BACKEND="$(BACKEND)" tools/env.sh

lab: deps venv tools
	@tools/run-lab.sh

test: deps venv tools
	@tools/run-tests.sh

clean-venv:
	rm -rf $(VENV)
