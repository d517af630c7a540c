"""Improvement and user routes, under ``/api/v1/``."""

from django.urls import path

from improvement.api import runs, users

urlpatterns = [
    path("improvement/runs", runs.RunListCreateApi.as_view(), name="improvement-runs"),
    path("improvement/runs/<int:run_id>", runs.RunDetailApi.as_view(), name="improvement-run"),
    path("users/<path:user_id>", users.UserForgetApi.as_view(), name="user"),
]
