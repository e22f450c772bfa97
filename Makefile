# hello-servicemesh: the lab's front door. `make` (or `make help`) lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV      := .venv
BIN       := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
# The Vagrant lab's inventory once `vagrant up` made it (same hosts, groups and
# variables as provisioning), else inventory/lab.
INVENTORY ?= $(if $(wildcard $(LAB_INVENTORY)/vagrant_ansible_inventory),$(LAB_INVENTORY),inventory/lab)
SCENARIOS ?= default cluster
# The lab targets (click, status, chaos-*, canary, hammer, overload, trace, dashboard, urls) talk to the Vagrant lab, or to the
# lab of any inventory given on the command line: `make click INVENTORY=path/to/inventory` (testkit/labctl.py).
LAB = scripts/lab $(if $(filter command line environment,$(origin INVENTORY)),--inventory $(INVENTORY))

.PHONY: help bootstrap image lint unit test-apps test test-all molecule molecule-nomad start-workloads start-jobs stop-workloads model

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  \033[36m%-15s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

bootstrap: ## Install system packages, podman settings and the pinned Python toolchain (.venv)
	@scripts/bootstrap

image: bootstrap ## Build the Debian 12 systemd base image (debootstrap; cached until it changes)
	@echo "==> build-image"; scripts/build-image

lint: bootstrap ## ansible-lint (production profile) and yamllint
	@echo "==> yamllint"; $(BIN)/yamllint --strict .
	@echo "==> ansible-lint"; $(BIN)/ansible-lint

unit: bootstrap ## Unit tests of the catalog, modules and renderers (no containers)
	@echo "==> pytest tests/"; $(BIN)/pytest -q tests

test-apps: bootstrap ## The sample apps' suites: pytest (add/sub-svc, double-svc) and node --test (frontend, against real add/sub-svc)
	@echo "==> pytest apps/arith"; cd apps/arith && ../../$(BIN)/pytest -q
	@echo "==> pytest apps/double"; cd apps/double && ../../$(BIN)/pytest -q
	@echo "==> node --test apps/frontend"; cd apps/frontend && ARITH_PYTHON=$(CURDIR)/$(BIN)/python node --test test/

molecule: image ## Molecule scenarios on podman (SCENARIOS="default cluster" unless given)
	@for s in $(SCENARIOS); do echo "==> molecule test -s $$s"; COLUMNS=200 $(BIN)/molecule test -s $$s || exit 1; done

molecule-nomad: image ## Molecule scenario nomad (NOMAD_ARCHIVE=... or HashiCorp reachable); otherwise SKIPPED with the reason
	@scripts/molecule-nomad

test: ## Everything CI runs (lint, unit, apps, Molecule, Nomad, Vagrant), ending with one total line
	@scripts/test-summary $(MAKE) --no-print-directory test-all

test-all: lint unit test-apps molecule molecule-nomad test-vagrant

start-workloads: ## Install the apps' code and deploy the catalog's workloads with the configured scheduler
	$(BIN)/ansible-playbook -i $(INVENTORY) playbooks/workloads.yml

start-jobs: start-workloads ## The same as start-workloads (the name the 2018 lab's users know: start_all_jobs.sh)

stop-workloads: ## Stop and remove the workloads (on either scheduler)
	$(BIN)/ansible-playbook -i $(INVENTORY) playbooks/workloads.yml -e mesh_workloads_state=absent

model: ## Print the lab model: which instance runs on which node, with its ports (meshlab/model.py)
	$(BIN)/ansible-playbook -i $(INVENTORY) playbooks/model.yml

BENCH_DURATION ?= 30
.PHONY: bench
bench: ## Benchmark mesh vs direct path with wrk (BENCH_DURATION=30 s per run): bench/results/latest.{json,md,png}
	$(BIN)/ansible-playbook -i $(INVENTORY) playbooks/bench.yml -e mesh_bench_duration=$(BENCH_DURATION)

# --- The Vagrant lab (Vagrantfile, vagrant.yml, docs/vagrant.md) ------------
# Provider: VirtualBox where installed, else libvirt where usable, else docker
# (Docker Engine or podman's Docker API). PROVIDER=virtualbox|libvirt|docker forces one;
# MESH_NODES, MESH_SERVERS, MESH_PROFILE=full|offline: see vagrant.yml.
VAGRANT       ?= vagrant
PROVIDER      ?=
LAB_DIR       := $(or $(VAGRANT_DOTFILE_PATH),.vagrant)
LAB_INVENTORY := $(LAB_DIR)/provisioners/ansible/inventory
.PHONY: up down provision status click urls test-vagrant chaos-kill chaos-slow chaos-errors chaos-heal edge canary rollout rollback hammer overload trace dashboard screenshots scale ship backup restore rolling-restart rotate

up: bootstrap ## Start the lab: vagrant up, provision, start-workloads; ends with the URLs and the profile used
	@echo "==> vagrant up: decide provider and profile, boot the node(s)"
	@$(VAGRANT) up --no-provision $(if $(PROVIDER),--provider=$(PROVIDER))
	@echo "==> vagrant provision --provision-with site: playbooks/site.yml on every node (Consul; Nomad in the full profile)"
	@$(VAGRANT) provision --provision-with site
	@echo "==> start-workloads: the apps' code, intentions and instances ($(LAB_INVENTORY))"
	@$(MAKE) --no-print-directory start-workloads INVENTORY=$(LAB_INVENTORY)
	@echo; scripts/lab urls

provision: bootstrap ## Re-run the provisioning (vagrant provision: site.yml, then workloads.yml); a clean re-run changes nothing
	@echo "==> vagrant provision"
	@$(VAGRANT) provision

down: ## Destroy the lab (vagrant destroy -f): every node, its network and the recorded profile
	@echo "==> vagrant destroy -f"
	@$(VAGRANT) destroy -f

status: ## The lab's machines, Consul members, services, instances and their health (exit 1 if unhealthy)
	@$(LAB) status

click: ## Send the sample request (1+1+2+...-5 = 9) to the frontend: prints the result and which instances answered
	@$(LAB) click

urls: ## The lab's URLs (Consul UI, Nomad UI, the edge and its stats, the dashboard, Prometheus) and the profile in use
	@$(LAB) urls

trace: ## One compute through the edge as a tree of spans from Zipkin (service, instance, offset, duration, status); ID=... prints that trace
	@$(LAB) trace $(if $(ID),--id $(ID))

dashboard: ## The mesh dashboard (Prometheus' console /consoles/mesh.html): prints its address, opens it if there is a screen
	@$(LAB) dashboard

screenshots: ## Refresh the README's pictures (docs/img/): the dashboard under load with an instance killed, the Consul UI
	@$(LAB) screenshots

# --- The edge (HAProxy in front of the frontend; docs/edge.md) ---------------
WEIGHT ?=
edge: ## Re-plan and reload the edge from the catalog and mesh_edge_* (no request dropped)
	$(BIN)/ansible-playbook -i $(INVENTORY) playbooks/edge.yml

canary: ## Send WEIGHT % (0-100) of the requests to the canary version (until the next run without it), then show the split
	@test -n "$(WEIGHT)" || { echo "usage: make canary WEIGHT=25  (the canary's share in %)"; exit 2; }
	$(BIN)/ansible-playbook -i $(INVENTORY) playbooks/edge.yml -e mesh_edge_canary_weight=$(WEIGHT)
	@$(LAB) split

rollout: ## A progressive canary: the canary's share steps 10 -> 25 -> 50 -> 100 %, each step judged on Prometheus (5xx, p99), rolled back at the first breach
	$(BIN)/ansible-playbook -i $(INVENTORY) playbooks/rollout.yml $(if $(filter-out file,$(origin SVC)),-e canary_service=$(SVC)) $(if $(STEPS),-e canary_steps=$(STEPS)) $(if $(STEP_SECONDS),-e canary_step_seconds=$(STEP_SECONDS))
	@$(LAB) split

rollback: ## Undo a rollout: the edge sends everything to the baseline (canary 0 %) until the next run that plans it from the catalog
	$(BIN)/ansible-playbook -i $(INVENTORY) playbooks/edge.yml -e mesh_edge_canary_weight=0
	@$(LAB) split

HAMMER_RATE    ?= 100
HAMMER_SECONDS ?= 5
hammer: ## A bounded burst through the edge (HAMMER_RATE=100/s for HAMMER_SECONDS=5): counts per second and status
	@$(LAB) hammer --rate $(HAMMER_RATE) --seconds $(HAMMER_SECONDS)

# --- Chaos: break one instance between two probe loads (docs/resilience.md) ---
OVERLOAD_STEPS   ?= 20,60,120,200
OVERLOAD_SECONDS ?= 10
overload: ## A step load through the edge (OVERLOAD_STEPS=20,60,120,200 computes/s, OVERLOAD_SECONDS=10 each): admitted, shed, failed
	@$(LAB) overload --steps $(OVERLOAD_STEPS) --seconds $(OVERLOAD_SECONDS)

SVC  ?= add-svc
MS   ?= 300
RATE ?= 0.5
chaos-kill: ## kill -9 one instance of SVC (default add-svc) between two probe loads
	@$(LAB) chaos kill --service $(SVC)

chaos-slow: ## +MS ms (default 300) on one instance of SVC, between two probe loads
	@$(LAB) chaos slow --service $(SVC) --ms $(MS)

chaos-errors: ## RATE (default 0.5) of one SVC instance's answers become 500, between two probe loads
	@$(LAB) chaos errors --service $(SVC) --rate $(RATE)

scale: ## Run SVC (default add-svc) with N instances until the next start-workloads; removed ones are drained; under a probe load
	@test -n "$(N)" || { echo "usage: make scale SVC=add-svc N=4"; exit 2; }
	@$(LAB) scale --service $(SVC) --count $(N)

ship: ## start-workloads under a probe load: what changed (code, settings) rolls out batch by batch, drained
	@$(LAB) ship

chaos-heal: ## every instance back to no faults
	@$(LAB) chaos heal

test-vagrant: bootstrap ## CI: docker-provider lab up, provision, 20 clicks, idempotent re-provision, destroy
	@tests/vagrant/run

# --- Operate the control plane (docs/operate.md) ------------------------------
backup: ## A Consul snapshot now, inspected, copied to the controller (<inventory>/.secrets/backups, mode 0600)
	$(BIN)/ansible-playbook -i $(INVENTORY) playbooks/backup.yml

restore: ## Restore a snapshot: make restore SNAPSHOT=path (refused when `consul snapshot inspect` cannot read it)
	@test -n "$(SNAPSHOT)" || { echo "usage: make restore SNAPSHOT=path/to/consul-....snap  (make backup writes them)"; exit 2; }
	$(BIN)/ansible-playbook -i $(INVENTORY) playbooks/restore.yml -e consul_snapshot_restore_file=$(abspath $(SNAPSHOT))

rolling-restart: ## Restart every Consul agent one at a time, waiting for the cluster to be whole: followers, leader, clients
	$(BIN)/ansible-playbook -i $(INVENTORY) playbooks/rolling-restart.yml

rotate: ## Rotate a secret of the running lab: make rotate WHAT=gossip|tls|connect-ca (no restart) or WHAT=tokens (drained rolling restart)
	@case "$(WHAT)" in \
	  tokens) $(BIN)/ansible-playbook -i $(INVENTORY) playbooks/rotate-tokens.yml ;; \
	  gossip|tls|connect-ca) $(BIN)/ansible-playbook -i $(INVENTORY) playbooks/rotate.yml -e consul_agent_rotate=$(WHAT) ;; \
	  *) echo "usage: make rotate WHAT=gossip|tls|connect-ca|tokens"; exit 2 ;; \
	esac
