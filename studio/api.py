"""Catalogue and health endpoints (thin views; logic lives in services and selectors)."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from studio import health, selectors, services
from studio.errors import ApiError
from studio.serializers import ErrorSerializer, StrictSerializer, batch_items
from studio.validation import parse_object_item


class ObjectUpsertApi(APIView):
    """``POST /api/v1/objects``: insert or replace up to STUDIO_MAX_OBJECTS_PER_REQUEST objects."""

    required_scope = "catalog"

    class InputSerializer(StrictSerializer):
        objects = serializers.ListField(
            child=serializers.DictField(),
            allow_empty=False,
            help_text="Items: {object_id, payload?, text? | vector? | vectors?, average?}.",
        )

    class ItemErrorSerializer(serializers.Serializer):
        index = serializers.IntegerField()
        object_id = serializers.CharField(allow_null=True)
        code = serializers.CharField()
        message = serializers.CharField()

    class OutputSerializer(serializers.Serializer):
        upserted = serializers.IntegerField()
        errors = serializers.ListField(child=serializers.DictField())

    @extend_schema(
        request=InputSerializer,
        responses={200: OutputSerializer, 400: ErrorSerializer, 413: ErrorSerializer},
        tags=["catalogue"],
    )
    def post(self, request):
        raw_items = batch_items(request.data, key="objects", limit=settings.STUDIO_MAX_OBJECTS_PER_REQUEST)
        valid: list[services.ObjectInput] = []
        errors: list[services.ItemError] = []
        seen: dict[str, int] = {}
        for index, raw in enumerate(raw_items):
            parsed = parse_object_item(raw, index)
            if isinstance(parsed, services.ItemError):
                errors.append(parsed)
            elif parsed.object_id in seen:
                errors.append(
                    services.ItemError(
                        index=index,
                        object_id=parsed.object_id,
                        code="duplicate_object_id",
                        message=f"object_id repeats item {seen[parsed.object_id]} of this request",
                    )
                )
            else:
                seen[parsed.object_id] = index
                valid.append(parsed)
        upserted = services.upsert_objects(items=valid)
        body = {"upserted": upserted, "errors": [e.as_dict() for e in errors]}
        return Response(body, status=status.HTTP_200_OK if upserted or not errors else status.HTTP_400_BAD_REQUEST)


class ObjectDetailApi(APIView):
    """``GET`` / ``DELETE /api/v1/objects/{object_id}``."""

    required_scope = "catalog"

    class OutputSerializer(serializers.Serializer):
        object_id = serializers.CharField()
        payload = serializers.JSONField()
        text = serializers.CharField()
        created_at = serializers.DateTimeField()
        updated_at = serializers.DateTimeField()
        parts = serializers.IntegerField()
        personalized_copies = serializers.IntegerField()
        vectors = serializers.ListField(child=serializers.DictField(), required=False)

    class DeleteOutputSerializer(serializers.Serializer):
        deleted = serializers.IntegerField()
        personalized_deleted = serializers.IntegerField()

    @extend_schema(
        parameters=[OpenApiParameter("vectors", bool, description="Include the parts' vectors.")],
        responses={200: OutputSerializer, 404: ErrorSerializer},
        tags=["catalogue"],
    )
    def get(self, request, object_id: str):
        obj = selectors.get_object(object_id=object_id)
        if obj is None:
            raise ApiError(code="not_found", message=f"No object '{object_id}'.", status_code=404)
        with_vectors = request.query_params.get("vectors", "").lower() in ("1", "true", "yes")
        data = selectors.object_summary(obj=obj, with_vectors=with_vectors)
        return Response(self.OutputSerializer(data).data)

    @extend_schema(responses={200: DeleteOutputSerializer, 404: ErrorSerializer}, tags=["catalogue"])
    def delete(self, request, object_id: str):
        result = services.delete_object(object_id=object_id)
        if result is None:
            raise ApiError(code="not_found", message=f"No object '{object_id}'.", status_code=404)
        return Response(result)


class HealthApi(APIView):
    """``GET /api/v1/health`` (no key): 200 when database and broker answer, else 503."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []

    @extend_schema(responses={200: dict, 503: dict}, tags=["health"], auth=[])
    def get(self, request):
        healthy, report = health.health_report()
        return Response(report, status=status.HTTP_200_OK if healthy else status.HTTP_503_SERVICE_UNAVAILABLE)
