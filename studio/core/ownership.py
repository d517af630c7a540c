"""Acting as one user: what a user-bound token (``studio.core.tokens``) may do, checked where a view names a user."""

from __future__ import annotations

from studio.core.auth import ApiKeyPrincipal
from studio.core.errors import DomainError


class ForeignUser(DomainError):
    """A user-bound token asked to act for another user (HTTP 403 naming the field)."""

    code = "forbidden"
    status_code = 403


def bound_user(request) -> str | None:
    """The user a request's token is bound to; None for an API key (which may act for any user)."""
    principal = getattr(request, "user", None)
    return principal.user_id if isinstance(principal, ApiKeyPrincipal) else None


def acting_user(request, user_id: str | None, *, anonymous: bool = False, field: str = "user_id") -> str | None:
    """The user a request acts for: ``user_id`` as given; with a user-bound token, its user (when none is given)
    and never another one (``ForeignUser``). ``anonymous`` (the client said "nobody" explicitly) acts for no
    user: that reveals nothing of anyone's clicks, so a token may do it too."""
    bound = bound_user(request)
    if bound is None or anonymous:
        return None if anonymous else user_id
    if user_id is not None and user_id != bound:
        raise ForeignUser("this token acts only for its own user", field=field)
    return bound
