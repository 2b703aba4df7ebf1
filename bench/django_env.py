"""A throwaway database for the benchmarks that need Django: PostgreSQL on loopback when it
answers (database `orchard_bench`, recreated), else a temporary SQLite file."""

import os
import tempfile

_ready = None


def setup() -> str:
    """Configure and migrate the bench database once; returns its vendor."""
    global _ready
    if _ready:
        return _ready
    url = os.environ.get("BENCH_DATABASE_URL")
    if not url:
        try:
            import psycopg

            with psycopg.connect(
                "postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True, connect_timeout=2
            ) as conn:
                conn.execute("DROP DATABASE IF EXISTS orchard_bench")
                conn.execute("CREATE DATABASE orchard_bench")
            url = "postgres://postgres@127.0.0.1:5432/orchard_bench"
        except Exception:
            url = f"sqlite:///{tempfile.mkdtemp(prefix='orchard-bench-')}/bench.sqlite3"
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
    os.environ.setdefault("ORCHARD_DATA_DIR", tempfile.mkdtemp(prefix="orchard-bench-data-"))
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    from django.db import connection

    _ready = connection.vendor
    return _ready
