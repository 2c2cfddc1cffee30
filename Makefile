# ringwatch: the two commands a new user needs are `make run` and `make test` (as root on Debian 12).
# Both install missing system packages, build, and mount tracefs/bpffs when needed.

CARGO ?= cargo
ARGS ?=

.PHONY: run test deps mounts build build-release lint bench clean

run: deps mounts build-release
	./target/release/ringwatch run $(ARGS)

test: deps mounts
	$(CARGO) build --workspace --all-targets
	$(CARGO) test --workspace --no-fail-fast

deps:
	@./scripts/install-deps.sh

mounts:
	@./scripts/mounts.sh

build: deps
	$(CARGO) build --workspace

build-release: deps
	$(CARGO) build --workspace --release

lint: deps
	$(CARGO) fmt --all -- --check
	git ls-files '*.c' '*.h' | grep -v vmlinux.h | xargs clang-format --dry-run --Werror
	$(CARGO) clippy --workspace --all-targets -- -D warnings

bench: deps mounts build-release
	./target/release/ringwatch bench process $(ARGS)
	./target/release/ringwatch bench file
	./target/release/ringwatch bench network
	./target/release/ringwatch bench keystroke
	./target/release/ringwatch bench store
	./target/release/ringwatch bench forward

clean:
	$(CARGO) clean
