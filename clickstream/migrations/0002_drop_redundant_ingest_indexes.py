"""Drop indexes that every ingest write pays for and no query needs.

- ``Event.session`` and ``ShownResult.session`` lose their single-column FK indexes: the unique
  indexes (session, event_id), (session, position) and (session, object_id) lead with session_id
  and serve every lookup by session (joins, cascades, forget_user).
- ``Session.session_id`` loses Django's ``varchar_pattern_ops`` "_like" index (for LIKE 'x%'
  searches, which nothing runs); the unique index serves equality, ON CONFLICT and the admin's
  exact search.
"""

import django.db.models.deletion
from django.db import migrations, models

LIKE_INDEX = "clickstream_session_session_id_4d89a969_like"  # Django's deterministic name for it


class Migration(migrations.Migration):

    dependencies = [
        ('clickstream', '0001_sessions_results_events'),
    ]

    operations = [
        migrations.AlterField(
            model_name='event',
            name='session',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='events', to='clickstream.session'),
        ),
        migrations.AlterField(
            model_name='shownresult',
            name='session',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='results', to='clickstream.session'),
        ),
        migrations.RunSQL(
            sql=f"DROP INDEX IF EXISTS {LIKE_INDEX}",
            reverse_sql=(
                f"CREATE INDEX IF NOT EXISTS {LIKE_INDEX} ON clickstream_session (session_id varchar_pattern_ops)"
            ),
        ),
    ]
