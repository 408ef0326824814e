package redisstore

import "github.com/redis/go-redis/v9"

// The Lua scripts below are each one atomic step in Redis. Every key a
// script touches is passed in KEYS, and the keys of one call share a hash
// tag (one topic, or one lease), so each runs on one slot of a Cluster.
//
// Scripts answer with arrays whose first element says what happened, so a
// refusal (a closed topic, a duplicate) is an answer, not a Redis error.

// appendScript appends a batch.
//
// KEYS: 1 log, 2 meta, 3 dedup (hash: key -> "<ms> <id> <id>..."),
// 4 dedup order (zset: key by insertion counter), 5 fences (hash: lease
// name -> highest fencing token seen; only for a fenced append).
//
// ARGV: 1 max events, 2 max bytes, 3 max age (ms), 4 dedup window (ms),
// 5 max dedup keys, 6 "1" if the batch is too large for the bounds, 7 dedup
// key or "", 8 fencing token or "", 9 lease name, 10 ttl of log and meta
// (ms), 11 n, then n times: type, data, cost.
//
// Answers {"closed"}, {"leaselost"}, {"dup", "<ms> <ids>"}, {"toolarge"} or
// {"ok", <id before the first>, <ids>...}.
var appendScript = redis.NewScript(`
local log, meta = KEYS[1], KEYS[2]
local fence = ARGV[8]
if fence ~= '' then
	-- A holder that took the lease after this one has written here.
	local seen = redis.call('HGET', KEYS[5], ARGV[9])
	if seen and tonumber(seen) > tonumber(fence) then return {'leaselost'} end
end
if redis.call('HEXISTS', meta, 'closed') == 1 then return {'closed'} end
if fence ~= '' then
	redis.call('HSET', KEYS[5], ARGV[9], fence)
	redis.call('PEXPIRE', KEYS[5], ARGV[10])
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local key = ARGV[7]
local window = tonumber(ARGV[4])
if key ~= '' then
	local v = redis.call('HGET', KEYS[3], key)
	if v and tonumber(string.match(v, '^(%d+)')) >= now - window then
		-- A write, so that a WAIT after a repeated append covers the
		-- first one (the replication stream is ordered).
		redis.call('PEXPIRE', KEYS[3], window)
		return {'dup', v}
	end
end
if ARGV[6] == '1' then return {'toolarge'} end

local prev = redis.call('HGET', meta, 'last') or '0-0'
local res = {'ok', prev}
local n = tonumber(ARGV[11])
local bytes = tonumber(redis.call('HGET', meta, 'bytes') or '0')
for i = 0, n - 1 do
	local cost = ARGV[14 + 3 * i]
	prev = redis.call('XADD', log, '*', 't', ARGV[12 + 3 * i], 'd', ARGV[13 + 3 * i], 'p', prev, 'c', cost)
	res[#res + 1] = prev
	bytes = bytes + tonumber(cost)
end

-- Trim, oldest first, exactly as the nodes' windows prune.
local maxEvents, maxBytes = tonumber(ARGV[1]), tonumber(ARGV[2])
local minMs = now - tonumber(ARGV[3])
local count = redis.call('XLEN', log)
local floor = false
local from = '-'
while count > 0 do
	-- Usually only the few entries over the count bound go, and the entry
	-- after them is looked at: read no more than that at first.
	local want = math.min(math.max(count - maxEvents, 0) + 1, 100)
	local batch = redis.call('XRANGE', log, from, '+', 'COUNT', want)
	if #batch == 0 then break end
	local stop = false
	for _, e in ipairs(batch) do
		local id, f = e[1], e[2]
		local ms = tonumber(string.match(id, '^(%d+)-'))
		if count > maxEvents or bytes > maxBytes or ms < minMs then
			if f[7] == 'c' then bytes = bytes - tonumber(f[8]) end
			count = count - 1
			floor = id
		else
			stop = true
			break
		end
	end
	if stop then break end
	from = '(' .. batch[#batch][1]
end
if floor then
	local ms, seq = string.match(floor, '^(%d+)-(%d+)$')
	redis.call('XTRIM', log, 'MINID', ms .. '-' .. string.format('%d', tonumber(seq) + 1))
	redis.call('HSET', meta, 'floor', floor)
end
redis.call('HSET', meta, 'last', prev, 'bytes', string.format('%d', bytes))
local ttl = ARGV[10]
redis.call('PEXPIRE', log, ttl)
redis.call('PEXPIRE', meta, ttl)

if key ~= '' then
	local d, z = KEYS[3], KEYS[4]
	local top = redis.call('ZRANGE', z, -1, -1, 'WITHSCORES')
	local score = 1
	if top[2] then score = tonumber(top[2]) + 1 end
	redis.call('HSET', d, key, string.format('%d', now) .. ' ' .. table.concat(res, ' ', 3))
	redis.call('ZADD', z, string.format('%d', score), key)
	local excess = redis.call('ZCARD', z) - tonumber(ARGV[5])
	if excess > 0 then
		local popped = redis.call('ZPOPMIN', z, excess)
		for i = 1, #popped, 2 do redis.call('HDEL', d, popped[i]) end
	end
	-- Keys past the window leave from the head, a few per append.
	for _, k in ipairs(redis.call('ZRANGE', z, 0, 15)) do
		local v = redis.call('HGET', d, k)
		if v and tonumber(string.match(v, '^(%d+)')) >= now - window then break end
		redis.call('ZREM', z, k)
		if v then redis.call('HDEL', d, k) end
	end
	redis.call('PEXPIRE', d, window)
	redis.call('PEXPIRE', z, window)
end
return res
`)

