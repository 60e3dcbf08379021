-- concurrency (code 6): port of core/algorithms/concurrency.py.
-- State "expires lease cost ...": leases sorted like Python tuples; the anonymous
-- lease "" is stored as "-" (lease ids never contain whitespace).
local function cc_dec(raw)
  local tok = {}
  for x in string.gmatch(raw, '%S+') do
    tok[#tok + 1] = x
  end
  local t = {}
  for i = 1, #tok, 3 do
    local id = tok[i + 1]
    if id == '-' then
      id = ''
    end
    t[#t + 1] = { tonumber(tok[i]), id, tonumber(tok[i + 2]) }
  end
  return t
end

local function cc_enc(t)
  local out = {}
  for i = 1, #t do
    local x = t[i]
    local id = x[2]
    if id == '' then
      id = '-'
    end
    out[i] = fmt(x[1]) .. ' ' .. id .. ' ' .. fmt(x[3])
  end
  return table.concat(out, ' ')
end

local function cc_less(a, b)
  if a[1] ~= b[1] then
    return a[1] < b[1]
  end
  if a[2] ~= b[2] then
    return a[2] < b[2]
  end
  return a[3] < b[3]
end

local function cc_acquire(w, st, now, cost, lease)
  local ls = st or {}
  if #ls > 0 and ls[1][1] <= now then
    local k = {}
    for i = 1, #ls do
      if ls[i][1] > now then
        k[#k + 1] = ls[i]
      end
    end
    ls = k
  end
  local used = 0
  for i = 1, #ls do
    used = used + ls[i][3]
  end
  local limit = w.limit
  local reset = 0
  if #ls > 0 then
    reset = ls[#ls][1] - now
  end
  if cost > limit then
    return false, limit - used, reset, NEVER, ls
  end
  local need = one_or(cost)
  if used + need <= limit then
    if cost ~= 0 then
      ls[#ls + 1] = { now + w.period, lease, cost }
      table.sort(ls, cc_less)
      used = used + cost
      reset = ls[#ls][1] - now
    end
    return true, limit - used, reset, 0, ls
  end
  local excess = used + need - limit
  local freed = 0
  for i = 1, #ls do
    freed = freed + ls[i][3]
    if freed >= excess then
      return false, limit - used, reset, ls[i][1] - now, ls
    end
  end
  error('ratewarden: concurrency state is inconsistent')
end

A[6] = {
  parse = parse_lp,
  dec = cc_dec,
  enc = cc_enc,
  decide = function(w, st, now, cost)
    return cc_acquire(w, st, now, cost, '')
  end,
  acquire = cc_acquire,
  -- The anonymous leases of decide (named "") are released only by their TTL: releasing ""
  -- drops expired leases and nothing else.
  release = function(w, st, now, lease)
    local k = {}
    if st then
      for i = 1, #st do
        if st[i][1] > now and (lease == '' or st[i][2] ~= lease) then
          k[#k + 1] = st[i]
        end
      end
    end
    if #k == 0 then
      return nil
    end
    return k
  end,
}
