"""The HNSW index on ObjectPart.vector, with the operator class of STUDIO_METRIC at migrate time.

Kept out of the model's Meta so that the metric is a deployment setting, not a schema change;
``manage.py load_objects`` drops and rebuilds it around bulk loads.
"""

from django.db import migrations

from studio.services import HNSW_INDEX_NAME


def create_index(apps, schema_editor):
    from studio.services import create_hnsw_index

    create_hnsw_index(maintenance_work_mem="256MB")


def drop_index(apps, schema_editor):
    schema_editor.execute(f"DROP INDEX IF EXISTS {HNSW_INDEX_NAME}")


class Migration(migrations.Migration):
    dependencies = [("studio", "0001_catalogue_and_api_keys")]

    operations = [migrations.RunPython(create_index, drop_index)]
