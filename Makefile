# The two commands of the README: `make run` and `make test`. Everything a fresh Debian
# machine with Python 3.11 lacks is installed here, never by hand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
# the suite runs on TEST_WORKERS pytest-xdist workers: most of its time is spent waiting on the
# processes it starts (pods, Redis topologies, Chromium), so 4 workers on this 2-core VM take
# the whole suite from ~9 min to ~4 min; each worker has its own private redis-server, every
# process binds a free port and every store test its own PostgreSQL schema. TEST_WORKERS=0 runs
# it in one process.
TEST_WORKERS ?= 4
XDIST := -n $(TEST_WORKERS)
# the push pod's tests that start real pods: run a second time against the pure-Python twins
# (ORDERTRACK_PURE_PYTHON=1), as uvloop runs its suite twice; the unit tests of the Cython
# parts already run both implementations side by side
PUSH_POD_TESTS := tests/test_push_pod.py tests/test_push_edges.py tests/test_push_rfc6455.py tests/test_subscription.py \
                  tests/test_push_bad_input.py tests/test_push_handshake.py tests/test_flags.py \
                  tests/test_ingest.py tests/test_order_state.py tests/test_auth_settings.py \
                  tests/test_redis_tls.py tests/test_push_resync.py tests/test_push_mass_close.py


.PHONY: lock soak run test test-fast bench-smoke coverage lint bench bench-check bench-baseline bench-valgrind bench-load bench-peers bench-artillery node-deps system-deps test-db install ext clean

