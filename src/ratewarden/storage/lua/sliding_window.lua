-- sliding-window (code 2): port of core/algorithms/sliding_window.py.
-- State "start previous current" (windows aligned to the epoch); integer arithmetic only.
-- A request stamped before the state's window (the clock stepped back into an older window)
-- is decided at the start of the state's window (no window counted twice), waits from now.
-- The same decision for a window whose limit x period passes 2^52, with exact products:
-- remaining = (limit - c) - ceil(prev * (P - elapsed) / P); admitted when
-- prev * (P - elapsed) <= (limit - cur - need) * P; the waits are quotients below P.
local function sw_big(w, st, now, cost, start, prev, cur, elapsed)
  local p, limit = w.period, w.limit
  local need = one_or(cost)
  local weight = bmul(prev, p - elapsed)
  local share = bcdiv(weight, p) -- ceil(weight / P): the previous window's share, in units
  local function remaining(c)
    local r = limit - c - share
    if r < 0 then
      return 0
    end
    return r
  end
  local function reset(c)
    if c ~= 0 then
      return start + 2 * p - now
    elseif prev ~= 0 then
      return start + p - now
    end
    return 0
  end
  if cost > limit then
    return false, remaining(cur), reset(cur), NEVER, st
  end
  local room = limit - cur - need
  if room >= 0 and bcmp(weight, bmul(room, p)) <= 0 then
    cur = cur + cost
    return true, remaining(cur), reset(cur), 0, { start, prev, cur }
  end
  local retry
  if room >= 0 then
    retry = p - bdiv(bmul(room, p), prev) - elapsed
  else
    local nxt = 0
    if cur ~= 0 then
      nxt = p - bdiv(bmul(limit - need, p), cur)
    end
    if nxt < 0 then
      nxt = 0
    end
    retry = p - elapsed + nxt
  end
  return false, remaining(cur), reset(cur), retry, st
end

local function sw_decide(w, st, now, cost)
  local p, limit = w.period, w.limit
  local start = now - now % p
  local prev, cur = 0, 0
  if st then
    if st[1] == start then
      prev, cur = st[2], st[3]
    elseif st[1] == start - p then
      prev = st[3]
    elseif st[1] > start then
      return late(st[1] - now, sw_decide(w, st, st[1], cost))
    end
  end
  local elapsed = now - start
  if w.big then
    return sw_big(w, st, now, cost, start, prev, cur, elapsed)
  end
  local weight = prev * (p - elapsed)
  local need = one_or(cost)
  local function remaining(c)
    local r = floor((limit * p - weight - c * p) / p)
    if r < 0 then
      return 0
    end
    return r
  end
  local function reset(c)
    if c ~= 0 then
      return start + 2 * p - now
    elseif prev ~= 0 then
      return start + p - now
    end
    return 0
  end
  if cost > limit then
    return false, remaining(cur), reset(cur), NEVER, st
  end
  if weight + (cur + need) * p <= limit * p then
    cur = cur + cost
    return true, remaining(cur), reset(cur), 0, { start, prev, cur }
  end
  local retry
  if cur + need <= limit then
    retry = p - floor(((limit - cur - need) * p) / prev) - elapsed
  else
    local nxt = 0
    if cur ~= 0 then
      nxt = p - floor(((limit - need) * p) / cur)
    end
    if nxt < 0 then
      nxt = 0
    end
    retry = p - elapsed + nxt
  end
  return false, remaining(cur), reset(cur), retry, st
end

A[2] = {
  parse = function(spec)
    local w = parse_lp(spec)
    w.big = (2 * w.limit + 1) * w.period >= TWO52
    return w
  end,
  dec = nums3,
  enc = enc3,
  decide = sw_decide,
  charge = function(w, st, now, cost)
    local p = w.period
    local start = now - now % p
    local prev, cur = 0, 0
    if st then
      if st[1] >= start then
        start, prev, cur = st[1], st[2], st[3]
      elseif st[1] == start - p then
        prev = st[3]
      end
    end
    return { start, prev, cur + cost }
  end,
}
