"""``GET /api/v1/experiments/interleaving`` and ``GET /api/v1/judgments`` (scope ``admin``): the online proof."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta

from django.http import StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from clickstream import experiments, judgments
from studio.core.serializers import AUTH_ERRORS, ErrorSerializer, StrictSerializer

DEFAULT_DAYS = 7
SINCE = OpenApiParameter(
    "since",
    OpenApiTypes.DATETIME,
    description=f"From this moment (ISO 8601; a date means its midnight UTC). Default: {DEFAULT_DAYS} days ago.",
)


class SinceField(serializers.Field):
    """An ISO 8601 moment or date, not in the future; default ``DEFAULT_DAYS`` ago."""

    def to_internal_value(self, data):
        text = str(data).strip()
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise serializers.ValidationError("An ISO 8601 date or date-time, e.g. 2026-12-01.") from None
        if len(text) == 10:
            moment = datetime.combine(moment.date(), time(), tzinfo=UTC)
        try:  # in UTC: PostgreSQL refuses offsets past ±15:59 that Python accepts
            moment = moment.replace(tzinfo=UTC) if timezone.is_naive(moment) else moment.astimezone(UTC)
        except OverflowError:
            raise serializers.ValidationError("Out of range.") from None
        if moment > timezone.now():
            raise serializers.ValidationError("Must not be in the future.")
        return moment


def _since_default() -> datetime:
    return timezone.now() - timedelta(days=DEFAULT_DAYS)


class InterleavingExperimentApi(APIView):
    """Team-draft interleaving of the learned ranking against the base ranking: wins, losses, ties, the win rate
    with its 95 % interval and a two-sided sign-test p-value, overall and per day."""

    required_scope = "admin"

    class QuerySerializer(StrictSerializer):
        since = SinceField(required=False)

    class InterleavingDaySerializer(serializers.Serializer):
        day = serializers.DateField()
        sessions = serializers.IntegerField(help_text="Interleaved sessions (with or without clicks).")
        wins = serializers.IntegerField(help_text="Sessions whose clicks credited the learned ranking more.")
        losses = serializers.IntegerField(help_text="Sessions whose clicks credited the base ranking more.")
        ties = serializers.IntegerField(help_text="Sessions with clicks crediting both equally.")
        win_rate = serializers.FloatField(allow_null=True, help_text="wins / (wins + losses).")
        win_rate_ci95 = serializers.ListField(child=serializers.FloatField(), allow_null=True)
        p_value = serializers.FloatField(help_text="Two-sided exact sign test over wins and losses.")

    class InterleavingReportSerializer(InterleavingDaySerializer):
        day = None
        since = serializers.DateTimeField()
        days = serializers.ListField(child=serializers.DictField(), help_text="The same fields per day (UTC).")

    @extend_schema(
        parameters=[SINCE],
        responses={200: InterleavingReportSerializer, 400: ErrorSerializer, **AUTH_ERRORS},
        tags=["experiments"],
    )
    def get(self, request):
        query = self.QuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        report = experiments.interleaving_report(since=query.validated_data.get("since") or _since_default())
        return Response(self.InterleavingReportSerializer(report).data)


class JudgmentsExportApi(APIView):
    """Relevance judgments per (query, object) from the stored clicks, streamed: ``format=csv`` gives Quepid's and
    the Search Relevance Workbench's ``query,docid,rating``; ``format=jsonl`` every field (shown, examined,
    clicks, the cascade estimate, the 0–3 rating)."""

    required_scope = "admin"

    def perform_content_negotiation(self, request, force=False):
        # ``?format=`` is this endpoint's own parameter (csv|jsonl), not DRF's renderer switch: never a 404 for it.
        return super().perform_content_negotiation(request, force=True)

    class QuerySerializer(StrictSerializer):
        since = SinceField(required=False)
        min_sessions = serializers.IntegerField(required=False, default=1, min_value=1, max_value=1_000_000)
        format = serializers.ChoiceField(choices=["csv", "jsonl"], required=False, default="csv")

    @extend_schema(
        parameters=[
            SINCE,
            OpenApiParameter("min_sessions", int, description="Only pairs shown in at least this many sessions."),
            OpenApiParameter("format", str, enum=["csv", "jsonl"], description="Default csv."),
        ],
        responses={
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="query,docid,rating"),
            (200, "application/x-ndjson"): OpenApiResponse(OpenApiTypes.STR, description="one JSON object a line"),
            400: ErrorSerializer,
            **AUTH_ERRORS,
        },
        tags=["experiments"],
    )
    def get(self, request):
        query = self.QuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        data = query.validated_data
        rows = judgments.judgments(since=data.get("since") or _since_default(), min_sessions=data["min_sessions"])
        if data["format"] == "jsonl":
            return StreamingHttpResponse(_jsonl(rows), content_type="application/x-ndjson")
        response = StreamingHttpResponse(_csv(rows), content_type="text/csv")
        response["Content-Disposition"] = 'attachment; filename="judgments.csv"'
        return response


def _csv(rows: Iterator[judgments.Judgment]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["query", "docid", "rating"])
    for row in rows:
        writer.writerow([row.query, row.object_id, row.grade])
        if buffer.tell() > 64_000:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _jsonl(rows: Iterator[judgments.Judgment]) -> Iterator[str]:
    for row in rows:
        yield json.dumps(row.as_dict(), ensure_ascii=False) + "\n"