EXT_SOURCES := $(wildcard ext/ordertrack/push/*.pxd) src/ordertrack/push/connection.py src/ordertrack/push/fanout.py src/ordertrack/push/pubsub_reader.py src/ordertrack/push/timer_wheel.py

# Installs repeat: every package (the build's too) comes from requirements.lock, exact versions
# with hashes, installed by uv (pinned below; it reads only PyPI, so the hashes always match).
# pyproject.toml keeps its ranges for those who install ordertrack as a library.
# Upgrading is one deliberate command: `make lock` (then commit requirements.lock).
UV_VERSION := 0.13.9
UV         := $(BIN)/uv
LOCK_ARGS  := pyproject.toml requirements/build.in --extra test --extra bench --generate-hashes \
              --python-version 3.11 --python-platform x86_64-manylinux_2_28 --quiet

$(STAMP): pyproject.toml setup.py requirements.lock $(EXT_SOURCES)
	@echo "installing: .venv with requirements.lock's packages, and ordertrack (editable, its Cython extensions built)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q uv==$(UV_VERSION)
	$(UV) pip install --python $(PY) --quiet --require-hashes -r requirements.lock
	$(UV) pip install --python $(PY) --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# a new lock: the newest releases pyproject.toml's ranges allow (review the diff, run make test)
lock:
	test -x $(UV) || { test -x $(PY) || $(PYTHON) -m venv $(VENV); $(PY) -m pip install -q uv==$(UV_VERSION); }
	$(UV) pip compile $(LOCK_ARGS) --upgrade -o requirements.lock

install: system-deps $(STAMP)

# apt-get only for what is missing: redis-server (the suite and `make run` start private ones),
# chromium (the browser test), wrk (the REST benchmark), promtool (checks and unit-tests
# deploy/prometheus/*.yaml: Debian ships it in `prometheus`, taken without its recommends,
# i.e. without node-exporter).
system-deps:
	@missing=""; bare=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v wrk >/dev/null || missing="$$missing wrk"; \
	command -v promtool >/dev/null || bare="prometheus"; \
	if [ -n "$$missing$$bare" ]; then \
	  echo "installing:$$missing $$bare"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  APT="$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq"; \
	  $$SUDO apt-get update -qq && \
	  { [ -z "$$missing" ] || $$APT $$missing; } && \
	  { [ -z "$$bare" ] || $$APT --no-install-recommends $$bare; }; \
	fi

# PostgreSQL for the store tests, only when neither TEST_DATABASE_URL nor a server on
# 127.0.0.1:5432 is there (CI has one: then this changes nothing). See scripts/test-postgres.
test-db:
	@scripts/test-postgres

# rebuild the Cython extensions in place after editing ext/ (Cython comes with '.[test]')
ext: $(STAMP)
	$(PY) setup.py -q build_ext --inplace

run: install
	$(BIN)/ordertrack dev

# lint: ruff, and mypy over the package and the Cython parts' stubs (pyproject.toml [tool.mypy])
test: install test-db
	$(BIN)/ruff check src tests bench
	$(PY) -m mypy
	$(PY) -m pytest $(XDIST) $(PYTEST_ARGS)
	ORDERTRACK_PURE_PYTHON=1 $(PY) -m pytest $(XDIST) $(PUSH_POD_TESTS) $(PYTEST_ARGS)

# the edit loop: unit tests and the contract tests against one shared process (no test starting
# pods, an API or a gateway of its own, no Redis topology; those are marked `system`, see
# tests/conftest.py); lint included
test-fast: install test-db
	$(BIN)/ruff check src tests bench
	$(PY) -m mypy
	$(PY) -m pytest $(XDIST) -m 'not system and not bench_smoke' $(PYTEST_ARGS)

# the whole suite under coverage.py, the processes it starts (pods, API, gateway, ingest)
# measured too (pyproject.toml [tool.coverage.*]); an HTML report in build/coverage/html, the
# ten least covered modules and the total printed. The hot parts (push/connection, fanout,
# pubsub_reader, timer_wheel) are one text compiled and interpreted: the twin pass measures
# that text's lines (the compiled modules are not traced).
coverage: install test-db
	rm -rf build/coverage
	@status=0; $(PY) -m coverage run -m pytest -p no:cacheprovider $(XDIST) $(PYTEST_ARGS) || status=$$?; \
	ORDERTRACK_PURE_PYTHON=1 $(PY) -m coverage run -m pytest -p no:cacheprovider $(XDIST) \
	  $(PUSH_POD_TESTS) tests/test_fanout.py tests/test_wheel.py tests/test_pubsub_reader.py \
	  tests/test_delivery.py tests/test_fanout_connections.py -k 'not extension_is_built' $(PYTEST_ARGS) \
	  || status=$$?; \
	$(PY) -m coverage combine -q && $(PY) -m coverage html -q && \
	$(PY) -m coverage report > build/coverage/report.txt && head -n 12 build/coverage/report.txt && \
	echo "coverage total: $$($(PY) -m coverage report --format=total)% (HTML: build/coverage/html/index.html)"; \
	exit $$status

# the bench harness's load profiles end to end (smoke profile, a peer run): not in `make test`
bench-smoke: install
	$(PY) -m pytest tests/test_bench_smoke.py -m bench_smoke $(PYTEST_ARGS)

# micro-benchmarks of the push pod's hot parts (Cython and twin side by side) and of every
# deterministic hot-part case (bench/bench_parts.py), compared with the baseline stored in
# bench/baseline/: wall time, which informs (a part slower than BENCH_FAIL fails `make bench`:
# twice as slow as the baseline's best round; on the 2-vCPU development VM two runs minutes
# apart, with nothing else running, differ by up to 1.6x, 2026-12-02); then the end-to-end
# capacity run. The gate is `make bench-check` (instruction counts, below).
BENCH_FILES := bench/bench_hotpath.py bench/bench_admission.py bench/bench_parts.py
BENCH_FAIL ?= min:100%
BENCH_OPTS := -p no:cacheprovider -q --benchmark-enable --benchmark-storage=file://bench/baseline \
              --benchmark-group-by=func --benchmark-columns=min,median,ops
bench: install
	$(PY) -m pytest $(BENCH_FILES) $(BENCH_OPTS) --benchmark-compare --benchmark-compare-fail=$(BENCH_FAIL)
	$(PY) -m bench.capacity

# instructions per call of every hot part under valgrind's callgrind (bench/instructions/),
# compared with bench/baseline/instructions.json: a part needing more than
# BENCH_CHECK_THRESHOLD percent more instructions fails; a baseline taken with other Python,
# Cython, valgrind or library versions is refused (exit 2) until `make bench-baseline`.
BENCH_CHECK_THRESHOLD ?= 3
bench-check: install bench-valgrind
	$(PY) -m bench.instructions.runner --threshold $(BENCH_CHECK_THRESHOLD)

# a new baseline, deliberately: instruction counts, then the wall-time baseline of `make bench`
bench-baseline: install bench-valgrind
	$(PY) -m bench.instructions.runner --save
	$(PY) -m pytest $(BENCH_FILES) $(BENCH_OPTS) --benchmark-save=baseline

# valgrind (with its client-request headers) from Debian when missing
bench-valgrind:
	@command -v valgrind >/dev/null && test -e /usr/include/valgrind/callgrind.h || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq valgrind; }

node-deps:
	@command -v npm >/dev/null || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq nodejs npm; }

# The peer servers of the load test (bench/peers/README.md), never part of `make test`:
# nginx + nchan + njs from Debian, the Node peer's pinned packages; then one PASS/FAIL each.
bench-peers: install node-deps
	@command -v nginx >/dev/null && test -e /usr/lib/nginx/modules/ngx_nchan_module.so \
	  && test -e /usr/lib/nginx/modules/ngx_http_js_module.so || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	    --no-install-recommends nginx-light libnginx-mod-nchan libnginx-mod-http-js; }
	cd bench/peers/node_ws && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	$(PY) -m bench.peers.check

# Artillery 2.0.21 (the last release for Node 20), pinned by its lock file, under bench/artillery;
# no install scripts: they would fetch a browser for its Playwright engine, which we do not use.
bench-artillery: install node-deps
	cd bench/artillery && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
# the log's staging load test at this machine's scale: PROFILE=smoke|pod|cluster, OUT=folder
PROFILE ?= smoke
OUT     ?= artifacts/load-$(PROFILE)
bench-load: install
	$(PY) -m bench.load --profile $(PROFILE) --out $(OUT)

# the soak run (never part of `make test`): one pod, CONNECTIONS clients, churn, flag flips and a
# Redis restart for MINUTES; exits non-zero on a lost event or a leak (bench/soak.py)
MINUTES     ?= 30
CONNECTIONS ?= 5000
soak: install
	$(PY) -m bench.soak --minutes $(MINUTES) --connections $(CONNECTIONS)

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
	find ext src -name '*.c' -o -name '*.so' | xargs rm -f
