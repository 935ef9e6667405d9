# Tether — the commands a newcomer needs: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
WEB_WORKERS ?= 1

.PHONY: help install run serve test chaos bench bench-ab bench-coordinator bench-hub bench-soak bench-events bench-tasks migrate demo clean

help:
	@echo "make run    — install, migrate, load demo data and start Tether on http://$(HOST):$(PORT) with its jobs and a simulated fleet"
	@echo "make serve  — production: uvicorn on http://$(HOST):$(PORT), SERVE_WORKERS processes (config/serve.py), SERVE_DB_CONNECTIONS database connections in all"
	@echo "make test   — run the test suite (PostgreSQL and Redis when reachable, else SQLite)"
	@echo "make chaos  — the fault scenarios against real servers: 64 agents, stream failures, Redis restarted and hung"
	@echo "make bench  — REST API throughput and latency over HTTP vs raw SQL (needs DATABASE_URL, REDIS_URL)"
	@echo "make bench-ab BASE=<rev> — CPU per request (server, PostgreSQL), this checkout against another commit, side by side"
	@echo "make bench-coordinator COORDINATOR=<checkout of oib/AITBC> — Tether against the AITBC agent coordinator, the same load (req/s, CPU per request)"
	@echo "make bench-hub  — CPU the event hub spends receiving a live message: its own read vs channels-redis's receive (needs REDIS_URL)"
	@echo "make bench-soak — make bench, then 5 minutes checking the event log's order under load"
	@echo "make bench-dashboard — render time of each dashboard page and analytics endpoint with 100k assignments, 1M events"
	@echo "make bench-tasks — 2,000 tasks batch-submitted, claimed and completed by 16 agents over HTTP; the dispatcher alone"

# The agent SDK and the `tether` command (client/) install editable beside the server: its tests
# run in the suite, and simulate_agents is written on it.
$(VENV)/.installed: requirements.txt client/pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip --version >/dev/null 2>&1 || $(PY) -m ensurepip >/dev/null  # a venv made by `uv venv` has no pip
	@$(PY) -m pip install -q --disable-pip-version-check uv
	@$(VENV)/bin/uv pip install -q --python $(PY) -r requirements.txt -e ./client
	@touch $@

install: $(VENV)/.installed

migrate: install
	$(PY) manage.py migrate --no-input

demo: migrate
	$(PY) manage.py load_demo

# The whole living system: web server, background jobs (a Celery worker and beat with a broker; inside
# the web process in embedded mode) and a simulated fleet of agents. Ctrl-C stops all of it.
# SIMULATOR_ARGS="--crash-every 20" tunes the fleet; SIMULATOR=0 starts no simulator.
SIMULATOR ?= 1
SIMULATOR_ARGS ?=

run: demo
	@$(PY) manage.py collectstatic --no-input -v0
	@$(PY) manage.py ensure_operator
	$(PY) -m config.launcher --host $(HOST) --port $(PORT) $(if $(filter 0,$(SIMULATOR)),--no-simulator) --simulator-args "$(SIMULATOR_ARGS)"

# Production serving (README, "Running on PostgreSQL and Redis"): uvicorn, HTTP and WebSockets on
# one port, SERVE_WORKERS processes (one per CPU by default), each with a listening socket of its own
# (SO_REUSEPORT, config/serve.py) so that the kernel spreads connections evenly over them. Each process has psycopg's connection
# pool (on by default with PostgreSQL), and together they hold at most SERVE_DB_CONNECTIONS
# PostgreSQL connections: each worker's pool gets an equal share (at least 2). The Celery worker and
# beat are started beside it (README). GET /metrics sums the workers' request histograms from
# PROMETHEUS_MULTIPROC_DIR (emptied at start: prometheus_client's multiprocess mode, see
# dashboard/metrics.py).
SERVE_WORKERS ?= $(shell nproc 2>/dev/null || echo 2)
SERVE_DB_CONNECTIONS ?= 32
SERVE_POOL_SIZE = $(shell n=$$(( $(SERVE_DB_CONNECTIONS) / $(SERVE_WORKERS) )); [ $$n -ge 2 ] && echo $$n || echo 2)
PROMETHEUS_MULTIPROC_DIR ?= var/prometheus
serve: migrate
	@$(PY) manage.py collectstatic --no-input -v0
	@rm -rf $(PROMETHEUS_MULTIPROC_DIR) && mkdir -p $(PROMETHEUS_MULTIPROC_DIR)
	PROMETHEUS_MULTIPROC_DIR=$(PROMETHEUS_MULTIPROC_DIR) TETHER_DB_POOL=1 TETHER_DB_POOL_MAX_SIZE=$(SERVE_POOL_SIZE) \
		$(PY) -m config.serve --host $(HOST) --port $(PORT) --workers $(SERVE_WORKERS)

