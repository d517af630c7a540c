"""A vector per shared query, so that a query not seen verbatim can borrow the offsets of the most similar one
(``IMPROVEMENT_SHARED_BORROW_SIMILARITY``), found through an HNSW index (cosine)."""

import pgvector.django.indexes
import pgvector.django.vector
from django.conf import settings
from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('studio', '0007_copies_stored_as_halfvec'),
    ]

    operations = [
        migrations.AddField(
            model_name='sharedquery',
            name='vector',
            field=pgvector.django.vector.VectorField(blank=True, dimensions=settings.STUDIO_EMBEDDING_DIM, help_text="The query's vector, from a session that taught it: a similar query not seen verbatim borrows this query's offsets (IMPROVEMENT_SHARED_BORROW_SIMILARITY).", null=True),
        ),
        migrations.AddIndex(
            model_name='sharedquery',
            index=pgvector.django.indexes.HnswIndex(ef_construction=64, fields=['vector'], m=16, name='sharedquery_vector_hnsw', opclasses=['vector_cosine_ops']),
        ),
    ]
