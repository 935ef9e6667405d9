"""ASGI entry point: HTTP through Django, WebSockets through Channels (routes in dashboard/routing.py).

HTTP (TETHER_HTTP_HANDLER): with Redis, Django's WSGI handler on a fixed pool of
TETHER_HTTP_THREADS threads per process (config/wsgi_threads.py: one hand-off to a thread and one
back per request, where a2wsgi, used before, made four or five), and long-polls on
TETHER_HTTP_LONG_POLL_THREADS threads of their own. Django's ASGI handler runs every sync
view through a new thread and several thread hops per request. A rough measure (one worker, 16
agents heartbeating and reading themselves, on the shared 2-CPU machine at load 5–10, so only the
ratios mean anything): Django's ASGI handler under uvicorn 4.8–6.2 ms of server CPU a request,
112–144 req/s; this (the WSGI handler in threads under uvicorn) 3.3–3.9 ms, 184–275 req/s;
gunicorn alone (gthread, 16 threads) 3.3–3.6 ms, 207–231 req/s. So nearly all of what a separate
WSGI server beside an ASGI server would gain (issue 15), with one server and one port. A fixed pool of threads also bounds the database connections a process can
hold, pool or not. In embedded mode (the in-memory channel layer) HTTP stays on Django's ASGI handler: a
request's events must be published on the server's own event loop, where the in-memory layer's
subscribers wait, and only the ASGI handler's threads lead back to it.

WebSockets pass a guard that turns any failure into a close the client reconnects after
(dashboard/routing.py), an Origin check (cross-site browser pages are refused, programs without Origin pass)
and are authenticated by the session cookie or an API token (dashboard/auth.py).
"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup(set_prefix=False)

from channels.auth import AuthMiddlewareStack  # noqa: E402  (the rest needs Django set up first)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402

from config.embedded_jobs import with_embedded_jobs  # noqa: E402
from config.wsgi_threads import ThreadPoolWSGI, long_poll_paths  # noqa: E402
from dashboard.auth import AllowedHostsOriginValidator, TokenAuthMiddleware  # noqa: E402
from dashboard.routing import close_on_error, websocket_urlpatterns  # noqa: E402

if settings.TETHER_HTTP_HANDLER == "wsgi":
    wsgi_application = get_wsgi_application()  # loads the URL conf, which long_poll_paths reads
    long_polls = long_poll_paths()
    http_application = ThreadPoolWSGI(
        wsgi_application, threads=settings.TETHER_HTTP_THREADS,
        long_poll_threads=settings.TETHER_HTTP_LONG_POLL_THREADS,
        long_poll=long_polls.match if long_polls else None,
    )
else:
    http_application = get_asgi_application()

websocket_application = close_on_error(
    AllowedHostsOriginValidator(AuthMiddlewareStack(TokenAuthMiddleware(URLRouter(websocket_urlpatterns))))
)

application = ProtocolTypeRouter({"http": http_application, "websocket": websocket_application})

if settings.TETHER_EMBEDDED_JOBS:
    # No broker (embedded mode): the beat's jobs run on this server's event loop (config/embedded_jobs.py).
    application = with_embedded_jobs(application)
