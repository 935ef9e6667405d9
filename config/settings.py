"""Tether settings, read from the environment (see README: "Configuration").

Two running modes:
- embedded default (neither DATABASE_URL nor REDIS_URL set): SQLite, in-process cache and channel
  layer, Celery on an in-memory broker — the whole product on one machine with no servers;
- production (DATABASE_URL and REDIS_URL set): PostgreSQL, Redis for cache, channel layer and broker.
"""

import secrets
from datetime import timedelta
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from config.env import (
    check_redis_url,
    env_bool,
    env_float,
    env_int,
    env_list,
    env_networks,
    env_rate,
    env_str,
    parse_database_url,
)
from config.dbpool import RecentUseCheck
from config.redis_guard import GuardedConnection

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("TETHER_VAR_DIR", str(BASE_DIR / "var")))

DATABASE_URL = env_str("DATABASE_URL") or None
REDIS_URL = check_redis_url(env_str("REDIS_URL")) if env_str("REDIS_URL") else None
EMBEDDED = DATABASE_URL is None and REDIS_URL is None

DEBUG = env_bool("DEBUG", default=False)


def _secret_key() -> str:
    key = env_str("SECRET_KEY")
    if key:
        if len(key) < 32:
            raise ImproperlyConfigured("SECRET_KEY must be at least 32 characters long")
        return key
    if DATABASE_URL:
        # Several web instances must share one key; a per-machine generated one would silently differ.
        raise ImproperlyConfigured("SECRET_KEY must be set when DATABASE_URL is set (production mode)")
    # Embedded mode: a random key made once on this machine, kept out of the repository.
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()

