# evenflow: two commands on a fresh machine — `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
N ?= 1000000
SEED ?= 7
FRAUD := examples/fraud

.PHONY: demo test test-all bench bench-backfill bench-neardup bench-feast bench-serve bench-landing bench-contracts bench-stream bench-stream-venvs lint install services browser clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# The fraud example end to end: generate N transactions, build the training set, train a model.
demo: install
	$(PY) $(FRAUD)/generate.py --out $(FRAUD)/data --n $(N) --seed $(SEED)
	$(VENV)/bin/evenflow training-set $(FRAUD)/pipeline.yaml
	$(VENV)/bin/evenflow report $(FRAUD)/pipeline.yaml
	$(PY) $(FRAUD)/train.py $(FRAUD)/out/fraud_v1/training_set.parquet

# Starts PostgreSQL and Redis if they are down (tests use fresh schemas and key prefixes).
services:
	@pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1 || \
	  pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start || true
	@redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 || \
	  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
	    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
	@for i in 1 2 3 4 5 6 7 8 9 10; do pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1 && break; sleep 1; done

# Headless Chromium and its driver for the dataset-report test (Debian packages; CI runs as root).
browser:
	@(command -v chromium && command -v chromedriver) >/dev/null || \
	  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver)

test: install services browser
	$(PY) -m pytest -m "not slow"

test-all: install services browser
	$(PY) -m pytest

# Windowed features at 1M label times over 10M events (about 15 minutes; QUICK=1 for a smoke run).
bench: install
	$(PY) benchmarks/windowed_features.py $(if $(QUICK),--quick,--events 10000000 --labels 1000000 --cards 200000)

# Point-in-time join against Feast's offline stores; Feast lives in its own virtualenv.
FEAST_VENV := benchmarks/.venvs/feast
$(FEAST_VENV)/.installed:
	$(PYTHON) -m venv $(FEAST_VENV)
	$(FEAST_VENV)/bin/pip install --quiet "feast[duckdb]==0.67.0" psutil
	touch $@

bench-feast: install $(FEAST_VENV)/.installed
	$(PY) benchmarks/feast_pit/drive.py --sizes 100k --keys uniform,zipf --stores file,duckdb,evenflow
	$(PY) benchmarks/feast_pit/drive.py --sizes 20k,30k,50k --keys zipf --stores file,duckdb,evenflow
	$(PY) benchmarks/feast_pit/drive.py --sizes 1m --keys uniform --stores file,duckdb,evenflow
	$(PY) benchmarks/feast_pit/drive.py --table

# Online feature reads over HTTP at 500 requests/s: evenflow serve (memory, Redis) vs feast serve
# (Redis, SQLite online store), open-loop load generator in its own process (about 4 minutes).
$(FEAST_VENV)/.redis-installed: $(FEAST_VENV)/.installed
	$(FEAST_VENV)/bin/pip install --quiet "feast[redis]==0.67.0"
	touch $@

bench-serve: install services $(FEAST_VENV)/.redis-installed
	$(PY) benchmarks/serve_read.py --rate 500 --seconds 30

# Cold start: vectorized backfill of the online state vs replaying the history event by event.
bench-backfill: install
	$(PY) benchmarks/backfill_bench.py --n $(if $(QUICK),20000,100000)

# Exactly-once Delta landing from a Redis Stream at a 1 s commit interval vs plain appends.
bench-landing: install services
	$(PY) benchmarks/delta_landing.py --events $(if $(QUICK),20000,100000) --cards 10000 --interval 1s

# 20 contract rules over 10M rows against Pandera (pandas and Polars backends) and Great
# Expectations, each in its own virtualenv (QUICK=1: 1M rows).
PANDERA_VENV := benchmarks/.venvs/pandera
GX_VENV := benchmarks/.venvs/gx
$(PANDERA_VENV)/.installed:
	$(PYTHON) -m venv $(PANDERA_VENV)
	$(PANDERA_VENV)/bin/pip install --quiet "pandera[polars]==0.35.0" "pandas==3.1.1" "polars==2.1.0" "pyarrow==26.0.1"
	touch $@
$(GX_VENV)/.installed:
	$(PYTHON) -m venv $(GX_VENV)
	$(GX_VENV)/bin/pip install --quiet "great_expectations==1.24.1" "pandas==3.1.1" "pyarrow==26.0.1"
	touch $@

bench-contracts: install $(PANDERA_VENV)/.installed $(GX_VENV)/.installed
	$(PY) benchmarks/contracts_bench.py $(if $(QUICK),--quick,--rows 10000000)

# Near-duplicate text (MinHash LSH) against datasketch in its own virtualenv: 1M texts (QUICK=1: 100k).
DATASKETCH_VENV := benchmarks/.venvs/datasketch
$(DATASKETCH_VENV)/.installed:
	$(PYTHON) -m venv $(DATASKETCH_VENV)
	$(DATASKETCH_VENV)/bin/pip install --quiet "datasketch==2.0.0" numpy
	touch $@

bench-neardup: install $(DATASKETCH_VENV)/.installed
	$(PY) benchmarks/neardup_bench.py $(if $(QUICK),--quick)

# Stream engine in-process on the fraud card features, against River and Bytewax (each in its own
# virtualenv) and a plain-Python loop: 1M events (QUICK=1: 100k), per-event latency, profile.
BYTEWAX_VENV := benchmarks/.venvs/bytewax
RIVER_VENV := benchmarks/.venvs/river
$(BYTEWAX_VENV)/.installed:
	$(PYTHON) -m venv $(BYTEWAX_VENV)
	$(BYTEWAX_VENV)/bin/pip install --quiet "bytewax==0.21.1"
	touch $@
$(RIVER_VENV)/.installed:
	$(PYTHON) -m venv $(RIVER_VENV)
	$(RIVER_VENV)/bin/pip install --quiet "river==0.26.1"
	touch $@
bench-stream-venvs: $(BYTEWAX_VENV)/.installed $(RIVER_VENV)/.installed

bench-stream: install bench-stream-venvs
	$(PY) benchmarks/stream_engine.py --profile $(if $(QUICK),--quick)

lint: install
	$(VENV)/bin/ruff check evenflow tests examples benchmarks
	$(VENV)/bin/mypy

clean:
	rm -rf $(FRAUD)/data $(FRAUD)/out out
