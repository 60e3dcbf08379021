-- token-bucket (code 5): port of core/algorithms/token_bucket.py.
-- State "level last": level = tokens * P. Spec "5 limit P burst full": w.p1 = burst, w.p2 = full (burst * P).
-- "last" never moves back: a request stamped before it (the clock stepped back) is decided at
-- "last" (no refill credited twice), with the waits measured from the real now.
local function tb_level(w, st, now)
  local full = w.p2
  if not st then
    return full
  end
  local level = st[1]
  local missing = full - level
  if missing > 0 and now > st[2] then
    local elapsed = now - st[2]
    if elapsed >= cdiv(missing, w.limit) then
      level = full
    else
      level = level + elapsed * w.limit
    end
  end
  return level
end

local function tb_decide(w, st, now, cost)
  if st and now < st[2] then
    return late(st[2] - now, tb_decide(w, st, st[2], cost))
  end
  local p, limit, full = w.period, w.limit, w.p2
  local level = tb_level(w, st, now)
  if cost > w.p1 then
    return false, floor(level / p), cdiv(full - level, limit), NEVER, st
  end
  local need = one_or(cost) * p
  if level >= need then
    level = level - cost * p
    local new = st
    if cost ~= 0 then
      new = { level, now }
    end
    return true, floor(level / p), cdiv(full - level, limit), 0, new
  end
  return false, floor(level / p), cdiv(full - level, limit), cdiv(need - level, limit), st
end

A[5] = {
  parse = function(spec)
    local l, p, b, f = match(spec, '^5 (%d+) (%d+) (%d+) (%d+)$')
    return { limit = tonumber(l), period = tonumber(p), p1 = tonumber(b), p2 = tonumber(f) }
  end,
  dec = nums2,
  enc = enc2,
  decide = tb_decide,
  charge = function(w, st, now, cost)
    local last = now
    if st and st[2] >= now then
      last = st[2]
    end
    return { tb_level(w, st, now) - cost * w.period, last }
  end,
}
