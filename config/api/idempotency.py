"""`Idempotency-Key` for the creating POSTs (take a profile, register an agent).

The first request with a key claims it (a row committed before any work, so a concurrent retry sees
it); its answer — success or a 4xx — is stored and replayed to any retry with the same key and the
same body, which changes nothing. The same key with another body is a 422; a retry while the first
is still running is a 409 `idempotency_in_progress`. A 5xx releases the claim so the retry can run.
Keys are scoped per credential and expire after TETHER_IDEMPOTENCY_TTL_SECONDS.

A claim is a lease: until its request finishes it expires after TETHER_IDEMPOTENCY_LEASE_SECONDS
(60 s by default; far longer than any request may run). A process that dies between claiming a key
and storing its answer did nothing that committed under the key, so a retry after the lease runs
anew instead of getting 409 for a day.

The stored answer may carry a new agent token, so it is encrypted with a key derived from
SECRET_KEY and the idempotency key: a leaked table alone reveals no token.
"""

import base64
import functools
import hashlib
import json
import re
from datetime import timedelta

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.utils.encoders import JSONEncoder

from assignments.models import IdempotencyKey
from config.api.errors import IdempotencyInProgress, IdempotencyKeyReused
from config.sql import sql_insert, sql_update

HEADER = "Idempotency-Key"
_KEY_RE = re.compile(r"^[\x21-\x7e]{1,200}$")  # printable ASCII, no spaces


def _fernet(key: str, scope: str) -> Fernet:
    secret = hashlib.sha256(f"tether-idempotency|{settings.SECRET_KEY}|{scope}|{key}".encode()).digest()
    return Fernet(base64.urlsafe_b64encode(secret))


def _request_hash(endpoint: str, data) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), cls=JSONEncoder)
    return hashlib.sha256(f"{endpoint}\n{canonical}".encode("utf-8", "surrogatepass")).hexdigest()


# The claim's statements are built once (config/sql.py's writers; this DELETE by hand): an idempotent
# take compiled three ORM queries for them, each costing more CPU than its round trip.
_DELETE_EXPIRED = f"DELETE FROM {IdempotencyKey._meta.db_table} WHERE scope = %s AND key = %s AND expires_at <= %s"


def _delete_expired(scope: str, key: str, now) -> None:
    """An expired claim or answer of this key goes, so the key can be claimed anew."""
    if connection.vendor != "postgresql":
        IdempotencyKey.objects.filter(scope=scope, key=key, expires_at__lte=now).delete()
        return
    with connection.cursor() as cursor:
        cursor.execute(_DELETE_EXPIRED, [scope, key, now])


def _claim(scope: str, key: str, endpoint: str, request_hash: str) -> tuple[IdempotencyKey, bool]:
    now = timezone.now()
    _delete_expired(scope, key, now)
    row = IdempotencyKey(
        scope=scope,
        key=key,
        endpoint=endpoint,
        request_hash=request_hash,
        created_at=now,
        # The lease; the answer, once stored, is kept for the full TTL.
        expires_at=now + timedelta(seconds=settings.TETHER_IDEMPOTENCY_LEASE_SECONDS),
    )
    try:
        with transaction.atomic():
            sql_insert(row)
        return row, True
    except IntegrityError:
        # Another request claimed this key first: answer from its row.
        return IdempotencyKey.objects.get(scope=scope, key=key), False


def idempotent(scope_for):
    """Decorate a view method; `scope_for(request)` names the credential (None: no idempotency)."""

    def decorate(method):
        @functools.wraps(method)
        def wrapper(view, request, *args, **kwargs):
            key = request.headers.get(HEADER)
            scope = scope_for(request) if key is not None else None
            if key is None or scope is None:
                return method(view, request, *args, **kwargs)
            if not _KEY_RE.match(key):
                raise ValidationError({HEADER: ["must be 1–200 printable ASCII characters"]})
            endpoint = f"{request.method} {request.path.rstrip('/')}"
            request_hash = _request_hash(endpoint, request.data)
            row, claimed = _claim(scope, key, endpoint, request_hash)
            if not claimed:
                if row.request_hash != request_hash:
                    raise IdempotencyKeyReused()
                if row.status_code is None:
                    raise IdempotencyInProgress(
                        f"a request with this Idempotency-Key is still being processed; retry shortly "
                        f"(an abandoned one is given up at {row.expires_at.isoformat()})"
                    )
                try:
                    body = json.loads(_fernet(key, scope).decrypt(bytes(row.response_body)))
                except InvalidToken:
                    raise IdempotencyKeyReused() from None
                return Response(body, status=row.status_code, headers={"Idempotent-Replayed": "true"})
            try:
                response = method(view, request, *args, **kwargs)
            except Exception as exc:  # noqa: BLE001 — the error answer is stored like any other
                response = view.handle_exception(exc)
            if response.status_code >= 500:
                IdempotencyKey.objects.filter(pk=row.pk).delete()
                return response
            encoded = json.dumps(response.data, cls=JSONEncoder).encode()
            # By pk: if this request outlived its lease and a retry claimed the key anew, the
            # retry's row is a new one and keeps its own answer.
            row.status_code = response.status_code
            row.response_body = _fernet(key, scope).encrypt(encoded)
            row.expires_at = timezone.now() + timedelta(seconds=settings.TETHER_IDEMPOTENCY_TTL_SECONDS)
            sql_update(row, ["status_code", "response_body", "expires_at"])
            return response

        return wrapper

    return decorate


def idempotency_keys_prune(*, now=None) -> int:
    """Forget expired keys (for the periodic clean-up job; a retry of an expired key runs anew).
    Returns how many were deleted."""
    deleted, _ = IdempotencyKey.objects.filter(expires_at__lte=now or timezone.now()).delete()
    return deleted


def idempotency_keys_prune_expired(*, actor=None, now=None, limit: int = 1000) -> dict:
    """The periodic clean-up job (config/jobs.py): forget at most `limit` expired keys per run.
    API bookkeeping, not domain state, so no event is recorded."""
    now = now or timezone.now()
    expired = list(IdempotencyKey.objects.filter(expires_at__lte=now).values_list("pk", flat=True)[:limit])
    deleted, _ = IdempotencyKey.objects.filter(pk__in=expired).delete()
    return {"deleted": deleted}
