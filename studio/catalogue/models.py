"""Catalogue models: original Objects with their vector parts, per-user personalized copies.

Defined here, registered under the ``studio`` app (``studio/models.py`` imports them): the app
label and table names predate the layout and stay (no data migration)."""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.indexes import GinIndex
from django.db import models
from django.db.models import Q
from pgvector.django import HalfVectorField, HnswIndex, VectorField


class Object(models.Model):
    """An original catalogue item. Improvement runs never write it."""

    object_id = models.CharField(max_length=256, unique=True)
    payload = models.JSONField(default=dict, blank=True)
    text = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [
            # search filter: WHERE payload @> '{"genre": "comedy"}'
            GinIndex(fields=["payload"], opclasses=["jsonb_path_ops"], name="object_payload_gin"),
        ]

    def __str__(self) -> str:
        return self.object_id


class ObjectPart(models.Model):
    """One vector of an Object. The HNSW index on ``vector`` is created by migration 0002
    (its operator class follows ``STUDIO_METRIC`` at migrate time)."""

    # No separate FK index: the unique (object, index) index serves lookups by object.
    object = models.ForeignKey(Object, on_delete=models.CASCADE, related_name="parts", db_index=False)
    index = models.PositiveSmallIntegerField()
    vector = VectorField(dimensions=settings.STUDIO_EMBEDDING_DIM)
    is_average = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["object", "index"], name="objectpart_object_index_uniq"),
        ]

    def __str__(self) -> str:
        return f"{self.object_id}#{self.index}"


class PersonalizedObject(models.Model):
    """One user's adjusted copy of an Object; replaces the original in that user's searches only."""

    # No separate FK index: the unique (original, user_id) index serves lookups by original.
    original = models.ForeignKey(Object, on_delete=models.CASCADE, related_name="personalized", db_index=False)
    user_id = models.CharField(max_length=256)
    object_id = models.CharField(max_length=520, help_text='Display name: "{original.object_id}_{user_id}".')
    updated_at = models.DateTimeField(auto_now=True)
    updates = models.PositiveIntegerField(default=0, help_text="How many improvement runs touched it.")
    last_run = models.BigIntegerField(null=True, blank=True, help_text="Id of the last improvement run.")
    drift = models.FloatField(default=0.0, help_text="Cosine distance from the original (largest over parts).")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["original", "user_id"], name="personalized_original_user_uniq"),
            models.CheckConstraint(condition=Q(drift__gte=0), name="personalized_drift_nonnegative"),
        ]
        indexes = [
            # search: all of one user's copies, WHERE user_id = %s
            models.Index(fields=["user_id"], name="personalized_user_idx"),
            # the decay sweep: copies last taught long ago
            models.Index(fields=["updated_at"], name="personalized_taught_idx"),
        ]

    def __str__(self) -> str:
        return self.object_id


class PersonalizedPart(models.Model):
    """A vector of a personalized copy, in half precision (halfvec: half the bytes of the original's vector; its
    rounding, ~1e-3 relative, is far below what a run moves). No ANN index: copies are read per user, exactly."""

    # No separate FK index: the unique (personalized, index) index serves lookups by copy.
    personalized = models.ForeignKey(PersonalizedObject, on_delete=models.CASCADE, related_name="parts", db_index=False)
    index = models.PositiveSmallIntegerField()
    vector = HalfVectorField(dimensions=settings.STUDIO_EMBEDDING_DIM)
    is_average = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["personalized", "index"], name="personalizedpart_index_uniq"),
        ]

    def __str__(self) -> str:
        return f"{self.personalized_id}#{self.index}"


class SharedQuery(models.Model):
    """A normalized query the shared tier has learned for, with how many distinct voters taught it.

    The shared tier (docs/architecture.md, "The shared tier") learns from every session of a query, anonymous
    ones included, and helps everyone who runs it. ``voters`` normalizes each object's evidence into a rate."""

    query = models.TextField(unique=True, help_text="Lowercased, trimmed, whitespace-collapsed query text.")
    voters = models.PositiveIntegerField(default=0, help_text="Distinct users (or anonymous sessions) who taught it.")
    updated_at = models.DateTimeField()
    vector = VectorField(
        dimensions=settings.STUDIO_EMBEDDING_DIM,
        null=True,
        blank=True,
        help_text="The query's vector, from a session that taught it: a similar query not seen verbatim borrows "
        "this query's offsets (IMPROVEMENT_SHARED_BORROW_SIMILARITY).",
    )

    class Meta:
        indexes = [
            HnswIndex(
                name="sharedquery_vector_hnsw",
                fields=["vector"],
                opclasses=["vector_cosine_ops"],
                m=16,
                ef_construction=64,
            )
        ]

    def __str__(self) -> str:
        return self.query


class SharedVote(models.Model):
    """One voter's evidence about one object for one normalized query, in [-1, 1]: the shared tier's raw state.

    A voter is a user id, or ``session:<id>`` for an anonymous session; a run adds at most one vote per
    voter per (query, object), so one user's thousand clicks weigh as one. Forgetting a user deletes
    their votes, and everything derived is recomputed from the votes that remain."""

    query = models.TextField()
    object = models.ForeignKey(Object, on_delete=models.CASCADE, related_name="+", db_index=False)
    voter = models.CharField(max_length=300)
    vote = models.FloatField()
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["query", "object", "voter"], name="sharedvote_query_object_voter_uniq"),
            models.CheckConstraint(condition=Q(vote__gte=-1.0) & Q(vote__lte=1.0), name="sharedvote_bounded"),
        ]
        indexes = [models.Index(fields=["voter"], name="sharedvote_voter_idx")]

    def __str__(self) -> str:
        return f"{self.query} / {self.object_id} / {self.voter}"


class SharedEvidence(models.Model):
    """The sum of the votes on (query, object) and how many distinct voters cast them; search turns it into
    a bounded score offset (``studio.catalogue.shared``), applied once ``users`` ≥ IMPROVEMENT_SHARED_MIN_USERS."""

    query = models.TextField()
    object = models.ForeignKey(Object, on_delete=models.CASCADE, related_name="+", db_index=False)
    evidence = models.FloatField()
    users = models.PositiveIntegerField()
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["query", "object"], name="sharedevidence_query_object_uniq"),
        ]

    def __str__(self) -> str:
        return f"{self.query} / {self.object_id}"


class RankingSwitch(models.Model):
    """One change of whether search uses learned ranking (users' copies and the shared tier); the latest row is the
    state, and no row means on. The interleaving guard writes "off" (``STUDIO_INTERLEAVE_AUTO_OFF``); an admin
    writes "on" again. Learning goes on either way: only what search shows changes."""

    learned_ranking = models.BooleanField(help_text="Whether search ranks with copies and the shared tier.")
    changed_at = models.DateTimeField(auto_now_add=True)
    changed_by = models.CharField(max_length=150, help_text="'interleaving guard' or the admin's username.")
    reason = models.TextField(blank=True, default="")

    class Meta:
        verbose_name_plural = "ranking switches"
        indexes = [models.Index(fields=["-changed_at"], name="rankingswitch_changed_idx")]

    def __str__(self) -> str:
        state = "on" if self.learned_ranking else "off"
        return f"learned ranking {state} ({self.changed_by})"
