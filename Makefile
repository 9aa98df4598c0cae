# ssi — see README.md. Every target that needs the machine set up runs
# `setup` first; setup is idempotent and quick once done.
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin
GO ?= go
# Root-only tests (CRIU, FUSE, lab) run as root; as a normal user they skip.
TEST_TIMEOUT ?= 18m

.PHONY: all setup build test unit vet demo bench fuzz clean

all: build

build:
	$(GO) build -o bin/ssi ./cmd/ssi

# Installs what the machine lacks (fuse3, iproute2, CRIU >= 4.2 in a private
# prefix), builds bin/ssi and checks the machine with `ssi doctor`.
setup:
	bash configs/setup.sh
	$(MAKE) --no-print-directory build
	bin/ssi doctor

vet:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	$(GO) vet ./...

# -p 1: packages build labs and compare the host's state before and after;
# run in parallel, one package's lab would show up in another's comparison.
# Then every fuzz target runs briefly (integration/fuzz.sh).
test: setup vet
	$(GO) test -p 1 -count=1 -timeout $(TEST_TIMEOUT) ./...
	FUZZTIME=3s bash integration/fuzz.sh

# Every fuzz target for FUZZTIME each (default one minute).
FUZZTIME ?= 1m
fuzz:
	FUZZTIME=$(FUZZTIME) bash integration/fuzz.sh

# Unit tests only: no root, no CRIU, no lab.
unit:
	$(GO) test -count=1 -short ./...

demo: setup
	bash integration/demo.sh

# Prints Markdown tables: each figure next to its baseline from the same run.
bench: setup
	bash integration/bench.sh
	bash integration/bench-migrate.sh
	bash integration/bench-balance.sh

clean:
	rm -rf bin
