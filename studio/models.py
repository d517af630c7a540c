"""Models of the ``studio`` app, gathered from the rooms that define them (label and tables unchanged).

The catalogue's are in ``studio.catalogue.models``, the API key in ``studio.core.models``.
"""

from studio.catalogue.models import (
    Object,
    ObjectPart,
    PersonalizedObject,
    PersonalizedPart,
    RankingSwitch,
    SharedEvidence,
    SharedQuery,
    SharedVote,
)
from studio.core.models import API_SCOPES, ApiKey

__all__ = [
    "API_SCOPES",
    "ApiKey",
    "Object",
    "ObjectPart",
    "PersonalizedObject",
    "PersonalizedPart",
    "RankingSwitch",
    "SharedEvidence",
    "SharedQuery",
    "SharedVote",
]
