"""Improvement and user routes, under ``/api/v1/``."""

from django.urls import path

from improvement import api

urlpatterns = [
    path("improvement/runs", api.RunListCreateApi.as_view(), name="improvement-runs"),
    path("improvement/runs/<int:run_id>", api.RunDetailApi.as_view(), name="improvement-run"),
    path("users/<path:user_id>", api.UserForgetApi.as_view(), name="user"),
]
