-- gcra (code 4): port of core/algorithms/gcra.py.
-- State "tat": the theoretical arrival time. w.p1 = unit (ceil(P / limit)),
-- w.p2 = tau (ceil(burst * P / limit)), w.p3 = burst.
local function gcra_tat(st, now)
  if st and st > now then
    return st
  end
  return now
end

A[4] = {
  dec = tonumber,
  enc = fmt,
  decide = function(w, st, now, cost)
    local p, limit, tau = w.period, w.limit, w.p2
    local tat = gcra_tat(st, now)
    if cost == 1 then
      local nt = tat + w.p1
      if nt - now <= tau then
        return true, floor((tau - nt + now) * limit / p), nt - now, 0, nt
      end
      return false, floor((tau - tat + now) * limit / p), tat - now, nt - now - tau, st
    end
    if cost > w.p3 then
      return false, floor((tau - tat + now) * limit / p), tat - now, NEVER, st
    end
    local nt = tat + cdiv(one_or(cost) * p, limit)
    if nt - now <= tau then
      if cost == 0 then
        return true, floor((tau - tat + now) * limit / p), tat - now, 0, st
      end
      return true, floor((tau - nt + now) * limit / p), nt - now, 0, nt
    end
    return false, floor((tau - tat + now) * limit / p), tat - now, nt - now - tau, st
  end,
  charge = function(w, st, now, cost)
    return gcra_tat(st, now) + cdiv(cost * w.period, w.limit)
  end,
}
