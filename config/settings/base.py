"""Settings shared by every run mode, read from the environment (django-environ).

Every variable is documented in the README's Configuration section; defaults give the embedded mode:
SQLite, the in-memory channel layer and an in-process Dramatiq worker.
"""

import os
import secrets
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# Created when the apps load (apps.core.apps), not when settings are imported.
DATA_DIR = Path(env("ORCHARD_DATA_DIR", default=str(BASE_DIR / "var")))


def install_secret(data_dir: Path) -> str:
    """This install's own random secret, made at first start and kept in `<data dir>/secret_key`
    (mode 0600). No usable secret lives in the repository: a key anyone can read would let anyone
    forge admin JWTs for every install. Creation is atomic (write a temporary file, then link it
    into place), so processes starting together agree on one key."""
    path = data_dir / "secret_key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = data_dir / f".secret_key.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(64))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process won the race: use its key
        finally:
            tmp.unlink()
    secret = path.read_text().strip()
    if len(secret) < 50:
        raise ImproperlyConfigured(f"{path} holds no usable secret: delete it to make a new one.")
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
    return secret


# SECRET_KEY (and the JWT signing key, unless JWT_SIGNING_KEY is set) comes from the environment,
# else from the install's generated secret file; prod requires it from the environment.
SECRET_KEY = env("SECRET_KEY", default="") or install_secret(DATA_DIR)
# Django debug mode: a developer opts in, never on a shared network.
DEBUG = env.bool("DEBUG", default=False)
# Host names served (also the browser origins allowed on websockets and labelprop).
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
# Origins trusted for the admin's forms behind a proxy.
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# Origins browsers may open websockets from; clients without an Origin header (SDKs) are allowed.
WEBSOCKET_ALLOWED_ORIGINS = env.list("WEBSOCKET_ALLOWED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",
    # django.contrib.admin whose default site is the operator console (apps/console/site.py):
    # the dashboard on the index, the console pages, project admins let in to their projects only.
    "apps.console.adminconfig.OrchardAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "django_dramatiq",
    "apps.core",
    "apps.accounts",
    "apps.system",
    "apps.datasets",
    "apps.clusters",
    "apps.tasks",
    "apps.training",
    "apps.exports",
    "apps.marketplace",
    "apps.mlbackend",
    "apps.hanami",
    "apps.console",
]

MIDDLEWARE = [
    "apps.core.middleware.BodySizeLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'orchard.sqlite3'}"),
}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the in-process worker write while requests read.
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].setdefault(
        "init_command", "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
    )
    DATABASES["default"]["OPTIONS"].setdefault("timeout", 20)
    # BEGIN IMMEDIATE: a transaction takes the write lock when it starts and waits for it (the
    # timeout above) instead of failing with "database is locked" when it upgrades from reading.
    DATABASES["default"]["OPTIONS"].setdefault("transaction_mode", "IMMEDIATE")
    # A connection's first statement parses the whole schema (1.3 ms): connections stay with the
    # threads that opened them, the server's kept request threads (REQUEST_THREADS_KEPT) and the
    # worker's threads, so at most one per thread (none waits on a server: a file, no sockets).
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=600)
else:
    # Under ASGI every request runs in a pool thread, and a persistent connection stays with its
    # thread: CONN_MAX_AGE=60 let one daphne open 78+ PostgreSQL connections for 40 clients and
    # answer "too many clients". 0 (the default) closes a request's connection when it ends, so a
    # server holds at most one connection per request in flight (and per worker thread).
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=0)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # ...but Django runs each ASGI request's sync code in a thread of its own, so 50 concurrent
    # requests still opened 44 connections. On PostgreSQL a psycopg pool per process bounds them:
    # at most DB_POOL_MAX_SIZE, requests beyond it wait up to DB_POOL_TIMEOUT_S for one (0: off).
    DB_POOL_MAX_SIZE = env.int("DB_POOL_MAX_SIZE", default=10)
    if DB_POOL_MAX_SIZE > 0 and DATABASES["default"]["ENGINE"].endswith("postgresql"):
        DATABASES["default"]["CONN_MAX_AGE"] = 0  # the pool keeps connections, not the threads
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": 1,
            "max_size": DB_POOL_MAX_SIZE,
            "timeout": env.float("DB_POOL_TIMEOUT_S", default=30),
        }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env("STATIC_ROOT", default=str(DATA_DIR / "static")))
