# The two commands of the README: `make demo` and `make test`.  Both install what is
# missing (Debian packages with apt-get, Python packages into .venv), build, then run.
# Re-running is cheap: every step is guarded by a stamp or a file it produces.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMPS := .stamps
BUILD_DIR := build/cp
# meson and ninja come from the venv.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

# Debian packages: compiler and headers for the native and eBPF parts, the kernel
# tools the simulated cluster drives, and the real clients the tests use (chromium: the
# console's browser tests drive it through Playwright; no browser is ever downloaded).
DEB_PKGS := gcc clang libclang-rt-dev llvm libbpf-dev libelf-dev zlib1g-dev liblz4-dev libfuse3-dev libxxhash-dev libssl-dev fuse3 \
	pkg-config iproute2 nftables iputils-ping util-linux procps psmisc zip unzip faketime \
	rpm rpmlint lintian cpio slapd ldap-utils chromium
# Only for `make bench` (kept out of `make test`): the peers hakit is measured against.  postgresql
# (bench/database.py): its postinst may create and start a system cluster (5432, /var/run/postgresql);
# the bench runs its own postgres with its socket in a private directory and no TCP, and never
# touches that one.
BENCH_DEB_PKGS := keepalived fio glusterfs-server glusterfs-client nginx wrk haproxy bpftool postgresql
PY_PKGS := meson-python meson ninja cython msgpack uvloop pyroute2 cryptography google-re2 aiohttp ldap3 pytest pytest-benchmark ruff mypy import-linter atheris playwright schemathesis

SOURCES := $(shell find python native ebpf templates -type f -not -path '*/__pycache__/*' 2>/dev/null) \
	meson.build pyproject.toml
# The web console (console/, TypeScript): built into the package, where hakitd serves it.
CONSOLE_SOURCES := $(shell find console -type f -not -path 'console/node_modules/*' 2>/dev/null)
CONSOLE_OUT := python/hakit/node/web/console

.PHONY: all deps build test demo demo-down lint bench clean rfs-asan rfs-faults fuzz fuzz-build deb rpm packages
all: build

