"""``GET /api/v1/health`` (no key): database, pgvector, broker, workers, pending sessions."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from studio.console import health


class HealthApi(APIView):
    """``GET /api/v1/health`` (no key): 200 when database and broker answer, else 503."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []

    @extend_schema_serializer(component_name="Health")
    class OutputSerializer(serializers.Serializer):
        status = serializers.ChoiceField(choices=["ok", "degraded"])
        database = serializers.DictField(help_text="ok, postgresql (server version), pgvector, latency_ms, error")
        broker = serializers.DictField(help_text="ok, error")
        workers = serializers.DictField(help_text="ok (a worker sent a heartbeat lately), workers (names)")
        pending_sessions = serializers.IntegerField(
            allow_null=True, help_text="Sessions waiting for improvement, counted up to 100,000."
        )
        pending_sessions_capped = serializers.BooleanField(help_text="True when there are more than 100,000.")
        interleaving = serializers.DictField(
            allow_null=True,
            help_text="While STUDIO_INTERLEAVE_FRACTION > 0: ok (false with a warning when the learned ranking loses "
            "significantly), sessions, wins, losses, ties, win_rate, p_value; null otherwise",
        )
        metric = serializers.CharField()
        embedding_dim = serializers.IntegerField()

    @extend_schema(responses={200: OutputSerializer, 503: OutputSerializer}, tags=["health"], auth=[])
    def get(self, request):
        healthy, report = health.health_report()
        return Response(report, status=status.HTTP_200_OK if healthy else status.HTTP_503_SERVICE_UNAVAILABLE)
