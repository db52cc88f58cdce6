-- HTTP connections found by the L4 front (stream subsystem) are handed to APISIX's HTTP
-- listener over loopback. nginx's stream proxy cannot tell the HTTP side where the captured
-- connection was going (PROXY protocol would carry the redirect address, and would also be sent
-- on every TCP pass-through of the same server), so each handed-off connection leaves from a
-- loopback address of its own, 127.128.0.0/9, and a dictionary shared by both subsystems maps
-- that address to the captured connection's direction, client and original destination.
--
-- APISIX 3.13's nginx template declares exactly one dictionary shared by both subsystems that the
-- sidecar can use, `nacos` (10 MiB, in its `lua {}` block, for the Nacos discovery the sidecar never
-- enables), and no way to declare another: a second `lua {}` block is a duplicate directive. The
-- hand-off borrows it with keys of its own prefix; without it every hand-off fails closed.
local DICT = "nacos"
local PREFIX = "apisix-mesh:"
local MAX_IDS = 8388606   -- 127.128.0.1 .. 127.255.255.254
local TRIES = 16

local _M = {}

local function dict()
    return ngx.shared[DICT]
end

local function address_of(id)
    return "127." .. (128 + math.floor(id / 65536)) .. "." .. (math.floor(id / 256) % 256) .. "." .. (id % 256)
end

-- The numbers a worker hands out: those equal to its id modulo the worker count, so that the
-- listener's steering program (handoff_steering.lua) picks this worker's socket.
local function number_for(n, worker_id, workers)
    local per_worker = math.floor(MAX_IDS / workers) - 1
    return (n % per_worker + 1) * workers + worker_id
end

-- Stream side: reserves a source address for this connection. The record is removed when the
-- connection ends (release); an address still in use is never handed out twice (safe_add).
-- `peer_sans` (mTLS chains): the SAN matchers the HTTP side checks the peer against (chains.lua's form).
function _M.reserve(direction, client_ip, client_port, dst, peer_sans)
    local d = dict()
    if not d then
        return nil, "shared dictionary " .. DICT .. " is missing"
    end
    local value = direction .. "|" .. client_ip .. "|" .. client_port .. "|" .. dst
    if peer_sans then
        value = value .. "|" .. peer_sans
    end
    for _ = 1, TRIES do
        local n, err = d:incr(PREFIX .. "next", 1, 0)
        if not n then
            return nil, err
        end
        local address = address_of(number_for(n, ngx.worker.id() or 0, ngx.worker.count()))
        local ok, add_err = d:safe_add(PREFIX .. address, value)
        if ok then
            return address
        end
        if add_err ~= "exists" then
            return nil, add_err
        end
    end
    return nil, "no free hand-off address"
end

function _M.release(address)
    local d = dict()
    if d and address then
        d:delete(PREFIX .. address)
    end
end

-- Each worker's stream side records when it has read the L4 listeners; APISIX's readiness waits
-- for all of them (hook.lua), so that no captured connection meets a front without listeners.
function _M.mark_ready(worker_id)
    local d = dict()
    if not d then
        return nil, "shared dictionary " .. DICT .. " is missing"
    end
    return d:safe_set(PREFIX .. "l4-ready:" .. worker_id, true)
end

-- The id of a worker whose stream side has not read the listeners yet, or nil when all have.
function _M.first_unready(worker_count)
    local d = dict()
    for id = 0, worker_count - 1 do
        if not d or not d:get(PREFIX .. "l4-ready:" .. id) then
            return id
        end
    end
    return nil
end

-- HTTP side: what the stream side recorded for the connection's source address, parsed.
function _M.lookup(address)
    local d = dict()
    if not d or not address then
        return nil
    end
    local value = d:get(PREFIX .. address)
    if not value then
        return nil
    end
    local direction, client_ip, client_port, dst, peer_sans = value:match("^([a-z]+)|([^|]+)|(%d+)|([^|]+)|?(.*)$")
    if not direction then
        return nil
    end
    return { direction = direction, client_ip = client_ip, client_port = tonumber(client_port), dst = dst,
             peer_sans = peer_sans ~= "" and peer_sans or nil }
end

-- A part of its own for a reserved address (tcp_mtls.lua's), beside the record; `what` names it.
-- The reserver detaches it when it releases the address.
function _M.attach(address, what, value)
    local d = dict()
    if not d then
        return nil, "shared dictionary " .. DICT .. " is missing"
    end
    return d:safe_set(PREFIX .. what .. ":" .. address, value)
end

function _M.attached(address, what)
    local d = dict()
    return d and address and d:get(PREFIX .. what .. ":" .. address)
end

function _M.detach(address, what)
    local d = dict()
    if d and address then
        d:delete(PREFIX .. what .. ":" .. address)
    end
end

-- HTTP side, per request: the record of the connection numbered `connection` (nginx's
-- $connection) whose source address is `address`, read from the dictionary once per connection
-- and then from a per-worker memo, as a keep-alive connection's record cannot change while it
-- lives: its stream session holds the address reserved until both ends close. nginx numbers
-- connections from one counter shared by the workers, never reusing a number while it runs; the
-- memo also keeps the address and serves only a request from that same address, so a record is
-- never served to another connection. Bounded: the least recently used connections are forgotten
-- (a forgotten live connection reads the dictionary again); a miss is never memoized.
local lrucache = require("resty.lrucache")
local MEMO_SIZE = 4096
local memo = lrucache.new(MEMO_SIZE)

function _M.lookup_for_connection(connection, address)
    if not connection or not address then
        return nil
    end
    local entry = memo:get(connection)
    if entry and entry.address == address then
        return entry.record
    end
    local record = _M.lookup(address)
    if record then
        memo:set(connection, { address = address, record = record })
    end
    return record
end

return _M
