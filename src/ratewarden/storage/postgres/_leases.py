"""Concurrency in PostgreSQL: the leases as rows, so a call does bounded work, never O(n).

The core's state (``core/algorithms/concurrency.py``) is the tuple of live leases
``(expires, lease, cost)``. Here each lease is a row of ``{S}lease (key, wid, ex, seq, id,
cost)`` (``seq`` numbers a window's leases: one lease id may be held twice, as in the core;
the anonymous lease is ``""``), and the window's ``{S}state`` row holds six numbers,
``"used cut dsum seq ch cs"``:

* ``used``: the sum of the costs of the window's rows;
* ``cut``: the rows with ``ex <= cut`` are leases the core has already dropped (a write at
  ``now`` drops every lease with ``expires <= now``) but that are not deleted yet: a write
  deletes at most :data:`TRIM` of them, soonest first; 0 when there are none;
* ``dsum``: the sum of the costs of those dropped rows;
* ``seq``: the last ``seq`` given;
* ``ch``, ``cs``: a cache written by a read (a denial, a peek: they write nothing else) that
  summed more than :data:`TRIM` rows: ``cs`` is the sum of the costs in ``(cut, ch]``
  (``ch <= cut``: none). It never changes a decision, it spares the next reads the same sum.

A decision at ``now`` reads by index: the last expiry (``ORDER BY ex DESC LIMIT 1``: the
reset, and whether anything is held), the costs of the rows in ``(cut, now]`` (the leases
that expired since the last write: amortized O(1), each is summed by the next write, which
moves the cut over it), and on a denial the first live rows in expiry order, their costs
summed by a window function until they free the excess (each row frees at least 1 unit: at
most ``excess`` rows, one when every lease costs 1). ``used - dsum - (those costs)`` is the
units held, exactly, however many dropped rows wait.

``{S}cc`` decides (writing at most the cache); its outcome's state field is the write it asks
for, a write at now (drop what expired) and maybe a lease to add, with what it read (the
state text, the expired sum, the last expiry: reused by ``{S}cc_put`` if the state text is
unchanged), carried out by ``{S}cc_put`` if and only if the request is admitted everywhere. ``{S}cc_release`` deletes
a named lease's live rows. Both lock the state row first (the sweep locks state rows before
it deletes their leases: it never waits on us holding a lease row). Not bounded (rare): a
write after the clock stepped back a whole TTL behind the cut deletes the dropped rows in
``(now, cut]``; releasing a lease id held m times deletes m rows; the sweep of an expired
window and ``reset`` delete all its rows.
"""

from __future__ import annotations

__all__ = ["LEASES_SQL", "MIGRATE_LEASES_SQL", "TRIM"]

#: the most dropped leases one write deletes
TRIM = 50

