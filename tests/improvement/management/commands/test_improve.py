"""improvement.management.commands.improve: ``manage.py improve`` runs in the foreground."""

from __future__ import annotations

from improvement.models import ImprovementRun, RunTrigger
from tests.improvement.support import click, ranking, register


def test_manage_py_improve_runs_in_the_foreground(world):
    from io import StringIO

    from django.core.management import call_command

    order = ranking(world["query"], None)
    click(register(user_id="u", shown=order[:4], query_vector=world["query"]), order[3])
    out = StringIO()
    call_command("improve", stdout=out, verbosity=0)
    run = ImprovementRun.objects.get()
    assert run.trigger == RunTrigger.COMMAND and run.used == 1
    assert f"run {run.pk} succeeded" in out.getvalue()
