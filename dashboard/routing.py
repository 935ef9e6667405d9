"""WebSocket routes (served by config/asgi.py)."""

from django.urls import path

from dashboard.consumers import EventStreamConsumer

websocket_urlpatterns = [
    path("assignments/events", EventStreamConsumer.as_asgi()),
]
