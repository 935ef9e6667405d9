# Tether — the commands a newcomer needs: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
WEB_WORKERS ?= 1

.PHONY: help install run serve test migrate demo clean

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

clean:
	rm -rf $(VENV) staticfiles .pytest_cache

# Dashboard: render time of every page with 10,000 live assignments and 1,000,000 events (scratch
# database <name>_bench beside DATABASE_URL's), and screenshots with demo-like data (docs/*.png).
.PHONY: bench-dashboard screenshot-dashboard
bench-dashboard: install
	$(PY) tests/bench/bench_dashboard.py

screenshot-dashboard: install
	$(PY) tests/bench/screenshot_dashboard.py
