"""The ASGI application the browser tests serve with daphne: Tether's own, plus static files served
from the finders (the tests do not run collectstatic)."""

from channels.routing import ProtocolTypeRouter
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

from config.asgi import http_application, websocket_application

application = ProtocolTypeRouter({"http": ASGIStaticFilesHandler(http_application), "websocket": websocket_application})
