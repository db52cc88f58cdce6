-- Keeps a handed-off connection in the worker whose front accepted it.
--
-- The hand-off listeners (APISIX's HTTP and TLS listeners on loopback) use `reuseport`: each worker
-- has its own listening socket and the kernel picks one by a hash of the addresses, so about half of
-- the hand-offs of a two-worker sidecar land in the other worker. Every request on such a connection
-- then wakes two processes instead of one (the front's worker and the HTTP listener's), which is
-- most of the hop's extra CPU at moderate rates (docs/l4.md). A classic BPF program attached to a
-- reuseport group picks the socket instead (SO_ATTACH_REUSEPORT_CBPF): the group's sockets are
-- indexed in the order nginx's master opened them, worker 0's first, and the front binds each
-- hand-off to a source address whose number, taken modulo the worker count, is its own worker's
-- (handoff.lua). The program reads that number from the packet's source address; an index outside
-- the group (a group of fewer sockets) makes the kernel fall back to its hash. Steering is only an
-- optimisation: when it cannot be attached the hand-off works as before and a warning says so.
local ffi = require("ffi")
-- declares the sockaddr type and getsockopt() this module uses too
local original_dst = require("apisix_mesh.original_dst")

local C = ffi.C

pcall(ffi.cdef, [[
typedef struct {
    uint16_t code;
    uint8_t  jt;
    uint8_t  jf;
    uint32_t k;
} apisix_mesh_sock_filter;

typedef struct {
    unsigned short len;
    apisix_mesh_sock_filter *filter;
} apisix_mesh_sock_fprog;
]])
pcall(ffi.cdef, "int setsockopt(int sockfd, int level, int optname, const void *optval, uint32_t optlen);")
pcall(ffi.cdef, "int getsockname(int sockfd, void *addr, uint32_t *addrlen);")

local SOL_SOCKET = 1
local SO_ACCEPTCONN = 30
local SO_ATTACH_REUSEPORT_CBPF = 51
local AF_INET = 2
-- the descriptors looked at for the listener: nginx's master opens its listening sockets first
local MAX_FD = 4096

-- Classic BPF: A = the IPv4 source address (SKF_NET_OFF + 12, from the network header);
-- A &= the host part of 127.128.0.0/9 (handoff.lua's address number); A %= workers; return A.
local BPF_LD_W_ABS = 0x20
local BPF_ALU_AND_K = 0x54
local BPF_ALU_MOD_K = 0x94
local BPF_RET_A = 0x16
local SKF_NET_OFF_SADDR = 0xFFF0000C   -- (-0x100000 + 12) as the unsigned k
local HANDOFF_HOST_MASK = 0x7FFFFF

local _M = {}

-- Per worker count, the program and the filter array it points at: kept here, as the struct's
-- pointer does not keep the array alive for LuaJIT's collector.
local programs = {}

local function program(workers)
    local p = programs[workers]
    if not p then
        local filter = ffi.new("apisix_mesh_sock_filter[4]")
        filter[0].code, filter[0].k = BPF_LD_W_ABS, SKF_NET_OFF_SADDR
        filter[1].code, filter[1].k = BPF_ALU_AND_K, HANDOFF_HOST_MASK
        filter[2].code, filter[2].k = BPF_ALU_MOD_K, workers
        filter[3].code, filter[3].k = BPF_RET_A, 0
        local fprog = ffi.new("apisix_mesh_sock_fprog")
        fprog.len = 4
        fprog.filter = filter
        p = { fprog = fprog, filter = filter }
        programs[workers] = p
    end
    return p.fprog
end

local sa = ffi.new("apisix_mesh_sockaddr_in")
local len = ffi.new("uint32_t[1]")
local flag = ffi.new("int[1]")

local function is_listener_on(fd, port)
    len[0] = ffi.sizeof(sa)
    if C.getsockname(fd, sa, len) ~= 0 or sa.family ~= AF_INET then
        return false
    end
    local a = sa.addr
    if original_dst.port_of(sa) ~= port or a[0] ~= 127 or a[1] ~= 0 or a[2] ~= 0 or a[3] ~= 1 then
        return false
    end
    len[0] = ffi.sizeof("int")
    return C.getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, flag, len) == 0 and flag[0] == 1
end

-- This process's listening socket on 127.0.0.1:`port`, or nil.
function _M.listener_fd(port)
    for fd = 0, MAX_FD do
        if is_listener_on(fd, port) then
            return fd
        end
    end
    return nil
end

-- Attaches the program to the reuseport group of 127.0.0.1:`port` (one attach serves the whole
-- group; each worker attaching again replaces it with the same program). true, or nil and why.
function _M.attach(port, workers)
    if workers < 2 then
        return true
    end
    local fd = _M.listener_fd(port)
    if not fd then
        return nil, "no listening socket on 127.0.0.1:" .. port .. " in this worker"
    end
    local fprog = program(workers)
    if C.setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog, ffi.sizeof(fprog)) ~= 0 then
        return nil, "setsockopt(SO_ATTACH_REUSEPORT_CBPF) on 127.0.0.1:" .. port .. " failed: errno " .. ffi.errno()
    end
    return true
end

local attached = {}

-- Once per worker and port, from the front's first hand-off to it.
function _M.ensure(port)
    if attached[port] ~= nil then
        return
    end
    local ok, err = _M.attach(port, ngx.worker.count())
    attached[port] = ok or false
    if not ok then
        ngx.log(ngx.WARN, "apisix-mesh: hand-offs to 127.0.0.1:", port, " are not kept in the front's worker: ", err)
    end
end

return _M