MEDIA_ROOT = DATA_DIR / "media"
MEDIA_URL = "media/"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Serve the admin's and the API docs' assets from the installed packages, no collectstatic needed.
WHITENOISE_USE_FINDERS = True

# Request bodies: JSON bodies are capped at API_MAX_BODY_BYTES, uploads (multipart or raw octet
# streams) at UPLOAD_MAX_BYTES; both are refused from Content-Length before the body is read.
API_MAX_BODY_BYTES = env.int("API_MAX_BODY_BYTES", default=10 * 1024 * 1024)
UPLOAD_MAX_BYTES = env.int("UPLOAD_MAX_BYTES", default=2 * 1024 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = API_MAX_BODY_BYTES
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
# A request body up to this size stays in memory as it arrived; a larger one is spooled to a
# temporary file off the event loop (apps.core.asgi). Holds an 8 MiB upload chunk.
REQUEST_BODY_MEMORY_BYTES = env.int("REQUEST_BODY_MEMORY_BYTES", default=16 * 1024 * 1024)
# ...and the bodies a daphne process holds in memory while they arrive, all together (they arrive
# before any check: past it, a body goes to a temporary file as a larger one does).
REQUEST_BODIES_MEMORY_BYTES = env.int("REQUEST_BODIES_MEMORY_BYTES", default=64 * 1024 * 1024)
# Request threads a server process keeps between requests (apps.core.asgi.RequestThreads), each
# with its database connection; requests beyond them at once get a thread of their own.
REQUEST_THREADS_KEPT = env.int("REQUEST_THREADS_KEPT", default=16)
FILE_UPLOAD_TEMP_DIR = None

# Datasets: ZIP limits (zip bombs) and the server folders an admin allows imports from (off when
# empty; the resolved real path must stay inside one of them).
DATASET_ZIP_MAX_MEMBERS = env.int("DATASET_ZIP_MAX_MEMBERS", default=100_000)
DATASET_ZIP_MAX_BYTES = env.int("DATASET_ZIP_MAX_BYTES", default=2 * 1024 * 1024 * 1024)
DATASET_IMPORT_ROOTS = env.list("DATASET_IMPORT_ROOTS", default=[])

# Redis for the cache (throttling) and, by default, the channel layer; empty: in-process ones.
REDIS_URL = env("REDIS_URL", default="")

# Explicit Redis client timeouts: redis-py 8 defaults to a 5 s socket timeout, the same as the
# channel layer's blocking read, so every idle websocket died with "Timeout reading" after ~5 s.
# Reads may wait REDIS_SOCKET_TIMEOUT_S (longer than any blocking read), connects fail fast, and
# idle connections are health-checked and kept alive. A read that does time out raises (no
# retry_on_timeout: a read that never completes would be retried for ever).
REDIS_SOCKET_TIMEOUT_S = env.float("REDIS_SOCKET_TIMEOUT_S", default=30)
REDIS_CLIENT_OPTIONS = {
    "socket_timeout": REDIS_SOCKET_TIMEOUT_S,
    "socket_connect_timeout": env.float("REDIS_CONNECT_TIMEOUT_S", default=5),
    "socket_keepalive": True,
    "health_check_interval": env.int("REDIS_HEALTH_CHECK_S", default=15),
}

CACHES = {
    "default": (
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": REDIS_CLIENT_OPTIONS,
        }
        if REDIS_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

# Channels: "memory" (embedded) or "redis" (team mode; channels-redis on REDIS_URL).
CHANNEL_LAYER = env("CHANNEL_LAYER", default="redis" if REDIS_URL else "memory")
if CHANNEL_LAYER == "redis":
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [
                    {"address": REDIS_URL or "redis://127.0.0.1:6379/0", **REDIS_CLIENT_OPTIONS}
                ],
                "capacity": 1000,
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# Dramatiq: BROKER_URL picks the broker. redis://... (teams), amqp://... (RabbitMQ), or
# "memory" for the embedded in-process broker and worker.
BROKER_URL = env("BROKER_URL", default="memory")
DRAMATIQ_MIDDLEWARE = [
    "dramatiq.middleware.AgeLimit",
    "dramatiq.middleware.TimeLimit",
    "dramatiq.middleware.Callbacks",
    "dramatiq.middleware.Retries",
    "django_dramatiq.middleware.DbConnectionsMiddleware",
]
if BROKER_URL.startswith("redis"):
    DRAMATIQ_BROKER = {
        # Dramatiq's RedisBroker whose idle consumers wake on enqueue instead of polling.
        "BROKER": "apps.core.broker.WakingRedisBroker",
        "OPTIONS": {"url": BROKER_URL},
        "MIDDLEWARE": DRAMATIQ_MIDDLEWARE,
    }
elif BROKER_URL.startswith("amqp"):
    DRAMATIQ_BROKER = {
        "BROKER": "dramatiq.brokers.rabbitmq.RabbitmqBroker",
        "OPTIONS": {"url": BROKER_URL},
        "MIDDLEWARE": DRAMATIQ_MIDDLEWARE,
    }
else:
    DRAMATIQ_BROKER = {
        "BROKER": "dramatiq.brokers.stub.StubBroker",
        "OPTIONS": {},
        "MIDDLEWARE": DRAMATIQ_MIDDLEWARE,
    }
# Start a Dramatiq worker thread inside the ASGI process (the embedded mode's worker).
INPROCESS_WORKER = env.bool("INPROCESS_WORKER", default=BROKER_URL == "memory")
DRAMATIQ_AUTODISCOVER_MODULES = ["actors"]
# The job engine: a task whose heartbeat is older than TASK_HEARTBEAT_STALE_S is re-queued (its
# worker died) and resumes from its last checkpoint; events are throttled to one per interval.
TASK_HEARTBEAT_STALE_S = env.float("TASK_HEARTBEAT_STALE_S", default=60)
TASK_HEARTBEAT_INTERVAL_S = env.float("TASK_HEARTBEAT_INTERVAL_S", default=1.0)
TASK_EVENT_INTERVAL_S = env.float("TASK_EVENT_INTERVAL_S", default=0.25)
# A task waiting for an earlier task of its cluster retries after this delay.
TASK_ORDER_RETRY_MS = env.int("TASK_ORDER_RETRY_MS", default=500)
# Added to each task kind's own time limit for the broker's hard limit.
TASK_TIME_LIMIT_GRACE_S = env.float("TASK_TIME_LIMIT_GRACE_S", default=30)
# A train task writes its resume checkpoint at most this often (a lost worker redoes at most this
# much work); 0: after every epoch.
TASK_CHECKPOINT_INTERVAL_S = env.float("TASK_CHECKPOINT_INTERVAL_S", default=30)
# Fair share: on one host queue a project holding TASK_PROJECT_MAX_ACTIVE active tasks starts no
# other while another project's task waits there (0: off).
TASK_PROJECT_MAX_ACTIVE = env.int("TASK_PROJECT_MAX_ACTIVE", default=1)
# Lose no work: a queued task whose message is older than TASK_QUEUED_RESEND_S is sent again; the
# sweeper (every worker, and the embedded server) runs every TASK_SWEEP_INTERVAL_S; a handler that
# reports no progress for TASK_PROGRESS_STALE_S is hung (0: off; task kinds may override it).
TASK_QUEUED_RESEND_S = env.float("TASK_QUEUED_RESEND_S", default=60)
TASK_SWEEP_INTERVAL_S = env.float("TASK_SWEEP_INTERVAL_S", default=15)
TASK_PROGRESS_STALE_S = env.float("TASK_PROGRESS_STALE_S", default=600)
# torch intra-op threads per worker process (unset: OMP_NUM_THREADS, else usable cores / worker
# threads, at least 1; the embedded in-process worker uses 1 so the web server stays responsive).
TORCH_THREADS = env.int("TORCH_THREADS", default=None)
# OpenMP's own thread count: a worker without TORCH_THREADS takes it instead of the cores split.
OMP_NUM_THREADS = env.int("OMP_NUM_THREADS", default=None)
# glibc malloc in the workers and the ASGI server: allocations up to 32 MiB from the heap and up
# to 64 MiB of freed memory kept (ml.memory): training steps and request bodies stop
# page-faulting their blocks anew.
MALLOC_TUNING = env.bool("MALLOC_TUNING", default=True)
# Direct io: a cluster in DIRECT mode writes its weights back at most this often while trained,
# and an open socket re-reads its caller's rights this often (never per message).
DIRECTIO_FLUSH_INTERVAL_S = env.float("DIRECTIO_FLUSH_INTERVAL_S", default=60)
DIRECTIO_RECHECK_S = env.float("DIRECTIO_RECHECK_S", default=30)
DIRECTIO_MAX_BATCH = env.int("DIRECTIO_MAX_BATCH", default=1024)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["apps.accounts.authentication.JWTAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["apps.core.api.renderers.EnvelopeJSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "rest_framework.parsers.JSONParser",
        "rest_framework.parsers.MultiPartParser",
        "rest_framework.parsers.FormParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "apps.core.api.pagination.PagePagination",
    # `format` is a parameter of the studio plan (ZIP import, exports), not a renderer override.
    "URL_FORMAT_OVERRIDE": None,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "apps.core.api.exceptions.envelope_exception_handler",
    "DEFAULT_THROTTLE_RATES": {
        "login": env("LOGIN_THROTTLE_RATE", default="10/min"),
    },
    "UNAUTHENTICATED_USER": None,
}
# List pagination: the page size without ?page_size=, and the largest one served.
PAGE_SIZE_DEFAULT = env.int("PAGE_SIZE_DEFAULT", default=50)
PAGE_SIZE_MAX = env.int("PAGE_SIZE_MAX", default=200)

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env.int("JWT_ACCESS_MINUTES", default=60)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env.int("JWT_REFRESH_DAYS", default=7)),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": True,
    "SIGNING_KEY": env("JWT_SIGNING_KEY", default=SECRET_KEY),
    "AUTH_HEADER_TYPES": ("Bearer",),
    "USER_ID_FIELD": "id",
    "USER_ID_CLAIM": "user_id",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Orchard API",
    "DESCRIPTION": (
        "Orchard's main REST API (studio conventions): every answer is an envelope "
        '`{"status": "ok", "data": ...}` or `{"status": "error", "error": {"code", "message"}}`.'
    ),
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SCHEMA_PATH_PREFIX": r"/api/",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {},
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "apps.core.api.schema.envelope_postprocessing_hook",
    ],
}

