"""Clickstream ingestion endpoints (scope ``ingest``).

Thin views: the envelope is checked here, items by ``clickstream.validation`` (plain Python, because
a request may carry a thousand events), writes by ``clickstream.services``. The nested serializers
document the request and response shapes in the OpenAPI schema.
"""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from clickstream import selectors, services
from clickstream.validation import ItemError, SessionInvalid, echo, parse_event_item, parse_session_item
from studio.core.errors import ApiError
from studio.core.ownership import ForeignUser, bound_user
from studio.core.serializers import AUTH_ERRORS, ErrorSerializer, StrictSerializer, batch_items, query_flag

TAGS = ["clickstream"]  # every operation here needs a key with the ingest scope (401 / 403: AUTH_ERRORS)


def _not_found(session_id: str) -> ApiError:
    return ApiError(code="not_found", message=f"No session '{session_id}'.", status_code=404)


# --- shared schema pieces ---------------------------------------------------------------------


class ShownResultInputSerializer(StrictSerializer):
    """One shown result, in the order of the list."""

    object_id = serializers.CharField(max_length=256)
    score = serializers.FloatField(required=False, allow_null=True)
    meta = serializers.JSONField(required=False, help_text="JSON object, at most STUDIO_MAX_JSON_FIELD_BYTES.")


class SessionInputSerializer(StrictSerializer):
    """A search session as the user saw it."""

    session_id = serializers.CharField(max_length=256, help_text="Client id (no '/'); makes retries safe.")
    user_id = serializers.CharField(max_length=256, required=False, allow_null=True)
    search_query = serializers.CharField(required=False, allow_blank=True)
    query_vector = serializers.ListField(
        child=serializers.FloatField(),
        required=False,
        allow_null=True,
        help_text="STUDIO_EMBEDDING_DIM finite numbers; without it the improvement run embeds search_query.",
    )
    search_results = ShownResultInputSerializer(many=True, help_text="In shown order (position 0 first).")
    search_meta = serializers.JSONField(required=False)
    created_at = serializers.CharField(
        required=False, help_text="ISO 8601 or epoch seconds, within CLICKSTREAM_MAX_PAST/FUTURE; default now."
    )


class ShownResultOutputSerializer(serializers.Serializer):
    """A shown result with how many events it received."""

    position = serializers.IntegerField()
    object_id = serializers.CharField()
    score = serializers.FloatField(allow_null=True)
    meta = serializers.JSONField()
    event_count = serializers.IntegerField()


class EventOutputSerializer(serializers.Serializer):
    """A stored event."""

    event_id = serializers.CharField()
    object_id = serializers.CharField()
    event_type = serializers.CharField()
    created_at = serializers.DateTimeField()
    received_at = serializers.DateTimeField()
    meta = serializers.JSONField()


class ImprovementOutputSerializer(serializers.Serializer):
    """Where the session stands in the improvement loop."""

    status = serializers.CharField()
    detail = serializers.CharField()
    attempts = serializers.IntegerField()
    improved_at = serializers.DateTimeField(allow_null=True)


class SessionOutputSerializer(serializers.Serializer):
    """A stored session with its shown results, events and improvement status."""

    session_id = serializers.CharField()
    user_id = serializers.CharField(allow_null=True)
    search_query = serializers.CharField()
    has_query_vector = serializers.BooleanField()
    query_vector = serializers.ListField(child=serializers.FloatField(), required=False, allow_null=True)
    search_meta = serializers.JSONField()
    created_at = serializers.DateTimeField()
    received_at = serializers.DateTimeField()
    is_irrelevant = serializers.BooleanField()
    improvement = ImprovementOutputSerializer()
    search_results = ShownResultOutputSerializer(many=True)
    event_count = serializers.IntegerField()
    events = EventOutputSerializer(many=True, help_text="The first 1000 by time.")


class EventInputSerializer(StrictSerializer):
    """One event on a shown result."""

    event_id = serializers.CharField(max_length=256, help_text="Client id, unique per session: makes retries safe.")
    object_id = serializers.CharField(max_length=256, help_text="Must be one of the session's shown results.")
    event_type = serializers.CharField(max_length=64, required=False, default="click")
    created_at = serializers.CharField(required=False, help_text="ISO 8601 or epoch seconds; default now.")
    meta = serializers.JSONField(required=False)


class SessionEventInputSerializer(EventInputSerializer):
    """One event of ``POST /clickstream/events``: it names its session."""

    session_id = serializers.CharField(max_length=256)


class EventRejectedSerializer(serializers.Serializer):
    """Why one event was not stored."""

    index = serializers.IntegerField()
    event_id = serializers.CharField(allow_null=True)
    session_id = serializers.CharField(allow_null=True)
    code = serializers.CharField()
    message = serializers.CharField()


