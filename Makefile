# Tether — the commands a newcomer needs: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
WEB_WORKERS ?= 1

.PHONY: help install run serve test migrate demo clean bench-events

help:
	@echo "make run    — install, migrate, load demo data and start Tether on http://$(HOST):$(PORT)"
	@echo "make test   — run the test suite (PostgreSQL and Redis when reachable, else SQLite)"

$(VENV)/.installed: requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check uv
	@$(VENV)/bin/uv pip install -q --python $(PY) -r requirements.txt
	@touch $@

install: $(VENV)/.installed

migrate: install
	$(PY) manage.py migrate --no-input

demo: migrate
	$(PY) manage.py load_demo

run: demo
	@$(PY) manage.py collectstatic --no-input -v0
	@$(PY) manage.py ensure_operator
	@echo "Tether on http://$(HOST):$(PORT)  (admin: http://$(HOST):$(PORT)/admin/, health: /health) — Ctrl-C stops it"
	$(VENV)/bin/daphne -b $(HOST) -p $(PORT) config.asgi:application

test: install
	$(PY) -m pytest

# 50 WebSocket subscribers while changes are made at 200/s (needs DATABASE_URL and REDIS_URL: use a
# scratch database). Loopback only, stops by itself. BENCH_ARGS="--seconds 30 --instances 2" etc.
bench-events: install
	$(PY) tests/bench/bench_events.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) staticfiles .pytest_cache
