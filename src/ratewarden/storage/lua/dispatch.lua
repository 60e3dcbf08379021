-- dispatch: port of core/evaluate.py run(): each request's all-or-nothing operation over its
-- items, requests one after the other (K: codes and C: costs from the prelude; all KEYS in
-- one slot in a cluster). "now" is Redis TIME, read once per call; a number in ARGV[1] comes
-- only from a store created with the test hook. Scripts are effects-replicated (the default
-- since Redis 5, the only mode in 7), so TIME then writes is fine.
-- Reply: 4 integers per item: allowed (1/0), remaining, reset_us, retry_us.
-- Every key written gets PX = ceil(reset_us / 1000) (+ slack, 0 in production): no longer
-- than its window needs.
local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local slack = tonumber(ARGV[2])
-- The hot path: ONE 'hit' of one window of a plain algorithm (its state one string: no
-- store(), drop() or keyed dec() of its own). Exactly what run() below does for it, without
-- its tables and closure: one GET, the decision, one SET (or DEL) when admitted.
if NI == 1 and NQ == 1 and ARGV[4] == 'hit' then
  local alg = A[K[1]]
  if not (alg.store or alg.drop or alg.keyed) then
    local k = KEYS[1]
    local raw = redis.call('GET', k)
    local st
    if raw then
      st = alg.dec(raw)
    end
    local ok, rem, rst, rty, new = alg.decide(alg.parse(ARGV[BASE + 1]), st, now, C[1], k)
    if ok then
      if new == nil or rst <= 0 then
        if raw then
          redis.call('DEL', k)
        end
      else
        redis.call('SET', k, alg.enc(new), 'PX', cdiv(rst, 1000) + slack)
      end
    end
    return { ok and 1 or 0, rem, rst, rty }
  end
end
-- A window repeated in the call (a merged batch on one key) is parsed once: parse() is a
-- function of the spec string alone, and nothing writes to the table it returns afterwards.
local W, WP = {}, {}
for i = 1, NI do
  local spec = ARGV[BASE + 2 * i - 1]
  local w = WP[spec]
  if w == nil then
    w = A[K[i]].parse(spec)
    WP[spec] = w
  end
  W[i] = w
end
-- One read however many windows and requests, of each distinct key once. RAW[key] follows
-- this call's own writes, so a later request of the batch sees what an earlier one wrote
-- (false: deleted). Read in chunks: unpack() of more than about 8,000 values fails ("too
-- many results to unpack"), and a merged batch of many wide requests has more keys than that.
local RAW = {}
local U = KEYS
if NI > 1 then
  U = {}
  local seen = {}
  for i = 1, NI do
    local k = KEYS[i]
    if not seen[k] then
      seen[k] = true
      U[#U + 1] = k
    end
  end
end
local CHUNK = 1000
for lo = 1, #U, CHUNK do
  local hi = math.min(lo + CHUNK - 1, #U)
  local raws = redis.call('MGET', unpack(U, lo, hi))
  for i = lo, hi do
    RAW[U[i]] = raws[i - lo + 1]
  end
end

-- A plain state (no store() of its own) is written once per call, at the end, with its last
-- value and the TTL of its last write (PX[k]; nil: deleted since, or never written): the same
-- end state as writing it after each request, one SET per key instead of one per request.
local PX, DIRTY = {}, {}
local out = {}
-- Each item's 4 reply integers go straight into out, at o + 4 * (i - lo) + 1 .. 4.
local function run(op, lease, lo, hi)
  local S, N = {}, {}
  local o = #out
  for i = lo, hi do
    local raw = RAW[KEYS[i]]
    if raw then
      local alg = A[K[i]]
      if alg.keyed then
        S[i] = alg.dec(raw, KEYS[i])
      else
        S[i] = alg.dec(raw)
      end
    end
  end
  local write = false
  if op == 'hit' or op == 'peek' or op == 'acquire' then
    local all = true
    for i = lo, hi do
      local alg = A[K[i]]
      local ok, rem, rst, rty, new
      if op == 'acquire' and alg.acquire then
        ok, rem, rst, rty, new = alg.acquire(W[i], S[i], now, C[i], lease)
      else
        ok, rem, rst, rty, new = alg.decide(W[i], S[i], now, C[i], KEYS[i])
      end
      if not ok then
        all = false
      end
      local j = o + 4 * (i - lo)
      out[j + 1] = ok and 1 or 0
      out[j + 2] = rem
      out[j + 3] = rst
      out[j + 4] = rty
      N[i] = new
    end
    write = all and op ~= 'peek'
  elseif op == 'charge' then
    for i = lo, hi do
      local alg = A[K[i]]
      local new = alg.charge(W[i], S[i], now, C[i], KEYS[i])
      local _, rem, rst = alg.decide(W[i], new, now, 0, KEYS[i])
      local j = o + 4 * (i - lo)
      out[j + 1] = 1
      out[j + 2] = rem
      out[j + 3] = rst
      out[j + 4] = 0
      N[i] = new
    end
    write = true
  elseif op == 'release' then
    for i = lo, hi do
      local alg = A[K[i]]
      local new = S[i]
      if alg.release then
        new = alg.release(W[i], S[i], now, lease)
      end
      local _, rem, rst = alg.decide(W[i], new, now, 0, KEYS[i])
      local j = o + 4 * (i - lo)
      out[j + 1] = 1
      out[j + 2] = rem
      out[j + 3] = rst
      out[j + 4] = 0
      N[i] = new
    end
    write = true
  else
    error('ratewarden: unknown operation ' .. tostring(op))
  end
  if write then
    for i = lo, hi do
      local new, rst, k = N[i], out[o + 4 * (i - lo) + 3], KEYS[i]
      local alg = A[K[i]]
      if new == nil or rst <= 0 then
        if RAW[k] then
          redis.call('DEL', k)
          RAW[k] = false
        end
        PX[k] = nil
        if alg.drop then
          alg.drop(k)
        end
      elseif alg.store then
        RAW[k] = alg.store(k, new, cdiv(rst, 1000) + slack)
      else
        local raw = alg.enc(new)
        if PX[k] == nil then
          DIRTY[#DIRTY + 1] = k
        end
        PX[k] = cdiv(rst, 1000) + slack
        RAW[k] = raw
      end
    end
  end
end

local lo = 1
for q = 1, NQ do
  local count = tonumber(ARGV[3 + 3 * q])
  run(ARGV[3 * q + 1], ARGV[3 * q + 2], lo, lo + count - 1)
  lo = lo + count
end
for j = 1, #DIRTY do
  local k = DIRTY[j]
  if PX[k] then
    redis.call('SET', k, RAW[k], 'PX', PX[k])
    PX[k] = nil
  end
end
return out
