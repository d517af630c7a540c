"""The evaluation harness behind ``manage.py evaluate`` (docs/architecture.md): simulated users with real
relevance replay the whole loop — search, session registration, clicks, improvement runs, search again —
in a throwaway database, and the report shows whether (and how much) clicks make search better.

Modules: ``datasets`` (MovieLens-100K, BEIR folders), ``clicks`` (position-based and cascade click
models), ``metrics`` (NDCG/MRR/recall, bootstrap intervals), ``database`` (the throwaway database),
``loop`` (arms, rounds, views, guards), ``report`` (report.json, report.md, plot), ``sweep``.
"""
