# Dockyard: two commands on a fresh machine.
#   make run    start everything in one process on ./dockyard-data (registry on 127.0.0.1:5000)
#   make test   install what the tests need (Debian packages, Go tools, a dockerd) and run every test
GO       ?= go
BIN      ?= bin/dockyard
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X main.version=$(VERSION)
PKGS     := ./...

.PHONY: build run test test-unit test-setup bench lint clean

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/dockyard

run: build
	./$(BIN) serve

# test installs and starts what the suites need, then runs them all. The set-up
# script is idempotent and prints what it does; its environment (tool paths,
# the dockerd it started) is handed to `go test` through scripts/test-env.
test: build
	./scripts/test.sh

# test-unit runs the tests that need nothing but Go (no packages, no dockerd).
test-unit:
	$(GO) test -count=1 $(PKGS)

bench: build
	./scripts/bench.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

clean:
	rm -rf bin
