-- quota (code 7): port of core/algorithms/quota.py.
-- State "start used end": the period's start, the units used in it and its end (the end is
-- not part of the core's state: it lets the script decide in a period the client sent no
-- bounds for, see below; decode_state drops it). Lua cannot compute calendar periods in a
-- time zone, so the client sends (spec "7 limit p1 p2 p3 p4") the period starts around ITS
-- notion of now: w.p1 < w.p2 < w.p3 < w.p4 are the starts of the previous, current and next
-- period and the end of the next one. The script picks the period that holds the SERVER's
-- now; a server time outside [p1, p4) (client clock off by more than a whole period) is an
-- error, never a guess.
local function q_bounds(w, now)
  if now < w.p1 or now >= w.p4 then
    error('ratewarden: quota: server time is outside the periods the client sent (clock skew)')
  end
  if now < w.p2 then
    return w.p1, w.p2
  elseif now < w.p3 then
    return w.p2, w.p3
  end
  return w.p3, w.p4
end

-- The period a decision at now counts in: the one holding now or, when the clock stepped
-- back across a reset, the state's own later period (never reopening a period that was
-- left). A state written before its end was stored ("start used") falls back to the bounds.
local function q_period(w, st, now)
  local start, stop = q_bounds(w, now)
  if st and st[1] > start then
    if st[3] then
      return st[1], st[3]
    end
    return q_bounds(w, st[1])
  end
  return start, stop
end

-- The decision at now in the period [start, stop) that holds now.
local function q_decide_in(w, st, now, cost, start, stop)
  local used = 0
  if st and st[1] == start then
    used = st[2]
  end
  local limit = w.limit
  local left = stop - now
  local rem = limit - used
  if rem < 0 then
    rem = 0
  end
  if cost > limit then
    return false, rem, (used ~= 0) and left or 0, NEVER, st
  end
  if used + one_or(cost) <= limit then
    used = used + cost
    return true, limit - used, (used ~= 0) and left or 0, 0, { start, used, stop }
  end
  return false, rem, left, left, st
end

local function q_decide(w, st, now, cost)
  local start, stop = q_period(w, st, now)
  if start > now then
    -- decided at the state's start, the waits measured from the real now (base.py _late)
    return late(start - now, q_decide_in(w, st, start, cost, start, stop))
  end
  return q_decide_in(w, st, now, cost, start, stop)
end

A[7] = {
  parse = function(spec)
    local l, a, b, c, d = match(spec, '^7 (%d+) (%d+) (%d+) (%d+) (%d+)$')
    return { limit = tonumber(l), p1 = tonumber(a), p2 = tonumber(b), p3 = tonumber(c), p4 = tonumber(d) }
  end,
  dec = function(raw)
    local a, b, c = match(raw, '^(%S+) (%S+) ?(%S*)$')
    return { tonumber(a), tonumber(b), tonumber(c) } -- no end (an earlier state): c is nil
  end,
  enc = enc3,
  decide = q_decide,
  charge = function(w, st, now, cost)
    local start, stop = q_period(w, st, now)
    local used = 0
    if st and st[1] == start then
      used = st[2]
    end
    return { start, used + cost, stop }
  end,
}
