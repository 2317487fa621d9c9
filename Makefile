# shardvisor: see README.md. Every target works on a fresh machine with Go 1.26.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/shardvisor/shardvisor/internal/buildinfo.Version=$(VERSION)

.PHONY: all build test demo bench fuzz fmt vet clean image

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/ ./cmd/...

# vet, formatting, then every test with the race detector: the main module,
# then deploy/ (a module of its own: the tests of the Dockerfile, workflows,
# compose and Kubernetes files, with the parsers they need).
test:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { gofmt -l . ; echo 'gofmt: files above need formatting'; exit 1; }
	$(GO) vet ./...
	$(GO) test -race -timeout 20m ./...
	cd deploy && $(GO) vet ./... && $(GO) test -race -timeout 20m ./...

# The container image (needs a Docker engine with BuildKit).
IMAGE ?= shardvisor:$(VERSION)
image:
	docker build --build-arg VERSION=$(VERSION) -t $(IMAGE) .

# A first run with no token and no internet: the fake Discord in-process,
# the real supervisor and real cluster processes against it. Ctrl-C stops it.
demo: build
	./bin/shardvisor demo

# Speed and memory targets (not timed tests).
bench:
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 30m ./...

FUZZTIME ?= 30s
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime $(FUZZTIME) ./internal/wire

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin dist
