"""The interleaving guard's action: switch learned ranking off when it loses significantly
(``STUDIO_INTERLEAVE_AUTO_OFF``; docs/architecture.md, "Online proof")."""

from __future__ import annotations

from django.conf import settings

from clickstream.experiments import guard_status
from studio.catalogue import ranking_switch

GUARD = "interleaving guard"


def enforce_interleaving_guard() -> bool:
    """Switch learned ranking off when the experiment runs, the guard has tripped, auto-off is allowed and the
    ranking is still on; returns whether it switched. An admin switches it back (the switch's admin)."""
    if settings.STUDIO_INTERLEAVE_FRACTION <= 0 or not settings.STUDIO_INTERLEAVE_AUTO_OFF:
        return False
    if not ranking_switch.learned_ranking_on():
        return False
    guard = guard_status()
    if not guard["tripped"]:
        return False
    reason = (
        f"lost the interleaving experiment: {guard['wins']} wins, {guard['losses']} losses, {guard['ties']} ties "
        f"since {guard['since']:%Y-%m-%d %H:%M} UTC (sign test p = {guard['p_value']:.2g})"
    )
    ranking_switch.switch_learned_ranking(on=False, by=GUARD, reason=reason)
    return True
