"""``DELETE /api/v1/users/{user_id}`` (scope ``admin``): forget a user everywhere studio keeps them."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from improvement.services.users import forget_user
from studio.core.errors import ApiError
from studio.core.serializers import AUTH_ERRORS, ErrorSerializer


class UserForgetApi(APIView):
    """``DELETE /api/v1/users/{user_id}``: forget a user (sessions, results, events, attempts, copies)."""

    required_scope = "admin"

    class OutputSerializer(serializers.Serializer):
        user_id = serializers.CharField()
        sessions = serializers.IntegerField()
        shown_results = serializers.IntegerField()
        events = serializers.IntegerField()
        improvement_attempts = serializers.IntegerField()
        personalized_objects = serializers.IntegerField()
        personalized_parts = serializers.IntegerField()

    @extend_schema(
        responses={200: OutputSerializer, 400: ErrorSerializer, 404: ErrorSerializer, **AUTH_ERRORS},
        tags=["users"],
        description="Forget a user: sessions, shown results, events, improvement attempts, personalized copies. "
        "404 only for a user_id the route cannot carry (a line break).",
    )
    def delete(self, request, user_id: str):
        if len(user_id) > 256:
            raise ApiError(
                code="invalid", message="user_id: at most 256 characters.", fields={"user_id": ["Too long."]}
            )
        counts = forget_user(user_id=user_id)
        return Response(self.OutputSerializer({"user_id": user_id, **counts}).data)
