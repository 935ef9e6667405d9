from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from dashboard import views as dashboard_views
from dashboard.metrics import metrics_view

urlpatterns = [
    path("api/", include("config.api.urls")),  # first: the agents' requests are nearly all of them
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("health", dashboard_views.health, name="health"),
    path("metrics", metrics_view, name="metrics"),
    path("", include("dashboard.urls")),
]

# Under /api/ these answer in the API's error shape; elsewhere Django's own pages.
handler400 = "config.api.errors.handler400"
handler403 = "config.api.errors.handler403"
handler404 = "config.api.errors.handler404"
handler500 = "config.api.errors.handler500"
