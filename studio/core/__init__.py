"""Shared API infrastructure: errors, serializers, middleware, API keys, database helpers, vectors.

Knows no app's models (its only model is the API key it authenticates with).
"""
