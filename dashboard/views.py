import logging
import time

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

log = logging.getLogger(__name__)


def _check(fn) -> dict:
    started = time.perf_counter()
    try:
        detail = fn()
    except Exception as exc:  # noqa: BLE001 — a health check reports failures, it does not raise them
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    result = {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 1)}
    if detail:
        result.update(detail)
    return result


def _database():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"engine": connection.vendor}


def _cache():
    key = "health:probe"
    cache.set(key, "1", timeout=10)
    if settings.REDIS_URL:
        # django-redis ignores Redis errors (the cache must not break the API); ask Redis directly.
        from django_redis import get_redis_connection

        get_redis_connection("default").ping()
        return {"backend": "redis"}
    if cache.get(key) != "1":
        raise RuntimeError("cache did not return what was stored")
    return {"backend": "locmem"}


def _channel_layer():
    backend = settings.CHANNEL_LAYERS["default"]["BACKEND"]
    if "redis" in backend.lower():
        import redis

        redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1).ping()
        return {"backend": "redis"}
    return {"backend": "in-memory"}


@never_cache
@require_GET
def health(request):
    """Liveness and dependencies for load balancers and operators: 503 when the database is down
    (nothing works without it); cache and channel layer outages degrade, they do not fail."""
    checks = {"database": _check(_database), "cache": _check(_cache), "channel_layer": _check(_channel_layer)}
    ok = checks["database"]["ok"]
    degraded = not all(c["ok"] for c in checks.values())
    status = "ok" if not degraded else ("degraded" if ok else "down")
    return JsonResponse({"status": status, "checks": checks}, status=200 if ok else 503)


# The dashboard's pages are in dashboard/pages.py, its operator actions in dashboard/actions.py.
