"""Everything under /api/: the apps' endpoints, the OpenAPI schema and its docs (no CDN)."""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from config.api.converters import route

urlpatterns = [
    path("", include("pools.api.urls")),
    path("", include("agents.api.urls")),
    path("", include("assignments.api.urls")),
    route("schema", SpectacularAPIView.as_view(), "schema"),
    route("docs", SpectacularSwaggerSplitView.as_view(url_name="schema"), "docs"),  # no inline script (CSP)
]
