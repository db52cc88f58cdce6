-- The labels of Istio's standard HTTP metrics (istio_requests_total and its histograms) for one
-- request through the sidecar, in Istio's order. Pure: the caller hands in what the request was
-- (direction, upstream name, status, …) and the local workload's labels (local_workload.lua, which
-- the agent writes from the pod's metadata). What the sidecar cannot know is Istio's `unknown`:
-- the peer's workload, app, version, canonical service and cluster unless its sidecar told them
-- through Istio's metadata exchange (peer_exchange.lua), and on outbound both principals.
--
-- Every value is bounded: at most MAX_VALUE bytes, and any byte outside printable ASCII, a quote
-- or a backslash becomes `_`, so a value never needs escaping and never breaks the exposition
-- format's UTF-8. The response code is a number 100-599 or "0"; the gRPC status 0-16 or "".
local byte, sub, gsub, find, match, tonumber, concat = string.byte, string.sub, string.gsub, string.find, string.match, tonumber, table.concat

local _M = {}

local UNKNOWN = "unknown"
local MAX_VALUE = 256

_M.NAMES = {
    "reporter",
    "source_workload", "source_workload_namespace", "source_principal", "source_app", "source_version",
    "source_canonical_service", "source_canonical_revision", "source_cluster",
    "destination_workload", "destination_workload_namespace", "destination_principal", "destination_app",
    "destination_version", "destination_service", "destination_service_name", "destination_service_namespace",
    "destination_canonical_service", "destination_canonical_revision", "destination_cluster",
    "request_protocol", "response_code", "grpc_response_status", "response_flags", "connection_security_policy",
}
local COUNT = #_M.NAMES

local function clean(value)
    if type(value) ~= "string" or value == "" then
        return UNKNOWN
    end
    if #value > MAX_VALUE then
        value = sub(value, 1, MAX_VALUE)
    end
    if find(value, '[%z\1-\31\127-\255"\\]') then
        value = gsub(value, '[%z\1-\31\127-\255"\\]', "_")
    end
    return value
end
_M.clean = clean

-- The local workload's labels as the source (outbound) or destination (inbound) side: workload,
-- namespace, principal, app, version, canonical service, canonical revision, cluster.
local LOCAL_FIELDS = { "workload", "namespace", "principal", "app", "version", "canonical_service", "canonical_revision", "cluster" }

function _M.local_side(w)
    local side = {}
    for i, field in ipairs(LOCAL_FIELDS) do
        side[i] = clean(type(w) == "table" and w[field] or nil)
    end
    return side
end

