-- sliding-log (code 3): port of core/algorithms/sliding_log.py, O(log n) per call.
-- The state is two keys in one hash slot:
--   KEY        "L total last base skip": the running total of every cost admitted (relative to
--              an origin), the newest entry's time, the running total before the oldest entry
--              kept in the sorted set (what the entries trimmed so far summed to), and how many
--              of the oldest members have left the window but are not trimmed yet (see store);
--   KEY..":log" a sorted set, one member per admission: score = the running total after it
--              (cum), member = "<time, 17 digits> <cum>". Scores never decrease and times never
--              decrease with them, so rank order is time order.
-- A call reads the oldest member (ZRANGE 0 0); only when it has left the window does it binary-
-- search the ranks for the first live one (ZRANGE i i, O(log n) each). retry_after is one
-- ZRANGEBYSCORE on the running total. Admitting appends one member and removes the expired
-- ones by rank (each once): the work per call never depends on the log's length beyond log n.
-- A state of the earlier form "ts cost ts cost ..." is read (and rewritten in this form).
local function sl_at(z, i)
  local m = redis.call('ZRANGE', z, i, i)[1]
  if not m then
    return nil
  end
  local t, c = match(m, '^(%d+) (%d+)$')
  return tonumber(t), tonumber(c)
end

local SL_TRIM = 250

local function sl_member(t, cum)
  return string.format('%017.0f %.0f', t, cum)
end

-- The live part at now: h (rank of the first live entry), n (-1: not counted, h < n), and the
-- running total before h.
local function sl_live(st, fl)
  local z = st.z
  if st.last <= fl then -- everything left the window
    local n = st.n or redis.call('ZCARD', z)
    return n, n, st.total
  end
  local t0 = sl_at(z, 0)
  if t0 == nil then -- the set is gone (evicted): nothing to count
    return 0, 0, st.total
  end
  if t0 > fl then
    return 0, st.n or -1, st.base
  end
  local n = st.n or redis.call('ZCARD', z)
  local lo, hi = 1, n - 1 -- rank 0 is out, rank n - 1 (the newest) is in
  while lo < hi do
    local mid = floor((lo + hi) / 2)
    if sl_at(z, mid) <= fl then
      lo = mid + 1
    else
      hi = mid
    end
  end
  local _, cum = sl_at(z, lo - 1)
  return lo, n, cum
end

A[3] = {
  keyed = true, -- dec() takes the state key too
  parse = parse_lp,
  dec = function(raw, k)
    local z = k .. ':log'
    local total, last, base, skip = match(raw, '^L (%d+) (%d+) (%d+) (%d+)$')
    if total then
      return { total = tonumber(total), last = tonumber(last), base = tonumber(base), skip = tonumber(skip), z = z }
    end
    -- the earlier form: (time, cost) pairs
    local e = nums(raw)
    redis.call('DEL', z)
    local cum = 0
    for i = 1, #e, 2 do
      cum = cum + e[i + 1]
      redis.call('ZADD', z, cum, sl_member(e[i], cum))
    end
    return { total = cum, last = e[#e - 1] or 0, base = 0, z = z, n = #e / 2 }
  end,
  enc = function(st)
    return string.format('L %.0f %.0f %.0f %.0f', st.total, st.last, st.base, st.skip or 0)
  end,
  -- The write (dispatch calls it instead of SET): trim, append, expire both keys. At most
  -- SL_TRIM expired entries are removed per call (a long log that left the window at once is
  -- removed over several calls, so no call does unbounded work); the ones still present are
  -- counted in "skip" (they belong to no state: decode_state leaves them out) and, being out
  -- of the window, are passed over by the binary search meanwhile.
  store = function(k, st, px)
    local z = st.z or (k .. ':log')
    if st.trim == 'all' then
      redis.call('UNLINK', z) -- freed in the background when large
      st.skip = 0
    elseif st.trim and st.trim > 0 then
      local cut = st.trim
      st.skip = 0
      if cut > SL_TRIM then
        st.skip = cut - SL_TRIM
        cut = SL_TRIM
        local _, c = sl_at(z, cut - 1)
        st.base = c -- the running total before the oldest entry left in the set
      end
      redis.call('ZREMRANGEBYRANK', z, 0, cut - 1)
    end
    if st.add then
      redis.call('ZADD', z, st.add[2], sl_member(st.add[1], st.add[2]))
    end
    if st.total >= TWO52 and (st.skip or 0) == 0 then -- keep running totals exact: restart them
      local ms = redis.call('ZRANGE', z, 0, -1)
      redis.call('DEL', z)
      local base = st.base
      for i = 1, #ms do
        local t, c = match(ms[i], '^(%d+) (%d+)$')
        local cum = tonumber(c) - base
        redis.call('ZADD', z, cum, sl_member(tonumber(t), cum))
      end
      st.total = st.total - base
      st.base = 0
    end
    redis.call('PEXPIRE', z, px)
    local raw = string.format('L %.0f %.0f %.0f %.0f', st.total, st.last, st.base, st.skip or 0)
    redis.call('SET', k, raw, 'PX', px)
    return raw
  end,
  drop = function(k)
    redis.call('UNLINK', k .. ':log')
  end,
  decide = function(w, st, now, cost, k)
    local p, limit = w.period, w.limit
    if st and st.fresh then -- just charged at now (see charge): nothing left the window since
      return true, limit - (st.total - st.base), st.last + p - now, 0, st
    end
    local h, n, base = 0, 0, 0
    if st then
      h, n, base = sl_live(st, now - p)
    end
    local live = st ~= nil and (n < 0 or h < n)
    local used, reset = 0, 0
    if live then
      used = st.total - base
      reset = st.last + p - now
    end
    if cost > limit then
      return false, limit - used, reset, NEVER, st
    end
    local need = one_or(cost)
    if used + need <= limit then
      local z = (st and st.z) or (k .. ':log')
      local new = { z = z, trim = h }
      if live then
        new.total, new.last, new.base = st.total, st.last, base
      else -- empty: a new origin (the set is emptied when this is written)
        new.total, new.last, new.base, new.trim = 0, 0, 0, 'all'
      end
      if cost ~= 0 then
        local t = now
        if live and new.last >= now then
          t = new.last
        end
        new.total = new.total + cost
        new.last = t
        new.add = { t, new.total }
        used = used + cost
        reset = t + p - now
      end
      return true, limit - used, reset, 0, new
    end
    local target = base + used + need - limit
    local m = redis.call('ZRANGEBYSCORE', st.z, target, '+inf', 'LIMIT', 0, 1)[1]
    local t = tonumber(match(m, '^(%d+) '))
    return false, limit - used, reset, t + p - now, st
  end,
  charge = function(w, st, now, cost, k)
    local p = w.period
    local h, n, base = 0, 0, 0
    if st then
      h, n, base = sl_live(st, now - p)
    end
    local live = st ~= nil and (n < 0 or h < n)
    local z = (st and st.z) or (k .. ':log')
    local new = { z = z, trim = h, fresh = true, total = 0, last = 0, base = 0 }
    if live then
      new.total, new.last, new.base = st.total, st.last, base
    else
      new.trim = 'all'
    end
    local t = now
    if live and new.last >= now then
      t = new.last
    end
    new.total = new.total + cost
    new.last = t
    new.add = { t, new.total }
    return new
  end,
}
