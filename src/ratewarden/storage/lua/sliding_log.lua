-- sliding-log (code 3): port of core/algorithms/sliding_log.py.
-- State "ts cost ts cost ...": (timestamp, cost) pairs, oldest first, flattened.
local function sl_live(st, after)
  local e = st or {}
  if #e > 0 and e[1] <= after then
    local k = {}
    for i = 1, #e, 2 do
      if e[i] > after then
        k[#k + 1] = e[i]
        k[#k + 1] = e[i + 1]
      end
    end
    return k
  end
  return e
end

-- A request stamped at or before the newest entry (the clock stepped back) is merged into
-- it, so the entries stay in time order (counted for longer, never shorter).
local function sl_add(e, now, cost)
  local n = #e
  if n > 0 and e[n - 1] >= now then
    e[n] = e[n] + cost
  else
    e[n + 1] = now
    e[n + 2] = cost
  end
  return e
end

A[3] = {
  parse = parse_lp,
  dec = nums,
  enc = enc_nums,
  decide = function(w, st, now, cost)
    local p, limit = w.period, w.limit
    local e = sl_live(st, now - p)
    local used = 0
    for i = 2, #e, 2 do
      used = used + e[i]
    end
    local reset = 0
    if #e > 0 then
      reset = e[#e - 1] + p - now
    end
    if cost > limit then
      return false, limit - used, reset, NEVER, e
    end
    local need = one_or(cost)
    if used + need <= limit then
      if cost ~= 0 then
        sl_add(e, now, cost)
        used = used + cost
        reset = e[#e - 1] + p - now
      end
      return true, limit - used, reset, 0, e
    end
    local excess = used + need - limit
    local freed = 0
    for i = 1, #e, 2 do
      freed = freed + e[i + 1]
      if freed >= excess then
        return false, limit - used, reset, e[i] + p - now, e
      end
    end
    error('ratewarden: sliding-log state is inconsistent')
  end,
  charge = function(w, st, now, cost)
    local after = now - w.period
    local e = {}
    if st then
      for i = 1, #st, 2 do
        if st[i] > after then
          e[#e + 1] = st[i]
          e[#e + 1] = st[i + 1]
        end
      end
    end
    return sl_add(e, now, cost)
  end,
}
