"""Clickstream routes, under ``/api/v1/``.

``sessions/batch`` comes before ``sessions/<session_id>``; session ids contain no '/' (validated),
so the suffixed routes resolve unambiguously.
"""

from django.urls import path

from clickstream import api, experiments_api

urlpatterns = [
    path("clickstream/sessions", api.SessionCreateApi.as_view(), name="clickstream-sessions"),
    path("clickstream/sessions/batch", api.SessionBatchApi.as_view(), name="clickstream-sessions-batch"),
    path(
        "clickstream/sessions/<str:session_id>/events",
        api.SessionEventsApi.as_view(),
        name="clickstream-session-events",
    ),
    path(
        "clickstream/sessions/<str:session_id>/irrelevant",
        api.SessionIrrelevantApi.as_view(),
        name="clickstream-session-irrelevant",
    ),
    path("clickstream/sessions/<str:session_id>", api.SessionDetailApi.as_view(), name="clickstream-session"),
    path("clickstream/events", api.EventsApi.as_view(), name="clickstream-events"),
    path(
        "experiments/interleaving", experiments_api.InterleavingExperimentApi.as_view(), name="experiments-interleaving"
    ),
    path("judgments", experiments_api.JudgmentsExportApi.as_view(), name="judgments"),
]
