# The two commands of the README. Both run the set-up first (idempotent; a no-op once done).
CARGO ?= $(shell command -v cargo 2>/dev/null || echo $(HOME)/.cargo/bin/cargo)

.PHONY: setup setup-cuda build-cuda nightly run test build bench clean-venv
setup:
	@bash scripts/setup.sh

build: setup
	$(CARGO) build --release --locked

# Main job: the smoke suite on the built-in synthetic dataset, as a graph of stage kinds, against its golden
# (golden/smoke-graph.toml: point values at seed 0, regression records and claims over seeds 0-2).
run: build
	./target/release/contracam suite run suites/smoke-graph.toml

# All tests (unit, integration, reference parity, the smoke suite against its golden), then formatting and
# clippy. Reference vectors are read from ../shared/reference unless CONTRACAM_REFERENCE points elsewhere; a
# missing directory is a failure, not a skip.
test: setup
	@bash scripts/check-reference.sh
	$(CARGO) test --locked --release
	CARGO=$(CARGO) bash scripts/lint.sh

bench: setup
	$(CARGO) bench --locked

# Headers the NCCL backend of the c10d shim compiles against (the wheel ships the CUDA runtime's, not these).
setup-cuda: setup
	.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps \
	  nvidia-cuda-crt==13.0.88 nvidia-cuda-cccl==13.0.85

# The CUDA build (libtorch_cuda, NCCL): links here without a GPU; run it where one is.
build-cuda: setup-cuda
	$(CARGO) build --release --locked --features cuda

# Nightly GPU run: the CUDA build's tests (GPU-only ones included) and the suites on the GPU, with JUnit and
# Markdown reports and the environment under nightly/<timestamp>/ (scripts/nightly.sh).
nightly: build-cuda
	CARGO=$(CARGO) bash scripts/nightly.sh