# --- HTTPS (TETHER_HTTPS=1 behind TLS) ------------------------------------------------------------
# Secure cookies, HSTS and the redirect to https://. Behind a reverse proxy that ends TLS, the proxy
# must set X-Forwarded-Proto (and strip a client's own): Django then believes it (SECURE_PROXY_SSL_HEADER).
# `manage.py check --deploy --fail-level WARNING` passes with it.
TETHER_HTTPS = env_bool("TETHER_HTTPS", default=False)
if TETHER_HTTPS:
    SECURE_SSL_REDIRECT = True
    # Load balancers probe /health over plain HTTP inside the network.
    SECURE_REDIRECT_EXEMPT = [r"^health$"]
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("TETHER_HSTS_SECONDS", 365 * 86400, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("TETHER_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = env_bool("TETHER_HSTS_PRELOAD", default=True)
SESSION_COOKIE_HTTPONLY = True
# Messages live in the (server-side, database) session, never in a cookie: a pool's enrollment
# token, shown once in the admin, is one of them.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"
X_FRAME_OPTIONS = "DENY"

# Content-Security-Policy on every response (django-csp): scripts, styles, images and sockets from
# this origin only — no inline script anywhere (the pages use static/ files; Swagger UI is the
# split view, whose set-up script is a file too). Inline style *attributes* stay allowed: the pages'
# meters set their width with one.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "style-src-attr": ["'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "daphne",  # first, so that runserver serves ASGI (HTTP and WebSocket)
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "django_htmx",
    "axes",  # limits login attempts (/accounts/login/, /admin/login/)
    "csp",
    "pools",
    "agents",
    "assignments",
    "dashboard",
]

MIDDLEWARE = [
    "dashboard.metrics.request_latency_middleware",  # outermost: times the whole request (GET /metrics)
    "config.middleware.HeaderLimitsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes asks: answers a locked-out login with 429.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
# How the ASGI application (config/asgi.py) serves HTTP: "wsgi" — Django's WSGI handler on a fixed
# pool of TETHER_HTTP_THREADS threads per process (the faster, and the default with Redis); "asgi"
# — Django's ASGI handler, a thread per request (the default, and required, with the in-memory
# channel layer of embedded mode: see config/asgi.py). Requests beyond the threads wait in line.
# Few threads: a worker's requests share one GIL, and more threads than it can run only stretch
# each transaction (and the locks it holds) while its thread waits for the GIL — 4 against 32 gave
# take → release at 32 clients +13–18% req/s, −10–20% CPU a request, half the p99 (docs/bench-api.md).
# Long-polls (views with `long_poll = True`: a task claim's `wait_seconds`) sleep on threads of
# their own, TETHER_HTTP_LONG_POLL_THREADS a process: the most agents one process keeps waiting at
# once (more wait in line for a thread; a long-poll's wait counts from its arrival, so the line
# never lengthens it: config.api.views.request_received).
TETHER_HTTP_HANDLER = env_str("TETHER_HTTP_HANDLER", "wsgi" if REDIS_URL else "asgi")
if TETHER_HTTP_HANDLER not in ("wsgi", "asgi"):
    raise ImproperlyConfigured(f"TETHER_HTTP_HANDLER={TETHER_HTTP_HANDLER!r} is not 'wsgi' or 'asgi'")
if TETHER_HTTP_HANDLER == "wsgi" and not REDIS_URL:
    raise ImproperlyConfigured("TETHER_HTTP_HANDLER=wsgi needs REDIS_URL (the in-memory channel layer needs 'asgi')")
TETHER_HTTP_THREADS = env_int("TETHER_HTTP_THREADS", 4, minimum=1, maximum=1000)
TETHER_HTTP_LONG_POLL_THREADS = env_int("TETHER_HTTP_LONG_POLL_THREADS", 64, minimum=1, maximum=1000)
# The cyclic garbage collector's first-generation threshold in `make serve`'s workers (config/serve.py;
# Python's default is 700): with a request's objects in cycles and many requests in flight, 700 promotes
# nearly all of them to older generations, whose passes cost far more.
TETHER_GC_THRESHOLD = env_int("TETHER_GC_THRESHOLD", 5000, minimum=100, maximum=1_000_000)
ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = "config.wsgi.application"

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

# --- Database -----------------------------------------------------------------------------------
if DATABASE_URL:
    _default_db = parse_database_url(DATABASE_URL)
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    _default_db = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(VAR_DIR / "tether.sqlite3")}

if _default_db["ENGINE"] == "django.db.backends.postgresql":
    # Values bound by the server and, from the TETHER_DB_PREPARE_THRESHOLD-th run of a statement on
    # a connection, prepared statements (psycopg's automatic ones; Django turns them off unless asked):
    # PostgreSQL then parses and plans each of the hot path's statements once per connection instead
    # of on every run. Measured (two `make serve` side by side, requests interleaved, issue 15):
    # PostgreSQL's CPU per take or release 5.6 -> 2.6 ms, heartbeat 2.6 -> 1.3, get agent 1.1 -> 0.4;
    # the server's own CPU -5 to -7% (psycopg no longer quotes each value into the SQL text in Python).
    # Needs the same session for a connection's life, which Django's connections and psycopg's pool
    # give (a transaction-pooling proxy would not; nor would the event numbers, assignments/events.py).
    # TETHER_DB_SERVER_BINDING=0 goes back to Django's default (values quoted by psycopg, no prepares).
    _default_db.setdefault("OPTIONS", {})
    if env_bool("TETHER_DB_SERVER_BINDING", default=True):
        _default_db["OPTIONS"]["server_side_binding"] = True
        _default_db["OPTIONS"]["prepare_threshold"] = env_int("TETHER_DB_PREPARE_THRESHOLD", 5, minimum=0)
    # Pooled by default: under ASGI each request runs in a thread of its own, and Django's persistent
    # connections (CONN_MAX_AGE) belong to threads, so they pile up until PostgreSQL refuses everyone
    # (issue 10: 99 of 100 connections, held after the load stopped). psycopg's pool bounds each
    # process at TETHER_DB_POOL_MAX_SIZE and hands a connection back at the end of every request;
    # `make serve` divides one budget (SERVE_DB_CONNECTIONS) between its workers.
    if env_bool("TETHER_DB_POOL", default=True):
        _pool_min = env_int("TETHER_DB_POOL_MIN_SIZE", 1, minimum=0)
        _pool_max = env_int("TETHER_DB_POOL_MAX_SIZE", 8, minimum=1)
        if _pool_min > _pool_max:
            raise ImproperlyConfigured(
                f"TETHER_DB_POOL_MIN_SIZE={_pool_min} is above TETHER_DB_POOL_MAX_SIZE={_pool_max}"
            )
        _default_db["OPTIONS"]["pool"] = {
            "min_size": _pool_min,
            "max_size": _pool_max,
            # A request waits this long for a free connection before it is answered 503.
            "timeout": env_float("TETHER_DB_POOL_TIMEOUT", 10.0, minimum=0.1),
            # Connections above min_size unused this long are closed (one per period), so a
            # burst's connections go back to PostgreSQL once it is over.
            "max_idle": env_float("TETHER_DB_POOL_MAX_IDLE", 60.0, minimum=1.0),
            # The pool checks a connection before handing it out (an empty query), so a backend
            # killed since (a restart, a terminate) costs one reconnect, not a failed request —
            # except for a connection handed out less than TETHER_DB_POOL_CHECK_BYPASS_SECONDS ago,
            # which was working then: under load that is nearly every request, and the check was
            # one PostgreSQL round trip each (HikariCP skips it the same way, 500 ms by default).
            # 0 checks every time. The price: a backend killed within that window of its last use
            # costs the next request on it an error — the API answers 503 `service_unavailable`
            # with Retry-After: 1 (config/api/errors.py), a page 500 — and the pool, seeing the
            # connection broken when it comes back, discards it and opens another.
            "check": RecentUseCheck(env_float("TETHER_DB_POOL_CHECK_BYPASS_SECONDS", 0.5, minimum=0.0)),
        }
        # Django's backend with the pool's `check` taken from the options above (Django 5.2 passes
        # its own beside them, a TypeError: config/dbpool/__init__.py); nothing else differs.
        _default_db["ENGINE"] = "config.dbpool"
        _default_db["CONN_MAX_AGE"] = 0  # the pool keeps the connections; Django must not
        _default_db["CONN_HEALTH_CHECKS"] = False  # the pool's own check, above, does it
    else:
        _default_db["CONN_MAX_AGE"] = env_int("TETHER_DB_CONN_MAX_AGE", 60, minimum=0)
        _default_db["CONN_HEALTH_CHECKS"] = True
else:
    # SQLite: wait for the writer lock instead of failing at once; WAL lets readers run beside it.
    _default_db.setdefault("OPTIONS", {})
    _default_db["OPTIONS"].update(
        {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )

DATABASES = {"default": _default_db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache, channel layer, Celery ----------------------------------------------------------------
TETHER_KEY_PREFIX = env_str("TETHER_KEY_PREFIX", "tether")
# After a Redis command of this process timed out, the cache and the throttle skip Redis this long.
TETHER_REDIS_BACKOFF_SECONDS = env_float("TETHER_REDIS_BACKOFF_SECONDS", 1.0, minimum=0.0)

if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": TETHER_KEY_PREFIX,
            "OPTIONS": {
                "CLIENT_CLASS": "django_redis.client.DefaultClient",
                # Short: the cache and the throttle are on every request's path, and a hung Redis
                # must cost a request milliseconds, not seconds (both fail open: a miss reads the
                # database, the throttle lets the request through).
                "SOCKET_CONNECT_TIMEOUT": env_float("TETHER_REDIS_CONNECT_TIMEOUT", 0.25, minimum=0.01),
                "SOCKET_TIMEOUT": env_float("TETHER_REDIS_TIMEOUT", 0.25, minimum=0.01),
                # The database is the truth: a Redis outage must degrade the cache, not the API.
                "IGNORE_EXCEPTIONS": True,
                # After a timeout, skip Redis for TETHER_REDIS_BACKOFF_SECONDS (config/redis_guard.py).
                "CONNECTION_POOL_KWARGS": {"connection_class": GuardedConnection},
            },
        }
    }
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # channels-redis waits for messages with BZPOPMIN(timeout=5); redis-py 8 defaults every
            # read to a 5 s socket timeout, so on a busy machine an idle consumer's read raced it and
            # died with "Timeout reading from …". The socket timeout must stay well above 5 s.
            "CONFIG": {
                "hosts": [{"address": REDIS_URL, "socket_timeout": 30, "socket_connect_timeout": 5}],
                "prefix": f"{TETHER_KEY_PREFIX}:asgi",
            },
        }
    }
    DJANGO_REDIS_LOG_IGNORED_EXCEPTIONS = True
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "tether"}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL or "memory://")
CELERY_TASK_IGNORE_RESULT = True
# The queue the beat's jobs go to and the workers listen on (a test suite uses one of its own).
CELERY_TASK_DEFAULT_QUEUE = env_str("TETHER_CELERY_QUEUE", "tether")
CELERY_TIMEZONE = "UTC"

