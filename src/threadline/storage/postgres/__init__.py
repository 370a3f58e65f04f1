"""The PostgreSQL backend (issue 16, in progress): one database for many users.

Every table carries ``user_id`` as the first column of its primary key, and every statement
binds the user as its first parameter (``rows.Tx``), so each is routable by the user (the
distribution key of a Citus-style sharded deployment); row-level security compares the rows'
``user_id`` with the transaction's ``threadline.user`` setting, a second wall behind the
queries' own scoping. ``Store.open("postgresql://...", user=...)`` opens ``backend``'s
``PostgresBackend``: sessions (forks too), messages, compaction, context blocks and usage so
far; search, prune, export and import refuse with ``backend.Unsupported`` until they are
ported.

The driver is asyncpg, chosen by measuring it against psycopg 3 on the store's append and
history patterns (``bench/drivers.py``; bench/README.md has the figures).
"""
