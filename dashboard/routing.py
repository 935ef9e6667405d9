# WebSocket routes. The event stream consumer (ws://HOST/assignments/events) is added here.
websocket_urlpatterns: list = []
