#!/usr/bin/env bash
# Team mode natively on one machine: PostgreSQL + Redis (already running), daphne, and one
# orchard_worker per host queue (cpu, plus gpu-N for every NVIDIA GPU NVML reports). The same
# processes as docker/compose.yml. Ctrl-C stops them all.
#
#   SECRET_KEY=... scripts/team.sh            # or: make team
#
# Settings (environment): DATABASE_URL, REDIS_URL, BROKER_URL (redis:// or amqp://), HOST, PORT,
# ALLOWED_HOSTS, ORCHARD_DATA_DIR, CPU_WORKER_THREADS; everything else as in the README.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DAPHNE=${DAPHNE:-.venv/bin/daphne}

: "${SECRET_KEY:?set SECRET_KEY (team mode never uses a generated or default secret)}"
export SECRET_KEY
export DJANGO_SETTINGS_MODULE=${DJANGO_SETTINGS_MODULE:-config.settings.prod}
export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/orchard}
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
export BROKER_URL=${BROKER_URL:-redis://127.0.0.1:6379/1}
export ALLOWED_HOSTS=${ALLOWED_HOSTS:-localhost,127.0.0.1}
# Plain HTTP on loopback here; put a TLS proxy in front (and TRUSTED_PROXIES) for real use.
export SECURE_SSL_REDIRECT=${SECURE_SSL_REDIRECT:-false}
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}

"$PY" - <<'PY'
import os
from urllib.parse import urlparse

import psycopg

url = urlparse(os.environ["DATABASE_URL"])
name = url.path.lstrip("/")
admin = url._replace(path="/postgres").geturl()
with psycopg.connect(admin, autocommit=True) as conn:
    if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
        conn.execute(f'CREATE DATABASE "{name}"')
PY
"$PY" manage.py migrate --noinput
"$PY" manage.py collectstatic --noinput --verbosity 0
"$PY" manage.py bootstrap

pids=()
cleanup() {
  trap - EXIT INT TERM
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
trap cleanup EXIT INT TERM

"$DAPHNE" -b "$HOST" -p "$PORT" config.asgi:application &
pids+=($!)
"$PY" manage.py orchard_worker --queue cpu --threads "${CPU_WORKER_THREADS:-2}" &
pids+=($!)
gpus=$("$PY" -c "
try:
    import pynvml
    pynvml.nvmlInit()
    print(pynvml.nvmlDeviceGetCount())
except Exception:
    print(0)
")
for ((i = 0; i < gpus; i++)); do
  "$PY" manage.py orchard_worker --queue "gpu-$i" &
  pids+=($!)
done
echo "team mode on http://$HOST:$PORT/ (daphne, cpu worker, $gpus GPU worker(s)); Ctrl-C stops"
wait -n "${pids[@]}"
