# Wiretide — every target sets itself up first; `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
UV_VERSION := 0.13.9
UV := .uv/bin/uv
VENV := .venv
BIN := $(VENV)/bin
STAMPS := .stamps
PROTO_SRC := $(wildcard protos/wiretide/proto/v1/*.proto)
APT_PACKAGES := iproute2 iputils-ping tcpdump tshark libpcap0.8 curl openssl procps redis-server rabbitmq-server postgresql postgresql-client mariadb-server mariadb-client chromium fonts-dejavu-core \
  gcc libc6-dev libssl-dev python3-dev nginx apache2-utils slapd ldap-utils freeradius freeradius-utils traceroute freediameterd golang-go android-libboringssl-dev
export UV_PYTHON := $(PYTHON)
export UV_PYTHON_DOWNLOADS := never
export UV_LINK_MODE := copy
# Bytecode written at install time: start-up does not recompile every module, even where the
# environment forbids writing it at run time (PYTHONDONTWRITEBYTECODE).
export UV_COMPILE_BYTECODE := 1

.PHONY: help setup system ebpf native run demo test lint bench fuzz chaos protos clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(UV):
	$(PYTHON) -m venv .uv
	.uv/bin/pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

$(STAMPS)/system: Makefile
	@mkdir -p $(STAMPS)
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing system packages:$$missing"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $$missing >/dev/null; \
	  else echo "warning: system packages missing (run as root to install):$$missing"; fi; \
	fi
	@touch $@

system: $(STAMPS)/system ## install the system packages (apt-get, as root)

# eBPF (WIRETIDE_CAPTURE_EBPF, docs/ebpf.md): BCC from Debian and kernel headers, as root. Optional: when
# they cannot be had this says why and the build goes on (the capture then reports eBPF unavailable).
# Debian ships headers for its own kernels only; on another kernel the newest Debian headers are linked
# as /lib/modules/$(uname -r)/build and source (enough for uprobes and tracepoints; see docs/ebpf.md).
EBPF_PACKAGES := python3-bpfcc bpfcc-tools
SYSTEM_BCC := /usr/lib/python3/dist-packages/bcc
$(STAMPS)/ebpf: $(STAMPS)/venv Makefile
	@mkdir -p $(STAMPS)
	@set -u; kver=$$(uname -r); mods=/lib/modules/$$kver; \
	export DEBIAN_FRONTEND=noninteractive; \
	want=""; for p in $(EBPF_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || want="$$want $$p"; done; \
	linked=""; \
	if [ "$$(id -u)" != 0 ]; then \
	  if [ -n "$$want" ] || [ ! -e $$mods/build/include ]; then \
	    echo "eBPF: skipped (not root: 'sudo make setup' installs BCC and kernel headers)"; exit 0; fi; \
	elif [ ! -e $$mods/build/include ]; then \
	  if apt-cache show linux-headers-$$kver >/dev/null 2>&1; then want="$$want linux-headers-$$kver"; \
	  else want="$$want linux-headers-amd64"; linked=1; fi; \
	fi; \
	if [ -n "$$want" ]; then \
	  echo "eBPF: installing$$want"; \
	  { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $$want >/dev/null; } \
	    || { echo "eBPF: skipped (apt-get install$$want failed)"; exit 0; }; \
	fi; \
	if [ -n "$$linked" ]; then \
	  hdr=$$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n 1); \
	  if [ -z "$$hdr" ]; then echo "eBPF: skipped (no kernel headers for $$kver)"; exit 0; fi; \
	  mkdir -p $$mods && ln -sfn $$hdr $$mods/build && ln -sfn $${hdr%-amd64}-common $$mods/source; \
	  echo "eBPF: no Debian headers for kernel $$kver; linked $$hdr (a nearby version) as $$mods/build"; \
	fi; \
	if [ ! -d $(SYSTEM_BCC) ]; then echo "eBPF: skipped ($(SYSTEM_BCC) missing)"; exit 0; fi; \
	site=$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))'); \
	mkdir -p $(VENV)/system-bcc && ln -sfn $(SYSTEM_BCC) $(VENV)/system-bcc/bcc; \
	echo "$(abspath $(VENV))/system-bcc" > $$site/wiretide_system_bcc.pth; \
	if $(BIN)/python -c 'import bcc' 2>/dev/null; then echo "eBPF: BCC importable from $(VENV)"; touch $@; \
	else echo "eBPF: skipped (bcc does not import from $(VENV))"; fi

ebpf: $(STAMPS)/ebpf ## BCC and kernel headers for the eBPF TLS source (root; optional, never fails)

$(STAMPS)/venv: $(UV) uv.lock pyproject.toml protos/pyproject.toml $(wildcard services/*/pyproject.toml)
	@mkdir -p $(STAMPS)
	$(UV) sync --frozen --all-packages --quiet
	@touch $@

