-- fixed-window (code 1): port of core/algorithms/fixed_window.py.
-- State "start count": the aligned window start and the units counted in it.
A[1] = {
  parse = parse_lp,
  dec = nums2,
  enc = enc2,
  decide = function(w, st, now, cost)
    local p, limit = w.period, w.limit
    local start = now - now % p
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
  end,
  charge = function(w, st, now, cost)
    local start = now - now % w.period
    local count = 0
    if st and st[1] == start then
      count = st[2]
    end
    return { start, count + cost }
  end,
}