-- `outbound|port|subset|host` (Istio's cluster names) → the service host, its short name and its
-- namespace (`<name>.<namespace>.svc.<domain>` for Kubernetes services; other hosts, e.g. a
-- ServiceEntry's, are their own name in an unknown namespace).
function _M.service_of_cluster(cluster_name)
    if type(cluster_name) ~= "string" then
        return nil
    end
    local host = match(cluster_name, "^outbound|%d+|[^|]*|([^|]+)$")
    if not host then
        return nil
    end
    local name, namespace = match(host, "^([^.]+)%.([^.]+)%.svc%.")
    return host, name or host, namespace or UNKNOWN
end

-- nginx's status → Istio's response code: 499 (the client went away first) is Envoy's 0 with the
-- downstream-termination flag DC; anything outside 100-599 is 0.
function _M.response_code(status)
    if status == 499 then
        return "0", "DC"
    end
    if type(status) ~= "number" or status < 100 or status > 599 then
        return "0", "-"
    end
    return tostring(status), "-"
end

function _M.grpc_status(value)
    if type(value) ~= "string" or not match(value, "^%d%d?$") then
        return ""
    end
    return tonumber(value) <= 16 and value or ""
end

function _M.protocol(content_type)
    if type(content_type) == "string" and sub(content_type, 1, 16) == "application/grpc" then
        return "grpc"
    end
    return "http"
end

-- The local side's 8 values into the source (index 2-9) or destination (10-14, 18-20) labels.
local function put_side(out, side, outbound)
    if outbound then
        for i = 1, 8 do
            out[1 + i] = side[i]
        end
    else
        for i = 1, 5 do
            out[9 + i] = side[i]
        end
        for i = 6, 8 do
            out[12 + i] = side[i]
        end
    end
end

local function all_unknown(out, reporter)
    out[1] = reporter
    for i = 2, COUNT do
        out[i] = UNKNOWN
    end
    return out
end

--[[ What one request was:
  outbound          true: reporter source (the app's request out); false: destination
  local_side        _M.local_side(...)
  service, service_name, service_namespace   the destination service (nil: unknown)
  peer              the peer's workload from the metadata exchange ({ workload, namespace, app, … }), or nil
  peer_principal    inbound: the verified peer (mTLS), else nil
  local_principal   inbound mTLS: the workload's own SPIFFE id
  mtls              inbound: the request came over Istio's mTLS
  protocol, code, grpc_status, flags
]]
function _M.values(r)
    local out = all_unknown({}, r.outbound and "source" or "destination")
    put_side(out, r.local_side, r.outbound)
    if r.peer then
        -- what the peer's sidecar said of itself (peer_exchange.lua): the other side
        put_side(out, _M.local_side(r.peer), not r.outbound)
    end
    if r.outbound then
        -- Istio fills the source principal when the request left over mTLS; the TLS relay's
        -- handshake is not visible from the HTTP side
        out[4] = UNKNOWN
    else
        out[4] = clean(r.peer_principal)
        out[12] = r.mtls and clean(r.local_principal) or UNKNOWN
    end
    out[15] = clean(r.service)
    out[16] = clean(r.service_name)
    out[17] = clean(r.service_namespace)
    out[21] = r.protocol
    out[22] = r.code
    out[23] = r.grpc_status
    out[24] = r.flags
    -- Istio's destination reporter says mutual_tls or none; the source reporter does not know
    out[25] = r.outbound and UNKNOWN or (r.mtls and "mutual_tls" or "none")
    return out
end

-- The one series per reporter that takes the requests over the series bound: the reporter and the
-- local side kept, everything else unknown.
function _M.overflow(local_side, outbound)
    local out = all_unknown({}, outbound and "source" or "destination")
    put_side(out, local_side, outbound)
    return out
end

-- Istio's TCP metrics (istio_tcp_*) have the same labels but the response code and gRPC status.
local TCP_INDEXES = {}
_M.TCP_NAMES = {}
for i, name in ipairs(_M.NAMES) do
    if name ~= "response_code" and name ~= "grpc_response_status" then
        TCP_INDEXES[#TCP_INDEXES + 1] = i
        _M.TCP_NAMES[#_M.TCP_NAMES + 1] = name
    end
end

-- HTTP labels (_M.NAMES' order) → the TCP ones (_M.TCP_NAMES' order)
local function tcp_only(all)
    local out = {}
    for i, at in ipairs(TCP_INDEXES) do
        out[i] = all[at]
    end
    return out
end

-- One TCP connection's labels, in _M.TCP_NAMES' order: r as for values (protocol "tcp", code and
-- gRPC status ignored).
function _M.tcp_values(r)
    return tcp_only(_M.values(r))
end

-- The TCP overflow series: the reporter and the local side kept.
function _M.tcp_overflow(local_side, outbound)
    return tcp_only(_M.overflow(local_side, outbound))
end

-- The values joined into one string that identifies them: cheaper than label_text (one
-- concatenation instead of one per label), and unambiguous since no value holds a `"` (clean
-- replaces it; the other values are the module's own). The metric modules find a request's series
-- by it and build the label text only for a label set they have not seen.
function _M.identity(values)
    return concat(values, '"')
end

-- The values as the exposition format's label list (without braces): the series' identity.
-- names: _M.NAMES (the default) or _M.TCP_NAMES.
function _M.label_text(values, names)
    names = names or _M.NAMES
    local parts = {}
    for i = 1, #names do
        parts[i] = names[i] .. '="' .. values[i] .. '"'
    end
    return concat(parts, ",")
end

_M.COUNT = COUNT
_M.UNKNOWN = UNKNOWN
return _M
