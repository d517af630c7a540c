"""Improvement run endpoints (scope ``admin``): start a run, list runs, read one."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from improvement import selectors, services
from improvement.models import ImprovementRun, RunTrigger
from studio.core.errors import ApiError
from studio.core.serializers import AUTH_ERRORS, ErrorSerializer, StrictSerializer


class RunOutputSerializer(serializers.ModelSerializer):
    """An improvement run as the API shows it (running totals stay internal)."""

    metrics = serializers.SerializerMethodField()

    class Meta:
        model = ImprovementRun
        fields = [
            "id",
            "trigger",
            "status",
            "created_at",
            "started_at",
            "finished_at",
            "parameters",
            "claimed",
            "used",
            "skipped",
            "failed",
            "objects_personalized",
            "batches",
            "metrics",
            "duration_seconds",
            "sessions_per_second",
            "error",
        ]

    def get_metrics(self, run: ImprovementRun) -> dict:
        return {name: value for name, value in (run.metrics or {}).items() if name != "totals"}


class RunPagination(PageNumberPagination):
    """``?page=N&page_size=M`` (at most 100 a page)."""

    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100


class RunPageSerializer(serializers.Serializer):
    """One page of runs, newest first."""

    count = serializers.IntegerField()
    next = serializers.CharField(allow_null=True)
    previous = serializers.CharField(allow_null=True)
    results = RunOutputSerializer(many=True)


class RunListCreateApi(APIView):
    """``POST /api/v1/improvement/runs`` starts a run; ``GET`` lists runs, newest first."""

    required_scope = "admin"

    class InputSerializer(StrictSerializer):
        """No fields: the run uses the IMPROVEMENT_* settings."""

    class CreatedSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        status = serializers.CharField()

    @extend_schema(
        request=InputSerializer,
        responses={202: CreatedSerializer, 400: ErrorSerializer, 503: ErrorSerializer, **AUTH_ERRORS},
        tags=["improvement"],
        description="Queue an improvement run now (a Celery worker executes it); 202 with its id, "
        "503 when the broker cannot take it (the run is then recorded as failed, not left queued).",
    )
    def post(self, request):
        serializer = self.InputSerializer(data=request.data if request.data is not None else {})
        serializer.is_valid(raise_exception=True)
        run = services.queue_run(trigger=RunTrigger.API)  # BrokerUnavailable → 503
        return Response({"id": run.pk, "status": run.status}, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        parameters=[
            OpenApiParameter("page", int, description="Page number (1-based)."),
            OpenApiParameter("page_size", int, description="Runs per page (default 20, at most 100)."),
        ],
        responses={200: RunPageSerializer, 404: ErrorSerializer, **AUTH_ERRORS},
        tags=["improvement"],
        operation_id="improvement_runs_list",
    )
    def get(self, request):
        paginator = RunPagination()
        page = paginator.paginate_queryset(selectors.run_list(), request, view=self)
        return paginator.get_paginated_response(RunOutputSerializer(page, many=True).data)


class RunDetailApi(APIView):
    """``GET /api/v1/improvement/runs/{id}``."""

    required_scope = "admin"

    @extend_schema(responses={200: RunOutputSerializer, 404: ErrorSerializer, **AUTH_ERRORS}, tags=["improvement"])
    def get(self, request, run_id: int):
        run = selectors.get_run(run_id=run_id)
        if run is None:
            raise ApiError(code="not_found", message=f"No improvement run {run_id}.", status_code=404)
        return Response(RunOutputSerializer(run).data)
