"""Definitions as a part: plan and apply, with migrations and the online follow-up.

It sits above ingestion (a migration writes commits) and online serving (a new version
with data is materialized as far as the old one was), so neither of those imports it.
"""
