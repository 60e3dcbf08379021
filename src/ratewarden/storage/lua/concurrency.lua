-- concurrency (code 6): port of core/algorithms/concurrency.py. Every call does O(log n) work
-- and a bounded number of Redis commands, whatever the state: it reads O(1) members or O(log n)
-- ranks and removes at most CC_TRIM leases (exceptions, each O(n) once or by request, at the end).
-- The state is these keys in one hash slot:
--   KEY        "Z2" (a marker: the window holds leases; its TTL is the last lease's expiry);
--   KEY..":z"  a sorted set, one member per lease: score = expires, member = "<lease> <cost> <seq>"
--              (the anonymous lease "" is "-"; lease ids never contain whitespace; seq makes
--              every member unique, so one lease id may be held twice, as in the core);
--   KEY..":b<i>"  for each bit i of (cost - 1) of some lease: a sorted set of the leases whose
--              (cost - 1) has bit i (same members, same scores as in ":z");
--   KEY..":h"  a hash: field "<lease>" -> "<cost>:<seq> ..." (the named leases' members, for
--              release), and " used" (the sum of the costs in the set), " seq", " bits" (the
--              i of the b<i> sets in use, "0 3") and " cut" (below; a field with a space never
--              collides with a lease id).
-- Why bit sets: a decision needs the sum of the costs of the leases with expires <= t without
-- reading them. Each lease counts 1 in ":z" and 2^i in each ":b<i>" it is in, which adds up to its
-- cost, so that sum is ZCOUNT(z, -inf, t) + sum_i 2^i ZCOUNT(b<i>, -inf, t): 1 + (bits in use)
-- ZCOUNTs of O(log n), at most 1 + log2(largest cost) (< 2^50) whatever the number of distinct
-- costs (one set per distinct cost would grow with them; a cumulative score cannot survive a
-- removal in the middle; one member per unit would make a cost-c acquire O(c)). When every lease
-- costs 1 there is no bit set: one ZCOUNT, one ZRANGE for retry_after, as before. A lease costs
-- 1 + popcount(cost - 1) members to add and to remove.
-- Expired leases are removed lazily, at most CC_TRIM per call that writes (an admitted acquire
-- or check, a release): each once, amortized O(1) per acquire; a set that expired entirely is
-- UNLINKed at once. The core drops every expired lease from the state it writes, so a clock
-- stepped back must not see them again: " cut" is the largest now of a write since the set last
-- held no removable lease (0: none), and the leases with expires <= cut are dropped ones not yet
-- removed. A decision at now counts the leases with expires > h = max(now, cut): used = " used"
-- minus the costs up to h (the sums above). This is exact because a lease added after a write at
-- cut expires after cut, except when the clock has stepped back a whole period or more behind
-- cut while dropped leases are still in the set: that write first removes the dropped leases
-- with expires in (now, cut] and sets cut = now.
-- A denial's retry_after is the first expiry at which the live leases, soonest first, free the
-- excess: one ZRANGE i i by rank when every lease costs 1; otherwise the first CC_SCAN live
-- leases are read, then a binary search over the ranks (each probe: the costs up to that rank's
-- expiry, as above; about log2(n / CC_SCAN) probes) down to CC_SCAN ranks, read and summed.
-- Not bounded (O(n), rare): the write above after Redis's clock stepped back by more than the
-- lease TTL in the middle of a backlog; the one-off rewrite of an earlier form (the sorted set
-- of "Z", without bit sets nor cut: the bit sets are built once if some lease costs more than 1;
-- the string "expires lease cost ..."); a release of a lease id held m times removes m leases,
-- and a lease id's index entry is parsed whole (O(times that id is held), 1 in normal use).
local CC_TRIM = 50
local CC_SCAN = 32

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

-- the bits set in (cost - 1): a lease is in the set b<i> for each of them
local function cc_bits(cost)
  local out, x, i = {}, cost - 1, 0
  while x > 0 do
    local r = x % 2
    if r == 1 then
      out[#out + 1] = i
    end
    x = (x - r) / 2
    i = i + 1
  end
  return out
end

local function cc_bkey(st, i)
  return st.k .. ':b' .. i
end

-- remove these members (all in the set) from the set, the bit sets and (indexed) the hash index
-- of named leases; st.used follows. A few commands whatever the number of members.
local function cc_remove(st, ms, indexed)
  if #ms == 0 then
    return
  end
  local per, drop, names, seen = {}, {}, {}, {}
  for i = 1, #ms do
    local lease, c, s = cc_parse(ms[i])
    st.used = st.used - c
    if indexed and lease ~= '' then
      if not seen[lease] then
        seen[lease] = {}
        names[#names + 1] = lease
      end
      seen[lease][fmt(c) .. ':' .. s] = true
    end
    if c > 1 then
      for _, b in ipairs(cc_bits(c)) do
        local t = per[b]
        if t == nil then
          t = {}
          per[b] = t
        end
        t[#t + 1] = ms[i]
      end
    end
  end
  redis.call('ZREM', st.z, unpack(ms))
  for b, t in pairs(per) do
    redis.call('ZREM', cc_bkey(st, b), unpack(t))
  end
  if #names > 0 then -- forget them in the index: one HMGET, at most one HDEL and one HSET
    local vs = redis.call('HMGET', st.h, unpack(names))
    local set = {}
    for i = 1, #names do
      if vs[i] then
        local gone, kept = seen[names[i]], {}
        for x in string.gmatch(vs[i], '%S+') do
          if not gone[x] then
            kept[#kept + 1] = x
          end
        end
        if #kept == 0 then
          drop[#drop + 1] = names[i]
        else
          set[#set + 1] = names[i]
          set[#set + 1] = table.concat(kept, ' ')
        end
      end
    end
    if #drop > 0 then
      redis.call('HDEL', st.h, unpack(drop))
    end
    if #set > 0 then
      redis.call('HSET', st.h, unpack(set))
    end
  end
end

local function cc_unlink(st)
  local ks = { st.z, st.h }
  for _, b in ipairs(st.bits) do
    ks[#ks + 1] = cc_bkey(st, b)
  end
  redis.call('UNLINK', unpack(ks))
  st.used, st.cut, st.bits, st.bitset = 0, 0, {}, {}
end

-- the number and the costs of the leases with expires <= t
local function cc_upto(st, t)
  local s = fmt(t)
  local n = redis.call('ZCOUNT', st.z, '-inf', s)
  local cost = n
  for _, b in ipairs(st.bits) do
    cost = cost + 2 ^ b * redis.call('ZCOUNT', cc_bkey(st, b), '-inf', s)
  end
  return n, cost
end

-- A write at now: the core drops the leases with expires <= now from the state it writes.
-- Removes at most CC_TRIM of the dropped ones (soonest first); the rest stay below the cut.
local function cc_trim(st, now)
  if st.cut < now then
    st.cut = now
  end
  local last = redis.call('ZRANGE', st.z, -1, -1, 'WITHSCORES')
  if last[2] == nil or tonumber(last[2]) <= st.cut then -- empty, or every lease dropped
    cc_unlink(st)
    return
  end
  local ex = redis.call('ZRANGEBYSCORE', st.z, '-inf', fmt(st.cut), 'LIMIT', 0, CC_TRIM)
  cc_remove(st, ex, true)
  if #ex < CC_TRIM then -- nothing dropped is left in the set
    st.cut = 0
  end
end

-- read only: the units held at now (the leases with expires <= max(now, cut) left out), how many
-- leases rank before the first one held, and the last expiry (nil: nothing held)
local function cc_state(st, now)
  if st == nil then
    return 0, 0, nil
  end
  if st.at ~= now then
    local h = math.max(now, st.cut)
    local last = redis.call('ZRANGE', st.z, -1, -1, 'WITHSCORES')[2]
    if last == nil or tonumber(last) <= h then
      st.live, st.dead, st.gone, st.last = 0, 0, 0, nil
    else
      local n, gone = cc_upto(st, h)
      st.live, st.dead, st.gone, st.last = st.used - gone, n, gone, tonumber(last)
    end
    st.at = now
  end
  return st.live, st.dead, st.last
end

-- the first expiry at which the live leases (soonest first) free at least `excess` units (the
-- live leases hold at least that much)
-- In a ZRANGE ... WITHSCORES reply r, the expiry of the lease at which the costs, summed onto
-- acc, reach excess (nil if none does), and the sum.
local function cc_reach(r, acc, excess)
  for i = 1, #r, 2 do
    local _, c = cc_parse(r[i])
    acc = acc + c
    if acc >= excess then
      return tonumber(r[i + 1]), acc
    end
  end
  return nil, acc
end

local function cc_freed_at(st, excess)
  local z = st.z
  if #st.bits == 0 then -- every lease costs 1 (the dropped ones rank first)
    local i = st.dead + excess - 1
    return tonumber(redis.call('ZRANGE', z, i, i, 'WITHSCORES')[2])
  end
  local lo = st.dead
  local r = redis.call('ZRANGE', z, lo, lo + CC_SCAN - 1, 'WITHSCORES')
  local at, freed = cc_reach(r, 0, excess)
  if at then
    return at
  end
  -- Binary search over ranks [lo, hi], keeping base = the costs of the live ranks before lo (so
  -- C(r), the costs of the live ranks up to r, is known at lo - 1). A probe at rank mid counts
  -- the costs up to its expiry s (all its ties, up to rank t = n - 1): if they free enough the
  -- answer is at most s (hi = mid), else it ranks after t (lo = t + 1). Once at most CC_SCAN
  -- ranks are left they are read and summed; if even hi does not free enough, the answer ranks
  -- in hi's ties: hi's expiry.
  lo = lo + #r / 2
  local base = freed
  local hi = redis.call('ZCARD', z) - 1
  while hi - lo >= CC_SCAN do
    local mid = floor((lo + hi) / 2)
    local sc = tonumber(redis.call('ZRANGE', z, mid, mid, 'WITHSCORES')[2])
    local n, upto = cc_upto(st, sc)
    if upto - st.gone >= excess then
      hi = mid
    else
      lo, base = n, upto - st.gone
    end
  end
  r = redis.call('ZRANGE', z, lo, hi, 'WITHSCORES')
  if #r == 0 then
    error('ratewarden: concurrency state is inconsistent')
  end
  at = cc_reach(r, base, excess)
  return at or tonumber(r[#r])
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
    if st then
      st.wnow = now -- a write drops what expired, as the core's state does
    end
    if cost ~= 0 then
      local new = st
      if new == nil then
        new = { used = 0, cut = 0, bits = {}, bitset = {} }
      end
      new.wnow = now
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
  local v = redis.call('HMGET', h, ' used', ' cut', ' bits')
  local st = { k = k, z = z, h = h, used = tonumber(v[1] or '0'), cut = tonumber(v[2] or '0'), bits = {}, bitset = {} }
  for x in string.gmatch(v[3] or '', '%d+') do
    local b = tonumber(x)
    st.bits[#st.bits + 1] = b
    st.bitset[b] = true
  end
  return st
end

local function cc_add(st, e)
  local h = st.h
  local seq = redis.call('HINCRBY', h, ' seq', 1)
  local m = cc_member(e[2], e[3], seq)
  local score = fmt(e[1])
  redis.call('ZADD', st.z, score, m)
  if e[3] > 1 then
    for _, b in ipairs(cc_bits(e[3])) do
      redis.call('ZADD', cc_bkey(st, b), score, m)
      if not st.bitset[b] then
        st.bitset[b] = true
        st.bits[#st.bits + 1] = b
      end
    end
  end
  if e[2] ~= '' then
    local v = redis.call('HGET', h, e[2])
    local tok = fmt(e[3]) .. ':' .. fmt(seq)
    if v then
      tok = v .. ' ' .. tok
    end
    redis.call('HSET', h, e[2], tok)
  end
  st.used = st.used + e[3]
end

local function cc_expire(st, k, px)
  redis.call('HSET', st.h, ' used', fmt(st.used), ' cut', fmt(st.cut), ' bits', table.concat(st.bits, ' '))
  redis.call('PEXPIRE', st.z, px)
  redis.call('PEXPIRE', st.h, px)
  for _, b in ipairs(st.bits) do
    redis.call('PEXPIRE', cc_bkey(st, b), px)
  end
  redis.call('SET', k, 'Z2', 'PX', px)
end

A[6] = {
  keyed = true,
  parse = parse_lp,
  dec = function(raw, k)
    local st = cc_open(k)
    if raw == 'Z2' then
      return st
    end
    local pt = redis.call('PTTL', k)
    if raw == 'Z' then -- the sorted set without bit sets nor cut: build the bit sets once
      if st.used ~= redis.call('ZCARD', st.z) then
        local all = redis.call('ZRANGE', st.z, 0, -1, 'WITHSCORES')
        for i = 1, #all, 2 do
          local _, c = cc_parse(all[i])
          if c > 1 then
            for _, b in ipairs(cc_bits(c)) do
              redis.call('ZADD', cc_bkey(st, b), all[i + 1], all[i])
              if not st.bitset[b] then
                st.bitset[b] = true
                st.bits[#st.bits + 1] = b
              end
            end
          end
        end
      end
    else -- the earlier string form: "expires lease cost ..."
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
      end
    end
    if pt > 0 then
      cc_expire(st, k, pt)
    else
      redis.call('HSET', st.h, ' used', fmt(st.used), ' cut', '0', ' bits', table.concat(st.bits, ' '))
    end
    return st
  end,
  store = function(k, st, px)
    if st.z == nil then
      local o = cc_open(k)
      st.k, st.z, st.h = o.k, o.z, o.h
    end
    local now = st.wnow
    if now and st.trimmed ~= now then -- an admitted request: drop what expired, as the core does
      cc_trim(st, now)
    end
    if st.add then
      local e = st.add
      if e[1] <= st.cut then -- the clock stepped back a whole period behind the cut (see above)
        while true do
          local ms = redis.call('ZRANGEBYSCORE', st.z, '(' .. fmt(now), fmt(st.cut), 'LIMIT', 0, 1000)
          cc_remove(st, ms, true)
          if #ms < 1000 then
            break
          end
        end
        st.cut = now
      end
      cc_add(st, e)
      st.add = nil
    end
    st.wnow, st.trimmed = nil, nil
    cc_expire(st, k, px)
    return 'Z2'
  end,
  drop = function(k)
    local st = cc_open(k)
    cc_unlink(st)
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
    st.wnow, st.trimmed = now, now
    if lease ~= '' then
      local v = redis.call('HGET', st.h, lease)
      if v then
        local ms = {}
        for c, s in string.gmatch(v, '(%d+):(%d+)') do
          ms[#ms + 1] = cc_member(lease, tonumber(c), s)
        end
        cc_remove(st, ms, false)
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
