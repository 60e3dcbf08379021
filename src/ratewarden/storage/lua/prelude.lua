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
-- and optionally acquire / release (concurrency). w holds limit, period, p1..p4.
local floor = math.floor
local NEVER = -1
local A = {}

local function cdiv(a, b)
  return -floor(-a / b)
end

local function fmt(n)
  return string.format('%.0f', n)
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

local function one_or(cost)
  if cost == 0 then
    return 1
  end
  return cost
end
