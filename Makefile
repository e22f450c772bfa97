# hello-servicemesh: the lab's front door. `make` (or `make help`) lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV      := .venv
BIN       := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
INVENTORY ?= inventory/lab
SCENARIOS ?= default consul-archive

.PHONY: help bootstrap image lint unit test-apps test molecule start-jobs stop-jobs

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

bootstrap: ## Install system packages, podman settings and the pinned Python toolchain (.venv)
	@scripts/bootstrap

image: bootstrap ## Build the Debian 12 systemd base image (debootstrap; cached until it changes)
	@scripts/build-image

lint: bootstrap ## ansible-lint (production profile) and yamllint
	@echo "==> yamllint"; $(BIN)/yamllint --strict .
	@echo "==> ansible-lint"; $(BIN)/ansible-lint

unit: bootstrap ## Unit tests of the catalog, modules and renderers (no containers)
	@echo "==> pytest tests/"; $(BIN)/pytest -q tests

test-apps: bootstrap ## The sample apps' suites: pytest (add/sub-svc) and node --test (frontend, against real add/sub-svc)
	@echo "==> pytest apps/arith"; cd apps/arith && ../../$(BIN)/pytest -q
	@echo "==> node --test apps/frontend"; cd apps/frontend && ARITH_PYTHON=$(CURDIR)/$(BIN)/python node --test test/

molecule: image ## Molecule scenarios on podman (SCENARIOS="default consul-archive")
	@for s in $(SCENARIOS); do echo "==> molecule test -s $$s"; $(BIN)/molecule test -s $$s || exit 1; done

test: lint unit test-apps molecule ## Everything CI runs: lint, unit tests, app suites, Molecule scenarios

start-jobs: ## Deploy the catalog's workloads with the configured scheduler and print healthy counts
	$(BIN)/ansible-playbook -i $(INVENTORY) playbooks/jobs.yml

stop-jobs: ## Stop and remove the workloads
	$(BIN)/ansible-playbook -i $(INVENTORY) playbooks/jobs.yml -e mesh_jobs_state=absent

BENCH_DURATION ?= 30
.PHONY: bench
bench: ## Benchmark mesh vs direct path with wrk (BENCH_DURATION=30 s per run): bench/results/latest.{json,md,png}
	$(BIN)/ansible-playbook -i $(INVENTORY) playbooks/bench.yml -e mesh_bench_duration=$(BENCH_DURATION)