class EventsOutputSerializer(serializers.Serializer):
    """Per-item result of an events request."""

    accepted = serializers.IntegerField(help_text="Events stored by this request.")
    duplicates = serializers.IntegerField(help_text="Events already stored (same session and event_id).")
    rejected = EventRejectedSerializer(many=True)


class SessionStatusSerializer(serializers.Serializer):
    """A stored item of a sessions batch."""

    index = serializers.IntegerField()
    session_id = serializers.CharField()
    status = serializers.ChoiceField(choices=["created", "replayed"])


class SessionRejectedSerializer(serializers.Serializer):
    """Why one session of a batch was not stored."""

    index = serializers.IntegerField()
    session_id = serializers.CharField(allow_null=True)
    code = serializers.CharField(help_text="'conflict' when the id exists with other content.")
    message = serializers.CharField()


def _own_sessions_only(request, session_ids) -> None:
    """With a user-bound token, refuse (403) a request touching a session of another user."""
    bound = bound_user(request)
    if bound is None:
        return
    owners = selectors.session_owners(session_ids=sorted(set(session_ids)))
    if any(user_id != bound for user_id in owners.values()):
        raise ForeignUser("this token acts only on its own user's sessions", field="session_id")


def _own_user_only(request, items) -> None:
    """With a user-bound token, refuse (403) sessions registered for anyone but its user."""
    bound = bound_user(request)
    if bound is not None and any(item.user_id != bound for item in items):
        raise ForeignUser("this token registers sessions only for its own user", field="user_id")


def _events_response(request, *, session_id: str | None) -> Response:
    raw_items = batch_items(request.data, key="events", limit=settings.CLICKSTREAM_MAX_EVENTS_PER_REQUEST)
    now = timezone.now()
    valid = []
    refused: list[ItemError] = []
    for index, raw in enumerate(raw_items):
        parsed = parse_event_item(raw, index=index, now=now, session_id=session_id)
        (refused if isinstance(parsed, ItemError) else valid).append(parsed)
    _own_sessions_only(request, [event.session_id for event in valid])
    outcome = services.record_events(events=valid, now=now)
    rejected = sorted(refused + outcome.rejected, key=lambda error: error.index) if refused else outcome.rejected
    return Response(
        {
            "accepted": outcome.accepted,
            "duplicates": outcome.duplicates,
            "rejected": [error.as_dict() for error in rejected],
        }
    )


# --- views ------------------------------------------------------------------------------------


class SessionCreateApi(APIView):
    """``POST /api/v1/clickstream/sessions``: register one session (201 new, 200 identical replay, 409 conflict)."""

    required_scope = "ingest"

    @extend_schema(
        request=SessionInputSerializer,
        responses={
            201: SessionOutputSerializer,
            200: SessionOutputSerializer,
            400: ErrorSerializer,
            409: ErrorSerializer,
            **AUTH_ERRORS,
        },
        tags=TAGS,
    )
    def post(self, request):
        now = timezone.now()
        item = parse_session_item(request.data, now=now)  # SessionInvalid → 400 naming the field
        _own_user_only(request, [item])
        stored = services.register_sessions(sessions=[item], now=now)[0]
        if stored.status == services.CONFLICT:
            raise ApiError(
                code="conflict",
                message=f"session_id: '{item.session_id}' already exists with other content.",
                fields={"session_id": ["Already exists with other content."]},
                status_code=409,
            )
        if stored.status == services.REPLAYED:
            session = selectors.get_session(session_id=item.session_id)
            return Response(selectors.session_detail(session=session), status=status.HTTP_200_OK)
        session = services.session_from_input(item=item, pk=stored.pk, now=now)
        return Response(
            selectors.new_session_detail(session=session, results=item.results), status=status.HTTP_201_CREATED
        )


