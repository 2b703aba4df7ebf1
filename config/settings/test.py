"""Test settings: the same environment-driven configuration, with fast hashing and no
in-process worker (tests start workers themselves)."""

from pathlib import Path

from .base import *  # noqa: F403
from .base import DATA_DIR, env

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
INPROCESS_WORKER = False
# Resume checkpoints after every epoch, so the kill-and-resume tests have one to resume from.
TASK_CHECKPOINT_INTERVAL_S = env.float("TASK_CHECKPOINT_INTERVAL_S", default=0)
DATA_DIR = Path(env("ORCHARD_DATA_DIR", default=str(DATA_DIR.parent / "var" / "test")))
MEDIA_ROOT = DATA_DIR / "media"
REST_FRAMEWORK = {**REST_FRAMEWORK}  # noqa: F405
REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"] = {"login": "5/min"}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    # A file, not pytest-django's shared in-memory database: worker threads in transactional
    # tests then lock and wait like real processes instead of failing with "table is locked".
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test.sqlite3")}  # noqa: F405
# The in-process suite runs without the psycopg pool: its threads (channels' test communicators,
# in-process workers, asgiref executors) never finish a request, so they never hand their
# connection back and a pool of DB_POOL_MAX_SIZE runs dry. The deployed suite (tests/deployed,
# prod settings, real processes) runs with the pool.
DATABASES["default"].get("OPTIONS", {}).pop("pool", None)  # noqa: F405
