-- ratewarden: helpers shared by every algorithm file. The store composes
-- prelude.lua + one file per algorithm + dispatch.lua into ONE script at load time,
-- so a request that checks windows of several algorithms and keys is one EVALSHA.
--
-- Every number is an integer (microseconds, counts) held in a Lua double: exact below
-- 2^53, which the Python side checks before sending a window (limit * period < 2^53).
-- floor(a / b) of such integers is exact, so these ports round exactly like the
-- Python core (core/algorithms/*.py): // is floor, ceil_div is -(-a // b).
--
-- States are strings of space-separated integers (and lease ids for concurrency).
-- Each algorithm is a table in A, indexed by its code (see _lua.py CODES), with
--   dec(raw) -> state, enc(state) -> raw,
--   decide(w, state, now, cost) -> allowed, remaining, reset_us, retry_us, new_state
--   charge(w, state, now, cost) -> new_state
-- parse(spec) -> w (the window's numbers: limit, period, p1..p4 as it needs),
-- and optionally acquire / release (concurrency).
--
-- The composer wraps each algorithm file in "if USED[code] then ... end", so a call
-- only builds the functions of the algorithms it uses (the chunk runs on every call).
local floor = math.floor
local NEVER = -1
local A = {}

local function cdiv(a, b)
  return -floor(-a / b)
end

local function fmt(n)
  return string.format('%.0f', n)
end

local match = string.match

local function nums2(raw)
  local a, b = match(raw, '^(%S+) (%S+)$')
  return { tonumber(a), tonumber(b) }
end

local function nums3(raw)
  local a, b, c = match(raw, '^(%S+) (%S+) (%S+)$')
  return { tonumber(a), tonumber(b), tonumber(c) }
end

local function nums(raw)
  local t = {}
  for x in string.gmatch(raw, '%S+') do
    t[#t + 1] = tonumber(x)
  end
  return t
end

local function enc_nums(t)
  local out = {}
  for i = 1, #t do
    out[i] = fmt(t[i])
  end
  return table.concat(out, ' ')
end

local function enc2(t)
  return string.format('%.0f %.0f', t[1], t[2])
end

local function enc3(t)
  return string.format('%.0f %.0f %.0f', t[1], t[2], t[3])
end

-- An outcome decided at a later time than now (the clock stepped back by lag > 0): the
-- waits are measured from the real now, so they grow by lag (base.py _late).
local function late(lag, ok, rem, rst, rty, new)
  if rst ~= 0 then
    rst = rst + lag
  end
  if rty > 0 then
    rty = rty + lag
  end
  return ok, rem, rst, rty, new
end

local function one_or(cost)
  if cost == 0 then
    return 1
  end
  return cost
end

-- Exact arithmetic beyond 2^53 (rates up to 10^12 per 10 years: limit x period ~ 3e26).
-- A big number is three or more limbs in base 2^18, least significant first, non-negative;
-- products of two integers below 2^54 are exact limb by limb (each partial sum < 2^38).
-- Only windows whose products can pass 2^52 take these paths (parse() sets w.big).
local B18 = 262144
local TWO52 = 4503599627370496

-- The big-number helpers below are built only by a call that uses sliding-window (2) or
-- token-bucket (5), the only users (see the end of this file): every local function costs a
-- closure on every call.
local bsplit, bnorm, bmul, bcmp, bsub, bval, bdiv, bcdiv

-- Window specs: "code limit period" for most algorithms, with what gcra, token-bucket
-- and quota need instead or on top; each algorithm's parse() reads its own.
local function parse_lp(spec)
  local l, p = match(spec, '^%d (%d+) (%d+)$')
  return { limit = tonumber(l), period = tonumber(p) }
end

-- The call: one or more requests (the async client sends a whole pipelined batch as one
-- call). KEYS: the state key of every item of every request, in order. ARGV: now (empty:
-- Redis TIME), ttl slack in ms, the number of requests Q, then per request: op, lease, item
-- count; then two fields per item: its window spec (cached by the client per window; its
-- first character is the algorithm's code) and its cost.
local NI = #KEYS
local NQ = tonumber(ARGV[3])
local BASE = 3 + 3 * NQ
local K, C, USED = {}, {}, {}
for i = 1, NI do
  local code = string.byte(ARGV[BASE + 2 * i - 1], 1) - 48
  K[i] = code
  C[i] = tonumber(ARGV[BASE + 2 * i])
  USED[code] = true
end
if USED[2] or USED[5] then
  function bsplit(x)
    local a0 = x % B18
    x = (x - a0) / B18
    local a1 = x % B18
    return { a0, a1, (x - a1) / B18 }
  end

  function bnorm(t)
    local carry = 0
    for i = 1, #t do
      local v = t[i] + carry
      local r = v % B18
      t[i] = r
      carry = (v - r) / B18
    end
    while carry > 0 do
      local r = carry % B18
      t[#t + 1] = r
      carry = (carry - r) / B18
    end
    return t
  end

  -- a * b (integers 0 <= a, b < 2^54) as a big number
  function bmul(a, b)
    local x, y = bsplit(a), bsplit(b)
    local t = { 0, 0, 0, 0, 0, 0 }
    for i = 1, 3 do
      for j = 1, 3 do
        t[i + j - 1] = t[i + j - 1] + x[i] * y[j]
      end
    end
    return bnorm(t)
  end

  function bcmp(a, b)
    local n = math.max(#a, #b)
    for i = n, 1, -1 do
      local x, y = a[i] or 0, b[i] or 0
      if x ~= y then
        return x < y and -1 or 1
      end
    end
    return 0
  end

  -- a - b for big numbers a >= b
  function bsub(a, b)
    local t, borrow = {}, 0
    for i = 1, #a do
      local v = a[i] - (b[i] or 0) - borrow
      if v < 0 then
        v = v + B18
        borrow = 1
      else
        borrow = 0
      end
      t[i] = v
    end
    return t
  end

  function bval(a) -- as a double (approximate above 2^53)
    local v = 0
    for i = #a, 1, -1 do
      v = v * B18 + a[i]
    end
    return v
  end

  -- floor(n / c) for a big n and 1 <= c < 2^53 whose quotient is below 2^53: a double estimate,
  -- then corrected against exact products (a few steps at most)
  function bdiv(n, c)
    local q = floor(bval(n) / c)
    if q < 0 then
      q = 0
    end
    for _ = 1, 64 do
      if q > 0 and bcmp(bmul(q, c), n) > 0 then
        q = q - 1
      elseif bcmp(bmul(q + 1, c), n) <= 0 then
        q = q + 1
      else
        return q
      end
    end
    error('ratewarden: exact division did not converge')
  end

  function bcdiv(n, c) -- ceil(n / c)
    local q = bdiv(n, c)
    if bcmp(bmul(q, c), n) < 0 then
      return q + 1
    end
    return q
  end
end
