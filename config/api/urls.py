"""Everything under /api/: the apps' endpoints, the OpenAPI schema and its docs (no CDN)."""

from csp.decorators import csp_update
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from config.api.converters import route

SWAGGER_STYLE_HASH = "'sha256-MMpT0iDxyjALd9PdfepImGX3DBfJPXZ4IlDWdPAgtn0='"

# Tried in this order, every pattern of an include before the next one's: the agents' (heartbeats:
# the most frequent request) and the assignments' (takes and releases) first. No two apps share a
# path, so the order changes only the cost of resolving.
urlpatterns = [
    path("", include("agents.api.urls")),
    path("", include("assignments.api.urls")),
    path("", include("pools.api.urls")),
    route("schema", SpectacularAPIView.as_view(), "schema"),
    # The split view has no inline script; its template has one small <style> block, allowed by its
    # hash (drf-spectacular 0.30's template: a new version may need the hash its console names).
    route("docs", csp_update({"style-src": [SWAGGER_STYLE_HASH]})(SpectacularSwaggerSplitView.as_view(url_name="schema")),
          "docs"),
]
