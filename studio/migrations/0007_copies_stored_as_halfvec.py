"""Personalized copies' parts in half precision (pgvector 0.8 ``halfvec``): half the bytes per copy.

``ALTER COLUMN … TYPE halfvec(D) USING vector::halfvec(D)`` rewrites the table once (copies keep their values,
rounded to float16). Originals stay ``vector``: their HNSW index and every distance shown are float32.
"""

import pgvector.django.halfvec
from django.conf import settings
from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('studio', '0006_ranking_switch'),
    ]

    operations = [
        migrations.AlterField(
            model_name='personalizedpart',
            name='vector',
            field=pgvector.django.halfvec.HalfVectorField(dimensions=settings.STUDIO_EMBEDDING_DIM),
        ),
    ]
