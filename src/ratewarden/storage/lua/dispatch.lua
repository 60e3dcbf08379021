-- dispatch: port of core/evaluate.py run(): the all-or-nothing operation over every item
-- (K: codes and C: costs from the prelude; all KEYS in one slot in a cluster). "now" is Redis TIME; a
-- number in ARGV[3] comes only from a store created with the test hook. Scripts are
-- effects-replicated (the default since Redis 5, the only mode in 7), so TIME then writes is fine.
-- Reply: 4 integers per item: allowed (1/0), remaining, reset_us, retry_us.
-- Every key written gets PX = ceil(reset_us / 1000) (+ slack, 0 in production): no longer
-- than its window needs.
local op, lease = ARGV[1], ARGV[2]
local now
if ARGV[3] ~= '' then
  now = tonumber(ARGV[3])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local slack = tonumber(ARGV[4])
local n = NI
local W, S, N, R = {}, {}, {}, {}
for i = 1, n do
  W[i] = A[K[i]].parse(ARGV[3 + 2 * i])
end
local raws = redis.call('MGET', unpack(KEYS)) -- one read however many windows
for i = 1, n do
  local raw = raws[i]
  if raw then
    S[i] = A[K[i]].dec(raw)
  end
end

local write = false
if op == 'hit' or op == 'peek' or op == 'acquire' then
  local all = true
  for i = 1, n do
    local alg = A[K[i]]
    local ok, rem, rst, rty, new
    if op == 'acquire' and alg.acquire then
      ok, rem, rst, rty, new = alg.acquire(W[i], S[i], now, C[i], lease)
    else
      ok, rem, rst, rty, new = alg.decide(W[i], S[i], now, C[i])
    end
    if not ok then
      all = false
    end
    R[i] = { ok and 1 or 0, rem, rst, rty }
    N[i] = new
  end
  write = all and op ~= 'peek'
elseif op == 'charge' then
  for i = 1, n do
    local alg = A[K[i]]
    local new = alg.charge(W[i], S[i], now, C[i])
    local _, rem, rst = alg.decide(W[i], new, now, 0)
    R[i] = { 1, rem, rst, 0 }
    N[i] = new
  end
  write = true
elseif op == 'release' then
  for i = 1, n do
    local alg = A[K[i]]
    local new = S[i]
    if alg.release then
      new = alg.release(W[i], S[i], now, lease)
    end
    local _, rem, rst = alg.decide(W[i], new, now, 0)
    R[i] = { 1, rem, rst, 0 }
    N[i] = new
  end
  write = true
else
  error('ratewarden: unknown operation ' .. tostring(op))
end

if write then
  for i = 1, n do
    local new, rst = N[i], R[i][3]
    if new == nil or rst <= 0 then
      if S[i] ~= nil then
        redis.call('DEL', KEYS[i])
      end
    else
      redis.call('SET', KEYS[i], A[K[i]].enc(new), 'PX', cdiv(rst, 1000) + slack)
    end
  end
end

local out = {}
for i = 1, n do
  local r = R[i]
  out[#out + 1] = r[1]
  out[#out + 1] = r[2]
  out[#out + 1] = r[3]
  out[#out + 1] = r[4]
end
return out
