"""A throwaway database for the benchmarks that need Django: PostgreSQL on loopback when it
answers (database `orchard_bench_<pid>`, dropped at exit), else a temporary SQLite file."""

import atexit
import os
import tempfile

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

_ready = None


def _drop(name: str) -> None:
    try:
        from django.db import connections

        connections.close_all()
        import psycopg

        with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=2) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    except Exception:
        pass


def setup() -> str:
    """Configure and migrate the bench database once; returns its vendor."""
    global _ready
    if _ready:
        return _ready
    url = os.environ.get("BENCH_DATABASE_URL")
    if not url:
        try:
            import psycopg

            from bench.harness import db_name

            name = db_name(str(os.getpid()))  # one per run: parallel runs cannot collide
            with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=2) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name}")
                conn.execute(f"CREATE DATABASE {name}")
            atexit.register(_drop, name)
            url = f"postgres://postgres@127.0.0.1:5432/{name}"
        except Exception:
            url = f"sqlite:///{tempfile.mkdtemp(prefix='orchard-bench-')}/bench.sqlite3"
    os.environ["DATABASE_URL"] = url
    # Measure the production default, not the test settings' checkpoint after every epoch.
    os.environ.setdefault("TASK_CHECKPOINT_INTERVAL_S", "30")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
    os.environ.setdefault("ORCHARD_DATA_DIR", tempfile.mkdtemp(prefix="orchard-bench-data-"))
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    from django.db import connection

    _ready = connection.vendor
    return _ready