LEASES_SQL = r"""
CREATE TABLE IF NOT EXISTS {S}lease (
  key text COLLATE "C" NOT NULL,
  wid text COLLATE "C" NOT NULL,
  ex bigint NOT NULL,
  seq bigint NOT NULL,
  id text COLLATE "C" NOT NULL,
  cost bigint NOT NULL,
  PRIMARY KEY (key, wid, ex, seq)
);
CREATE INDEX IF NOT EXISTS {P}lease_id ON {S}lease (key, wid, id) WHERE id <> '';

-- the state row's numbers: used, cut, dsum, seq, ch, cs (all 0 without a row)
CREATE OR REPLACE FUNCTION {S}cc_st(st text) RETURNS bigint[] LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE WHEN st IS NULL THEN '{0,0,0,0,0,0}'::bigint[] ELSE string_to_array(st, ' ')::bigint[] END
$$;

-- the costs of the rows in (cut, t] (t > cut), and how many rows were read to sum them: from
-- the cache (cs = the costs in (cut, ch]) when t >= ch > cut
CREATE OR REPLACE FUNCTION {S}cc_since(k text, w text, s bigint[], t bigint) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE a bigint; b bigint; lo bigint := s[2]; base bigint := 0;
BEGIN
  IF s[5] > s[2] AND t >= s[5] THEN
    lo := s[5];
    base := s[6];
  END IF;
  SELECT coalesce(sum(x.cost), 0), count(*) INTO a, b FROM {S}lease x
    WHERE x.key = k AND x.wid = w AND x.ex > lo AND x.ex <= t;
  RETURN ARRAY[base + a, b];
END $$;

-- concurrency (code 6): decide (writes nothing the decisions depend on: at most the cache)
CREATE OR REPLACE FUNCTION {S}cc(sp bigint[], st text, k text, w text, now bigint, cost bigint, lease text)
RETURNS {S}outcome LANGUAGE plpgsql AS $$
DECLARE
  lim bigint := sp[2]; s bigint[] := {S}cc_st(st); h bigint := greatest(now, s[2]); last bigint;
  used bigint := 0; rst bigint := 0; need bigint; excess bigint; r bigint; ins text; g bigint[];
  gone bigint;
BEGIN
  IF st IS NOT NULL THEN
    SELECT x.ex INTO last FROM {S}lease x WHERE x.key = k AND x.wid = w ORDER BY x.ex DESC LIMIT 1;
    IF last > h THEN
      used := s[1] - s[3];
      IF now > s[2] THEN
        g := {S}cc_since(k, w, s, now);
        used := used - g[1];
        gone := g[1];
        IF g[2] > {TRIM} THEN -- many expired since the last write: remember their sum
          s[5] := now;
          s[6] := g[1];
          UPDATE {S}state x SET state = array_to_string(s, ' ') WHERE x.key = k AND x.wid = w;
        END IF;
      END IF;
      rst := last - now;
    END IF;
  END IF;
  -- the write asked for, with what was read (cc_put reuses it if the state row is unchanged):
  -- "W|gone|last|state||" or, adding a lease, "W|gone|last|state|expires|cost|lease"
  ins := 'W|' || coalesce(gone::text, '') || '|' || coalesce(last::text, '') || '|' || coalesce(st, '') || '||';
  IF cost > lim THEN
    RETURN (false, lim - used, rst, -1::bigint, ins);
  END IF;
  need := greatest(cost, 1);
  IF used + need <= lim THEN
    IF cost <> 0 THEN
      used := used + cost;
      rst := greatest(now + rst, now + sp[3]) - now;
      ins := left(ins, -1) || (now + sp[3]) || '|' || cost || '|' || lease;
    END IF;
    RETURN (true, lim - used, rst, 0::bigint, ins);
  END IF;
  excess := used + need - lim;
  SELECT y.ex INTO r FROM (
    SELECT x.ex, sum(x.cost) OVER (ORDER BY x.ex, x.seq ROWS UNBOUNDED PRECEDING) AS c
    FROM {S}lease x WHERE x.key = k AND x.wid = w AND x.ex > h ORDER BY x.ex, x.seq
  ) y WHERE y.c >= excess LIMIT 1;
  IF r IS NULL THEN
    RAISE EXCEPTION 'ratewarden: concurrency state is inconsistent';
  END IF;
  RETURN (false, lim - used, rst, r - now, ins);
END $$;

-- A write at now (the request was admitted everywhere): move the cut to now (summing the
-- leases that expired since the last write into dsum), delete at most TRIM dropped rows, add
-- the lease asked for, write the state row (or delete it: nothing left).
CREATE OR REPLACE FUNCTION {S}cc_put(k text, w text, ins text, now bigint, slack bigint)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  t text[] := string_to_array(ins, '|'); s bigint[]; cur text; c2 bigint; fr bigint; ne bigint;
  last bigint; g bigint[]; same boolean;
BEGIN
  SELECT x.state INTO cur FROM {S}state x WHERE x.key = k AND x.wid = w FOR UPDATE;
  same := coalesce(cur = t[4], false); -- the rows decide read (a change of them changes the text)
  s := {S}cc_st(cur);
  IF cur IS NULL THEN -- leases without their state row (deleted by hand): not counted, gone
    DELETE FROM {S}lease x WHERE x.key = k AND x.wid = w;
  END IF;
  c2 := greatest(s[2], now);
  IF c2 > s[2] AND cur IS NOT NULL THEN
    IF same AND t[2] <> '' THEN
      g := ARRAY[t[2]::bigint, 0]; -- decide summed (cut, now]: now > cut, so c2 = now
    ELSE
      g := {S}cc_since(k, w, s, c2);
    END IF;
    s[3] := s[3] + g[1];
    IF s[5] > c2 THEN -- the cache still reaches past the new cut (the clock stepped back)
      s[6] := s[6] - g[1];
    ELSE
      s[5] := 0;
      s[6] := 0;
    END IF;
  END IF;
  IF s[3] > 0 THEN
    WITH d AS (
      DELETE FROM {S}lease x WHERE x.ctid = ANY(ARRAY(
        SELECT y.ctid FROM {S}lease y WHERE y.key = k AND y.wid = w AND y.ex <= c2
        ORDER BY y.ex, y.seq LIMIT {TRIM}))
      RETURNING x.cost
    ) SELECT coalesce(sum(d.cost), 0) INTO fr FROM d;
    s[1] := s[1] - fr;
    s[3] := s[3] - fr;
  END IF;
  IF same AND t[3] <> '' AND t[3]::bigint > c2 THEN
    last := t[3]::bigint; -- a live row is the last: the trim (of rows up to c2) keeps it
  END IF;
  IF t[5] <> '' THEN
    ne := t[5]::bigint;
    IF ne <= c2 THEN -- the clock stepped back a whole TTL behind the cut: those rows go now
      WITH d AS (
        DELETE FROM {S}lease x WHERE x.key = k AND x.wid = w AND x.ex > now AND x.ex <= c2 RETURNING x.cost
      ) SELECT coalesce(sum(d.cost), 0) INTO fr FROM d;
      s[1] := s[1] - fr;
      s[3] := s[3] - fr;
      c2 := now;
    END IF;
    s[4] := s[4] + 1;
    INSERT INTO {S}lease (key, wid, ex, seq, id, cost)
      VALUES (k, w, ne, s[4], array_to_string(t[7:], '|'), t[6]::bigint);
    s[1] := s[1] + t[6]::bigint;
    IF ne <= s[5] THEN s[6] := s[6] + t[6]::bigint; END IF;
    IF last IS NOT NULL THEN last := greatest(last, ne); END IF;
  END IF;
  IF s[3] = 0 THEN c2 := 0; END IF;
  IF s[1] = 0 THEN
    IF cur IS NOT NULL THEN DELETE FROM {S}state x WHERE x.key = k AND x.wid = w; END IF;
    RETURN;
  END IF;
  s[2] := c2;
  IF last IS NULL THEN
    SELECT x.ex INTO last FROM {S}lease x WHERE x.key = k AND x.wid = w ORDER BY x.ex DESC LIMIT 1;
  END IF;
  cur := array_to_string(s, ' ');
  UPDATE {S}state x SET state = cur, expires = {S}cdiv(last, 1000000) + slack WHERE x.key = k AND x.wid = w;
  IF NOT FOUND THEN
    INSERT INTO {S}state (key, wid, state, expires) VALUES (k, w, cur, {S}cdiv(last, 1000000) + slack)
      ON CONFLICT (key, wid) DO UPDATE SET state = excluded.state, expires = excluded.expires;
  END IF;
END $$;

-- Release: delete the live rows of a named lease; returns the state text after. The anonymous
-- leases of decide (named "") are released only by their TTL: releasing "" deletes nothing
-- (the write that follows drops what expired).
CREATE OR REPLACE FUNCTION {S}cc_release(k text, w text, now bigint, lease text)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE cur text; s bigint[]; fr bigint; fc bigint;
BEGIN
  SELECT x.state INTO cur FROM {S}state x WHERE x.key = k AND x.wid = w FOR UPDATE;
  IF cur IS NULL OR lease = '' THEN RETURN cur; END IF;
  s := {S}cc_st(cur);
  WITH d AS (
    DELETE FROM {S}lease x WHERE x.key = k AND x.wid = w AND x.id <> '' AND x.id = lease
      AND x.ex > greatest(now, s[2]) RETURNING x.ex, x.cost
  ) SELECT coalesce(sum(d.cost), 0), coalesce(sum(d.cost) FILTER (WHERE d.ex <= s[5]), 0) INTO fr, fc FROM d;
  IF fr > 0 THEN
    s[1] := s[1] - fr;
    s[6] := s[6] - fc;
    cur := array_to_string(s, ' ');
    UPDATE {S}state x SET state = cur WHERE x.key = k AND x.wid = w;
  END IF;
  RETURN cur;
END $$;
""".replace("{TRIM}", str(TRIM))

