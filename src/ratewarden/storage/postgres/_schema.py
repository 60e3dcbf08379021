"""The store's database objects, versioned, and how they are installed.

Objects (``{S}`` = ``"schema".prefix``, default ``"public".ratewarden_``):

* ``{S}state (key, wid, state, expires)``: one row per key and window; ``state`` is the text
  encoding of the core's state, ``expires`` whole epoch seconds (rounded up) after which the
  row holds no usage. Primary key ``(key, wid)``, an index on ``expires`` for the sweep,
  fillfactor 80 so updates of a hot key stay HOT (``expires`` moves at most once a second).
* ``{S}log`` (sliding-log's entries, ``_sliding_log.py``) and ``{S}lease`` (concurrency's
  leases, ``_leases.py``): rows of a window, deleted with its state row.
* ``{S}schema_version (version)``: the versions installed; a later release adds a migration.
* ``{S}apply(...)`` / ``{S}hit1(...)``: one call per decision, ``{S}batch(...)``: several
  queued decisions in one call (see :data:`DISPATCH_SQL`),
  on top of the algorithm functions of ``_algos.py`` and ``_algos_more.py``.

:func:`migrate` installs or upgrades everything in one transaction under an advisory lock, so
processes starting together do not race; a database with a newer version is refused.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from ratewarden.errors import ConfigError, StoreError
from ratewarden.storage.postgres._algos import ALGORITHMS_SQL
from ratewarden.storage.postgres._algos_more import MORE_ALGORITHMS_SQL
from ratewarden.storage.postgres._leases import LEASES_SQL, MIGRATE_LEASES_SQL
from ratewarden.storage.postgres._sliding_log import SLIDING_LOG_SQL

__all__ = ["SCHEMA_VERSION", "Names", "migrate", "migrate_async"]

SCHEMA_VERSION = 2
_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,39}$")

TABLES_SQL = """
CREATE SCHEMA IF NOT EXISTS {Q};
CREATE TABLE IF NOT EXISTS {S}schema_version (
  version int PRIMARY KEY,
  installed_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS {S}state (
  key text COLLATE "C" NOT NULL,
  wid text COLLATE "C" NOT NULL,
  state text NOT NULL,
  expires bigint NOT NULL,
  PRIMARY KEY (key, wid)
) WITH (fillfactor = 80);
CREATE INDEX IF NOT EXISTS {P}state_expires ON {S}state (expires);
DO $$ BEGIN
  CREATE TYPE {S}outcome AS (ok boolean, rem bigint, rst bigint, rty bigint, st text);
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;
"""

# One call per decision. Locks: one transaction-scoped advisory lock per distinct key of the
# call, taken in sorted order (no deadlock between calls over several keys); every write of a
# key's rows happens under its lock, so decisions on one key are serial and exact. The sweep
# runs last, takes only rows nobody holds (SKIP LOCKED) and never waits: it cannot deadlock.
DISPATCH_SQL = r"""
CREATE OR REPLACE FUNCTION {S}apply(now_in bigint, slack bigint, op text, lease text, keys text[],
  wids text[], specs text[], costs bigint[], sweep int)
RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE
  now bigint := coalesce(now_in, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint);
  n int := coalesce(array_length(keys, 1), 0); i int; h bigint; sts text[]; sp bigint[];
  codes bigint[] := '{}'; o {S}outcome; outs {S}outcome[] := '{}'; allok boolean := true;
  res bigint[] := '{}'; nst text;
BEGIN
  FOR h IN SELECT DISTINCT hashtextextended(k, {SEED}) FROM unnest(keys) k ORDER BY 1 LOOP
    PERFORM pg_advisory_xact_lock(h);
  END LOOP;
  SELECT array_agg(t.state ORDER BY u.o) INTO sts
    FROM unnest(keys, wids) WITH ORDINALITY u(k, w, o)
    LEFT JOIN {S}state t ON t.key = u.k AND t.wid = u.w;
  FOR i IN 1 .. n LOOP
    sp := string_to_array(specs[i], ' ')::bigint[];
    codes[i] := sp[1];
    IF op = 'hit' OR op = 'peek' OR op = 'acquire' THEN
      o := {S}decide(sp, sts[i], keys[i], wids[i], now, costs[i], CASE WHEN op = 'acquire' THEN lease ELSE '' END);
      IF NOT o.ok THEN allok := false; END IF;
    ELSIF op = 'charge' AND sp[1] = 3 THEN
      o := {S}sl(sp, keys[i], wids[i], now, costs[i], true);
    ELSIF op = 'charge' THEN
      nst := {S}charge(sp, sts[i], now, costs[i]);
      o := {S}decide(sp, nst, keys[i], wids[i], now, 0, '');
      o := (true, o.rem, o.rst, 0::bigint, nst);
    ELSIF op = 'release' AND sp[1] = 6 THEN
      nst := {S}cc_release(keys[i], wids[i], now, lease);
      o := {S}decide(sp, nst, keys[i], wids[i], now, 0, '');
      o := (true, o.rem, o.rst, 0::bigint, o.st);
    ELSIF op = 'release' THEN
      o := {S}decide(sp, sts[i], keys[i], wids[i], now, 0, '');
      o := (true, o.rem, o.rst, 0::bigint, sts[i]);
    ELSE
      RAISE EXCEPTION 'ratewarden: unknown operation %', op;
    END IF;
    outs[i] := o;
    res := res || (CASE WHEN o.ok THEN 1 ELSE 0 END)::bigint || o.rem || o.rst || o.rty;
  END LOOP;
  IF op = 'charge' OR op = 'release' OR (allok AND op <> 'peek') THEN
    FOR i IN 1 .. n LOOP
      PERFORM {S}put(keys[i], wids[i], codes[i], outs[i], now, slack);
    END LOOP;
  END IF;
  IF sweep > 0 THEN
    res := res || {S}sweep(now, sweep)::bigint;
  END IF;
  RETURN res;
END $$;

-- Several requests in one call (the asyncio face merges the calls that queue up while others
-- are in flight): every key's lock first, in sorted order, then each request all-or-nothing in
-- turn (apply() takes its locks again: already held), a later one seeing what an earlier wrote.
CREATE OR REPLACE FUNCTION {S}batch(now_in bigint, slack bigint, ops text[], leases text[], counts int[],
  keys text[], wids text[], specs text[], costs bigint[], sweep int)
RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE
  now bigint := coalesce(now_in, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint);
  h bigint; q int; nq int := coalesce(array_length(ops, 1), 0); lo int := 1; hi int; res bigint[] := '{}';
BEGIN
  FOR h IN SELECT DISTINCT hashtextextended(k, {SEED}) FROM unnest(keys) k ORDER BY 1 LOOP
    PERFORM pg_advisory_xact_lock(h);
  END LOOP;
  FOR q IN 1 .. nq LOOP
    hi := lo + counts[q] - 1;
    res := res || {S}apply(now, slack, ops[q], leases[q], keys[lo:hi], wids[lo:hi], specs[lo:hi],
      costs[lo:hi], CASE WHEN q = nq THEN sweep ELSE 0 END);
    lo := hi + 1;
  END LOOP;
  RETURN res;
END $$;

-- apply('hit') of one window: the hot path, without the arrays.
CREATE OR REPLACE FUNCTION {S}hit1(now_in bigint, slack bigint, k text, w text, spec text,
  cost bigint, sweep int)
RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE
  now bigint := coalesce(now_in, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint);
  sp bigint[] := string_to_array(spec, ' ')::bigint[]; st text; o {S}outcome; res bigint[];
BEGIN
  PERFORM pg_advisory_xact_lock(hashtextextended(k, {SEED}));
  IF sp[1] <> 3 THEN
    SELECT t.state INTO st FROM {S}state t WHERE t.key = k AND t.wid = w;
  END IF;
  o := {S}decide(sp, st, k, w, now, cost, '');
  IF o.ok THEN
    PERFORM {S}put(k, w, sp[1], o, now, slack);
  END IF;
  res := ARRAY[(CASE WHEN o.ok THEN 1 ELSE 0 END)::bigint, o.rem, o.rst, o.rty];
  IF sweep > 0 THEN
    res := res || {S}sweep(now, sweep)::bigint;
  END IF;
  RETURN res;
END $$;
"""

#: version -> the SQL that brings the previous version to it (functions are replaced whole)
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (TABLES_SQL, ALGORITHMS_SQL, SLIDING_LOG_SQL, MORE_ALGORITHMS_SQL, DISPATCH_SQL),
    # concurrency's leases as rows (_leases.py): the table, the text states moved into it, and
    # every function that reads or writes leases replaced
    2: (LEASES_SQL, MIGRATE_LEASES_SQL, SLIDING_LOG_SQL, MORE_ALGORITHMS_SQL, DISPATCH_SQL),
}


class Names:
    """The qualified names of one store's objects, checked (they are pasted into SQL)."""

    __slots__ = (
        "apply",
        "batch",
        "hit1",
        "lock",
        "prefix",
        "q",
        "reset",
        "s",
        "schema",
        "seed",
        "state",
        "sweep",
        "version",
    )

    def __init__(self, schema: str, prefix: str) -> None:
        if not isinstance(schema, str) or not _IDENT.match(schema):
            raise ConfigError(f"schema must be a lower-case SQL identifier ([a-z_][a-z0-9_]*), not {schema!r}")
        if not isinstance(prefix, str) or not (prefix == "" or _IDENT.match(prefix)):
            raise ConfigError(f"table_prefix must be a lower-case SQL identifier prefix, not {prefix!r}")
        self.schema = schema
        self.prefix = prefix
        self.q = f'"{schema}"'
        self.s = f'"{schema}".{prefix}'
        self.state = f"{self.s}state"
        self.version = f"{self.s}schema_version"
        self.apply = f"SELECT {self.s}apply(%s, %s, %s, %s, %s, %s, %s, %s, %s)"
        self.hit1 = f"SELECT {self.s}hit1(%s, %s, %s, %s, %s, %s, %s)"
        self.batch = f"SELECT {self.s}batch(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        self.reset = (
            f"WITH d AS (DELETE FROM {self.state} WHERE key = %s AND (%s::text[] IS NULL OR wid = ANY(%s)) "
            f"RETURNING key, wid), e AS (DELETE FROM {self.s}log x USING d WHERE x.key = d.key AND x.wid = d.wid) "
            f"DELETE FROM {self.s}lease x USING d WHERE x.key = d.key AND x.wid = d.wid"
        )
        self.sweep = (
            f"SELECT {self.s}sweep(coalesce(%s, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint), %s)"
        )
        # the advisory locks of two stores in one database differ (a collision only serialises)
        self.seed = int.from_bytes(hashlib.blake2b(self.s.encode(), digest_size=4).digest(), "big")
        self.lock = f"SELECT pg_advisory_xact_lock(hashtextextended(%s, {self.seed}))"

    def render(self, sql: str) -> str:
        return (
            sql.replace("{S}", self.s)
            .replace("{Q}", self.q)
            .replace("{P}", self.prefix)
            .replace("{SEED}", str(self.seed))
        )

    def steps(self, installed: int) -> list[str]:
        """The SQL that brings ``installed`` to :data:`SCHEMA_VERSION`."""
        if installed > SCHEMA_VERSION:
            raise StoreError(
                f"the ratewarden objects in {self.s}* are version {installed}, newer than this "
                f"release understands ({SCHEMA_VERSION}): upgrade ratewarden"
            )
        out: list[str] = []
        for v in range(installed + 1, SCHEMA_VERSION + 1):
            out += [self.render(sql) for sql in MIGRATIONS[v]]
            out.append(f"INSERT INTO {self.version} (version) VALUES ({v}) ON CONFLICT DO NOTHING")
        return out


def _exists_sql(names: Names) -> str:
    return f"SELECT to_regclass('{names.version}') IS NOT NULL"


def _version_sql(names: Names) -> str:
    return f"SELECT coalesce(max(version), 0) FROM {names.version}"


def migrate(conn: Any, names: Names) -> int:
    """Install or upgrade the objects on a psycopg connection; returns the version installed before."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (names.seed,))
        installed = 0
        if conn.execute(_exists_sql(names)).fetchone()[0]:
            installed = int(conn.execute(_version_sql(names)).fetchone()[0])
        for sql in names.steps(installed):
            conn.execute(sql, prepare=False)
    return installed


async def migrate_async(conn: Any, names: Names) -> int:
    """:func:`migrate` on an asyncio psycopg connection."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (names.seed,))
        installed = 0
        if (await (await conn.execute(_exists_sql(names))).fetchone())[0]:
            installed = int((await (await conn.execute(_version_sql(names))).fetchone())[0])
        for sql in names.steps(installed):
            await conn.execute(sql, prepare=False)
    return installed