# labelprop (napari-labelprop's server protocol at the root paths /check, /inference, ...). Its
# client sends no credentials, so the surface is off unless enabled, then bound to one project
# and one service user (a member of it), and answers only clients in LABELPROP_ALLOWED_CLIENTS.
LABELPROP_ENABLED = env.bool("LABELPROP_ENABLED", default=False)
LABELPROP_PROJECT = env("LABELPROP_PROJECT", default="")
LABELPROP_USER = env("LABELPROP_USER", default="")
LABELPROP_ALLOWED_CLIENTS = env.list("LABELPROP_ALLOWED_CLIENTS", default=["127.0.0.1", "::1"])
LABELPROP_MAX_VOXELS = env.int("LABELPROP_MAX_VOXELS", default=128 * 1024 * 1024)
# Declared bytes of all arrays in one labelprop npz, and its entries; browser origins allowed
# besides ALLOWED_HOSTS (requests without an Origin header, like the napari client's, always are).
LABELPROP_MAX_NPZ_BYTES = env.int("LABELPROP_MAX_NPZ_BYTES", default=16 * LABELPROP_MAX_VOXELS)
LABELPROP_NPZ_MAX_MEMBERS = env.int("LABELPROP_NPZ_MAX_MEMBERS", default=8)
LABELPROP_ALLOWED_ORIGINS = env.list("LABELPROP_ALLOWED_ORIGINS", default=[])