# Version 2: the leases of the text states "expires lease cost ..." of version 1 become rows
# (once, O(total)); the functions that parsed them go.
MIGRATE_LEASES_SQL = r"""
DROP FUNCTION IF EXISTS {S}cc(bigint[], text, bigint, bigint, text);
DROP FUNCTION IF EXISTS {S}cc_release(text, bigint, text);
DROP FUNCTION IF EXISTS {S}cc_enc(bigint[], text[], bigint[]);
INSERT INTO {S}lease (key, wid, ex, seq, id, cost)
  SELECT s.key, s.wid, t[3 * i - 2]::bigint, i, CASE WHEN t[3 * i - 1] = '-' THEN '' ELSE t[3 * i - 1] END,
    t[3 * i]::bigint
  FROM {S}state s CROSS JOIN LATERAL string_to_array(s.state, ' ') t
    CROSS JOIN LATERAL generate_series(1, coalesce(array_length(t, 1), 0) / 3) i
  WHERE starts_with(s.wid, 'concurrency:') AND s.state LIKE '% %';
UPDATE {S}state s SET state = coalesce((SELECT sum(x.cost) || ' 0 0 ' || count(*) || ' 0 0' FROM {S}lease x
    WHERE x.key = s.key AND x.wid = s.wid), '0 0 0 0 0 0')
  WHERE starts_with(s.wid, 'concurrency:') AND s.state LIKE '% % %';
DELETE FROM {S}state s WHERE starts_with(s.wid, 'concurrency:') AND s.state = '0 0 0 0 0 0';
"""
