import logging
import re
import time

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from config.actors import user_is_operator
from config.auth import principal_for_token
from config.jobs import job_status

log = logging.getLogger(__name__)
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_\-]{1,200}$")


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


def _beat():
    """When each background job last ran (config/jobs.py). A job that ran before but is now overdue
    (no run for 3 intervals and 30 s: the beat or the workers stopped) or whose last run failed makes
    this check fail; jobs that never ran (a fresh install, before the first beat) are listed in
    `never_run` without failing it."""
    jobs = job_status()
    never_run = sorted(name for name, job in jobs.items() if job["last_run"] is None)
    overdue = sorted(name for name, job in jobs.items() if job["overdue"] and job["last_run"] is not None)
    failing = sorted(name for name, job in jobs.items() if job["ok"] is False)
    runner = "embedded" if settings.TETHER_EMBEDDED_JOBS else "celery"
    if overdue or failing:
        raise RuntimeError(
            f"jobs overdue: {', '.join(overdue) or 'none'}; failing: {', '.join(failing) or 'none'} (runner: {runner})"
        )
    return {"runner": runner, "never_run": never_run, "jobs": jobs}


@never_cache
@require_GET
def health(request):
    """Liveness and dependencies for load balancers and operators: 503 when the database is down
    (nothing works without it); cache, channel layer and background-job outages degrade, they do
    not fail. `checks.beat.jobs` says when each job last ran."""
    checks = {"database": _check(_database), "cache": _check(_cache), "channel_layer": _check(_channel_layer)}
    checks["beat"] = _check(_beat) if checks["database"]["ok"] else {"ok": False, "error": "database down"}
    if not checks["beat"]["ok"] and checks["database"]["ok"]:
        try:
            checks["beat"]["jobs"] = job_status()
        except Exception:  # noqa: BLE001 — already reported as failing
            pass
    ok = checks["database"]["ok"]
    degraded = not all(c["ok"] for c in checks.values())
    status = "ok" if not degraded else ("degraded" if ok else "down")
    if not _is_operator(request):
        # Anyone (a load balancer) learns what is up; only operators see why — error messages
        # name hosts and ports, and the job list says what runs where.
        checks = {name: {"ok": check["ok"]} for name, check in checks.items()}
    return JsonResponse({"status": status, "checks": checks}, status=200 if ok else 503)


def _is_operator(request) -> bool:
    """An operator's session, or an operator's `Authorization: Token` (monitoring)."""
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return user_is_operator(user)
    parts = request.META.get("HTTP_AUTHORIZATION", "").split()
    if len(parts) == 2 and parts[0].lower() in ("token", "bearer") and _TOKEN_RE.match(parts[1]):
        try:
            principal = principal_for_token(parts[1])
        except Exception:  # noqa: BLE001 — the database is down: the public answer, then
            return False
        return principal is not None and principal.kind == "user" and user_is_operator(principal.user)
    return False


# The dashboard's pages are in dashboard/pages.py, its operator actions in dashboard/actions.py.
