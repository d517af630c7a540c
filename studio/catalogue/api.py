"""Catalogue endpoints: upsert objects in batches, read and delete one (thin views; logic in services and selectors)."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from studio.catalogue import selectors, services
from studio.catalogue.validation import parse_object_item
from studio.core.errors import ApiError, error_body
from studio.core.serializers import AUTH_ERRORS, ErrorSerializer, StrictSerializer, batch_items, query_flag
from studio.core.validation import ItemError


@extend_schema_serializer(component_name="ObjectItem")
class ObjectItemSerializer(serializers.Serializer):
    """One object of ``POST /objects`` (for the schema: items are validated by ``parse_object_item``)."""

    object_id = serializers.CharField(max_length=256, help_text="Unique id of the object in your catalogue.")
    payload = serializers.DictField(required=False, help_text="Any JSON object, returned with search results.")
    text = serializers.CharField(
        required=False, help_text="Embedded by the server; long text is split into parts plus an average part."
    )
    vector = serializers.ListField(
        child=serializers.FloatField(), required=False, help_text="One part: STUDIO_EMBEDDING_DIM numbers."
    )
    vectors = serializers.ListField(
        child=serializers.ListField(child=serializers.FloatField()),
        required=False,
        help_text="Several parts (at most STUDIO_MAX_PARTS_PER_OBJECT).",
    )
    average = serializers.BooleanField(
        required=False, default=False, help_text="With vectors: add their normalized mean as an extra part."
    )


@extend_schema_serializer(component_name="ObjectItemError")
class ItemErrorSerializer(serializers.Serializer):
    """Why one item of a batch was not written."""

    index = serializers.IntegerField(help_text="Position of the item in the request.")
    object_id = serializers.CharField(allow_null=True)
    code = serializers.CharField()
    message = serializers.CharField(help_text="Names the field at fault.")


@extend_schema_serializer(component_name="ObjectPart")
class ObjectPartSerializer(serializers.Serializer):
    """One vector of an object."""

    index = serializers.IntegerField()
    is_average = serializers.BooleanField()
    vector = serializers.ListField(child=serializers.FloatField())


class ObjectUpsertApi(APIView):
    """``POST /api/v1/objects``: insert or replace up to STUDIO_MAX_OBJECTS_PER_REQUEST objects.

    Items are validated one by one (``studio.catalogue.validation.parse_object_item``): valid ones are written,
    invalid ones reported per item. 200 when at least one item was written (or none was invalid);
    400 with the error shape and the per-item errors when every item was refused.
    """

    required_scope = "catalog"

    @extend_schema_serializer(component_name="ObjectUpsert")
    class InputSerializer(StrictSerializer):
        objects = serializers.ListField(
            child=ObjectItemSerializer(),
            allow_empty=False,
            help_text="At most STUDIO_MAX_OBJECTS_PER_REQUEST items; each needs one of text, vector or vectors.",
        )

    @extend_schema_serializer(component_name="ObjectUpsertResult")
    class OutputSerializer(serializers.Serializer):
        upserted = serializers.IntegerField()
        errors = serializers.ListField(child=ItemErrorSerializer())

    @extend_schema(
        summary="Insert or replace objects",
        description=(
            "Each item is validated on its own: valid items are written (an existing object_id is replaced: "
            "its parts, and with STUDIO_DROP_PERSONALIZED_ON_UPDATE its personalized copies, go), invalid ones "
            "are listed in `errors` with their index, object_id, code and a message naming the field. "
            "200 when at least one item was written; 400 with the error shape plus `upserted` and `errors` "
            "when none was. 413 for more than STUDIO_MAX_OBJECTS_PER_REQUEST items or a body over "
            "STUDIO_MAX_BODY_BYTES."
        ),
        request=InputSerializer,
        responses={
            200: OutputSerializer,
            400: ErrorSerializer,
            413: ErrorSerializer,
            415: ErrorSerializer,
            **AUTH_ERRORS,
        },
        tags=["catalogue"],
    )
    def post(self, request):
        raw_items = batch_items(request.data, key="objects", limit=settings.STUDIO_MAX_OBJECTS_PER_REQUEST)
        valid: list[services.ObjectInput] = []
        errors: list[ItemError] = []
        seen: dict[str, int] = {}
        for index, raw in enumerate(raw_items):
            parsed = parse_object_item(raw, index)
            if isinstance(parsed, ItemError):
                errors.append(parsed)
            elif parsed.object_id in seen:
                errors.append(
                    ItemError(
                        index=index,
                        code="duplicate_object_id",
                        message=f"object_id: repeats item {seen[parsed.object_id]} of this request",
                        ids={"object_id": parsed.object_id},
                    )
                )
            else:
                seen[parsed.object_id] = index
                valid.append(parsed)
        upserted = services.upsert_objects(items=valid)
        item_errors = [e.as_dict() for e in errors]
        if upserted or not errors:
            return Response({"upserted": upserted, "errors": item_errors}, status=status.HTTP_200_OK)
        # Nothing written: the error shape, with the per-item errors beside it.
        first = errors[0]
        body = error_body(
            "invalid",
            f"no object was written; objects[{first.index}]: {first.message}",
            {"objects": {str(e.index): [f"{e.code}: {e.message}"] for e in errors}},
        )
        body.update(upserted=0, errors=item_errors)
        return Response(body, status=status.HTTP_400_BAD_REQUEST)


class ObjectDetailApi(APIView):
    """``GET`` / ``DELETE /api/v1/objects/{object_id}``."""

    required_scope = "catalog"

    @extend_schema_serializer(component_name="ObjectDetail")
    class OutputSerializer(serializers.Serializer):
        object_id = serializers.CharField()
        payload = serializers.JSONField()
        text = serializers.CharField()
        created_at = serializers.DateTimeField()
        updated_at = serializers.DateTimeField()
        parts = serializers.IntegerField()
        personalized_copies = serializers.IntegerField()
        vectors = serializers.ListField(
            child=ObjectPartSerializer(), required=False, help_text="With ?vectors=1: the parts in index order."
        )

    @extend_schema_serializer(component_name="ObjectDeleteResult")
    class DeleteOutputSerializer(serializers.Serializer):
        deleted = serializers.IntegerField()
        personalized_deleted = serializers.IntegerField()

    @extend_schema(
        parameters=[OpenApiParameter("vectors", bool, description="Include the parts' vectors.")],
        responses={200: OutputSerializer, 404: ErrorSerializer, **AUTH_ERRORS},
        tags=["catalogue"],
    )
    def get(self, request, object_id: str):
        obj = selectors.get_object(object_id=object_id)
        if obj is None:
            raise ApiError(code="not_found", message=f"No object '{object_id}'.", status_code=404)
        data = selectors.object_summary(obj=obj, with_vectors=query_flag(request, "vectors"))
        return Response(self.OutputSerializer(data).data)

    @extend_schema(
        responses={200: DeleteOutputSerializer, 404: ErrorSerializer, **AUTH_ERRORS},
        tags=["catalogue"],
    )
    def delete(self, request, object_id: str):
        result = services.delete_object(object_id=object_id)
        if result is None:
            raise ApiError(code="not_found", message=f"No object '{object_id}'.", status_code=404)
        return Response(result)