# --- Security: callers, credentials, quotas (README "Security") ------------------------------
# Proxies whose X-Forwarded-For is believed (addresses or networks; `unix` for a unix-socket peer).
# Empty: the header is ignored and the peer address is the client (apps/core/clientip.py).
TRUSTED_PROXIES = env.list("TRUSTED_PROXIES", default=[])
# Failed credential checks (logins, Basic auth, admin login) per client address and per account.
AUTH_FAILURE_RATE = env("AUTH_FAILURE_RATE", default="10/min")
# An open websocket re-reads its caller's rights (token, membership, object) this often.
WEBSOCKET_RECHECK_S = env.float("WEBSOCKET_RECHECK_S", default=5.0)
# The Hanami socket authenticates from its first frame: a socket without one by then is closed.
HANAMI_FIRST_FRAME_S = env.float("HANAMI_FIRST_FRAME_S", default=30.0)
# Projects one user may create (global admins are exempt).
PROJECTS_MAX_PER_USER = env.int("PROJECTS_MAX_PER_USER", default=50)
# Upload sessions per user not yet part of a ready dataset.
UPLOAD_SESSIONS_MAX_OPEN = env.int("UPLOAD_SESSIONS_MAX_OPEN", default=20)
# Decoders, checked from the headers before anything is decompressed or allocated:
DATASET_ARRAY_MAX_ELEMENTS = env.int(
    "DATASET_ARRAY_MAX_ELEMENTS", default=256 * 1024**2
)  # per array
DATASET_ARRAY_MAX_BYTES = env.int("DATASET_ARRAY_MAX_BYTES", default=2 * 1024**3)  # per volume file
DATASET_NPZ_MAX_MEMBERS = env.int("DATASET_NPZ_MAX_MEMBERS", default=16)  # arrays in a volume npz
DATASET_IDX_MAX_BYTES = env.int("DATASET_IDX_MAX_BYTES", default=1024**3)  # one MNIST idx file
DATASET_ZIP_MAX_RATIO = env.float("DATASET_ZIP_MAX_RATIO", default=200)  # ZIP compression ratio
DATASET_MAX_DECOMPRESSED_BYTES = env.int("DATASET_MAX_DECOMPRESSED_BYTES", default=8 * 1024**3)
DATASET_CSV_MAX_ROWS = env.int("DATASET_CSV_MAX_ROWS", default=10_000_000)
# Pixels (width x height) of one image at import and thumbnailing; also Pillow's bomb limit.
IMAGE_MAX_PIXELS = env.int("IMAGE_MAX_PIXELS", default=40_000_000)
# A data disk with less free space than this makes /api/system/health answer 503.
HEALTH_MIN_FREE_BYTES = env.int("HEALTH_MIN_FREE_BYTES", default=256 * 1024 * 1024)

