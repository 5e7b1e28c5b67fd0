"""Promotion: a registry of served students, a challenger compared with the champion, rollback.

The most downstream verb: it reads a finished run (its student and held-out shards) and writes only
into the registry (pipeline.promote.registry).
"""
