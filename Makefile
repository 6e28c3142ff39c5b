# The two commands of the README: `make run` and `make test`. Everything a fresh Debian
# machine with Python 3.11 lacks is installed here, never by hand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: run test lint bench bench-peers bench-artillery node-deps system-deps install ext clean

$(STAMP): pyproject.toml setup.py ext/*.pyx ext/*.pxd
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: system-deps $(STAMP)

# apt-get only for what is missing: redis-server (the suite and `make run` start private ones),
# chromium (the browser test), wrk (the REST benchmark).
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v wrk >/dev/null || missing="$$missing wrk"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

ext: $(STAMP)
	$(PY) setup.py build_ext --inplace -q

run: install
	$(BIN)/ordertrack dev

test: install
	$(BIN)/ruff check src tests bench
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install
	$(PY) -m bench.capacity

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

clean:
	rm -rf $(VENV) build src/*.egg-info ext/*.c src/ordertrack/*.so .pytest_cache
