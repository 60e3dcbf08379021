"""PL/pgSQL ports of the core algorithms (``core/algorithms/*.py``), one function per algorithm.

They mirror the Lua ports (``storage/lua/``) line for line and keep the same state encodings
(text of space-separated integers; concurrency leases "expires id cost", the anonymous lease
stored as "-"), so one decoder reads the states of both. Every number is a ``bigint``
(microseconds, counts); ``{S}fdiv`` / ``{S}cdiv`` are the floor and ceiling divisions of the
Python core (``//`` and ``-(-a // b)``), exact for negative numerators too.

``{S}`` is replaced by the qualified prefix of the store's objects (``"schema".prefix_``).
Each decide function returns ``{S}outcome``: allowed, remaining, reset_us, retry_us, new state.
"""

from __future__ import annotations

__all__ = ["ALGORITHMS_SQL"]

ALGORITHMS_SQL = r"""
CREATE OR REPLACE FUNCTION {S}fdiv(a bigint, b bigint) RETURNS bigint LANGUAGE sql IMMUTABLE AS
$$ SELECT CASE WHEN a % b <> 0 AND ((a < 0) <> (b < 0)) THEN a / b - 1 ELSE a / b END $$;

CREATE OR REPLACE FUNCTION {S}cdiv(a bigint, b bigint) RETURNS bigint LANGUAGE sql IMMUTABLE AS
$$ SELECT -(CASE WHEN (-a) % b <> 0 AND ((-a < 0) <> (b < 0)) THEN (-a) / b - 1 ELSE (-a) / b END) $$;

-- An outcome decided at a later time than now (the clock stepped back by lag > 0): the waits
-- are measured from the real now, so they grow by lag.
CREATE OR REPLACE FUNCTION {S}late(lag bigint, o {S}outcome) RETURNS {S}outcome LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  IF o.rst <> 0 THEN o.rst := o.rst + lag; END IF;
  IF o.rty > 0 THEN o.rty := o.rty + lag; END IF;
  RETURN o;
END $$;

-- fixed-window (code 1): state "start count"
CREATE OR REPLACE FUNCTION {S}fw(sp bigint[], st text, now bigint, cost bigint)
RETURNS {S}outcome LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
  p bigint := sp[3]; lim bigint := sp[2]; start bigint := now - now % sp[3];
  s bigint[]; cnt bigint := 0; lft bigint;
BEGIN
  IF st IS NOT NULL THEN
    s := string_to_array(st, ' ')::bigint[];
    IF s[1] > start THEN
      RETURN {S}late(s[1] - now, {S}fw(sp, st, s[1], cost));
    ELSIF s[1] = start THEN
      cnt := s[2];
    END IF;
  END IF;
  lft := start + p - now;
  IF cost > lim THEN
    RETURN (false, lim - cnt, CASE WHEN cnt <> 0 THEN lft ELSE 0 END, -1::bigint, st);
  END IF;
  IF cnt + greatest(cost, 1) <= lim THEN
    cnt := cnt + cost;
    RETURN (true, lim - cnt, CASE WHEN cnt <> 0 THEN lft ELSE 0 END, 0::bigint, start || ' ' || cnt);
  END IF;
  RETURN (false, lim - cnt, lft, lft, st);
END $$;

CREATE OR REPLACE FUNCTION {S}fw_charge(sp bigint[], st text, now bigint, cost bigint)
RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE start bigint := now - now % sp[3]; s bigint[]; cnt bigint := 0;
BEGIN
  IF st IS NOT NULL THEN
    s := string_to_array(st, ' ')::bigint[];
    IF s[1] > start THEN start := s[1]; END IF;
    IF s[1] = start THEN cnt := s[2]; END IF;
  END IF;
  RETURN start || ' ' || (cnt + cost);
END $$;

-- sliding-window (code 2): state "start previous current"
CREATE OR REPLACE FUNCTION {S}sw(sp bigint[], st text, now bigint, cost bigint)
RETURNS {S}outcome LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
  p bigint := sp[3]; lim bigint := sp[2]; start bigint := now - now % sp[3];
  s bigint[]; prev bigint := 0; cur bigint := 0; elapsed bigint; weight bigint; need bigint;
  retry bigint; nxt bigint; rem bigint; rst bigint; ok boolean := false;
BEGIN
  IF st IS NOT NULL THEN
    s := string_to_array(st, ' ')::bigint[];
    IF s[1] = start THEN
      prev := s[2]; cur := s[3];
    ELSIF s[1] = start - p THEN
      prev := s[3];
    ELSIF s[1] > start THEN
      RETURN {S}late(s[1] - now, {S}sw(sp, st, s[1], cost));
    END IF;
  END IF;
  elapsed := now - start;
  weight := prev * (p - elapsed);
  need := greatest(cost, 1);
  IF cost <= lim AND weight + (cur + need) * p <= lim * p THEN
    cur := cur + cost;
    st := start || ' ' || prev || ' ' || cur;
    retry := 0;
    ok := true;
  ELSIF cost > lim THEN
    retry := -1;
  ELSIF cur + need <= lim THEN
    retry := p - {S}fdiv((lim - cur - need) * p, prev) - elapsed;
  ELSE
    nxt := 0;
    IF cur <> 0 THEN nxt := greatest(p - {S}fdiv((lim - need) * p, cur), 0); END IF;
    retry := p - elapsed + nxt;
  END IF;
  rem := greatest({S}fdiv(lim * p - weight - cur * p, p), 0);
  rst := CASE WHEN cur <> 0 THEN start + 2 * p - now WHEN prev <> 0 THEN start + p - now ELSE 0 END;
  RETURN (ok, rem, rst, retry, st);
END $$;

CREATE OR REPLACE FUNCTION {S}sw_charge(sp bigint[], st text, now bigint, cost bigint)
RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE p bigint := sp[3]; start bigint := now - now % sp[3]; s bigint[]; prev bigint := 0; cur bigint := 0;
BEGIN
  IF st IS NOT NULL THEN
    s := string_to_array(st, ' ')::bigint[];
    IF s[1] >= start THEN
      start := s[1]; prev := s[2]; cur := s[3];
    ELSIF s[1] = start - p THEN
      prev := s[3];
    END IF;
  END IF;
  RETURN start || ' ' || prev || ' ' || (cur + cost);
END $$;

-- gcra (code 4): spec "4 T tau burst", state "tat"
CREATE OR REPLACE FUNCTION {S}gcra(sp bigint[], st text, now bigint, cost bigint)
RETURNS {S}outcome LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE unit bigint := sp[2]; tau bigint := sp[3]; tat bigint := now; nt bigint;
BEGIN
  IF st IS NOT NULL AND st::bigint > now THEN tat := st::bigint; END IF;
  IF cost > sp[4] THEN
    RETURN (false, {S}fdiv(tau - tat + now, unit), tat - now, -1::bigint, st);
  END IF;
  nt := tat + greatest(cost, 1) * unit;
  IF nt - now <= tau THEN
    IF cost = 0 THEN
      RETURN (true, {S}fdiv(tau - tat + now, unit), tat - now, 0::bigint, st);
    END IF;
    RETURN (true, {S}fdiv(tau - nt + now, unit), nt - now, 0::bigint, nt::text);
  END IF;
  RETURN (false, {S}fdiv(tau - tat + now, unit), tat - now, nt - now - tau, st);
END $$;

CREATE OR REPLACE FUNCTION {S}gcra_charge(sp bigint[], st text, now bigint, cost bigint)
RETURNS text LANGUAGE sql IMMUTABLE AS
$$ SELECT (greatest(coalesce(st::bigint, now), now) + cost * sp[2])::text $$;

-- token-bucket (code 5): spec "5 limit P burst full", state "level last" (level = tokens * P)
CREATE OR REPLACE FUNCTION {S}tb_level(sp bigint[], s bigint[], now bigint)
RETURNS bigint LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE full_ bigint := sp[5]; level bigint; missing bigint;
BEGIN
  IF s IS NULL THEN RETURN full_; END IF;
  level := s[1];
  missing := full_ - level;
  IF missing > 0 AND now > s[2] THEN
    IF now - s[2] >= {S}cdiv(missing, sp[2]) THEN
      level := full_;
    ELSE
      level := level + (now - s[2]) * sp[2];
    END IF;
  END IF;
  RETURN level;
END $$;

CREATE OR REPLACE FUNCTION {S}tb(sp bigint[], st text, now bigint, cost bigint)
RETURNS {S}outcome LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE p bigint := sp[3]; lim bigint := sp[2]; full_ bigint := sp[5]; s bigint[]; level bigint; need bigint;
BEGIN
  IF st IS NOT NULL THEN
    s := string_to_array(st, ' ')::bigint[];
    IF now < s[2] THEN
      RETURN {S}late(s[2] - now, {S}tb(sp, st, s[2], cost));
    END IF;
  END IF;
  level := {S}tb_level(sp, s, now);
  IF cost > sp[4] THEN
    RETURN (false, {S}fdiv(level, p), {S}cdiv(full_ - level, lim), -1::bigint, st);
  END IF;
  need := greatest(cost, 1) * p;
  IF level >= need THEN
    IF cost <> 0 THEN
      level := level - cost * p;
      st := level || ' ' || now;
    END IF;
    RETURN (true, {S}fdiv(level, p), {S}cdiv(full_ - level, lim), 0::bigint, st);
  END IF;
  RETURN (false, {S}fdiv(level, p), {S}cdiv(full_ - level, lim), {S}cdiv(need - level, lim), st);
END $$;

CREATE OR REPLACE FUNCTION {S}tb_charge(sp bigint[], st text, now bigint, cost bigint)
RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE s bigint[]; last bigint := now;
BEGIN
  IF st IS NOT NULL THEN
    s := string_to_array(st, ' ')::bigint[];
    IF s[2] >= now THEN last := s[2]; END IF;
  END IF;
  RETURN ({S}tb_level(sp, s, now) - cost * sp[3]) || ' ' || last;
END $$;
"""