// closeScript ends a topic: a marker entry in the log (so tails see it) and
// the closed field in meta (so later calls are refused).
//
// KEYS: 1 log, 2 meta. ARGV: 1 ttl of log and meta (ms).
// Answers {"closed"} or {"ok", <id before the marker>, <marker id>}.
var closeScript = redis.NewScript(`
if redis.call('HEXISTS', KEYS[2], 'closed') == 1 then return {'closed'} end
local prev = redis.call('HGET', KEYS[2], 'last') or '0-0'
local id = redis.call('XADD', KEYS[1], '*', 'x', '1', 'p', prev)
redis.call('HSET', KEYS[2], 'last', id, 'closed', id)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return {'ok', prev, id}
`)

// registerScript counts a topic against the topic limit.
//
// KEYS: 1 registry (zset: topic by deadline, ms). ARGV: 1 topic, 2 ttl (ms),
// 3 max topics. Answers 1 (registered) or 0 (limit reached).
var registerScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%d', now))
local deadline = now + tonumber(ARGV[2])
local cur = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not cur then
	if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
	redis.call('ZADD', KEYS[1], string.format('%d', deadline), ARGV[1])
elseif tonumber(cur) < deadline then
	redis.call('ZADD', KEYS[1], string.format('%d', deadline), ARGV[1])
end
return 1
`)

// acquireScript takes a lease if it is free, with the next fencing token.
//
// KEYS: 1 lease, 2 lease cursor, 3 fencing counter. ARGV: 1 token, 2 ttl
// (ms). Answers {1, <cursor>, <fencing token>} or {0}.
var acquireScript = redis.NewScript(`
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
	local fence = redis.call('INCR', KEYS[3])
	return {1, redis.call('GET', KEYS[2]) or '', fence}
end
return {0}
`)

// cursorScript records a lease's upstream position for its holder.
// KEYS: 1 lease, 2 lease cursor. ARGV: 1 token, 2 cursor. Answers 1, or 0
// when someone else holds the lease.
var cursorScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
	redis.call('SET', KEYS[2], ARGV[2])
	return 1
end
return 0
`)

// renewScript extends a lease its holder still holds. KEYS: 1 lease.
// ARGV: 1 token, 2 ttl (ms). Answers 1, or 0 when someone else holds it.
var renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
	return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
`)

// releaseScript frees a lease its holder still holds. KEYS: 1 lease.
// ARGV: 1 token.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
	return redis.call('DEL', KEYS[1])
end
return 0
`)
