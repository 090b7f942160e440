# Two commands on a fresh machine: `make demo` and `make test` (see README.md).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DATA    ?= data/demo
MODELS  ?= models
REPORTS ?= reports
STOCKS  ?= 50
TIME_IDS ?= 800
SEED    ?= 0
DEMO_PORT ?= 18080
DEMO_RUN  ?= runs/demo
PYTEST_ARGS ?=
CHECKOV_VERSION := 3.3.30

.PHONY: install system-deps demo test lint typecheck layers protos clean podman-e2e perf-analyzer tritonserver gpu-bench fuzz

# constraints.txt is the lock; torch==2.13.0 resolves to the CPU wheel on this machine.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev,deploy]'
	# checkov pins packaging<24 (constraints.txt has 26.x): its own venv, for the chart tests
	test -x .venv-checkov/bin/checkov || { $(PY) -m venv .venv-checkov && \
	  .venv-checkov/bin/pip install -q checkov==$(CHECKOV_VERSION); }
	touch $@

install: $(STAMP)

# Debian packages the integration tests run for real; installed only when missing.
APT_PACKAGES := redis-server prometheus libb64-0d libpython3.11
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

demo: install
	@test -f $(DATA)/train.csv || $(BIN)/rtvol data synth --out $(DATA) --stocks $(STOCKS) --time-ids $(TIME_IDS) --seed $(SEED)
	$(BIN)/rtvol train --data $(DATA) --repo $(MODELS) --seed $(SEED)
	$(BIN)/rtvol export --repo $(MODELS)
	$(BIN)/rtvol evaluate --data $(DATA) --repo $(MODELS) --out $(REPORTS)/report.json
	@# the stack runs on DEMO_PORT.. (8 ports); `down` runs whatever happens (trap);
	@# RTVOL_NO_REDIS=1: feature service and gateway in one process (as without redis-server)
	@set -e; export RTVOL_RUN_DIR=$(DEMO_RUN); trap '$(BIN)/rtvol down' EXIT; \
	$(BIN)/rtvol up --data $(DATA) --repo $(MODELS) --base-port $(DEMO_PORT); \
	$(BIN)/rtvol feed --data $(DATA) --target 127.0.0.1:$$(($(DEMO_PORT) + 1)) --buckets 0:40 \
	  --rate 50000 --freeze-gc --report $(REPORTS)/feed.json; \
	$(BIN)/rtvol loadtest --target grpc://127.0.0.1:$$(($(DEMO_PORT) + 6)) --rate 200 --duration 10 \
	  --stocks $$(seq -s, 0 $$(($(STOCKS) - 1))) --out $(REPORTS)/loadtest
	@$(BIN)/python -m rtvol.loadtest.summary $(REPORTS)

lint: install
	$(BIN)/ruff check .

# import-linter: the layering of docs/ARCHITECTURE.md (contracts in pyproject.toml)
layers: install
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy rtvol  # services/, training/, loadtest/ through their rtvol/ links

test: install system-deps perf-analyzer tritonserver lint typecheck layers
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# On a GPU host: parity, time to ready, model batch 1 / 1024 and perf_analyzer against their
# targets (scripts/gpu-bench.sh says which variables it reads; docs/BENCHMARKS.md the results)
gpu-bench:
	scripts/gpu-bench.sh

# NVIDIA's perf_analyzer for tests/integration/test_perf_analyzer.py: PyPI's perf-analyzer
# needs a newer glibc than Debian 12; the binary in tritonclient 2.51.0's wheel runs with
# Debian's libb64-0d and libcudart.so.12 from nvidia-cuda-runtime-cu12 (a client only: no GPU).
PA_DIR := build/perf_analyzer
perf-analyzer: $(PA_DIR)/perf_analyzer
$(PA_DIR)/perf_analyzer: | $(STAMP)
	$(BIN)/pip download -q --no-deps -d $(PA_DIR)/wheels tritonclient==2.51.0 nvidia-cuda-runtime-cu12==12.6.77
	$(BIN)/python -c 'import sys, zipfile, pathlib; out = pathlib.Path(sys.argv[1]); \
	  [out.joinpath(pathlib.Path(m).name).write_bytes(zipfile.ZipFile(w).read(m)) \
	   for w in pathlib.Path(out, "wheels").glob("*.whl") for m in zipfile.ZipFile(w).namelist() \
	   if m.endswith(("/bin/perf_analyzer", "/libcudart.so.12"))]' $(PA_DIR)
	chmod +x $@

# NVIDIA's tritonserver for tests/integration/test_triton_sidecar.py: the binary, the Python
# backend (with the stub for this venv's Python, which links Debian's libpython3.11) and the
# shared libraries of PyPI's nvidia-pytriton wheel, unpacked without installing the package
# (it pins numpy<2 and tritonclient~=2.50); its version is in constraints.txt. A 55 MB
# download, 106 MB unpacked; no GPU needed (the model runs on ONNX Runtime's CPU provider).
TS_DIR := build/tritonserver
tritonserver: $(TS_DIR)/bin/tritonserver
$(TS_DIR)/bin/tritonserver: | $(STAMP)
	$(BIN)/pip download -q --no-deps -c constraints.txt -d $(TS_DIR)/wheels nvidia-pytriton
	$(BIN)/python scripts/unpack_tritonserver.py $(TS_DIR)/wheels/*.whl $(TS_DIR)
	rm -rf $(TS_DIR)/wheels

# The container end-to-end test (root; minutes, so not in `make test`; last result in docs/DEPLOY.md):
# images built offline by tests/e2e/podman/build.sh, the CPU chart played by podman, Predict.
podman-e2e: install
	$(MAKE) --no-print-directory system-deps APT_PACKAGES="podman runc debootstrap"
	$(BIN)/python -m pytest -q -s -m podman tests/e2e/test_podman.py $(PYTEST_ARGS)

# A hostile client against a whole local stack (minutes, so not in `make test`; last result in
# docs/RELIABILITY.md): schemathesis on the REST API, malformed protobuf over every gRPC method.
fuzz: install system-deps
	$(BIN)/python -m rtvol.loadtest.fuzz --out $(REPORTS)/fuzz.json

protos: install
	$(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=. --pyi_out=. --grpc_python_out=. \
	  $$(cd protos && find . -name '*.proto' | sed 's|^\./||')

clean:
	rm -rf $(VENV) data models reports .pytest_cache .mypy_cache .ruff_cache