# The fault scenarios of issue 10 against real servers (make serve, daphne) as subprocesses: 64
# agents through make serve, every stream failure under uvicorn and daphne, Redis restarted and hung
# (a redis-server of its own). Bounded (a few minutes), loopback only; needs PostgreSQL and Redis.
CHAOS_TESTS = tests/test_serve.py tests/dashboard/test_stream_faults.py tests/dashboard/test_redis_faults.py
chaos: install
	$(PY) -m pytest $(CHAOS_TESTS) $(PYTEST_ARGS)

# PYTEST_ARGS="-k fencing" narrows a run; CI passes --create-db (a fresh test database every time).
test: install
	$(PY) -m pytest $(PYTEST_ARGS)

# 50 WebSocket subscribers while changes are made at 200/s (needs DATABASE_URL and REDIS_URL: use a
# scratch database). Loopback only, stops by itself. BENCH_ARGS="--seconds 30 --instances 2" etc.
bench-events: install
	$(PY) tests/bench/bench_events.py $(BENCH_ARGS)

# Starts uvicorn on 127.0.0.1:$(BENCH_PORT) against <DATABASE_URL's name>_bench; stops it when done.
BENCH_PORT ?= 8101
BENCH_WORKERS ?= 2
bench: install
	BENCH_PORT=$(BENCH_PORT) BENCH_WORKERS=$(BENCH_WORKERS) $(PY) tests/bench/api_bench.py

# The same, then a soak of BENCH_SOAK_SECONDS (default 300): 32 agents take and release at full speed
# while a reader checks the event log stays gap-free and in order (invariant 4).
BENCH_SOAK_SECONDS ?= 300
bench-soak: install
	BENCH_PORT=$(BENCH_PORT) BENCH_WORKERS=$(BENCH_WORKERS) BENCH_SOAK_SECONDS=$(BENCH_SOAK_SECONDS) $(PY) tests/bench/api_bench.py

# The CPU one request costs (server and PostgreSQL, from /proc), this checkout against BASE, two
# `make serve` side by side with requests interleaved so both see the same machine (±15% between
# runs minutes apart here). BASE is a git revision; BENCH_AB_N requests of each kind (default 400).
bench-ab: install
	BENCH_AB_BASE=$(BASE) $(PY) tests/bench/bench_ab.py

# The CPU the event hub spends receiving a live message: its own read of its channel against
# channels-redis's receive, alternating (needs REDIS_URL; dashboard/hub.py).
bench-hub: install
	$(PY) tests/bench/bench_hub_read.py

# Tether (make serve, one worker) against the AITBC agent coordinator (one uvicorn process, its Redis
# database BENCH_COORD_REDIS_DB, default 14) on this machine: register, heartbeat, get agent and discover,
# the same requests from the same load generator, interleaved rounds (docs/bench-api.md). COORDINATOR
# is a checkout of github.com/oib/AITBC (its root or apps/agent-coordinator): its code stays there; its
# packages go into var/coordinator-venv. BENCH_COORD_N, BENCH_COORD_AGENTS, BENCH_COORD_ROUNDS size it.
bench-coordinator: install
	BENCH_COORDINATOR=$(COORDINATOR) $(PY) tests/bench/bench_coordinator.py

# Tasks end to end over HTTP (uvicorn on 127.0.0.1:$(BENCH_TASKS_PORT), database <name>_taskbench) and
# the dispatcher alone. BENCH_TASKS, BENCH_AGENTS, BENCH_TASK_CAPACITY size it.
BENCH_TASKS_PORT ?= 8102
bench-tasks: install
	BENCH_PORT=$(BENCH_TASKS_PORT) BENCH_WORKERS=$(BENCH_WORKERS) $(PY) tests/bench/bench_tasks.py

clean:
	rm -rf $(VENV) staticfiles .pytest_cache

# Dashboard: render time of every page and analytics endpoint with 100,000 assignments (10,000 live),
# 1,000,000 events and their rollups (scratch database <name>_dashbench beside DATABASE_URL's), and
# screenshots with the demo data (docs/*.png).
.PHONY: bench-dashboard screenshot-dashboard
bench-dashboard: install
	$(PY) tests/bench/bench_dashboard.py

screenshot-dashboard: install
	$(PY) tests/bench/screenshot_dashboard.py
