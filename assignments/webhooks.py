"""Alert notifications to a webhook (TETHER_ALERT_WEBHOOK_URL): each committed `alert.*` event of
TETHER_ALERT_WEBHOOK_EVENTS is POSTed there as JSON, `{"event": <the event payload>}`, signed with
`X-Tether-Signature: sha256=<hex HMAC of the body>` when TETHER_ALERT_WEBHOOK_SECRET is set.

How it never blocks a request: `alert_webhook_enqueue` is one of the declared event consumers
(settings.TETHER_EVENT_CONSUMERS), so it runs only after commit — a rolled-back alert is never
sent — and all it does there is put the payload on an in-process queue (never waiting: when the
queue is full the notification is dropped and logged). One daemon thread per process sends them in
order, retrying a network error, a timeout, a 5xx, a 408 or a 429 with exponential backoff
(TETHER_ALERT_WEBHOOK_BACKOFF_SECONDS, doubling, TETHER_ALERT_WEBHOOK_ATTEMPTS tries in all); any
other 4xx is the receiver refusing that body and is not retried.

Delivery is at least once while the process lives, and best-effort across a crash: what waits in
a process's queue dies with it (the event itself stays in the log; the alert on the dashboard).
Receivers should de-duplicate by `event.seq`.
"""

import hashlib
import hmac
import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request

from django.conf import settings

log = logging.getLogger(__name__)

RETRYABLE_STATUSES = {408, 429}
MAX_BACKOFF_SECONDS = 300.0


class WebhookSender:
    """A bounded queue and the daemon thread that empties it (started on the first notification)."""

    def __init__(self, maxsize: int):
        self.queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()
        self.delivered = 0
        self.dropped = 0

    def submit(self, url: str, payload: dict) -> bool:
        try:
            self.queue.put_nowait((url, payload))
        except queue.Full:
            self.dropped += 1
            log.warning("alert webhook queue full: dropped event %s (%s)", payload.get("seq"), payload.get("type"))
            return False
        with self.lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="tether-alert-webhook", daemon=True)
                self.thread.start()
        return True

    def _run(self) -> None:
        while True:
            url, payload = self.queue.get()
            try:
                if deliver(url, payload):
                    self.delivered += 1
            except Exception:  # noqa: BLE001 — the sender thread must outlive any one notification
                log.exception("alert webhook: event %s not sent", payload.get("seq"))
            finally:
                self.queue.task_done()

    def join(self, timeout: float) -> bool:
        """Wait until everything queued was handled (tests, shutdown); False on timeout."""
        deadline = time.monotonic() + timeout
        while self.queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True


def _post(url: str, body: bytes) -> int:
    headers = {"Content-Type": "application/json", "User-Agent": "tether-alerts/1"}
    if settings.TETHER_ALERT_WEBHOOK_SECRET:
        digest = hmac.new(settings.TETHER_ALERT_WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
        headers["X-Tether-Signature"] = f"sha256={digest}"
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=settings.TETHER_ALERT_WEBHOOK_TIMEOUT_SECONDS) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def deliver(url: str, payload: dict, *, sleep=time.sleep) -> bool:
    """POST one notification, retrying as the module docstring says. True when the receiver took it."""
    body = json.dumps({"event": payload}, separators=(",", ":"), sort_keys=True).encode()
    delay = settings.TETHER_ALERT_WEBHOOK_BACKOFF_SECONDS
    attempts = settings.TETHER_ALERT_WEBHOOK_ATTEMPTS
    for attempt in range(1, attempts + 1):
        try:
            status = _post(url, body)
            problem = f"HTTP {status}"
        except (OSError, ValueError) as exc:  # refused, reset, DNS, timeout; a malformed URL
            status, problem = None, f"{type(exc).__name__}: {exc}"
        if status is not None and 200 <= status < 300:
            return True
        if status is not None and 400 <= status < 500 and status not in RETRYABLE_STATUSES:
            log.warning("alert webhook refused event %s: %s (not retried)", payload.get("seq"), problem)
            return False
        if attempt < attempts:
            log.info("alert webhook attempt %d for event %s failed (%s); retrying in %.1f s",
                     attempt, payload.get("seq"), problem, delay)
            sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_SECONDS)
        else:
            log.warning("alert webhook gave up on event %s after %d attempts (%s)", payload.get("seq"), attempts, problem)
    return False


_sender: WebhookSender | None = None
_sender_lock = threading.Lock()


def webhook_sender() -> WebhookSender:
    global _sender
    with _sender_lock:
        if _sender is None:
            _sender = WebhookSender(settings.TETHER_ALERT_WEBHOOK_QUEUE_SIZE)
        return _sender


def alert_webhook_enqueue(payloads: list[dict]) -> None:
    """Event consumer (after commit): queue the batch's alert events for the webhook, if one is set."""
    url = settings.TETHER_ALERT_WEBHOOK_URL
    if not url:
        return
    wanted = set(settings.TETHER_ALERT_WEBHOOK_EVENTS)
    for payload in payloads:
        if payload.get("type") in wanted:
            webhook_sender().submit(url, payload)