$(STAMPS)/deb: Makefile
	@mkdir -p $(STAMPS)
	@missing=$$(for p in $(DEB_PKGS); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -qq $$missing >/dev/null 2>&1 || \
		{ apt-get update -qq && apt-get install -y -qq $$missing; } || exit 1; \
	fi
	@touch $@

# Re-checked when the Makefile (and so PY_PKGS) changes; pip skips what is there.
$(STAMPS)/venv: $(STAMPS)/deb Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check $(PY_PKGS)
	@touch $@

# npm from Debian when the machine has none; `npm ci` installs exactly the lock file's
# versions (typescript only), then tsc writes the console into $(CONSOLE_OUT).
$(STAMPS)/console: $(CONSOLE_SOURCES)
	@mkdir -p $(STAMPS)
	@command -v npm >/dev/null || { \
		echo "installing Debian packages: nodejs npm"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -qq nodejs npm >/dev/null 2>&1 || \
		{ apt-get update -qq && apt-get install -y -qq nodejs npm; } || exit 1; }
	cd console && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build
	@touch $@

$(STAMPS)/build: $(STAMPS)/venv $(STAMPS)/console $(SOURCES)
	$(PY) -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps \
		-Cbuild-dir=$(BUILD_DIR) .
	@touch $@

deps: $(STAMPS)/venv
build: $(STAMPS)/build

lint: build
	$(VENV)/bin/ruff check $(wildcard python tests bench)

test: build rfs-asan rfs-faults packages
	$(VENV)/bin/ruff check $(wildcard python tests bench)
	$(VENV)/bin/mypy
	cd python && ../$(VENV)/bin/lint-imports ../pyproject.toml
	$(PY) -m pytest -q $(PYTEST_ARGS)

# ---- rfs core tests: native/rfs/tests/test_*.c linked with the core's own sources
# (RFS_CORE_NAMES: all but fs, sync, main) under ASan + UBSan, into build/rfs-asan/; run by
# tests/test_rfs_stream.py.  A few seconds to build, and only what changed.
RFS_DIR := native/rfs
RFS_ASAN := build/rfs-asan
RFS_CFLAGS := -std=gnu11 -Wall -Wextra -Werror -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer \
	-fsanitize=address,undefined -fno-sanitize-recover=all -I$(RFS_DIR)
RFS_HEADERS := $(wildcard $(RFS_DIR)/*.h $(RFS_DIR)/tests/*.h)
# The core: everything but the FUSE layer, the full sync and main (native/rfs/meson.build
# lists the same files).
RFS_CORE_NAMES := io log op apply exclude dirty chan repl_send repl_recv
RFS_CORE := $(patsubst %,$(RFS_ASAN)/obj/%.o,$(RFS_CORE_NAMES)) $(RFS_ASAN)/obj/rfs_test.o
RFS_TESTS := $(patsubst $(RFS_DIR)/tests/%.c,$(RFS_ASAN)/%,$(wildcard $(RFS_DIR)/tests/test_*.c))

$(RFS_ASAN)/obj/%.o: $(RFS_DIR)/%.c $(RFS_HEADERS)
	@mkdir -p $(@D)
	$(CC) $(RFS_CFLAGS) -c -o $@ $<
$(RFS_ASAN)/obj/%.o: $(RFS_DIR)/tests/%.c $(RFS_HEADERS)
	@mkdir -p $(@D)
	$(CC) $(RFS_CFLAGS) -c -o $@ $<
$(RFS_ASAN)/test_%: $(RFS_ASAN)/obj/test_%.o $(RFS_CORE)
	$(CC) $(RFS_CFLAGS) -o $@ $^ -llz4 -lssl -lcrypto -lpthread
# Kept, so a change rebuilds only what it touches.
.SECONDARY: $(RFS_CORE) $(patsubst $(RFS_ASAN)/%,$(RFS_ASAN)/obj/%.o,$(RFS_TESTS))
rfs-asan: $(STAMPS)/deb $(RFS_TESTS)

# A test build of the whole hakit-rfs whose receiver can be told to fail operations
# (HAKIT_RFS_FAULT=ERRNO:TEXT, repl_recv.c): errors such as EIO that the test machine cannot
# cause for real.  Used by tests/test_rfs_resync.py; never installed.
RFS_FAULTS := build/rfs-faults/hakit-rfs
RFS_SOURCES := $(patsubst %,$(RFS_DIR)/%.c,$(RFS_CORE_NAMES) fs fuse_io sync main)
$(RFS_FAULTS): $(RFS_SOURCES) $(RFS_HEADERS) $(STAMPS)/deb
	@mkdir -p $(@D)
	$(CC) -std=gnu11 -Wall -Wextra -Werror -D_GNU_SOURCE -DFUSE_USE_VERSION=314 -DRFS_FAULT_INJECTION -g -O2 \
		-I$(RFS_DIR) $$(pkg-config --cflags fuse3) -o $@ $(RFS_SOURCES) \
		$$(pkg-config --libs fuse3) -llz4 -lssl -lcrypto -lpthread
rfs-faults: $(RFS_FAULTS)
# ---- end of rfs core tests

# ---- fuzzing (docs/security.md, "Fuzzing"): the rfs receiver under libFuzzer with ASan
# and UBSan, the config reader under atheris, the frame codec under a seeded mutation
# loop (tests/fuzz/).  tests/test_fuzz.py
# runs each for a few seconds in `make test`; `make fuzz` runs each for FUZZ_SECONDS,
# keeping what it learnt in build/fuzz/corpus/ and what fails in build/fuzz/crashes/.
FUZZ := build/fuzz
FUZZ_SECONDS ?= 600
FUZZ_CFLAGS := -std=gnu11 -Wall -Wextra -Werror -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer \
	-fsanitize=address,undefined -fno-sanitize-recover=all -I$(RFS_DIR) -I$(RFS_DIR)/tests
FUZZ_OBJS := $(patsubst %,$(FUZZ)/obj/%.o,$(RFS_CORE_NAMES) rfs_test)

$(FUZZ)/obj/%.o: $(RFS_DIR)/%.c $(RFS_HEADERS) $(STAMPS)/deb
	@mkdir -p $(@D)
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<
$(FUZZ)/obj/%.o: $(RFS_DIR)/tests/%.c $(RFS_HEADERS) $(STAMPS)/deb
	@mkdir -p $(@D)
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<
$(FUZZ)/fuzz_receiver: $(RFS_DIR)/fuzz/fuzz_receiver.c $(FUZZ_OBJS) $(RFS_HEADERS)
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $(filter-out %.h,$^) -llz4 -lssl -lcrypto -lpthread
# The seeds are generated, so that they follow proto.h.
$(FUZZ)/seeds/rfs_receiver: $(RFS_DIR)/fuzz/rfs_seeds.c $(RFS_HEADERS) $(STAMPS)/deb
	@mkdir -p $(@D)
	clang $(FUZZ_CFLAGS) -o $(FUZZ)/rfs_seeds $< -llz4
	rm -rf $@ && $(FUZZ)/rfs_seeds $@
.SECONDARY: $(FUZZ_OBJS)
fuzz-build: $(FUZZ)/fuzz_receiver $(FUZZ)/seeds/rfs_receiver

fuzz: build fuzz-build
	$(PY) -m tests.fuzz.run --seconds $(FUZZ_SECONDS)
# ---- end of fuzzing

demo: build
	$(VENV)/bin/hakit demo

# ---- packages (docs/packaging.md): one staged tree, a .deb and an RPM of it, into build/pkg/
PKG := build/pkg
PKG_VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
PKG_FILES := $(wildcard packaging/*.sh packaging/*/*)
DEB := $(PKG)/hakit_$(PKG_VERSION)-1_amd64.deb
RPM := $(PKG)/hakit-$(PKG_VERSION)-1.x86_64.rpm

$(PKG)/stage.stamp: $(STAMPS)/build $(PKG_FILES)
	rm -rf $(PKG)/wheel
	$(PY) -m pip wheel -q --disable-pip-version-check --no-build-isolation --no-deps \
		-Cbuild-dir=$(BUILD_DIR) -w $(PKG)/wheel .
	packaging/stage.sh $(PKG)/root $(PKG)/wheel/hakit-$(PKG_VERSION)-*.whl $(VENV)/bin/pip
	@touch $@
$(DEB): $(PKG)/stage.stamp
	packaging/debian/build.sh $(PKG)/root $(PKG_VERSION) $@
$(RPM): $(PKG)/stage.stamp
	packaging/rpm/build.sh $(PKG)/root $(PKG_VERSION) $(PKG)
deb: $(DEB)
rpm: $(RPM)
packages: deb rpm

# BENCHES picks benchmarks (default all), BENCH_ARGS passes options to them, e.g.
# make bench BENCHES=failover BENCH_ARGS="--rounds 10".  The bench packages go through
# the deb stamp's own recipe, with their list and a stamp of their own.
BENCHES ?= heartbeat failover replication database zeroloss reintegration reicap farm farm_scale
bench: build
	@$(MAKE) --no-print-directory STAMPS=$(STAMPS)/bench DEB_PKGS="$(BENCH_DEB_PKGS)" $(STAMPS)/bench/deb
	@for b in $(BENCHES); do echo "== bench/$$b.py"; $(PY) bench/$$b.py $(BENCH_ARGS) || exit 1; done

demo-down: build
	$(VENV)/bin/hakit sim down --name demo

clean:
	rm -rf build $(STAMPS) $(CONSOLE_OUT) console/node_modules
