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

-- A bucket whose burst x P passes 2^52 (w.big): the level is kept as whole tokens and a
-- remainder, level = tokens * P + frac with 0 <= frac < P, state "tokens frac last", and the
-- refill and the waits are computed with exact products (prelude: bmul, bdiv, bcdiv).
local function tbb_level(w, st, now)
  if not st then
    return w.p1, 0
  end
  local tokens, frac, last = st[1], st[2], st[3]
  local p, burst = w.period, w.p1
  if tokens < burst and now > last then
    local elapsed = now - last
    local fill = bcdiv(bsub(bmul(burst - tokens, p), bsplit(frac)), w.limit)
    if elapsed >= fill then
      return burst, 0
    end
    local r = bmul(elapsed, w.limit)
    local q = bdiv(r, p)
    frac = frac + bval(bsub(r, bmul(q, p)))
    tokens = tokens + q
    if frac >= p then
      frac = frac - p
      tokens = tokens + 1
    end
  end
  return tokens, frac
end

local function tbb_wait(w, tokens, frac, want) -- ceil((want - tokens) * P - frac) / limit)
  if tokens >= want then
    return 0
  end
  return bcdiv(bsub(bmul(want - tokens, w.period), bsplit(frac)), w.limit)
end

local function tbb_decide(w, st, now, cost)
  if st and now < st[3] then
    return late(st[3] - now, tbb_decide(w, st, st[3], cost))
  end
  local burst = w.p1
  local tokens, frac = tbb_level(w, st, now)
  if cost > burst then
    return false, tokens, tbb_wait(w, tokens, frac, burst), NEVER, st
  end
  local need = one_or(cost)
  if tokens >= need then
    tokens = tokens - cost
    local new = st
    if cost ~= 0 then
      new = { tokens, frac, now }
    end
    return true, tokens, tbb_wait(w, tokens, frac, burst), 0, new
  end
  return false, tokens, tbb_wait(w, tokens, frac, burst), tbb_wait(w, tokens, frac, need), st
end

A[5] = {
  parse = function(spec)
    local l, p, b, f = match(spec, '^5 (%d+) (%d+) (%d+) (%d+)$')
    local w = { limit = tonumber(l), period = tonumber(p), p1 = tonumber(b), p2 = tonumber(f) }
    w.big = w.p1 * w.period >= TWO52
    return w
  end,
  dec = nums,
  enc = enc_nums,
  decide = function(w, st, now, cost)
    if w.big then
      return tbb_decide(w, st, now, cost)
    end
    return tb_decide(w, st, now, cost)
  end,
  charge = function(w, st, now, cost)
    if w.big then
      local last = now
      if st and st[3] >= now then
        last = st[3]
      end
      local tokens, frac = tbb_level(w, st, now)
      return { tokens - cost, frac, last }
    end
    local last = now
    if st and st[2] >= now then
      last = st[2]
    end
    return { tb_level(w, st, now) - cost * w.period, last }
  end,
}
