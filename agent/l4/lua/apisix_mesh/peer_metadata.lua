-- Istio's HTTP metadata exchange, as its sidecars speak it (istio/proxy's peer_metadata filter and,
-- before it, the istio.metadata_exchange filter of Istio 1.18-1.24; the same headers):
-- - `x-envoy-peer-metadata-id`: the sender's node id (`sidecar~<ip>~<pod>.<ns>~<ns>.svc.<domain>`);
-- - `x-envoy-peer-metadata`: base64 (padded or not) of a serialized google.protobuf.Struct holding
--   the sender's node metadata: NAME (pod), NAMESPACE, WORKLOAD_NAME, CLUSTER_ID, OWNER and LABELS
--   (a Struct: app, version, service.istio.io/canonical-name, service.istio.io/canonical-revision).
-- A client's sidecar sends both on every request to a mesh cluster; the server's sidecar reads them
-- into the source_* labels of its metrics, removes them before the app sees them, and answers with
-- its own pair when (and only when) the request carried them; the client reads the answer into the
-- destination_* labels and removes it before the app sees it. The `baggage` form of newer ambient
-- proxies is not read (sidecars of that era still send these headers).
--
-- Hostile input: a header over MAX_HEADER bytes, bad base64, a malformed or oversized protobuf,
-- wrong types: the peer stays unknown, silently (a peer is not an error). Every value read is cut to
-- MAX_VALUE bytes here and cleaned for the exposition by istio_labels.lua.
local byte, sub, char, floor, concat, sort = string.byte, string.sub, string.char, math.floor, table.concat, table.sort

local _M = {}

_M.ID_HEADER = "x-envoy-peer-metadata-id"
_M.HEADER = "x-envoy-peer-metadata"

local MAX_HEADER = 16384   -- base64 text
local MAX_FIELDS = 256     -- entries of one Struct
local MAX_VALUE = 256

local CANONICAL_NAME = "service.istio.io/canonical-name"
local CANONICAL_REVISION = "service.istio.io/canonical-revision"

-- protobuf wire format: a varint at pos (at most 10 bytes), within limit
local function varint(s, pos, limit)
    local value, scale = 0, 1
    for _ = 1, 10 do
        if pos > limit then
            return nil
        end
        local b = byte(s, pos)
        pos = pos + 1
        value = value + (b % 128) * scale
        if b < 128 then
            return value, pos
        end
        scale = scale * 128
    end
    return nil
end

-- a length-delimited field's bounds [first, last], and the position after it
local function delimited(s, pos, limit)
    local len, p = varint(s, pos, limit)
    if not len or len > limit - p + 1 then
        return nil
    end
    return p, p + len - 1, p + len
end

local function skip(s, pos, limit, wire)
    if wire == 0 then
        local _, p = varint(s, pos, limit)
        return p
    elseif wire == 1 or wire == 5 then
        local p = pos + (wire == 1 and 8 or 4)
        return p <= limit + 1 and p or nil
    elseif wire == 2 then
        local _, _, p = delimited(s, pos, limit)
        return p
    end
    return nil   -- groups (3, 4) and undefined types: malformed here
end

local struct_fields

-- google.protobuf.Value: string_value (3) as a string, struct_value (5) as a table when nesting is
-- allowed; other kinds are skipped (nil). false: malformed.
local function value_of(s, pos, limit, depth)
    local out
    while pos <= limit do
        local tag, p = varint(s, pos, limit)
        if not tag then
            return false
        end
        local field, wire = floor(tag / 8), tag % 8
        if wire == 2 and (field == 3 or field == 5) then
            local first, last, after = delimited(s, p, limit)
            if not first then
                return false
            end
            if field == 3 then
                out = sub(s, first, first - 1 + (last - first + 1 > MAX_VALUE and MAX_VALUE or last - first + 1))
            elseif depth > 0 then
                out = struct_fields(s, first, last, depth - 1)
                if out == false then
                    return false
                end
            else
                out = nil
            end
            pos = after
        else
            pos = skip(s, p, limit, wire)
            if not pos then
                return false
            end
        end
    end
    return out
end

