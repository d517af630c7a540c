"""``DELETE /api/v1/users/{user_id}`` (scope ``admin``): forget a user everywhere studio keeps them."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from improvement.services.users import forget_user
from studio.core.errors import ApiError
from studio.core.serializers import AUTH_ERRORS, ErrorSerializer
from studio.core.validation import MAX_ID_CHARS, text_problem


class UserForgetApi(APIView):
    """``DELETE /api/v1/users/{user_id}``: forget a user (sessions, results, events, attempts, copies, shared votes)."""

    required_scope = "admin"

    class OutputSerializer(serializers.Serializer):
        user_id = serializers.CharField()
        sessions = serializers.IntegerField()
        shown_results = serializers.IntegerField()
        events = serializers.IntegerField()
        improvement_attempts = serializers.IntegerField()
        personalized_objects = serializers.IntegerField()
        personalized_parts = serializers.IntegerField()
        shared_votes = serializers.IntegerField(help_text="Their votes in the shared tier, removed and recomputed.")

    @extend_schema(
        responses={200: OutputSerializer, 400: ErrorSerializer, 404: ErrorSerializer, **AUTH_ERRORS},
        tags=["users"],
        description="Forget a user: sessions, shown results, events, improvement attempts, personalized copies, "
        "shared-tier votes (the shared tier is recomputed as if they had never clicked). "
        "404 only for a user_id the route cannot carry (a line break).",
    )
    def delete(self, request, user_id: str):
        # Not id_problem: a user stored before ids were taken verbatim (surrounding spaces) must stay forgettable.
        problem = f"at most {MAX_ID_CHARS} characters" if len(user_id) > MAX_ID_CHARS else text_problem(user_id)
        if problem:
            raise ApiError(code="invalid", message=f"user_id: {problem}.", fields={"user_id": [problem]})
        counts = forget_user(user_id=user_id)
        return Response(self.OutputSerializer({"user_id": user_id, **counts}).data)
