from config.api.converters import route
from pools.api import views

urlpatterns = [
    route("pools", views.PoolListCreateView.as_view(), "pool-list"),
    route("pools/(?P<name>{id})", views.PoolDetailView.as_view(), "pool-detail"),
]
