-- gcra (code 4): port of core/algorithms/gcra.py.
-- State "tat": the theoretical arrival time. Spec "4 T tau burst": w.p1 = T (the emission interval,
-- ceil(P / limit)), w.p2 = tau (burst * T), w.p3 = burst. A cost c advances the TAT by c * T.
local function gcra_tat(st, now)
  if st and st > now then
    return st
  end
  return now
end

A[4] = {
  parse = function(spec)
    local u, t, b = match(spec, '^4 (%d+) (%d+) (%d+)$')
    return { p1 = tonumber(u), p2 = tonumber(t), p3 = tonumber(b) }
  end,
  dec = tonumber,
  enc = fmt,
  decide = function(w, st, now, cost)
    local unit, tau = w.p1, w.p2
    local tat = gcra_tat(st, now)
    if cost == 1 then
      local nt = tat + unit
      if nt - now <= tau then
        return true, floor((tau - nt + now) / unit), nt - now, 0, nt
      end
      return false, floor((tau - tat + now) / unit), tat - now, nt - now - tau, st
    end
    if cost > w.p3 then
      return false, floor((tau - tat + now) / unit), tat - now, NEVER, st
    end
    local nt = tat + one_or(cost) * unit
    if nt - now <= tau then
      if cost == 0 then
        return true, floor((tau - tat + now) / unit), tat - now, 0, st
      end
      return true, floor((tau - nt + now) / unit), nt - now, 0, nt
    end
    return false, floor((tau - tat + now) / unit), tat - now, nt - now - tau, st
  end,
  charge = function(w, st, now, cost)
    return gcra_tat(st, now) + cost * w.p1
  end,
}
