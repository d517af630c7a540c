"""Routes of the demo page (served only with ``STUDIO_DEMO=true``; 404 otherwise)."""

from django.urls import path

from studio.console import demo

urlpatterns = [
    path("", demo.demo_page, name="demo"),
    path("demo/improve", demo.improve_now, name="demo-improve"),
    path("demo/improve/<int:run_id>", demo.improve_status, name="demo-improve-status"),
]
