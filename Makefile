# The two commands of the README. Both run the set-up first (idempotent; a no-op once done).
CARGO ?= $(shell command -v cargo 2>/dev/null || echo $(HOME)/.cargo/bin/cargo)

.PHONY: setup run test build bench clean-venv
setup:
	@bash scripts/setup.sh

build: setup
	$(CARGO) build --release --locked

# Main job: the smoke suite on the built-in synthetic dataset.
run: build
	./target/release/contracam suite run suites/smoke.toml

# All tests (unit, integration, reference parity). Reference vectors are read from ../shared/reference
# unless CONTRACAM_REFERENCE points elsewhere; a missing directory is a failure, not a skip.
test: setup
	@bash scripts/check-reference.sh
	$(CARGO) test --locked --release

bench: setup
	$(CARGO) bench --locked
