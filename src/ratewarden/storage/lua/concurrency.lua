-- concurrency (code 6): port of core/algorithms/concurrency.py, O(log n) per call.
-- The state is three keys in one hash slot:
--   KEY        "Z" (a marker: the window holds leases; its TTL is the last lease's expiry);
--   KEY..":z"  a sorted set, one member per lease: score = expires, member = "<lease> <cost> <seq>"
--              (the anonymous lease "" is "-"; lease ids never contain whitespace; seq makes
--              every member unique, so one lease id may be held twice, as in the core);
--   KEY..":h"  a hash: field "<lease>" -> "<cost>:<seq> ..." (the named leases' members, for
--              release), and the counters " used" (sum of the costs in the set) and " seq" (a
--              field with a space never collides with a lease id).
-- A decision reads ZCARD, the last expiry (ZRANGE -1 -1) and the expired leases still in the set
-- (ZCOUNT when every lease costs 1, else their costs), and on a denial the leases by rank until
-- enough cost is freed (one ZRANGE when every lease costs 1; else at most the cost asked). A call
-- that writes removes the expired leases (each once: amortized O(1) per acquire; a set that
-- expired entirely is UNLINKed at once), as the core drops them only in a state it writes.
-- The earlier form "expires lease cost ..." is read and rewritten in this form.
local CC_TRIM = 250

local function cc_member(lease, cost, seq)
  if lease == '' then
    lease = '-'
  end
  return lease .. ' ' .. fmt(cost) .. ' ' .. fmt(seq)
end

local function cc_parse(m)
  local id, c, s = match(m, '^(%S+) (%d+) (%d+)$')
  if id == '-' then
    id = ''
  end
  return id, tonumber(c), s
end

-- forget member (lease, cost, seq) in the hash index of named leases
local function cc_unindex(h, lease, c, s)
  if lease == '' then
    return
  end
  local v = redis.call('HGET', h, lease)
  if not v then
    return
  end
  local tok = fmt(c) .. ':' .. s
  local kept = {}
  for x in string.gmatch(v, '%S+') do
    if x ~= tok then
      kept[#kept + 1] = x
    end
  end
  if #kept == 0 then
    redis.call('HDEL', h, lease)
  else
    redis.call('HSET', h, lease, table.concat(kept, ' '))
  end
end

-- drop the expired leases (expires <= now) from the set; st.used follows. Only a call that
-- writes does this (as the core drops them only in a state it writes: a clock stepped back
-- sees the others again). Each lease is removed once: amortized O(1) per acquire; a set that
-- expired entirely is UNLINKed at once.
local function cc_trim(st, now)
  local z, h = st.z, st.h
  local last = redis.call('ZRANGE', z, -1, -1, 'WITHSCORES')
  if last[2] == nil or tonumber(last[2]) <= now then -- empty, or every lease expired
    redis.call('UNLINK', z, h)
    st.used = 0
    return
  end
  while true do
    local ex = redis.call('ZRANGEBYSCORE', z, '-inf', fmt(now), 'LIMIT', 0, CC_TRIM)
    if #ex == 0 then
      return
    end
    for i = 1, #ex do
      local lease, c, s = cc_parse(ex[i])
      st.used = st.used - c
      cc_unindex(h, lease, c, s)
    end
    redis.call('ZREM', z, unpack(ex))
    if #ex < CC_TRIM then
      return
    end
  end
end

-- read only: the units held at now (the expired leases still in the set left out), how many
-- expired leases rank first, and the last expiry (nil: nothing held)
local function cc_state(st, now)
  if st == nil then
    return 0, 0, nil
  end
  if st.at ~= now then
    local z = st.z
    local last = redis.call('ZRANGE', z, -1, -1, 'WITHSCORES')[2]
    if last == nil or tonumber(last) <= now then
      st.live, st.dead, st.last = 0, 0, nil
    elseif st.used == redis.call('ZCARD', z) then -- every lease costs 1: count the expired
      st.dead = redis.call('ZCOUNT', z, '-inf', fmt(now))
      st.live, st.last = st.used - st.dead, tonumber(last)
    else -- other costs: sum the expired (they are removed by the next write)
      local ex = redis.call('ZRANGEBYSCORE', z, '-inf', fmt(now))
      local gone = 0
      for i = 1, #ex do
        local _, c = cc_parse(ex[i])
        gone = gone + c
      end
      st.live, st.dead, st.last = st.used - gone, #ex, tonumber(last)
    end
    st.at = now
  end
  return st.live, st.dead, st.last
end

-- the first expiry at which the live leases (soonest first) free at least `excess` units
local function cc_freed_at(st, excess)
  local z = st.z
  if st.used == redis.call('ZCARD', z) then -- every lease costs 1 (the expired ones rank first)
    local i = st.dead + excess - 1
    return tonumber(redis.call('ZRANGE', z, i, i, 'WITHSCORES')[2])
  end
  local freed, lo = 0, st.dead
  while true do
    local r = redis.call('ZRANGE', z, lo, lo + 99, 'WITHSCORES')
    if #r == 0 then
      error('ratewarden: concurrency state is inconsistent')
    end
    for i = 1, #r, 2 do
      local _, c = cc_parse(r[i])
      freed = freed + c
      if freed >= excess then
        return tonumber(r[i + 1])
      end
    end
    lo = lo + 100
  end
end

local function cc_acquire(w, st, now, cost, lease)
  local used, _, last = cc_state(st, now)
  local limit = w.limit
  local reset = 0
  if last then
    reset = last - now
  end
  if cost > limit then
    return false, limit - used, reset, NEVER, st
  end
  local need = one_or(cost)
  if used + need <= limit then
    if cost ~= 0 then
      local new = { now = now, used = 0 } -- used: without this lease (store adds it)
      if st then
        new.z, new.h, new.used = st.z, st.h, st.used
      end
      new.add = { now + w.period, lease, cost }
      used = used + cost
      if not last or now + w.period > last then
        last = now + w.period
      end
      return true, limit - used, last - now, 0, new
    end
    return true, limit - used, reset, 0, st
  end
  return false, limit - used, reset, cc_freed_at(st, used + need - limit) - now, st
end

local function cc_open(k)
  local z, h = k .. ':z', k .. ':h'
  return { z = z, h = h, used = tonumber(redis.call('HGET', h, ' used') or '0') }
end

local function cc_add(st, e)
  local h = st.h
  local seq = redis.call('HINCRBY', h, ' seq', 1)
  local m = cc_member(e[2], e[3], seq)
  redis.call('ZADD', st.z, fmt(e[1]), m)
  if e[2] ~= '' then
    local v = redis.call('HGET', h, e[2])
    local tok = fmt(e[3]) .. ':' .. fmt(seq)
    if v then
      tok = v .. ' ' .. tok
    end
    redis.call('HSET', h, e[2], tok)
  end
end

A[6] = {
  keyed = true,
  parse = parse_lp,
  dec = function(raw, k)
    local st = cc_open(k)
    if raw ~= 'Z' then -- the earlier form: "expires lease cost ..."
      redis.call('UNLINK', st.z, st.h)
      st.used = 0
      local tok = {}
      for x in string.gmatch(raw, '%S+') do
        tok[#tok + 1] = x
      end
      for i = 1, #tok, 3 do
        local id = tok[i + 1]
        if id == '-' then
          id = ''
        end
        cc_add(st, { tonumber(tok[i]), id, tonumber(tok[i + 2]) })
        st.used = st.used + tonumber(tok[i + 2])
      end
      redis.call('HSET', st.h, ' used', fmt(st.used))
      local pt = redis.call('PTTL', k)
      if pt > 0 then
        redis.call('PEXPIRE', st.z, pt)
        redis.call('PEXPIRE', st.h, pt)
        redis.call('SET', k, 'Z', 'PX', pt)
      end
    end
    return st
  end,
  store = function(k, st, px)
    if st.z == nil then
      local o = cc_open(k)
      st.z, st.h = o.z, o.h
    end
    if st.now then -- an admitted acquire: drop what expired, as the core's state does
      cc_trim(st, st.now)
    end
    if st.add then
      cc_add(st, st.add)
      st.used = st.used + st.add[3]
      st.add = nil
    end
    redis.call('HSET', st.h, ' used', fmt(st.used))
    redis.call('PEXPIRE', st.z, px)
    redis.call('PEXPIRE', st.h, px)
    redis.call('SET', k, 'Z', 'PX', px)
    return 'Z'
  end,
  drop = function(k)
    redis.call('UNLINK', k .. ':z', k .. ':h')
  end,
  decide = function(w, st, now, cost)
    return cc_acquire(w, st, now, cost, '')
  end,
  acquire = cc_acquire,
  -- The anonymous leases of decide (named "") are released only by their TTL: releasing ""
  -- drops expired leases and nothing else.
  release = function(w, st, now, lease)
    if st == nil then
      return nil
    end
    cc_trim(st, now)
    if lease ~= '' then
      local v = redis.call('HGET', st.h, lease)
      if v then
        local ms = {}
        for c, s in string.gmatch(v, '(%d+):(%d+)') do
          ms[#ms + 1] = cc_member(lease, tonumber(c), s)
          st.used = st.used - tonumber(c)
        end
        redis.call('ZREM', st.z, unpack(ms))
        redis.call('HDEL', st.h, lease)
      end
    end
    st.at = nil
    if st.used == 0 then
      return nil
    end
    return st
  end,
}
