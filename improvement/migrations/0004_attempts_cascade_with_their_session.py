"""Attempts go with their session at the database level.

Clickstream deletes sessions with plain SQL (retention, user deletion) and knows nothing of improvement;
an ``ON DELETE CASCADE`` foreign key makes PostgreSQL remove the sessions' attempts in the same statement,
so retention leaves no orphaned audit rows. (Django's model keeps ``db_constraint=False``: the constraint
is PostgreSQL's business, the ORM never deletes attempts through the session.)
"""

from django.db import migrations

FORWARD = """
DELETE FROM improvement_improvementattempt a
WHERE NOT EXISTS (SELECT 1 FROM clickstream_session s WHERE s.id = a.session_id);
ALTER TABLE improvement_improvementattempt
    ADD CONSTRAINT attempt_session_cascade_fk FOREIGN KEY (session_id)
    REFERENCES clickstream_session (id) ON DELETE CASCADE;
"""

BACKWARD = "ALTER TABLE improvement_improvementattempt DROP CONSTRAINT attempt_session_cascade_fk;"


class Migration(migrations.Migration):
    dependencies = [
        ("improvement", "0003_beat_schedule"),
        ("clickstream", "0003_retention_beat_schedule"),
    ]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
