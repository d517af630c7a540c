"""URL configuration: the API under /api/v1, admin, the demo page."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.permissions import AllowAny

from studio import api, dashboard

api_v1 = [
    path("health", api.HealthApi.as_view(), name="health"),
    path("objects", api.ObjectUpsertApi.as_view(), name="objects"),
    path("objects/<path:object_id>", api.ObjectDetailApi.as_view(), name="object-detail"),
    # The schema and its UI describe the API and hold no data: public, like health.
    path("schema", SpectacularAPIView.as_view(permission_classes=[AllowAny], authentication_classes=[]), name="schema"),
    path(
        "docs",
        SpectacularSwaggerView.as_view(url_name="schema", permission_classes=[AllowAny], authentication_classes=[]),
        name="docs",
    ),
    path("", include("studio.search_urls")),
    path("", include("clickstream.urls")),
    path("", include("improvement.urls")),
]

urlpatterns = [
    path("api/v1/", include(api_v1)),
    # Staff-only dashboards (admin_view: staff login, CSRF, never cached), before the admin's catch-all.
    path("admin/dashboard/", admin.site.admin_view(dashboard.dashboard), name="studio-dashboard"),
    path("admin/users/<path:user_id>/", admin.site.admin_view(dashboard.user_detail), name="studio-user"),
    path("admin/", admin.site.urls),
    path("", include("studio.demo_urls")),
]