# Exports: parity tolerances, samples compared at once, the export task's time limit.
EXPORT_PARITY_RTOL = env.float("EXPORT_PARITY_RTOL", default=1e-3)
EXPORT_PARITY_ATOL = env.float("EXPORT_PARITY_ATOL", default=1e-5)
EXPORT_PARITY_SAMPLES = env.int("EXPORT_PARITY_SAMPLES", default=16)
EXPORT_TIME_LIMIT_S = env.int("EXPORT_TIME_LIMIT_S", default=1800)
# Label Studio backends: the largest task file fetched, and one fetch's total deadline.
LABELSTUDIO_FETCH_MAX_BYTES = env.int("LABELSTUDIO_FETCH_MAX_BYTES", default=20 * 1024 * 1024)
LABELSTUDIO_FETCH_TIMEOUT_S = env.float("LABELSTUDIO_FETCH_TIMEOUT_S", default=10.0)
# Task files of one /predict batch fetched at once.
LABELSTUDIO_FETCH_CONCURRENCY = env.int("LABELSTUDIO_FETCH_CONCURRENCY", default=8)
# Label Studio gives /predict 100 s: a batch fetches its task data within this deadline.
LABELSTUDIO_PREDICT_DEADLINE_S = env.float("LABELSTUDIO_PREDICT_DEADLINE_S", default=80.0)
# /setup's check of Label Studio's API (Label Studio gives /setup 3 s).
LABELSTUDIO_SETUP_CHECK_TIMEOUT_S = env.float("LABELSTUDIO_SETUP_CHECK_TIMEOUT_S", default=2.0)
# Training's read of a Label Studio project export: its largest size and its deadline.
LABELSTUDIO_EXPORT_MAX_BYTES = env.int("LABELSTUDIO_EXPORT_MAX_BYTES", default=256 * 1024 * 1024)
LABELSTUDIO_EXPORT_TIMEOUT_S = env.float("LABELSTUDIO_EXPORT_TIMEOUT_S", default=120.0)
# Label Studio projects one backend URL serves (each further one gets its own model).
LABELSTUDIO_MAX_PROJECTS = env.int("LABELSTUDIO_MAX_PROJECTS", default=20)
# Cells per side an image is cut into for RectangleLabels (detection).
LABELSTUDIO_DETECTION_GRID = env.int("LABELSTUDIO_DETECTION_GRID", default=4)
# Marketplace: built-in compute on the job engine, the default project of Basic-authenticated
# orchestrator requests, and how long good Basic credentials are remembered (0: off).
MARKETPLACE_BUILTIN_COMPUTE = env.bool("MARKETPLACE_BUILTIN_COMPUTE", default=True)
# The built-in compute's training options (a dict of ml.training.TrainConfig fields; a Django
# setting only, e.g. {"epochs": 5} in a settings override).
MARKETPLACE_TRAIN: dict = {}
MARKETPLACE_PROJECT = env("MARKETPLACE_PROJECT", default="")
MARKETPLACE_BASIC_AUTH_CACHE_S = env.int("MARKETPLACE_BASIC_AUTH_CACHE_S", default=60)
# Marketplace compute push (apps/marketplace/push.py): uplets POSTed to a project's compute API.
# Private/loopback/link-local addresses only when the operator allows them; retries with backoff.
MARKETPLACE_COMPUTE_ALLOW_PRIVATE = env.bool("MARKETPLACE_COMPUTE_ALLOW_PRIVATE", default=False)
MARKETPLACE_COMPUTE_PUSH_ATTEMPTS = env.int("MARKETPLACE_COMPUTE_PUSH_ATTEMPTS", default=8)
MARKETPLACE_COMPUTE_PUSH_BACKOFF_S = env.float("MARKETPLACE_COMPUTE_PUSH_BACKOFF_S", default=1.0)
MARKETPLACE_COMPUTE_PUSH_BACKOFF_MAX_S = env.float(
    "MARKETPLACE_COMPUTE_PUSH_BACKOFF_MAX_S", default=60.0
)
MARKETPLACE_COMPUTE_PUSH_TIMEOUT_S = env.float("MARKETPLACE_COMPUTE_PUSH_TIMEOUT_S", default=10.0)
# Operator console: lifetime of the short token a console page fetches for its live connection.
CONSOLE_TOKEN_MINUTES = env.int("CONSOLE_TOKEN_MINUTES", default=10)
# Studio SSE streams re-check the database this often when no live event arrives (with the
# in-memory channel layer, events published from worker threads may reach the event loop late).
TRAINING_SSE_POLL_S = env.float("TRAINING_SSE_POLL_S", default=1.0)

# Demo content created by `manage.py bootstrap`: callables (project, actor, stdout) -> None.
ORCHARD_DEMO_HOOKS = env.list(
    "ORCHARD_DEMO_HOOKS", default=["apps.datasets.demo.create_demo_datasets"]
)

# Bootstrap admin for `manage.py bootstrap` (printed once when the password is generated).
ADMIN_USERNAME = env("ORCHARD_ADMIN_USERNAME", default="admin")
ADMIN_PASSWORD = env("ORCHARD_ADMIN_PASSWORD", default="")
ADMIN_EMAIL = env("ORCHARD_ADMIN_EMAIL", default="admin@localhost")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
