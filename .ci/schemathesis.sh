#!/usr/bin/env bash
# Property-based checks of the main API: schemathesis on /api/schema/ against a live daphne.
#
# A fresh embedded installation (SQLite, no in-process worker) in a temporary directory, whatever
# the caller exports; a project admin (not a global admin) and their token; a bounded run:
# SCHEMATHESIS_MAX_TIME seconds of testing (default 180, so the whole script stays under 5 minutes
# on 2 cores). Exits non-zero on any server error, any answer that violates the schema, and any
# request that violates the schema but is accepted.
#
#   SCHEMATHESIS_PORT          port of the server (default: a free one)
#   SCHEMATHESIS_MAX_TIME      time budget of the run in seconds (default 180)
#   SCHEMATHESIS_MAX_EXAMPLES  test cases per operation and phase (default 20)
#   SCHEMATHESIS_WORKERS       concurrent workers (default 2)
#   SCHEMATHESIS_REPORT_DIR    keep the JUnit and NDJSON reports there (default: not kept)
#   SCHEMATHESIS_DATABASE_URL  a PostgreSQL database for the server instead of SQLite (created if
#                              missing, and EMPTIED: never point it at data you keep). PostgreSQL
#                              refuses what SQLite takes (NUL characters, 64-bit overflows).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1

ROOT="$(pwd)"
PY="$ROOT/.venv/bin/python"
ST="$ROOT/.venv/bin/schemathesis"
PORT="${SCHEMATHESIS_PORT:-$($PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
MAX_TIME="${SCHEMATHESIS_MAX_TIME:-180}"
MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-20}"
WORKERS="${SCHEMATHESIS_WORKERS:-2}"
WORK="$(mktemp -d)"
SERVER_PID=""

cleanup() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# The embedded mode, isolated from the services and data of the rest of CI.
unset DATABASE_URL REDIS_URL BROKER_URL CHANNEL_LAYER
if [ -n "${SCHEMATHESIS_DATABASE_URL:-}" ]; then
  export DATABASE_URL="$SCHEMATHESIS_DATABASE_URL"
fi
export ORCHARD_DATA_DIR="$WORK/data"
export DJANGO_SETTINGS_MODULE=config.settings.dev
export INPROCESS_WORKER=0
export ORCHARD_DEMO_HOOKS=""
export ORCHARD_ADMIN_PASSWORD="admin-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"

echo "== schemathesis: a fresh installation in $WORK, server on 127.0.0.1:$PORT"
if [ -n "${DATABASE_URL:-}" ]; then
  $PY - <<'PY'
import os
from urllib.parse import urlparse

import psycopg

url = urlparse(os.environ["DATABASE_URL"])
name = url.path.lstrip("/")
server = url._replace(path="/postgres").geturl()
with psycopg.connect(server, autocommit=True) as conn:
    if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
        conn.execute(f'CREATE DATABASE "{name}"')
PY
fi
$PY manage.py migrate --noinput -v0
if [ -n "${DATABASE_URL:-}" ]; then
  $PY manage.py flush --noinput -v0
fi
$PY manage.py bootstrap >/dev/null

# A project admin who is no global admin, their project (with the demo datasets) and a token.
$PY - >"$WORK/credentials" <<'PY'
import django

django.setup()
from apps.accounts import services  # noqa: E402
from apps.datasets.demo import create_demo_datasets  # noqa: E402

user = services.user_create(username="fuzzer", password="fuzzer-password-0123456789")
project = services.project_create(actor=user, name="Fuzz")
create_demo_datasets(project=project, actor=user)  # something to list, read and split
print(project.pk)
print(services.token_pair_for(user=user, project=project)["access"])
PY
PROJECT="$(sed -n 1p "$WORK/credentials")"
TOKEN="$(sed -n 2p "$WORK/credentials")"
# 413 is a rejection too: a generated body over API_MAX_BODY_BYTES is refused before parsing.
cat >"$WORK/schemathesis.toml" <<TOML
[parameters]
"path.project_id" = "$PROJECT"

[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]
TOML

"$ROOT/.venv/bin/daphne" -b 127.0.0.1 -p "$PORT" config.asgi:application >"$WORK/server.log" 2>&1 &
SERVER_PID=$!

REPORT=()
if [ -n "${SCHEMATHESIS_REPORT_DIR:-}" ]; then
  REPORT=(--report junit,ndjson --report-dir "$(realpath -m "$SCHEMATHESIS_REPORT_DIR")")
fi

status=0
# From the temporary directory: schemathesis and hypothesis keep their caches in the cwd.
# The fuzzer's own project is kept (deleting it would turn every later request into a 404).
cd "$WORK"
timeout "$((MAX_TIME + 90))" "$ST" --config-file "$WORK/schemathesis.toml" --no-color run \
  "http://127.0.0.1:$PORT/api/schema/" \
  --wait-for-schema 60 \
  -H "Authorization: Bearer $TOKEN" \
  --checks not_a_server_error,response_schema_conformance,negative_data_rejection \
  --exclude-operation-id projects_destroy \
  --max-examples "$MAX_EXAMPLES" \
  --max-time "$MAX_TIME" \
  --workers "$WORKERS" \
  --suppress-health-check all \
  "${REPORT[@]}" || status=$?

if grep -q "Internal Server Error\|Traceback" "$WORK/server.log"; then
  echo "== server errors logged by daphne:"
  grep -B2 -A30 "Traceback" "$WORK/server.log" | head -200
  status=1
fi
exit "$status"
