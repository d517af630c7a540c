"""studio settings: every value comes from an environment variable (see ``.env.example``).

Defaults are safe for the embedded development mode: with ``DATABASE_URL`` unset studio uses
an embedded PostgreSQL 18 + pgvector 0.8 under ``STUDIO_DATA_DIR``; with ``CELERY_BROKER_URL``
unset an embedded Redis. Importing this module starts nothing and creates nothing: the
servers are started by ``manage.py``, ``make run`` and the test session.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote

import environ
from django.core.exceptions import ImproperlyConfigured

from studio.devstack import embedded

# Nothing may download a model or a data set at run time.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BASE_DIR = Path(__file__).resolve().parents[2]
env = environ.Env()

# --- core -------------------------------------------------------------------------
DEBUG = env.bool("DEBUG", default=False)
_DEV_SECRET = "django-insecure-studio-development-only-key-change-me-in-production-0123456789"
SECRET_KEY = env.str("SECRET_KEY", default="")  # checked below, once the database is known
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# Production hardening; the embedded development mode keeps these off (plain HTTP on loopback).
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=False)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=False)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = SECURE_HSTS_SECONDS > 0
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env.bool("BEHIND_TLS_PROXY", default=False) else None
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "studio",
    "clickstream",
    "improvement",
]

MIDDLEWARE = [
    "studio.core.middleware.ApiErrorMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "studio.config.urls"
WSGI_APPLICATION = "studio.config.wsgi.application"

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

# --- embedded servers ---------------------------------------------------------------
STUDIO_DATA_DIR = str(embedded.data_dir())
EMBEDDED_POSTGRES = not env.str("DATABASE_URL", default="")
EMBEDDED_REDIS = not env.str("CELERY_BROKER_URL", default="")

# --- database -----------------------------------------------------------------------
# Importing settings starts nothing: with the embedded defaults, settings only say where the servers
# listen; manage.py, the launcher and the test session start them (studio.devstack.embedded).
if EMBEDDED_POSTGRES:
    _database_url = embedded.postgres_url(embedded.postgres_socket_dir(), "studio")
else:
    _database_url = env.str("DATABASE_URL")
_db = env.db_url_config(_database_url)
_db["HOST"] = unquote(_db.get("HOST") or "")  # a socket directory arrives percent-encoded
_db["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
_db["CONN_HEALTH_CHECKS"] = True
_db["OPTIONS"] = {"connect_timeout": env.int("DATABASE_CONNECT_TIMEOUT", default=5)}
DATABASES = {"default": _db}

# A missing SECRET_KEY is a development convenience only: with DEBUG off on servers other than this
# checkout's embedded ones, signing with a published key would be a hole, so refuse to start.
_EMBEDDED_DATABASE = EMBEDDED_POSTGRES or _db["HOST"] == embedded.postgres_socket_dir()
if not SECRET_KEY:
    if not DEBUG and not _EMBEDDED_DATABASE:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. With DEBUG=false and an external database, studio refuses to start on the "
            "development key: set SECRET_KEY to a long random value (python -c 'import secrets; "
            "print(secrets.token_urlsafe(64))')."
        )
    SECRET_KEY = _DEV_SECRET
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- broker and cache ---------------------------------------------------------------
if EMBEDDED_REDIS:
    _redis = embedded.redis_paths()
    CELERY_BROKER_URL = _redis.url
    _default_cache_url = _redis.cache_url
else:
    CELERY_BROKER_URL = env.str("CELERY_BROKER_URL")
    _default_cache_url = ""
CACHE_URL = env.str("CACHE_URL", default=_default_cache_url)
if CACHE_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": CACHE_URL,
            "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="studio"),
        }
    }
else:  # broker is not Redis and no cache given: per-process cache (throttles become per process)
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Celery -------------------------------------------------------------------------
IMPROVEMENT_TIME_LIMIT_SECONDS = env.int("IMPROVEMENT_TIME_LIMIT_SECONDS", default=600)
CELERY_TIMEZONE = "UTC"
CELERY_TASK_ACKS_LATE = True  # a task lost with its worker is delivered again
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1  # improvement runs are long: take one at a time
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_TASK_DEFAULT_QUEUE", default="studio")
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Redis redelivers an unacknowledged task after the visibility timeout: keep it above the longest task.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": IMPROVEMENT_TIME_LIMIT_SECONDS * 2 + 60}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# --- internationalisation, static ---------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
# collectstatic writes here (settings create no folder; make run's launcher creates the default one).
# Until then WhiteNoise serves from the apps (WHITENOISE_USE_FINDERS) and warns that it is missing.
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(BASE_DIR / ".studio" / "static")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True  # serve admin and Swagger UI assets without a collectstatic step

# --- request limits -----------------------------------------------------------------
STUDIO_MAX_BODY_BYTES = env.int("STUDIO_MAX_BODY_BYTES", default=16 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = STUDIO_MAX_BODY_BYTES
STUDIO_MAX_JSON_FIELD_BYTES = env.int("STUDIO_MAX_JSON_FIELD_BYTES", default=16 * 1024)
STUDIO_MAX_TEXT_CHARS = env.int("STUDIO_MAX_TEXT_CHARS", default=100_000)

# --- REST API -----------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["studio.core.auth.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["studio.core.auth.HasScope"],
    "DEFAULT_THROTTLE_CLASSES": ["studio.core.auth.ApiKeyRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"api_key": env.str("STUDIO_THROTTLE_RATE", default="3000/s")},
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "studio.core.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
}

# Signs the user-bound tokens of POST /api/v1/tokens (studio.core.tokens); empty: derived from SECRET_KEY.
# Changing it revokes every token issued under the old value.
STUDIO_TOKEN_SECRET = env.str("STUDIO_TOKEN_SECRET", default="")
SPECTACULAR_SETTINGS = {
    "TITLE": "studio API",
    "DESCRIPTION": "Vector search that learns from clicks.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "APPEND_COMPONENTS": {
        "securitySchemes": {"ApiKey": {"type": "http", "scheme": "bearer", "description": "studio API key"}}
    },
    "SECURITY": [{"ApiKey": []}],
    # OpenAPI links (session → events → read → forget) for clients and the stateful tests
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "studio.core.schema_links.add_links"],
}

# --- catalogue, embedding, search ---------------------------------------------------
STUDIO_EMBEDDING_DIM = env.int("STUDIO_EMBEDDING_DIM", default=384)
STUDIO_METRIC = env.str("STUDIO_METRIC", default="cosine").lower()
if STUDIO_METRIC not in ("cosine", "dot", "euclid"):
    raise environ.ImproperlyConfigured("STUDIO_METRIC must be one of cosine, dot, euclid")
STUDIO_EMBEDDER = env.str("STUDIO_EMBEDDER", default="sentence-transformers")
STUDIO_EMBEDDER_DEVICE = env.str("STUDIO_EMBEDDER_DEVICE", default="cpu")
STUDIO_EMBEDDER_MAX_WORDS = env.int("STUDIO_EMBEDDER_MAX_WORDS", default=200)
STUDIO_HNSW_M = env.int("STUDIO_HNSW_M", default=16)
STUDIO_HNSW_EF_CONSTRUCTION = env.int("STUDIO_HNSW_EF_CONSTRUCTION", default=64)
# Online proof (docs/architecture.md, "Online proof"): the share of tracked searches shown as a team draft of the
# learned and the base ranking (0 = off; make run's demo sets 0.5), and the guard on the experiment's verdict.
STUDIO_INTERLEAVE_FRACTION = env.float("STUDIO_INTERLEAVE_FRACTION", default=0.0)
STUDIO_INTERLEAVE_GUARD_P = env.float("STUDIO_INTERLEAVE_GUARD_P", default=0.01)
STUDIO_INTERLEAVE_GUARD_MIN_SESSIONS = env.int("STUDIO_INTERLEAVE_GUARD_MIN_SESSIONS", default=200)
STUDIO_INTERLEAVE_GUARD_DAYS = env.int("STUDIO_INTERLEAVE_GUARD_DAYS", default=7)
STUDIO_INTERLEAVE_AUTO_OFF = env.bool("STUDIO_INTERLEAVE_AUTO_OFF", default=False)
STUDIO_EF_SEARCH = env.int("STUDIO_EF_SEARCH", default=150)  # recall@10 0.98 on 100k x 384 (0.94 at 100)
STUDIO_MAX_OBJECTS_PER_REQUEST = env.int("STUDIO_MAX_OBJECTS_PER_REQUEST", default=1000)
STUDIO_MAX_PARTS_PER_OBJECT = env.int("STUDIO_MAX_PARTS_PER_OBJECT", default=64)
STUDIO_DROP_PERSONALIZED_ON_UPDATE = env.bool("STUDIO_DROP_PERSONALIZED_ON_UPDATE", default=True)
STUDIO_DEMO = env.bool("STUDIO_DEMO", default=False)
STUDIO_DEMO_API_KEY = env.str("STUDIO_DEMO_API_KEY", default="")
STUDIO_REPORTS_DIR = env.str("STUDIO_REPORTS_DIR", default=str(BASE_DIR / "reports"))

# --- clickstream --------------------------------------------------------------------
CLICKSTREAM_MAX_PAST = env.int("CLICKSTREAM_MAX_PAST", default=7 * 24 * 3600)
CLICKSTREAM_MAX_FUTURE = env.int("CLICKSTREAM_MAX_FUTURE", default=300)
CLICKSTREAM_MAX_RESULTS_PER_SESSION = env.int("CLICKSTREAM_MAX_RESULTS_PER_SESSION", default=200)
CLICKSTREAM_MAX_SESSIONS_PER_BATCH = env.int("CLICKSTREAM_MAX_SESSIONS_PER_BATCH", default=500)
CLICKSTREAM_MAX_EVENTS_PER_REQUEST = env.int("CLICKSTREAM_MAX_EVENTS_PER_REQUEST", default=1000)
CLICKSTREAM_RETENTION_DAYS = env.int("CLICKSTREAM_RETENTION_DAYS", default=90)

# --- improvement --------------------------------------------------------------------
IMPROVEMENT_INTERVAL_SECONDS = env.int("IMPROVEMENT_INTERVAL_SECONDS", default=60)
IMPROVEMENT_SETTLE_SECONDS = env.int("IMPROVEMENT_SETTLE_SECONDS", default=60)
IMPROVEMENT_BATCH_SIZE = env.int("IMPROVEMENT_BATCH_SIZE", default=2000)
# Claim and read the next batch in a second thread while the current one adjusts and writes.
IMPROVEMENT_READ_AHEAD = env.bool("IMPROVEMENT_READ_AHEAD", default=True)
IMPROVEMENT_LEASE_SECONDS = env.int("IMPROVEMENT_LEASE_SECONDS", default=300)
# A run's worker heartbeats into its row; silent this long, its claims are released and the run failed
# (without waiting for the lease). It beats every sixth of this (at least every second).
IMPROVEMENT_WORKER_GRACE_SECONDS = env.int("IMPROVEMENT_WORKER_GRACE_SECONDS", default=60)
# The demo page's "Improve now" learns from at most this many of its user's sessions (oldest first).
STUDIO_DEMO_IMPROVE_MAX_SESSIONS = env.int("STUDIO_DEMO_IMPROVE_MAX_SESSIONS", default=50)
IMPROVEMENT_MAX_ATTEMPTS = env.int("IMPROVEMENT_MAX_ATTEMPTS", default=3)
IMPROVEMENT_MAX_RETRIES = env.int("IMPROVEMENT_MAX_RETRIES", default=5)
IMPROVEMENT_EVENT_WEIGHTS = env.dict("IMPROVEMENT_EVENT_WEIGHTS", cast={"value": float}, default={"click": 1.0})
IMPROVEMENT_NEGATIVES = env.str("IMPROVEMENT_NEGATIVES", default="above_last_click")
# The learning rule (docs/architecture.md, "The learning rule"): pairwise (v2) or seed (the first version's).
IMPROVEMENT_RULE = env.str("IMPROVEMENT_RULE", default="pairwise")
# The learning rate's default follows the rule: SGD on the pairwise loss, AdamW on the seed's cubic loss.
_lr = env.str("IMPROVEMENT_LR", default="").strip()
IMPROVEMENT_LR = float(_lr) if _lr else (1e-3 if IMPROVEMENT_RULE == "seed" else 0.3)
IMPROVEMENT_PAIR_TEMPERATURE = env.float("IMPROVEMENT_PAIR_TEMPERATURE", default=0.02)
IMPROVEMENT_PAIR_MARGIN = env.float("IMPROVEMENT_PAIR_MARGIN", default=0.0)
# Weight of the weak "skip next" preference (a click lifted over the unclicked result right below it); 0 = off.
IMPROVEMENT_PAIR_NEXT_WEIGHT = env.float("IMPROVEMENT_PAIR_NEXT_WEIGHT", default=0.5)
_push_depth = env.str("IMPROVEMENT_PAIR_PUSH_DEPTH", default="").strip()
IMPROVEMENT_PAIR_PUSH_DEPTH = int(_push_depth) if _push_depth else None  # empty: every skipped result above
IMPROVEMENT_MAX_NORM_RATIO = env.float("IMPROVEMENT_MAX_NORM_RATIO", default=1.25)
IMPROVEMENT_HALF_LIFE_DAYS = env.float("IMPROVEMENT_HALF_LIFE_DAYS", default=30.0)
IMPROVEMENT_MAX_COPIES_PER_USER = env.int("IMPROVEMENT_MAX_COPIES_PER_USER", default=1000)
# The shared tier (docs/architecture.md, "The shared tier"); weight 0 switches it off.
IMPROVEMENT_SHARED_WEIGHT = env.float("IMPROVEMENT_SHARED_WEIGHT", default=1.0)
IMPROVEMENT_SHARED_MAX_OFFSET = env.float("IMPROVEMENT_SHARED_MAX_OFFSET", default=0.07)
IMPROVEMENT_SHARED_MIN_USERS = max(2, env.int("IMPROVEMENT_SHARED_MIN_USERS", default=2))
IMPROVEMENT_SHARED_SKIP_WEIGHT = env.float("IMPROVEMENT_SHARED_SKIP_WEIGHT", default=0.5)
IMPROVEMENT_SHARED_QUERY_SHIFT = env.float("IMPROVEMENT_SHARED_QUERY_SHIFT", default=0.15)
if not 0 <= IMPROVEMENT_SHARED_QUERY_SHIFT <= 1:
    raise ImproperlyConfigured("IMPROVEMENT_SHARED_QUERY_SHIFT must be in [0, 1]")
# A text query not seen verbatim borrows the offsets of the most similar shared query at or above this cosine
# similarity, scaled by it (empty: no borrowing).
_borrow = env.str("IMPROVEMENT_SHARED_BORROW_SIMILARITY", default="0.8").strip()
IMPROVEMENT_SHARED_BORROW_SIMILARITY = float(_borrow) if _borrow else None
if IMPROVEMENT_SHARED_BORROW_SIMILARITY is not None and not 0 < IMPROVEMENT_SHARED_BORROW_SIMILARITY <= 1:
    # above 1 even a query's own offsets (similarity 1) would stop applying
    raise ImproperlyConfigured("IMPROVEMENT_SHARED_BORROW_SIMILARITY must be in (0, 1], or empty for off")
IMPROVEMENT_WEIGHT_DECAY = env.float("IMPROVEMENT_WEIGHT_DECAY", default=0.01)
IMPROVEMENT_ITERATIONS = env.int("IMPROVEMENT_ITERATIONS", default=10)
IMPROVEMENT_SOFTMIN_TEMPERATURE = env.float("IMPROVEMENT_SOFTMIN_TEMPERATURE", default=0.05)
IMPROVEMENT_POSITION_BIAS_ETA = env.float("IMPROVEMENT_POSITION_BIAS_ETA", default=0.0)
_max_drift = env.str("IMPROVEMENT_MAX_DRIFT", default="0.05").strip()
IMPROVEMENT_MAX_DRIFT = float(_max_drift) if _max_drift else None  # empty: no drift cap
IMPROVEMENT_RENORMALIZE = env.bool("IMPROVEMENT_RENORMALIZE", default=True)
IMPROVEMENT_SEED = env.int("IMPROVEMENT_SEED", default=0)
IMPROVEMENT_DEVICE = env.str("IMPROVEMENT_DEVICE", default="auto")
_torch_threads = env.str("IMPROVEMENT_TORCH_THREADS", default="").strip()
IMPROVEMENT_TORCH_THREADS = int(_torch_threads) if _torch_threads else None  # empty: torch's default

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"embedded_postgres": {"level": "WARNING"}},
}
STUDIO_MAX_PAYLOAD_BYTES = env.int("STUDIO_MAX_PAYLOAD_BYTES", default=64 * 1024)