# --- Auth, i18n, static --------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Login attempts (django-axes): after TETHER_LOGIN_FAILURE_LIMIT failures for one account, or from
# one client address, further attempts get 429 for TETHER_LOGIN_LOCKOUT_MINUTES (a success resets
# the count). Counted in the database, so every web instance shares the count in any running mode
# (django-axes' cache handler refuses the embedded mode's in-process cache).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
AXES_DISABLE_ACCESS_LOG = True  # failures only: no row per successful login
AXES_FAILURE_LIMIT = env_int("TETHER_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("TETHER_LOGIN_LOCKOUT_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_CLIENT_IP_CALLABLE = "config.ratelimit.client_ip"
AXES_RESET_ON_SUCCESS = True
AXES_HTTP_RESPONSE_CODE = 429
AXES_VERBOSE = False
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env_str("TETHER_STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = DEBUG

# --- Tether's own knobs --------------------------------------------------------------------------
# Defaults for new pools; each pool carries its own values afterwards.
TETHER_HEARTBEAT_TIMEOUT_SECONDS = env_int("TETHER_HEARTBEAT_TIMEOUT_SECONDS", 30, minimum=1)
TETHER_ASSIGNMENT_IDLE_TIMEOUT_SECONDS = env_int("TETHER_ASSIGNMENT_IDLE_TIMEOUT_SECONDS", 1800, minimum=1)
TETHER_MIN_HEALTH_SCORE = env_float("TETHER_MIN_HEALTH_SCORE", 0.5, minimum=0.0, maximum=1.0)
# How far a stale agent's health score falls when it misses its heartbeats.
TETHER_STALE_HEALTH_SCORE = env_float("TETHER_STALE_HEALTH_SCORE", 0.0, minimum=0.0, maximum=1.0)
# How often each web process's event hub renews its membership of the events group (so that it
# rejoins within this after a Redis restart, which forgets every group).
TETHER_EVENTS_GROUP_RENEW_SECONDS = env_float("TETHER_EVENTS_GROUP_RENEW_SECONDS", 5.0, minimum=0.1)
# Event stream (ws://HOST/assignments/events): events one subscriber may have waiting to be sent
# before it is told to resync and closed; how often an idle web process checks the log for events
# whose live message was lost; replay page size.
TETHER_EVENTS_CLIENT_BUFFER = env_int("TETHER_EVENTS_CLIENT_BUFFER", 1000, minimum=10)
TETHER_EVENTS_POLL_SECONDS = env_float("TETHER_EVENTS_POLL_SECONDS", 2.0, minimum=0.05)
TETHER_EVENTS_REPLAY_PAGE = env_int("TETHER_EVENTS_REPLAY_PAGE", 500, minimum=1, maximum=1000)
# How long a live event that overtook others waits for them before the gap is read from the log.
TETHER_EVENTS_REORDER_WAIT_SECONDS = env_float("TETHER_EVENTS_REORDER_WAIT_SECONDS", 0.05, minimum=0.0, maximum=5.0)
# The one declared list of what happens after a batch of events commits, in this order
# (assignments/events.py calls each with the batch's payloads, after refreshing the live-assignment
# cache, its own read model): how the event log, a low layer, reaches the live subscribers and the
# pools without importing them.
TETHER_EVENT_CONSUMERS = [
    "dashboard.publish.publish_events",  # to live subscribers (pages, agents) through the channel layer
    "pools.services.pools_rebalance_freed",  # room freed on an agent: give it to work waiting in its pool
    "pools.dispatch.tasks_dispatch_for_events",  # a task queued or a task slot freed: place queued tasks
    "assignments.webhooks.alert_webhook_enqueue",  # alert.* → TETHER_ALERT_WEBHOOK_URL, by a background sender
]

# --- Background jobs (Celery beat; see config/celery.py for the one schedule) ----------------------
# How often each job runs. Expiry, staleness and rebalancing are one indexed query when there is
# nothing to do, so they run every few seconds: failover takes seconds, not minutes.
TETHER_JOB_EXPIRY_INTERVAL_SECONDS = env_float("TETHER_JOB_EXPIRY_INTERVAL_SECONDS", 5.0, minimum=0.1)
TETHER_JOB_STALE_INTERVAL_SECONDS = env_float("TETHER_JOB_STALE_INTERVAL_SECONDS", 5.0, minimum=0.1)
TETHER_JOB_REBALANCE_INTERVAL_SECONDS = env_float("TETHER_JOB_REBALANCE_INTERVAL_SECONDS", 5.0, minimum=0.1)
TETHER_JOB_RECONCILE_INTERVAL_SECONDS = env_float("TETHER_JOB_RECONCILE_INTERVAL_SECONDS", 30.0, minimum=0.1)
TETHER_JOB_ROLLUP_INTERVAL_SECONDS = env_float("TETHER_JOB_ROLLUP_INTERVAL_SECONDS", 60.0, minimum=0.1)
TETHER_JOB_ARCHIVE_INTERVAL_SECONDS = env_float("TETHER_JOB_ARCHIVE_INTERVAL_SECONDS", 3600.0, minimum=0.1)
TETHER_JOB_IDEMPOTENCY_PRUNE_INTERVAL_SECONDS = env_float("TETHER_JOB_IDEMPOTENCY_PRUNE_INTERVAL_SECONDS", 3600.0, minimum=0.1)
# Queued requests (assignments/waits.py): wait timeouts, hand-overs a cooldown or quota held back,
# and the wait cycles formed by failover or hand-over (one indexed query each when there is nothing).
TETHER_JOB_WAITS_INTERVAL_SECONDS = env_float("TETHER_JOB_WAITS_INTERVAL_SECONDS", 2.0, minimum=0.1)
TETHER_JOB_WAIT_CYCLES_INTERVAL_SECONDS = env_float("TETHER_JOB_WAIT_CYCLES_INTERVAL_SECONDS", 10.0, minimum=0.1)
TETHER_JOB_TASKS_INTERVAL_SECONDS = env_float("TETHER_JOB_TASKS_INTERVAL_SECONDS", 5.0, minimum=0.1)
# At most this many rows per job run; the rest waits for the next run.
TETHER_JOB_BATCH_SIZE = env_int("TETHER_JOB_BATCH_SIZE", 200, minimum=1, maximum=100_000)
# An active assignment with no activity (heartbeat report, update) for this long becomes idle.
TETHER_ASSIGNMENT_IDLE_AFTER_SECONDS = env_int("TETHER_ASSIGNMENT_IDLE_AFTER_SECONDS", 300, minimum=1)
# A force-released (`releasing`) assignment whose agent has not confirmed within this is released.
TETHER_RELEASE_GRACE_SECONDS = env_int("TETHER_RELEASE_GRACE_SECONDS", 60, minimum=1)
# Selection by requirements skips profiles whose health (from outcome reports) is below this.
TETHER_PROFILE_MIN_HEALTH_SCORE = env_float("TETHER_PROFILE_MIN_HEALTH_SCORE", 0.2, minimum=0.0, maximum=1.0)
# Events older than this move to the archive table (assignments.EventArchive).
TETHER_EVENT_RETENTION_DAYS = env_int("TETHER_EVENT_RETENTION_DAYS", 30, minimum=1)
# How many past hours the rollup job recomputes on each run (besides the current one).
TETHER_ROLLUP_HOURS_BACK = env_int("TETHER_ROLLUP_HOURS_BACK", 2, minimum=0, maximum=24 * 31)
# How long a cached live assignment (assignments/cache.py) may live before it is read again. At
# most one reconcile interval: a write Redis lost or applied late (a hung Redis replays what was
# queued for it) then can never say "free" or "held" against the database for longer than that,
# even while the reconcile job is not running.
TETHER_ASSIGNMENT_CACHE_SECONDS = env_int(
    "TETHER_ASSIGNMENT_CACHE_SECONDS", max(1, int(TETHER_JOB_RECONCILE_INTERVAL_SECONDS)), minimum=1
)
if TETHER_ASSIGNMENT_CACHE_SECONDS > TETHER_JOB_RECONCILE_INTERVAL_SECONDS:
    raise ImproperlyConfigured(
        f"TETHER_ASSIGNMENT_CACHE_SECONDS={TETHER_ASSIGNMENT_CACHE_SECONDS} is above "
        f"TETHER_JOB_RECONCILE_INTERVAL_SECONDS={TETHER_JOB_RECONCILE_INTERVAL_SECONDS:g}: a stale cache entry "
        "would outlive a reconcile interval"
    )
# Run the beat's jobs inside the web process (an asyncio task on its event loop) instead of Celery.
# Default on the in-memory broker (embedded mode): there, a separate worker could neither receive the
# beat's messages nor reach the web process's in-memory channel layer with its events.
TETHER_EMBEDDED_JOBS = env_bool("TETHER_EMBEDDED_JOBS", default=CELERY_BROKER_URL.startswith("memory://"))

# --- Tasks (pools/queue.py, pools/dispatch.py) -------------------------------------------------
# A queued task moves up one priority level for each period it has waited (so `low` never starves).
TETHER_TASK_AGING_SECONDS = env_int("TETHER_TASK_AGING_SECONDS", 60, minimum=1)
# Longest long-poll of `POST /api/agents/{agent_id}/tasks/claim`, and how often it looks again.
TETHER_TASK_CLAIM_MAX_WAIT_SECONDS = env_int("TETHER_TASK_CLAIM_MAX_WAIT_SECONDS", 30, minimum=0, maximum=30)
TETHER_TASK_CLAIM_POLL_SECONDS = env_float("TETHER_TASK_CLAIM_POLL_SECONDS", 0.5, minimum=0.05, maximum=5.0)
# Most tasks in one `POST /api/tasks/batch`.
TETHER_TASK_BATCH_MAX = env_int("TETHER_TASK_BATCH_MAX", 500, minimum=1, maximum=10_000)
# --- Monitoring (GET /metrics, dashboard/metrics.py) and alert notifications -----------------------
# A bearer token /metrics asks for (`Authorization: Bearer <token>`); open when unset.
TETHER_METRICS_TOKEN = env_str("TETHER_METRICS_TOKEN", "") or ""
# prometheus_client's multiprocess mode for the request latency histograms: each web worker writes
# its observations here and a scrape sums them (`make serve` sets it; prometheus_client reads the
# same variable when it loads, so it must be in the environment, not only here).
TETHER_METRICS_MULTIPROC_DIR = env_str("PROMETHEUS_MULTIPROC_DIR", "") or ""
if TETHER_METRICS_MULTIPROC_DIR:
    Path(TETHER_METRICS_MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)  # its files are made on first use
# Alerts (alert.* events) are POSTed here as JSON after commit, by a background sender with retries
# (assignments/webhooks.py); nothing is sent when unset. With a secret, each body is signed:
# `X-Tether-Signature: sha256=<HMAC-SHA256 of the body>`.
TETHER_ALERT_WEBHOOK_URL = env_str("TETHER_ALERT_WEBHOOK_URL", "") or ""
TETHER_ALERT_WEBHOOK_SECRET = env_str("TETHER_ALERT_WEBHOOK_SECRET", "") or ""
TETHER_ALERT_WEBHOOK_EVENTS = env_list("TETHER_ALERT_WEBHOOK_EVENTS", default=["alert.raised", "alert.resolved"])
TETHER_ALERT_WEBHOOK_TIMEOUT_SECONDS = env_float("TETHER_ALERT_WEBHOOK_TIMEOUT_SECONDS", 5.0, minimum=0.1, maximum=60.0)
# Attempts per notification (first try included) and the first retry's delay (doubling each time).
TETHER_ALERT_WEBHOOK_ATTEMPTS = env_int("TETHER_ALERT_WEBHOOK_ATTEMPTS", 6, minimum=1, maximum=50)
TETHER_ALERT_WEBHOOK_BACKOFF_SECONDS = env_float("TETHER_ALERT_WEBHOOK_BACKOFF_SECONDS", 1.0, minimum=0.0, maximum=600.0)
# Notifications waiting to be sent, per process; beyond it new ones are dropped (and logged).
TETHER_ALERT_WEBHOOK_QUEUE_SIZE = env_int("TETHER_ALERT_WEBHOOK_QUEUE_SIZE", 1000, minimum=1)

# --- REST API (config/api/) ---------------------------------------------------------------------
# Form posts (admin, dashboard) are small; the API reads JSON itself with its own limit.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("TETHER_DATA_UPLOAD_MAX_MEMORY_SIZE", 256 * 1024, minimum=1024)
# Largest JSON body the API accepts (metadata alone is capped at 16 KiB by the services).
TETHER_API_MAX_BODY_BYTES = env_int("TETHER_API_MAX_BODY_BYTES", 128 * 1024, minimum=1024)
# Requests with more headers, or more header bytes, than this get 400 / 431 (config/middleware.py).
TETHER_MAX_REQUEST_HEADERS = env_int("TETHER_MAX_REQUEST_HEADERS", 100, minimum=10)
TETHER_MAX_REQUEST_HEADER_BYTES = env_int("TETHER_MAX_REQUEST_HEADER_BYTES", 32 * 1024, minimum=1024)
# How long an Idempotency-Key's first answer is kept for replay.
TETHER_IDEMPOTENCY_TTL_SECONDS = env_int("TETHER_IDEMPOTENCY_TTL_SECONDS", 24 * 3600, minimum=60)
# How long a claimed key waits for its request's answer before a retry may run anew (a process that
# died mid-request must not leave the key stuck); longer than any request runs.
TETHER_IDEMPOTENCY_LEASE_SECONDS = env_int("TETHER_IDEMPOTENCY_LEASE_SECONDS", 60, minimum=5, maximum=3600)
# Requests per credential (an agent's or a user's token, a session; else per address).
TETHER_API_THROTTLE_RATE = env_str("TETHER_API_THROTTLE_RATE", "6000/min")
# Invalid tokens one client address may send before it gets 429 for every token until the window ends.
TETHER_API_AUTH_FAILURE_RATE = env_rate("TETHER_API_AUTH_FAILURE_RATE", "30/min")
# Our own reverse proxies (addresses or networks, comma-separated): only requests from these have
# their X-Forwarded-For (and, with TETHER_HTTPS, X-Forwarded-Proto) believed.
TETHER_TRUSTED_PROXIES = env_networks("TETHER_TRUSTED_PROXIES")
CSRF_FAILURE_VIEW = "config.api.errors.csrf_failure"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "config.api.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["config.api.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["config.api.parsers.StrictJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "config.api.pagination.Pagination",
    "DEFAULT_THROTTLE_CLASSES": ["config.api.throttling.CredentialRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"credential": TETHER_API_THROTTLE_RATE or None},
    "DEFAULT_SCHEMA_CLASS": "config.api.schema.AutoSchema",
    "EXCEPTION_HANDLER": "config.api.errors.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "STRICT_JSON": True,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Tether API",
    "DESCRIPTION": "Which browser profile is held by which automation agent. Errors are always "
    '`{"error": {"code", "message", "details"}}`.',
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/api",
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",  # served from our static files: no CDN
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "PREPROCESSING_HOOKS": ["config.api.schema.without_trailing_slash"],
    "ENUM_NAME_OVERRIDES": {
        "AgentStatusEnum": "agents.models.Agent.Status",
        "AssignmentStatusEnum": "assignments.models.Assignment.Status",
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "filters": {
        "quiet_disallowed_host": {"()": "config.logfilters.QuietDisallowedHost"},
        "quiet_redis_backoff": {"()": "config.logfilters.QuietRedisBackoff"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("TETHER_LOG_LEVEL", "INFO")},
    # A line per beat tick and per task run would bury what the jobs did (logged by tether.jobs).
    "loggers": {
        **{
            name: {"level": env_str("TETHER_CELERY_LOG_LEVEL", "WARNING")}
            for name in ("celery.beat", "celery.app.trace", "celery.worker.strategy")
        },
        # Django logs every 4xx as a warning; a refused take (409) is normal traffic, recorded as an
        # event already. Server errors (5xx) still log at ERROR.
        "django.request": {"level": env_str("TETHER_REQUEST_LOG_LEVEL", "ERROR")},
        # django-axes logs every login and logout at INFO; lockouts are WARNING.
        "axes": {"level": "WARNING"},
        "django.security.DisallowedHost": {"filters": ["quiet_disallowed_host"]},
        # Not a traceback per cache command while Redis is skipped after a timeout (config/redis_guard.py).
        "django_redis.cache": {"filters": ["quiet_redis_backoff"]},
    },
}
