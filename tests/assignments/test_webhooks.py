"""Alert notifications reach a real HTTP server on loopback, after commit only, retried with backoff."""

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.test import override_settings

from assignments.alerts import alert_raise
from assignments.events import recorded_transaction
from assignments.models import Alert
from assignments.webhooks import WebhookSender, alert_webhook_enqueue, deliver, webhook_sender
from config.actors import Actor

pytestmark = pytest.mark.django_db

ACTOR = Actor.system("test-alerts")


class Receiver:
    """A loopback HTTP server that answers each POST with the next status of `script` (then 204)."""

    def __init__(self, script=()):
        self.script = list(script)
        self.received: list[tuple[dict, dict]] = []
        self.attempts = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.attempts += 1
                status = receiver.script.pop(0) if receiver.script else 204
                if status < 300:
                    receiver.received.append((json.loads(body), dict(self.headers), body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = None
        for port in range(8900, 8950):  # the ports this suite's servers may use on a shared machine
            try:
                self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
                break
            except OSError:
                continue
        assert self.server is not None, "no free port in 8900-8949"
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(script=()):
        made.append(Receiver(script))
        return made[-1]

    yield make
    for r in made:
        r.close()


def _raise(message="Pool k8s has no healthy agent", key="pool_no_healthy_agent:k8s"):
    return alert_raise(kind=Alert.Kind.POOL_NO_HEALTHY_AGENT, actor=ACTOR, message=message, dedup_key=key,
                       severity=Alert.Severity.CRITICAL, pool="k8s")


def test_a_raised_alert_is_posted_after_commit_signed_and_retried_through_503s(receiver, django_capture_on_commit_callbacks):
    hook = receiver([503, 503])
    with override_settings(TETHER_ALERT_WEBHOOK_URL=hook.url, TETHER_ALERT_WEBHOOK_SECRET="s3cret-for-tests",
                           TETHER_ALERT_WEBHOOK_BACKOFF_SECONDS=0.01):
        with django_capture_on_commit_callbacks(execute=True):
            alert, raised = _raise()
        assert raised
        assert webhook_sender().join(timeout=10)
    assert hook.attempts == 3
    ((body, headers, raw),) = hook.received
    event = body["event"]
    assert (event["type"], event["pool"], event["to_status"]) == ("alert.raised", "k8s", "open")
    assert event["data"]["alert_id"] == str(alert.alert_id) and event["data"]["severity"] == "critical"
    expected = hmac.new(b"s3cret-for-tests", raw, hashlib.sha256).hexdigest()
    assert headers["X-Tether-Signature"] == f"sha256={expected}"


def test_a_rolled_back_alert_is_never_sent(receiver, django_capture_on_commit_callbacks):
    hook = receiver()
    with override_settings(TETHER_ALERT_WEBHOOK_URL=hook.url):
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            with pytest.raises(RuntimeError):
                with recorded_transaction():
                    _raise()
                    raise RuntimeError("the change that raised it failed")
        assert callbacks == []
        assert webhook_sender().join(timeout=5)
    assert hook.attempts == 0 and not Alert.objects.exists()


def test_only_the_configured_event_types_are_sent_and_nothing_without_a_url(receiver, django_capture_on_commit_callbacks):
    hook = receiver()
    with override_settings(TETHER_ALERT_WEBHOOK_URL=hook.url, TETHER_ALERT_WEBHOOK_EVENTS=["alert.resolved"]):
        with django_capture_on_commit_callbacks(execute=True):
            alert, _ = _raise()
        from assignments.alerts import alert_resolve

        with django_capture_on_commit_callbacks(execute=True):
            alert_resolve(actor=ACTOR, alert_id=alert.alert_id)
        assert webhook_sender().join(timeout=10)
    assert [b["event"]["type"] for b, _, _ in hook.received] == ["alert.resolved"]
    with override_settings(TETHER_ALERT_WEBHOOK_URL=""):
        alert_webhook_enqueue([{"seq": 1, "type": "alert.raised"}])
        assert webhook_sender().join(timeout=5)
    assert hook.attempts == 1


def test_a_4xx_refusal_is_not_retried_and_a_dead_receiver_is_given_up_after_the_attempts(receiver):
    hook = receiver([400])
    waits = []
    with override_settings(TETHER_ALERT_WEBHOOK_BACKOFF_SECONDS=0.5, TETHER_ALERT_WEBHOOK_ATTEMPTS=4):
        assert deliver(hook.url, {"seq": 7, "type": "alert.raised"}, sleep=waits.append) is False
        assert hook.attempts == 1 and waits == []
        hook.close()
        assert deliver(hook.url, {"seq": 8, "type": "alert.raised"}, sleep=waits.append) is False
    assert waits == [0.5, 1.0, 2.0]  # exponential backoff between the four attempts


def test_a_full_queue_drops_instead_of_blocking():
    class StuckThread:  # a sender thread busy elsewhere: nothing drains the queue
        def is_alive(self):
            return True

    sender = WebhookSender(maxsize=1)
    sender.thread = StuckThread()
    assert sender.submit("http://127.0.0.1:1/", {"seq": 1, "type": "alert.raised"}) is True
    assert sender.submit("http://127.0.0.1:1/", {"seq": 2, "type": "alert.raised"}) is False
    assert sender.dropped == 1
