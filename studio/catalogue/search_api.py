"""``POST /api/v1/search``: personalized nearest-neighbour search (thin view over ``studio.catalogue.search``)."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import OpenApiExample, extend_schema, extend_schema_field, extend_schema_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from studio.catalogue import search
from studio.core.ownership import acting_user, bound_user
from studio.core.serializers import AUTH_ERRORS, ErrorSerializer, StrictSerializer
from studio.core.validation import id_problem
from studio.core.vectors import InvalidVector, rank_problem, validate_vector

MAX_FILTER_VALUE_CHARS = 1024


def _verbatim_id(value: str | None) -> str | None:
    problem = None if value is None else id_problem(value)
    if problem:
        raise serializers.ValidationError(problem[1][0].upper() + problem[1][1:] + ".")
    return value


@extend_schema_field(
    {
        "type": "array",
        "items": {"type": "number"},
        "minItems": settings.STUDIO_EMBEDDING_DIM,
        "maxItems": settings.STUDIO_EMBEDDING_DIM,
        "nullable": True,
    }
)
class VectorField(serializers.JSONField):
    """A query vector: parsed by ``studio.core.vectors`` (fast), documented as the array of D numbers it is."""

    def to_internal_value(self, data):
        # JSONField would json.dumps the value only to prove it serializable: 0.1 ms of float formatting for 384
        # numbers that came out of a JSON body and that ``validate_vector`` checks one by one anyway.
        return data


@extend_schema_serializer(component_name="SearchResult")
class SearchResultSerializer(serializers.Serializer):
    """One ranked result (reads a ``studio.catalogue.search.SearchHit``)."""

    rank = serializers.IntegerField(help_text="1-based, absolute (offset + 1 …).")
    object_id = serializers.CharField(help_text="The original's id, also when a personalized copy ranked it.")
    distance = serializers.FloatField()
    score = serializers.FloatField(help_text="cosine: cos; dot: q·p; euclid: −distance.")
    payload = serializers.JSONField()
    personalized = serializers.BooleanField(help_text="Ranked by this user's personalized copy.")
    shared = serializers.BooleanField(
        help_text="Moved by the shared tier: what everyone's clicks on this query taught (its offset is in distance)."
    )


class SearchApi(APIView):
    """``POST /api/v1/search``: rank the catalogue for a text or a vector, as ``user_id`` sees it,
    and (``track``, default true) register the session with the results shown."""

    required_scope = "search"

    @extend_schema_serializer(component_name="SearchInput")
    class InputSerializer(StrictSerializer):
        query = serializers.CharField(
            required=False,
            max_length=settings.STUDIO_MAX_TEXT_CHARS,
            help_text="Text, embedded by the server (unless query_vector is given too); it also keys the shared tier.",
        )
        # Parsed by studio.core.vectors rather than a ListField of FloatFields: ~20× faster for 384 numbers.
        query_vector = VectorField(
            required=False, allow_null=True, help_text="A vector of STUDIO_EMBEDDING_DIM numbers."
        )
        user_id = serializers.CharField(
            required=False,
            allow_null=True,
            trim_whitespace=False,  # ids are taken verbatim everywhere (studio.core.validation.id_problem)
            help_text="Personalize for this user (their copies). With a user-bound token: omitted means the "
            "token's user, another user is 403, and an explicit null searches anonymously (untracked).",
        )
        limit = serializers.IntegerField(required=False, default=10, min_value=1, max_value=search.MAX_LIMIT)
        offset = serializers.IntegerField(required=False, default=0, min_value=0, max_value=search.MAX_OFFSET)
        filter = serializers.JSONField(
            required=False, allow_null=True, help_text="Equality on top-level payload keys: {key: scalar, …}."
        )
        session_id = serializers.CharField(required=False, allow_null=True, trim_whitespace=False)
        track = serializers.BooleanField(required=False, default=True)

        def validate_query_vector(self, value):
            if value is None:
                return None
            try:
                vector = validate_vector(value)
            except InvalidVector as exc:
                raise serializers.ValidationError(str(exc)) from None
            problem = rank_problem(vector, metric=settings.STUDIO_METRIC)
            if problem:  # checked in float32, as pgvector ranks: a NaN distance would rank first
                raise serializers.ValidationError(f"The vector {problem[1]}.")
            return vector

        def validate_user_id(self, value):
            return _verbatim_id(value)

        def validate_session_id(self, value):
            return _verbatim_id(value)

        def validate_filter(self, value):
            if value is None:
                return {}
            if not isinstance(value, dict):
                raise serializers.ValidationError("Must be an object {payload key: value}.")
            if len(value) > search.MAX_FILTER_KEYS:
                raise serializers.ValidationError(f"At most {search.MAX_FILTER_KEYS} keys.")
            for key, item in value.items():
                if isinstance(item, (dict, list)):
                    raise serializers.ValidationError(f"'{key}': values must be strings, numbers, booleans or null.")
                if isinstance(item, float) and item != item:  # NaN never equals anything stored
                    raise serializers.ValidationError(f"'{key}': NaN is not a value.")
                if isinstance(item, str) and len(item) > MAX_FILTER_VALUE_CHARS:
                    raise serializers.ValidationError(f"'{key}': at most {MAX_FILTER_VALUE_CHARS} characters.")
                if len(key) > MAX_FILTER_VALUE_CHARS:
                    raise serializers.ValidationError(f"Keys are at most {MAX_FILTER_VALUE_CHARS} characters.")
            return value

        def validate(self, attrs):
            if attrs.get("query") is None and attrs.get("query_vector") is None:
                message = "Send query, query_vector, or both (the vector ranks; the text keys the shared tier)."
                raise serializers.ValidationError({name: [message] for name in ("query", "query_vector")})
            return attrs

    @extend_schema_serializer(component_name="SearchOutput")
    class OutputSerializer(serializers.Serializer):
        session_id = serializers.CharField(allow_null=True, help_text="Null when untracked and none was sent.")
        results = SearchResultSerializer(many=True, help_text="In rank order.")

    @extend_schema(
        request=InputSerializer,
        responses={
            200: OutputSerializer,
            400: ErrorSerializer,
            409: ErrorSerializer,
            **AUTH_ERRORS,
        },
        tags=["search"],
        examples=[
            OpenApiExample(
                "Text query for a user",
                value={"query": "space adventure", "user_id": "u42", "limit": 10, "filter": {"genre": "sci-fi"}},
                request_only=True,
            )
        ],
    )
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        anonymous = "user_id" in request.data and request.data["user_id"] is None  # explicitly nobody
        user_id = acting_user(request, data.get("user_id"), anonymous=anonymous)  # a token: its user only
        outcome = search.search_and_track(  # domain errors (embedder off, session conflict) map to HTTP once
            query=data.get("query"),
            query_vector=data.get("query_vector"),
            user_id=user_id,
            limit=data["limit"],
            offset=data["offset"],
            filter=data.get("filter") or {},
            session_id=data.get("session_id"),
            track=data["track"] and not (anonymous and bound_user(request) is not None),
        )
        # Shaped as OutputSerializer documents it, built directly: the hits are already plain values.
        results = [
            {
                "rank": hit.rank,
                "object_id": hit.object_id,
                "distance": hit.distance,
                "score": hit.score,
                "payload": hit.payload,
                "personalized": hit.personalized,
                "shared": hit.shared,
            }
            for hit in outcome.hits
        ]
        return Response({"session_id": outcome.session_id, "results": results})
