# occupancyd: `make run` starts the demo building, `make test` runs every test.

GO      ?= go
FUZZTIME ?= 60s
# The version stamp: `git describe` of the last vMAJOR.MINOR.PATCH tag, which
# `occupancyd version` turns into a semantic version (0.1.0 on the tag,
# 0.1.1-dev.3+abc1234 three commits later, 0.0.0-dev+abc1234 before any tag).
VERSION ?= $(shell git describe --tags --long --always --dirty --match 'v[0-9]*' 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null)
DATE    ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.date=$(DATE)

.PHONY: run test build bench lint fuzz chaos package package-test

run:
	$(GO) run ./cmd/occupancyd run --config configs/demo.yaml

test:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 20m ./...

build:
	mkdir -p bin
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/occupancyd ./cmd/occupancyd
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/dpusim ./cmd/dpusim

# make package builds dist/occupancyd_<version>_<arch>.deb and
# dist/occupancyd-<version>-1.<arch>.rpm for linux/PKG_ARCH (default: this machine's)
# with cmd/mkpackage (nFPM, a module of its own so the daemon's build never compiles
# it). The version is the binary's own (occupancyd version --short).
PKG_ARCH ?= $(shell $(GO) env GOARCH)

package:
	mkdir -p bin/linux-$(PKG_ARCH) dist
	CGO_ENABLED=0 GOOS=linux GOARCH=$(PKG_ARCH) $(GO) build -trimpath -ldflags "$(LDFLAGS)" \
		-o bin/linux-$(PKG_ARCH)/occupancyd ./cmd/occupancyd
	cd cmd/mkpackage && $(GO) run . --root ../.. --out ../../dist --arch $(PKG_ARCH) \
		--binary ../../bin/linux-$(PKG_ARCH)/occupancyd \
		--version "$$(cd ../.. && $(GO) run -ldflags "$(LDFLAGS)" ./cmd/occupancyd version --short)"

# make package-test runs cmd/mkpackage's own tests (the package contents).
package-test:
	cd cmd/mkpackage && $(GO) vet ./... && $(GO) test -count=1 ./...

# make bench runs everything (about 15 minutes): the Go benchmarks, then dpusim bench's
# three phases (throughput ratio, campus latency, 100,000 DPUs for 5 minutes).
# BENCH_PHASES=throughput,campus leaves out the 100k phase (about 3 minutes).
BENCH_PHASES ?= throughput,campus,100k

bench:
	$(GO) test -run='^$$' -bench=. -benchmem -count=1 ./occupancy/ ./buffer/ ./gateway/tracker/
	$(GO) test -run='^$$' -bench=RejectVsAccept -benchtime=5x -count=1 ./gateway/ingest/
	$(GO) test -run='^$$' -bench=ProcessEvents -benchmem -count=1 ./gateway/ingest/
	$(GO) run ./cmd/dpusim bench --phases $(BENCH_PHASES)

# The long chaos run: kill -9, broker restarts and a full disk under load, then every
# event checked (make test runs a short version). OCCUPANCYD_CHAOS_SEED=N repeats a run.
chaos:
	OCCUPANCYD_CHAOS=long $(GO) test -run '^TestChaos$$' -count=1 -v -timeout 30m ./cmd/occupancyd/

# Every fuzz target for FUZZTIME each (FUZZ=regexp picks targets); prints execs/s.
fuzz:
	FUZZTIME=$(FUZZTIME) GO=$(GO) ./.ci/fuzz

lint:
	@out="$$(gofmt -l $$(git ls-files '*.go'))"; \
	if [ -n "$$out" ]; then echo "gofmt -l: these files need gofmt -w:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	cd cmd/mkpackage && $(GO) vet ./...
