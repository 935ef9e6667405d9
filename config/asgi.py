"""ASGI entry point: HTTP through Django, WebSockets through Channels (routes in dashboard/routing.py).

WebSockets pass a guard that turns any failure into a close the client reconnects after
(dashboard/routing.py), an Origin check (cross-site browser pages are refused, programs without Origin pass)
and are authenticated by the session cookie or an API token (dashboard/auth.py).
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs Django set up first)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from config.embedded_jobs import with_embedded_jobs  # noqa: E402
from dashboard.auth import AllowedHostsOriginValidator, TokenAuthMiddleware  # noqa: E402
from dashboard.routing import close_on_error, websocket_urlpatterns  # noqa: E402

websocket_application = close_on_error(
    AllowedHostsOriginValidator(AuthMiddlewareStack(TokenAuthMiddleware(URLRouter(websocket_urlpatterns))))
)

application = ProtocolTypeRouter({"http": django_asgi_app, "websocket": websocket_application})

if settings.TETHER_EMBEDDED_JOBS:
    # No broker (embedded mode): the beat's jobs run on this server's event loop (config/embedded_jobs.py).
    application = with_embedded_jobs(application)
