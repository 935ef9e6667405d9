"""One HTTP session to Tether, with the retry rules the server's contract allows.

What is retried, and why it is safe:
- 429 `throttled`, on any request: the throttle refuses before the view runs, so nothing happened;
  the wait is the server's `Retry-After` (or backoff when it gives none).
- 503 and connection failures before the request was sent, on any request: a 503 from Tether means
  the database refused the transaction and nothing was written.
- 502/504 and failures after the request may have been sent (read timeouts, dropped connections):
  only for requests that may run twice — GET, PUT, DELETE (release is idempotent), requests marked
  `retry_safe` (heartbeats), and POSTs that carry an `Idempotency-Key` (takes, registrations,
  submits: the server replays the first answer to a retry with the same key and body).
- 409 `idempotency_in_progress`: the first request with that key is still running; ask again.
Anything else raises at once as a typed error (`tether_client.errors`).
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import httpx

from tether_client import __version__
from tether_client.errors import ApiError, ConnectionFailed, TetherError, error_for

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
_RETRY_STATUS_ANY = frozenset({429, 503})
_RETRY_STATUS_SAFE = frozenset({502, 504})


def new_idempotency_key() -> str:
    return f"tc-{uuid.uuid4()}"


class Http:
    """`httpx.Client` plus Tether's auth header, error mapping and retry rules. Thread-safe (httpx's
    client is), so an agent's heartbeat thread and its workers share one connection pool."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 5,
        backoff: float = 0.25,
        max_backoff: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        headers = {"Accept": "application/json", "User-Agent": f"tether-client/{__version__}"}
        try:
            self.client = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, transport=transport)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol, ValueError, TypeError) as exc:
            raise ConnectionFailed(f"invalid Tether URL {base_url!r}: {exc}") from None
        if not self.client.base_url.host:
            raise ConnectionFailed(f"invalid Tether URL {base_url!r}: give it as http://host:port")

    def close(self) -> None:
        self.client.close()

    def _sleep_for(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_backoff * 6)
        # Exponential backoff with full jitter, so a fleet that failed together does not retry together.
        return random.uniform(0, min(self.max_backoff, self.backoff * (2**attempt)))

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        retry_safe: bool | None = None,
        token: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Send one request (retrying what is safe) and return the decoded JSON body (None when empty).
        Raises an `ApiError` subclass for an error answer, `ConnectionFailed` when unreachable."""
        method = method.upper()
        hdrs: dict[str, str] = dict(headers or {})
        credential = token if token is not None else self.token
        if credential:
            hdrs["Authorization"] = f"Token {credential}"
        if idempotency_key:
            hdrs["Idempotency-Key"] = idempotency_key
        if retry_safe is None:
            retry_safe = method in IDEMPOTENT_METHODS or bool(idempotency_key)
        clean_params = {k: _param(v) for k, v in (params or {}).items() if v is not None}
        extra: dict[str, Any] = {}
        if timeout is not None:
            extra["timeout"] = timeout
        attempt = 0
        while True:
            try:
                response = self.client.request(method, path, json=json, params=clean_params, headers=hdrs, **extra)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                # Never sent: safe to retry whatever the request.
                if attempt >= self.max_retries:
                    raise ConnectionFailed(f"cannot reach Tether at {self.base_url}: {_reason(exc)}") from None
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                # May have been sent and run: only what may run twice.
                if not retry_safe or attempt >= self.max_retries:
                    raise ConnectionFailed(f"lost the connection to Tether at {self.base_url}: {_reason(exc)}") from None
            except httpx.InvalidURL as exc:
                raise ConnectionFailed(f"invalid Tether URL {self.base_url!r}: {exc}") from None
            except httpx.UnsupportedProtocol as exc:
                raise ConnectionFailed(f"invalid Tether URL {self.base_url!r}: {exc}") from None
            else:
                body = _decode(response)
                if response.status_code < 400:
                    return body
                error = error_for(response.status_code, body)
                retriable = (
                    response.status_code in _RETRY_STATUS_ANY
                    or (retry_safe and response.status_code in _RETRY_STATUS_SAFE)
                    or (idempotency_key is not None and error.code == "idempotency_in_progress")
                )
                if not retriable or attempt >= self.max_retries:
                    raise error
                time.sleep(self._sleep_for(attempt, _retry_after(response, error)))
                attempt += 1
                continue
            time.sleep(self._sleep_for(attempt, None))
            attempt += 1

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, json: Any = None, **kw: Any) -> Any:
        return self.request("POST", path, json=json, **kw)

    def iterate(self, path: str, *, params: Mapping[str, Any] | None = None, limit: int | None = None,
                page_size: int = 200) -> Iterator[dict[str, Any]]:
        """Every item of a paginated list (`{"count", "next", "previous", "results"}`), page by page,
        stopping after `limit` items when given."""
        query: dict[str, Any] = dict(params or {})
        query.setdefault("page_size", page_size)
        page = 1
        seen = 0
        while True:
            body = self.get(path, params={**query, "page": page})
            results = body.get("results", []) if isinstance(body, dict) else body
            for item in results:
                yield item
                seen += 1
                if limit is not None and seen >= limit:
                    return
            if not isinstance(body, dict) or not body.get("next"):
                return
            page += 1


def as_object(value: Any) -> dict[str, Any]:
    """The JSON object an endpoint answers with (a TetherError when it answered something else)."""
    if not isinstance(value, dict):
        raise TetherError(f"expected a JSON object from Tether, got {type(value).__name__}")
    return value


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple, set)):
        return ",".join(str(v) for v in value)
    return str(value)


def _decode(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return {"error": {"code": f"http_{response.status_code}", "message": response.text[:200].strip() or
                          f"HTTP {response.status_code}", "details": {}}} if response.status_code >= 400 else None


def _retry_after(response: httpx.Response, error: ApiError) -> float | None:
    header = response.headers.get("Retry-After")
    if header:
        try:
            return float(header)
        except ValueError:
            return None
    hint = error.details.get("retry_after")
    return float(hint) if isinstance(hint, (int, float)) else None


def _reason(exc: Exception) -> str:
    text = str(exc).strip()
    return text or type(exc).__name__
