-- The address a captured connection was sent to before the capture rules redirected it
-- (getsockopt SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST), in the stream subsystem, where
-- apisix-runtime has no variable for it.
--
-- The socket of the current stream session is reached through the stream request:
-- ngx_stream_lua_request_t starts with `ngx_connection_t *connection`, and ngx_connection_t's
-- fourth member is `ngx_socket_t fd` after three pointers (data, read, write). Both layouts have
-- been stable since nginx 1.9 / stream-lua 0.0.1; a test on the real runtime checks them.
local ffi = require("ffi")
local base = require("resty.core.base")

local C = ffi.C
local get_request = base.get_request

ffi.cdef([[
typedef struct {
    uint16_t family;
    uint16_t port;          /* network byte order */
    uint8_t  addr[4];
    uint8_t  zero[8];
} apisix_mesh_sockaddr_in;

typedef struct {
    uint16_t family;
    uint16_t port;          /* network byte order */
    uint32_t flowinfo;
    uint8_t  addr[16];
    uint32_t scope_id;
} apisix_mesh_sockaddr_in6;

int getsockopt(int sockfd, int level, int optname, void *optval, uint32_t *optlen);
const char *inet_ntop(int af, const void *src, char *dst, uint32_t size);
]])

local SOL_IP = 0
local SOL_IPV6 = 41
local SO_ORIGINAL_DST = 80       -- linux/netfilter_ipv4.h
local IP6T_SO_ORIGINAL_DST = 80  -- linux/netfilter_ipv6/ip6_tables.h
local AF_INET = 2
local AF_INET6 = 10

local sa6 = ffi.new("apisix_mesh_sockaddr_in6")
local len = ffi.new("uint32_t[1]")
local text = ffi.new("char[64]")

local _M = {}

-- A sockaddr's port (network byte order) as a number; handoff_steering.lua reads its sockets' too.
local function port_of(sa)
    local p = sa.port
    return bit.bor(bit.lshift(bit.band(p, 0xff), 8), bit.rshift(p, 8))
end
_M.port_of = port_of

-- The session's socket descriptor.
function _M.fd()
    local r = get_request()
    if r == nil then
        return nil
    end
    local connection = ffi.cast("void **", r)[0]
    return ffi.cast("int *", ffi.cast("void **", connection) + 3)[0]
end

-- ip (text), port, family ("ipv4" | "ipv6"); nil when the connection was not redirected.
function _M.get()
    local fd = _M.fd()
    if not fd or fd < 0 then
        return nil
    end
    len[0] = ffi.sizeof(sa6)
    if C.getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, sa6, len) == 0 then
        local sa4 = ffi.cast("apisix_mesh_sockaddr_in *", sa6)
        if sa4.family == AF_INET then
            local a = sa4.addr
            return a[0] .. "." .. a[1] .. "." .. a[2] .. "." .. a[3], port_of(sa4), "ipv4"
        end
    end
    len[0] = ffi.sizeof(sa6)
    if C.getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, sa6, len) == 0 and sa6.family == AF_INET6 then
        if C.inet_ntop(AF_INET6, sa6.addr, text, 64) ~= nil then
            return ffi.string(text), port_of(sa6), "ipv6"
        end
    end
    return nil
end

return _M
