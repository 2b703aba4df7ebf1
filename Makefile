# Orchard: the two commands of the README are `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: setup run team test lint check bench bench-quick worker parts-map

setup: $(VENV)/.installed

$(VENV)/.installed: requirements/base.txt requirements/dev.txt clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements/dev.txt
	touch $@

## Embedded mode: SQLite, in-memory channel layer, in-process worker, admin + demo data.
## Bound to loopback (HOST=0.0.0.0 to share it), DEBUG off (DEBUG=1 to opt in), a secret of its own.
run: setup
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py bootstrap
	$(BIN)/daphne -b $(HOST) -p $(PORT) config.asgi:application

## Team mode natively on this machine (PostgreSQL + Redis on loopback): SECRET_KEY=... make team
team: setup
	scripts/team.sh

## The whole test suite (SQLite by default; DATABASE_URL/REDIS_URL/BROKER_URL pick real services).
test: setup
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	DJANGO_SETTINGS_MODULE=config.settings.test $(BIN)/mypy ml apps/core

check: setup
	DJANGO_SETTINGS_MODULE=config.settings.test $(BIN)/python manage.py check
	DJANGO_SETTINGS_MODULE=config.settings.test $(BIN)/python manage.py makemigrations --check --dry-run
	DJANGO_SETTINGS_MODULE=config.settings.test $(BIN)/python manage.py spectacular --validate --fail-on-warn --file /dev/null
	DJANGO_SETTINGS_MODULE=config.settings.prod SECRET_KEY=ci-$$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n') \
		ALLOWED_HOSTS=orchard.example.com $(BIN)/python manage.py check --deploy --fail-level WARNING

## A worker for one host queue (team mode): make worker QUEUE=cpu
worker: setup
	$(BIN)/python manage.py orchard_worker --queue $(or $(QUEUE),cpu)

bench: setup
	$(BIN)/python -m bench

bench-quick: setup
	$(BIN)/python -m bench --quick

## Redraw the parts map (docs/architecture.md) from the imports; the check runs in the tests.
parts-map: setup
	$(BIN)/python scripts/partsmap.py --write