$(STAMPS)/protos: $(STAMPS)/venv $(PROTO_SRC) protos/generate.py
	$(BIN)/python protos/generate.py 2> >(grep -v '^Writing mypy' >&2)
	@touch $@

protos: $(STAMPS)/protos ## generate the gRPC/protobuf stubs from protos/

NATIVE_SERVICES := dissector tracer
NATIVE_SRC := services/common/src/wiretide/common/native.py $(foreach s,$(NATIVE_SERVICES),services/$(s)/build_native.py \
  $(wildcard services/$(s)/src/wiretide/$(s)/*.py services/$(s)/src/wiretide/$(s)/*/*.py))
$(STAMPS)/native: $(STAMPS)/venv $(STAMPS)/system $(NATIVE_SRC)
	@for s in $(NATIVE_SERVICES); do $(BIN)/python services/$$s/build_native.py || exit 1; done
	@touch $@

PY_SRC := $(shell find src services/*/src -name '*.py' -not -path '*/__pycache__/*' 2>/dev/null)
$(STAMPS)/bytecode: $(STAMPS)/protos $(PY_SRC)
	$(BIN)/python -m compileall -q -j 0 src services/*/src protos/wiretide > /dev/null
	@touch $@

native: $(STAMPS)/native ## compile the dissector's and tracer's hot modules with mypyc (pure Python runs without them)

uv.lock: pyproject.toml protos/pyproject.toml $(wildcard services/*/pyproject.toml) | $(UV)
	$(UV) lock --quiet

setup: $(STAMPS)/system $(STAMPS)/venv $(STAMPS)/protos $(STAMPS)/native $(STAMPS)/bytecode $(STAMPS)/ebpf ## virtualenv, dependencies, stubs, system packages

run: setup ## run Wiretide locally (NATS, six services, UI on :8899)
	$(BIN)/wiretide up $(ARGS)

demo: setup ## a mini-cluster of network namespaces with live traffic, captured by Wiretide (root)
	$(BIN)/wiretide demo $(ARGS)

test: setup ## run the whole test suite (the dissector's and tracer's twice: compiled, then pure Python)
	$(BIN)/pytest $(PYTEST_ARGS)
	@if [ -z "$(PYTEST_ARGS)" ]; then \
	  echo "dissector and tracer tests again on the pure-Python modules (WIRETIDE_NATIVE=0):"; \
	  WIRETIDE_NATIVE=0 $(BIN)/pytest -q -p no:cacheprovider tests/unit/dissector tests/integration/test_pipeline_pcap.py \
	    tests/unit/tracer; \
	fi

lint: setup ## ruff, mypy --strict (common, protos, every service, the CLI), import-linter, buf lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy services/common/src/wiretide/common protos/wiretide
	$(BIN)/mypy -p wiretide.capture -p wiretide.dissector -p wiretide.resolver -p wiretide.tracer \
		-p wiretide.agents -p wiretide.gateway -p wiretide.cli
	$(BIN)/lint-imports --no-cache
	cd protos && ../$(BIN)/buf lint

bench: setup ## run the benchmarks (they print figures)
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

FUZZ_RUNS ?= 1000000
fuzz: setup ## fuzz every dissector and the KFL parser with atheris (FUZZ_RUNS inputs each; not in CI)
	$(BIN)/python fuzz/run.py --runs $(FUZZ_RUNS) $(if $(FUZZ_ONLY),--only $(FUZZ_ONLY))

chaos: setup ## faults and hostile traffic under a paced load; prints what was lost (root; not in CI)
	$(BIN)/python chaos/run.py $(ARGS)

clean: ## remove the virtualenv, generated stubs and caches
	rm -rf $(VENV) .uv $(STAMPS) build .pytest_cache .mypy_cache .ruff_cache
	find protos -name '*_pb2*.py*' -delete
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
