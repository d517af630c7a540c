"""``POST /api/v1/tokens`` (scope ``tokens``): a signed, expiring token bound to one user, for a browser to hold."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from studio.core import tokens
from studio.core.serializers import AUTH_ERRORS, ErrorSerializer, StrictSerializer
from studio.core.validation import MAX_ID_CHARS, id_problem


class TokenCreateApi(APIView):
    """Issue a user-bound token: with it a page searches, posts sessions and events, and reads sessions only as
    that user (anything else 403). Nothing is stored; changing ``STUDIO_TOKEN_SECRET`` revokes them all."""

    required_scope = "tokens"

    @extend_schema_serializer(component_name="TokenInput")
    class InputSerializer(StrictSerializer):
        user_id = serializers.CharField(max_length=MAX_ID_CHARS, trim_whitespace=False)
        ttl_seconds = serializers.IntegerField(
            required=False, default=tokens.DEFAULT_TTL_SECONDS, min_value=1, max_value=tokens.MAX_TTL_SECONDS
        )

        def validate_user_id(self, value):
            problem = id_problem(value)
            if problem:
                raise serializers.ValidationError(problem[1])
            return value

    @extend_schema_serializer(component_name="TokenOutput")
    class OutputSerializer(serializers.Serializer):
        token = serializers.CharField(help_text="Send as 'Authorization: Bearer <token>'.")
        user_id = serializers.CharField()
        expires_at = serializers.DateTimeField()
        scopes = serializers.ListField(child=serializers.CharField())

    @extend_schema(
        request=InputSerializer,
        responses={201: OutputSerializer, 400: ErrorSerializer, **AUTH_ERRORS},
        tags=["tokens"],
    )
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        token, expires_at = tokens.issue_user_token(
            user_id=data["user_id"], ttl_seconds=data["ttl_seconds"], key_id=request.user.key_id
        )
        body = {
            "token": token,
            "user_id": data["user_id"],
            "expires_at": expires_at,
            "scopes": sorted(tokens.TOKEN_SCOPES),
        }
        return Response(self.OutputSerializer(body).data, status=201)
