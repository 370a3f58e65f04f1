"""The PostgreSQL backend (issue 16, in progress): one database for many users.

Every table carries ``user_id`` as the first column of its primary key, so each statement is
routable by the user (the distribution key of a Citus-style sharded deployment), and row-level
security compares it with the transaction's ``threadline.user`` setting, a second wall behind
the queries' own scoping. What exists so far: the schema and its migrations (``schema``), the
pool with its user-scoped transactions (``engine``), and the translation of the driver's
errors (``errors``). The ``Store`` does not open a PostgreSQL URL yet.

The driver is asyncpg, chosen by measuring it against psycopg 3 on the store's append and
history patterns (``bench/drivers.py``; bench/README.md has the figures).
"""