-- google.protobuf.Struct: `fields` (1) is a map, each entry a message of key (1) and value (2)
function struct_fields(s, pos, limit, depth)
    local out, n = {}, 0
    while pos <= limit do
        local tag, p = varint(s, pos, limit)
        if not tag then
            return false
        end
        if tag == 10 then   -- field 1, length-delimited: a map entry
            n = n + 1
            if n > MAX_FIELDS then
                return false
            end
            local first, last, after = delimited(s, p, limit)
            if not first then
                return false
            end
            local key, value, q = nil, nil, first
            while q <= last do
                local etag, ep = varint(s, q, last)
                if not etag then
                    return false
                end
                if etag == 10 or etag == 18 then
                    local f, l, a = delimited(s, ep, last)
                    if not f then
                        return false
                    end
                    if etag == 10 then
                        key = sub(s, f, l)
                    else
                        value = value_of(s, f, l, depth)
                        if value == false then
                            return false
                        end
                    end
                    q = a
                else
                    q = skip(s, ep, last, etag % 8)
                    if not q then
                        return false
                    end
                end
            end
            if key and value ~= nil then
                out[key] = value
            end
            pos = after
        else
            pos = skip(s, p, limit, tag % 8)
            if not pos then
                return false
            end
        end
    end
    return out
end

-- Exposed for the tests: a serialized Struct → its fields (strings and one level of nested
-- Structs), or nil when malformed.
function _M.decode_struct(bytes)
    if type(bytes) ~= "string" then
        return nil
    end
    local fields = struct_fields(bytes, 1, #bytes, 1)
    return fields or nil
end

local function text(v)
    return type(v) == "string" and v ~= "" and v or nil
end

local function decode_value(value)
    local fields = _M.decode_struct(ngx.decode_base64(value))
    if not fields then
        return nil
    end
    local labels = type(fields.LABELS) == "table" and fields.LABELS or {}
    local peer = {
        workload = text(fields.WORKLOAD_NAME),
        namespace = text(fields.NAMESPACE),
        -- Istio's peer_metadata: app and version, or the app.kubernetes.io labels
        app = text(labels.app) or text(labels["app.kubernetes.io/name"]),
        version = text(labels.version) or text(labels["app.kubernetes.io/version"]),
        canonical_service = text(labels[CANONICAL_NAME]),
        canonical_revision = text(labels[CANONICAL_REVISION]),
        cluster = text(fields.CLUSTER_ID),
    }
    if not next(peer) then
        return nil
    end
    return peer
end

-- A peer sends the same value with every request: each worker decodes a value once, for the last
-- CACHED values up to CACHED_BYTES long (real values are 1-2 KiB; longer ones are decoded each time,
-- so that hostile clients cannot make the cache hold more than CACHED × CACHED_BYTES).
local CACHED, CACHED_BYTES = 256, 4096
local cache

-- The header's value → the peer's workload as istio_labels.lua takes it ({ workload, namespace,
-- app, version, canonical_service, canonical_revision, cluster }; absent fields nil), or nil. The
-- table may be shared by the requests that sent the same value: read it, never change it.
function _M.decode(value)
    if type(value) ~= "string" or value == "" or #value > MAX_HEADER then
        return nil
    end
    if #value > CACHED_BYTES then
        return decode_value(value)
    end
    cache = cache or require("resty.lrucache").new(CACHED)
    local peer = cache:get(value)
    if peer == nil then
        peer = decode_value(value) or false
        cache:set(value, peer)
    end
    return peer or nil
end

-- encoding, for our own metadata
local function encode_varint(n)
    local out = {}
    repeat
        local b = n % 128
        n = floor(n / 128)
        out[#out + 1] = char(n > 0 and b + 128 or b)
    until n == 0
    return concat(out)
end

local function delimit(tag, body)
    return char(tag) .. encode_varint(#body) .. body
end

local function encode_struct(fields)
    local keys = {}
    for k in pairs(fields) do
        keys[#keys + 1] = k
    end
    -- deterministic, as Envoy serializes it: map keys in order
    sort(keys)
    local out = {}
    for i, k in ipairs(keys) do
        local v = fields[k]
        local value = type(v) == "table" and delimit(0x2A, encode_struct(v)) or delimit(0x1A, v)
        out[i] = delimit(0x0A, delimit(0x0A, k) .. delimit(0x12, value))
    end
    return concat(out)
end

-- Our own header value: the metadata Istio's sidecars send of themselves, from the local workload
-- the agent wrote (agent/telemetry/local-workload.ts), base64 with padding as Envoy writes it.
function _M.encode(w)
    if type(w) ~= "table" then
        return nil
    end
    local labels = {}
    local fields = { LABELS = labels }
    local function put(t, k, v)
        if type(v) == "string" and v ~= "" then
            t[k] = v
        end
    end
    put(fields, "NAME", w.instance)
    put(fields, "NAMESPACE", w.namespace)
    put(fields, "WORKLOAD_NAME", w.workload)
    put(fields, "CLUSTER_ID", w.cluster)
    put(labels, "app", w.app)
    put(labels, "version", w.version)
    put(labels, CANONICAL_NAME, w.canonical_service)
    put(labels, CANONICAL_REVISION, w.canonical_revision)
    return ngx.encode_base64(encode_struct(fields))
end

return _M