class SessionBatchApi(APIView):
    """``POST /api/v1/clickstream/sessions/batch``: register up to CLICKSTREAM_MAX_SESSIONS_PER_BATCH sessions."""

    required_scope = "ingest"

    @extend_schema_serializer(component_name="ClickstreamSessionBatch")
    class InputSerializer(StrictSerializer):
        sessions = SessionInputSerializer(many=True)

    @extend_schema_serializer(component_name="ClickstreamSessionBatchResult")
    class OutputSerializer(serializers.Serializer):
        accepted = serializers.IntegerField(help_text="Sessions created by this request.")
        duplicates = serializers.IntegerField(help_text="Identical replays of stored sessions.")
        rejected = SessionRejectedSerializer(many=True)
        sessions = SessionStatusSerializer(many=True)

    @extend_schema(
        request=InputSerializer,
        responses={200: OutputSerializer, 400: ErrorSerializer, 413: ErrorSerializer, **AUTH_ERRORS},
        tags=TAGS,
    )
    def post(self, request):
        raw_items = batch_items(request.data, key="sessions", limit=settings.CLICKSTREAM_MAX_SESSIONS_PER_BATCH)
        now = timezone.now()
        valid, indexes, rejected = _parse_sessions(raw_items, now=now)
        _own_user_only(request, valid)
        accepted = duplicates = 0
        statuses = []
        for stored in services.register_sessions(sessions=valid, now=now):
            index = indexes[stored.index]
            if stored.status == services.CONFLICT:
                message = "session_id: already exists with other content"
                rejected.append(
                    ItemError(index=index, code="conflict", message=message, ids={"session_id": stored.session_id})
                )
                continue
            accepted += stored.status == services.CREATED
            duplicates += stored.status != services.CREATED
            statuses.append({"index": index, "session_id": stored.session_id, "status": stored.status})
        rejected.sort(key=lambda error: error.index)
        body = {"accepted": accepted, "duplicates": duplicates, "rejected": [e.as_dict() for e in rejected]}
        return Response({**body, "sessions": statuses})


def _parse_sessions(raw_items: list, *, now) -> tuple[list, list[int], list[ItemError]]:
    """The valid sessions of a batch with their request indexes, and an error per invalid one."""
    valid, indexes, rejected = [], [], []
    for index, raw in enumerate(raw_items):
        try:
            valid.append(parse_session_item(raw, now=now))
            indexes.append(index)
        except SessionInvalid as exc:
            shown_id = echo(raw.get("session_id")) if isinstance(raw, dict) else None
            rejected.append(ItemError(index=index, code=exc.code, message=str(exc), ids={"session_id": shown_id}))
    return valid, indexes, rejected


class SessionDetailApi(APIView):
    """``GET /api/v1/clickstream/sessions/{session_id}``: the session, its results, events, improvement status."""

    required_scope = "sessions:read"

    @extend_schema(
        parameters=[OpenApiParameter("vector", bool, description="Include the query vector.")],
        responses={200: SessionOutputSerializer, 404: ErrorSerializer, **AUTH_ERRORS},
        tags=TAGS,
    )
    def get(self, request, session_id: str):
        session = selectors.get_session(session_id=session_id)
        if session is None:
            raise _not_found(session_id)
        _own_sessions_only(request, [session_id])
        return Response(selectors.session_detail(session=session, with_vector=query_flag(request, "vector")))


class SessionEventsApi(APIView):
    """``POST /api/v1/clickstream/sessions/{session_id}/events``: events of one session (404 if unknown)."""

    required_scope = "ingest"

    @extend_schema_serializer(component_name="ClickstreamSessionEvents")
    class InputSerializer(StrictSerializer):
        events = EventInputSerializer(many=True)

    @extend_schema(
        request=InputSerializer,
        responses={
            200: EventsOutputSerializer,
            400: ErrorSerializer,
            404: ErrorSerializer,
            413: ErrorSerializer,
            **AUTH_ERRORS,
        },
        tags=TAGS,
    )
    def post(self, request, session_id: str):
        if selectors.get_session(session_id=session_id) is None:
            raise _not_found(session_id)
        _own_sessions_only(request, [session_id])
        return _events_response(request, session_id=session_id)


class EventsApi(APIView):
    """``POST /api/v1/clickstream/events``: events of many sessions (each names its ``session_id``)."""

    required_scope = "ingest"

    @extend_schema_serializer(component_name="ClickstreamEvents")
    class InputSerializer(StrictSerializer):
        events = SessionEventInputSerializer(many=True)

    @extend_schema(
        request=InputSerializer,
        responses={200: EventsOutputSerializer, 400: ErrorSerializer, 413: ErrorSerializer, **AUTH_ERRORS},
        tags=TAGS,
    )
    def post(self, request):
        return _events_response(request, session_id=None)


class SessionIrrelevantApi(APIView):
    """``POST /api/v1/clickstream/sessions/{session_id}/irrelevant``: the session teaches nothing (idempotent)."""

    required_scope = "ingest"

    @extend_schema_serializer(component_name="ClickstreamIrrelevantResult")
    class OutputSerializer(serializers.Serializer):
        session_id = serializers.CharField()
        is_irrelevant = serializers.BooleanField()
        improvement_status = serializers.CharField()

    @extend_schema(request=None, responses={200: OutputSerializer, 404: ErrorSerializer, **AUTH_ERRORS}, tags=TAGS)
    def post(self, request, session_id: str):
        _own_sessions_only(request, [session_id])
        session = services.mark_irrelevant(session_id=session_id)
        if session is None:
            raise _not_found(session_id)
        return Response(
            {
                "session_id": session.session_id,
                "is_irrelevant": session.is_irrelevant,
                "improvement_status": session.improvement_status,
            }
        )
