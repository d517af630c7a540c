"""URL configuration: the API under /api/v1, admin, the demo page."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.permissions import AllowAny

from studio.console import dashboard
from studio.console.api import HealthApi
from studio.core.token_api import TokenCreateApi

api_v1 = [
    path("health", HealthApi.as_view(), name="health"),
    # The schema and its UI describe the API and hold no data: public, like health.
    path("schema", SpectacularAPIView.as_view(permission_classes=[AllowAny], authentication_classes=[]), name="schema"),
    path(
        "docs",
        SpectacularSwaggerView.as_view(url_name="schema", permission_classes=[AllowAny], authentication_classes=[]),
        name="docs",
    ),
    path("tokens", TokenCreateApi.as_view(), name="tokens"),
    path("", include("studio.catalogue.urls")),
    path("", include("clickstream.urls")),
    path("", include("improvement.urls")),
]

urlpatterns = [
    path("api/v1/", include(api_v1)),
    # Staff-only dashboards (admin_view: staff login, CSRF, never cached), before the admin's catch-all.
    path("admin/dashboard/", admin.site.admin_view(dashboard.dashboard), name="studio-dashboard"),
    path("admin/users/<path:user_id>/", admin.site.admin_view(dashboard.user_detail), name="studio-user"),
    path("admin/", admin.site.urls),
    path("", include("studio.console.urls")),
]
