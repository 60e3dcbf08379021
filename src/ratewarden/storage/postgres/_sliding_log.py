"""Sliding-log in PostgreSQL: the log as rows, so a decision costs O(log n), never O(n).

The core's state (``core/algorithms/sliding_log.py``) is a log of admissions: times and the
running total of their costs, read by binary search. Here each entry is a row of ``{S}log``
``(key, wid, ts, cum, cost)``: one per distinct admission time, ``cum`` the running total
(it only grows), ``cost`` the entry's own units. A decision reads, by index:

* the last entry (``ORDER BY ts DESC LIMIT 1``): ``used`` ends there, ``reset`` follows from it;
* the first live entry (``ts > now - P``): ``used = last.cum - (first.cum - first.cost)``;
* on a denial, the first entry whose ``cum`` reaches the amount that must leave the window
  (index on ``cum``): ``retry_after`` is its time + P.

``{S}sl`` only reads; it returns what to write as an instruction (the new-state field of the
outcome), carried out by ``{S}put`` if and only if the request is admitted everywhere:
``"A floor ts cum cost"`` appends an entry, ``"M floor ts cum cost"`` adds to the newest one
(a request stamped at or before it: the clock stepped back, or the same microsecond),
``"D floor"`` only drops expired entries, ``"K"`` keeps the rows (release). Each first drops
the entries at or before ``floor`` (expired), at most once each. The ``{S}state`` row of a
sliding-log window holds ``"K"`` and the expiry; the sweep deletes its entries with it.
"""

from __future__ import annotations

__all__ = ["SLIDING_LOG_SQL"]

SLIDING_LOG_SQL = r"""
CREATE TABLE IF NOT EXISTS {S}log (
  key text COLLATE "C" NOT NULL,
  wid text COLLATE "C" NOT NULL,
  ts bigint NOT NULL,
  cum bigint NOT NULL,
  cost bigint NOT NULL,
  PRIMARY KEY (key, wid, ts)
);
CREATE INDEX IF NOT EXISTS {P}log_cum ON {S}log (key, wid, cum, ts);

-- sliding-log (code 3): decide (charge = false) or charge (charge = true: always admitted, the
-- outcome is the decision for cost 0 after the charge, as core/evaluate.py computes it).
CREATE OR REPLACE FUNCTION {S}sl(sp bigint[], k text, w text, now bigint, cost bigint, charge boolean)
RETURNS {S}outcome LANGUAGE plpgsql AS $$
DECLARE
  p bigint := sp[3]; lim bigint := sp[2]; fl bigint := now - sp[3];
  l_ts bigint; l_cum bigint; f_cum bigint; f_cost bigint; live boolean := false;
  used bigint := 0; base bigint := 0; rst bigint := 0; t bigint; r_ts bigint; target bigint;
BEGIN
  SELECT x.ts, x.cum INTO l_ts, l_cum FROM {S}log x WHERE x.key = k AND x.wid = w ORDER BY x.ts DESC LIMIT 1;
  IF l_ts > fl THEN
    live := true;
    SELECT x.cum, x.cost INTO f_cum, f_cost FROM {S}log x
      WHERE x.key = k AND x.wid = w AND x.ts > fl ORDER BY x.ts LIMIT 1;
    base := f_cum - f_cost;
    used := l_cum - base;
    rst := l_ts + p - now;
  END IF;
  IF NOT charge THEN
    IF cost > lim THEN
      RETURN (false, lim - used, rst, -1::bigint, NULL::text);
    END IF;
    IF used + greatest(cost, 1) > lim THEN
      target := base + used + greatest(cost, 1) - lim;
      SELECT x.ts INTO r_ts FROM {S}log x
        WHERE x.key = k AND x.wid = w AND x.cum >= target ORDER BY x.cum, x.ts LIMIT 1;
      RETURN (false, lim - used, rst, r_ts + p - now, NULL::text);
    END IF;
    IF cost = 0 THEN
      RETURN (true, lim - used, rst, 0::bigint, 'D ' || fl);
    END IF;
  END IF;
  t := CASE WHEN live AND l_ts >= now THEN l_ts ELSE now END;
  used := used + cost;
  RETURN (true, lim - used, t + p - now, 0::bigint,
    CASE WHEN live AND t = l_ts THEN 'M ' ELSE 'A ' END || fl || ' ' || t || ' ' || (coalesce(l_cum, 0) + cost)
    || ' ' || cost);
END $$;

-- Write one window's outcome (admitted everywhere): the state row first (so a concurrent
-- sweep, which locks state rows before it deletes their entries, never waits on us holding
-- an entry), then a sliding-log's instruction; a concurrency window's write is cc_put's.
CREATE OR REPLACE FUNCTION {S}put(k text, w text, code bigint, o {S}outcome, now bigint, slack bigint)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE ins text[]; ex bigint;
BEGIN
  IF code = 6 THEN
    PERFORM {S}cc_put(k, w, o.st, now, slack);
    RETURN;
  END IF;
  IF o.st IS NULL OR o.rst <= 0 THEN
    DELETE FROM {S}state t WHERE t.key = k AND t.wid = w;
    IF code = 3 THEN DELETE FROM {S}log x WHERE x.key = k AND x.wid = w; END IF;
    RETURN;
  END IF;
  ex := {S}cdiv(now + o.rst, 1000000) + slack;
  UPDATE {S}state t SET state = CASE WHEN code = 3 THEN 'K' ELSE o.st END, expires = ex
    WHERE t.key = k AND t.wid = w;
  IF NOT FOUND THEN
    INSERT INTO {S}state (key, wid, state, expires) VALUES (k, w, CASE WHEN code = 3 THEN 'K' ELSE o.st END, ex)
      ON CONFLICT (key, wid) DO UPDATE SET state = excluded.state, expires = excluded.expires;
  END IF;
  IF code = 3 AND o.st <> 'K' THEN
    ins := string_to_array(o.st, ' ');
    DELETE FROM {S}log x WHERE x.key = k AND x.wid = w AND x.ts <= ins[2]::bigint;
    IF ins[1] = 'M' THEN
      UPDATE {S}log x SET cum = ins[4]::bigint, cost = x.cost + ins[5]::bigint
        WHERE x.key = k AND x.wid = w AND x.ts = ins[3]::bigint;
    ELSIF ins[1] = 'A' THEN
      INSERT INTO {S}log (key, wid, ts, cum, cost) VALUES (k, w, ins[3]::bigint, ins[4]::bigint, ins[5]::bigint);
    END IF;
  END IF;
END $$;

-- The bounded sweep: up to n expired state rows nobody holds (SKIP LOCKED: never waits), the
-- log entries of those that were sliding-logs, the leases of those that were concurrency.
-- Returns the number of state rows deleted.
CREATE OR REPLACE FUNCTION {S}sweep(now bigint, n int) RETURNS int LANGUAGE plpgsql AS $$
DECLARE cnt int;
BEGIN
  WITH d AS (
    DELETE FROM {S}state WHERE ctid = ANY(ARRAY(
      SELECT ctid FROM {S}state WHERE expires < now / 1000000 ORDER BY expires LIMIT n FOR UPDATE SKIP LOCKED))
    RETURNING key, wid
  ), e AS (
    DELETE FROM {S}log x USING d WHERE x.key = d.key AND x.wid = d.wid
  ), f AS (
    DELETE FROM {S}lease x USING d WHERE x.key = d.key AND x.wid = d.wid
  )
  SELECT count(*) INTO cnt FROM d;
  RETURN cnt;
END $$;
"""
