# occupancyd: `make run` starts the demo building, `make test` runs every test.

GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null)
DATE    ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.date=$(DATE)

.PHONY: run test build bench lint

run:
	$(GO) run ./cmd/occupancyd run --config configs/demo.yaml

test:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 20m ./...

build:
	mkdir -p bin
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/occupancyd ./cmd/occupancyd
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/dpusim ./cmd/dpusim

bench:
	$(GO) test -run='^$$' -bench=. -benchmem -count=1 ./occupancy/ ./buffer/
	$(GO) run ./cmd/dpusim bench

lint:
	@out="$$(gofmt -l $$(git ls-files '*.go'))"; \
	if [ -n "$$out" ]; then echo "gofmt -l: these files need gofmt -w:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
