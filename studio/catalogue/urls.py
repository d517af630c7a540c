"""Catalogue and search routes (included under /api/v1/ by ``studio.config.urls``)."""

from django.urls import path

from studio.catalogue import api
from studio.catalogue.search_api import SearchApi

urlpatterns = [
    path("objects", api.ObjectUpsertApi.as_view(), name="objects"),
    path("objects/<path:object_id>", api.ObjectDetailApi.as_view(), name="object-detail"),
    path("search", SearchApi.as_view(), name="search"),
]
