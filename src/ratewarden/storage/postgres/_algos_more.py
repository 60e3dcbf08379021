"""PL/pgSQL port of the quota algorithm and the dispatch by code.

The other algorithms and the helpers (``{S}fdiv``, ``{S}cdiv``, ``{S}late``) are in
``_algos.py``, concurrency (its leases are rows) in ``_leases.py``, sliding-log in
``_sliding_log.py``; these are installed after them.
"""

from __future__ import annotations

__all__ = ["MORE_ALGORITHMS_SQL"]

MORE_ALGORITHMS_SQL = r"""
-- quota (code 7): spec "7 limit p1 p2 p3 p4" (the previous, current and next period's starts
-- and the next one's end, computed by the client in the policy's time zone); state
-- "start used end". The period holding the SERVER's now is chosen; a server time outside
-- [p1, p4) is an error (clock skew), never a guess.
CREATE OR REPLACE FUNCTION {S}q_bounds(sp bigint[], now bigint, OUT a bigint, OUT b bigint)
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  IF now < sp[3] OR now >= sp[6] THEN
    RAISE EXCEPTION 'ratewarden: quota: server time is outside the periods the client sent (clock skew)';
  END IF;
  IF now < sp[4] THEN a := sp[3]; b := sp[4];
  ELSIF now < sp[5] THEN a := sp[4]; b := sp[5];
  ELSE a := sp[5]; b := sp[6];
  END IF;
END $$;

CREATE OR REPLACE FUNCTION {S}q_period(sp bigint[], s bigint[], now bigint, OUT a bigint, OUT b bigint)
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  SELECT x.a, x.b INTO a, b FROM {S}q_bounds(sp, now) x;
  IF s IS NOT NULL AND s[1] > a THEN
    IF array_length(s, 1) >= 3 THEN
      a := s[1]; b := s[3];
    ELSE
      SELECT x.a, x.b INTO a, b FROM {S}q_bounds(sp, s[1]) x;
    END IF;
  END IF;
END $$;

CREATE OR REPLACE FUNCTION {S}q(sp bigint[], st text, now bigint, cost bigint)
RETURNS {S}outcome LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
  lim bigint := sp[2]; s bigint[]; start bigint; stop bigint; at_ bigint := now; used bigint := 0;
  lft bigint; rem bigint; o {S}outcome;
BEGIN
  IF st IS NOT NULL THEN s := string_to_array(st, ' ')::bigint[]; END IF;
  SELECT x.a, x.b INTO start, stop FROM {S}q_period(sp, s, now) x;
  IF start > now THEN at_ := start; END IF;
  IF s IS NOT NULL AND s[1] = start THEN used := s[2]; END IF;
  lft := stop - at_;
  rem := greatest(lim - used, 0);
  IF cost > lim THEN
    o := (false, rem, CASE WHEN used <> 0 THEN lft ELSE 0 END, -1::bigint, st);
  ELSIF used + greatest(cost, 1) <= lim THEN
    used := used + cost;
    o := (true, lim - used, CASE WHEN used <> 0 THEN lft ELSE 0 END, 0::bigint, start || ' ' || used || ' ' || stop);
  ELSE
    o := (false, rem, lft, lft, st);
  END IF;
  IF at_ > now THEN RETURN {S}late(at_ - now, o); END IF;
  RETURN o;
END $$;

CREATE OR REPLACE FUNCTION {S}q_charge(sp bigint[], st text, now bigint, cost bigint)
RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE s bigint[]; start bigint; stop bigint; used bigint := 0;
BEGIN
  IF st IS NOT NULL THEN s := string_to_array(st, ' ')::bigint[]; END IF;
  SELECT x.a, x.b INTO start, stop FROM {S}q_period(sp, s, now) x;
  IF s IS NOT NULL AND s[1] = start THEN used := s[2]; END IF;
  RETURN start || ' ' || (used + cost) || ' ' || stop;
END $$;

-- dispatch by the spec's code (sliding-log and concurrency read their rows: not IMMUTABLE;
-- sliding-log's charge is sl(..., true), called by apply() itself)
CREATE OR REPLACE FUNCTION {S}decide(sp bigint[], st text, k text, w text, now bigint, cost bigint, lease text)
RETURNS {S}outcome LANGUAGE plpgsql AS $$
BEGIN
  CASE sp[1]
    WHEN 1 THEN RETURN {S}fw(sp, st, now, cost);
    WHEN 2 THEN RETURN {S}sw(sp, st, now, cost);
    WHEN 3 THEN RETURN {S}sl(sp, k, w, now, cost, false);
    WHEN 4 THEN RETURN {S}gcra(sp, st, now, cost);
    WHEN 5 THEN RETURN {S}tb(sp, st, now, cost);
    WHEN 6 THEN RETURN {S}cc(sp, st, k, w, now, cost, lease);
    WHEN 7 THEN RETURN {S}q(sp, st, now, cost);
  END CASE;
END $$;

CREATE OR REPLACE FUNCTION {S}charge(sp bigint[], st text, now bigint, cost bigint)
RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  CASE sp[1]
    WHEN 1 THEN RETURN {S}fw_charge(sp, st, now, cost);
    WHEN 2 THEN RETURN {S}sw_charge(sp, st, now, cost);
    WHEN 4 THEN RETURN {S}gcra_charge(sp, st, now, cost);
    WHEN 5 THEN RETURN {S}tb_charge(sp, st, now, cost);
    WHEN 7 THEN RETURN {S}q_charge(sp, st, now, cost);
  END CASE;
END $$;
"""
