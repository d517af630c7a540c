"""URL route of the search endpoint (included under /api/v1/ by ``studio.urls``)."""

from django.urls import path

from studio.search_api import SearchApi

urlpatterns = [
    path("search", SearchApi.as_view(), name="search"),
]
