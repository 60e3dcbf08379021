-- fixed-window (code 1): port of core/algorithms/fixed_window.py.
-- State "start count": the aligned window start and the units counted in it.
-- A request stamped before the state's window (the clock stepped back) is decided at the
-- start of the state's window (never reopening a window that was left), waits from now.
local function fw_decide(w, st, now, cost)
  local p, limit = w.period, w.limit
  local start = now - now % p
  if st and st[1] > start then
    return late(st[1] - now, fw_decide(w, st, st[1], cost))
  end
  local count = 0
  if st and st[1] == start then
    count = st[2]
  end
  local left = start + p - now
  if cost > limit then
    return false, limit - count, (count ~= 0) and left or 0, NEVER, st
  end
  if count + one_or(cost) <= limit then
    count = count + cost
    return true, limit - count, (count ~= 0) and left or 0, 0, { start, count }
  end
  return false, limit - count, left, left, st
end

A[1] = {
  parse = parse_lp,
  dec = nums2,
  enc = enc2,
  decide = fw_decide,
  charge = function(w, st, now, cost)
    local start = now - now % w.period
    if st and st[1] > start then
      start = st[1]
    end
    local count = 0
    if st and st[1] == start then
      count = st[2]
    end
    return { start, count + cost }
  end,
}
