-- TLS on a stream cosocket the way the relay needs it, which the cosocket API alone does not give
-- (stream-lua-nginx-module 0.0.16, lua-resty-core 0.1.31, nginx 1.27.1, OpenSSL 3):
--  * ALPN: cosockets cannot offer ALPN. OpenSSL copies the SSL_CTX's ALPN list into each new SSL
--    (SSL_new) and the cosocket handshake creates its SSL synchronously, so setting the list on
--    the SSL_CTX of this server's cosockets right before the handshake call gives that connection
--    exactly that list (no yield in between: no other connection of the worker can interleave).
--  * the client certificate chain and key as parsed cdata (ngx.ssl.parse_pem_*), handed to the
--    handshake directly: tlshandshake() would re-parse PEM on every connection.
--  * the peer's certificate chain after the handshake: the handshake runs with verification off
--    (nginx's name check knows DNS names only; Istio certificates carry a URI SAN), and the chain is
--    verified by peer_identity.lua before a byte of the client's data is sent.
-- The structure layouts below are those of the versions above (the same fields lua-resty-openssl's
-- auxiliary/nginx.lua reads; that module refuses nginx 1.27 and cannot be used). A layout change
-- in a later runtime breaks the handshake or the chain read, and the relay then refuses (fail
-- closed); the data-plane tests run on the real runtime.
local ffi = require("ffi")
local base = require("resty.core.base")
require("resty.core.socket.tcp") -- declares ngx_stream_lua_ffi_socket_tcp_tlshandshake & co
require("resty.openssl.include.ssl")
local x509 = require("resty.openssl.x509")
local chain_lib = require("resty.openssl.x509.chain")

local C = ffi.C
local ffi_str = ffi.string
local get_request = base.get_request
local co_yield = coroutine._yield
local FFI_OK = base.FFI_OK
local FFI_ERROR = base.FFI_ERROR

ffi.cdef[[
int SSL_CTX_set_alpn_protos(SSL_CTX *ctx, const unsigned char *protos, unsigned int protos_len);
X509 *SSL_get0_peer_certificate(const SSL *s);
OPENSSL_STACK *SSL_get_peer_cert_chain(const SSL *s);
void SSL_get0_alpn_selected(const SSL *s, const unsigned char **data, unsigned int *len);
void ERR_clear_error(void);
int SSL_session_reused(const SSL *s);
SSL_SESSION *SSL_get1_session(SSL *s);
int SSL_SESSION_is_resumable(const SSL_SESSION *s);
void SSL_SESSION_free(SSL_SESSION *s);
int SSL_shutdown(SSL *s);

typedef struct {
    SSL      *connection;
    SSL_CTX  *session_ctx;
} apisix_mesh_ngx_ssl_connection_t;

typedef struct {
    void      *data;
    void      *read;
    void      *write;
    int        fd;
    void      *recv;
    void      *send;
    void      *recv_chain;
    void      *send_chain;
    void      *listening;
    int64_t    sent;
    void      *log;
    void      *pool;
    int        type;
    void      *sockaddr;
    unsigned int socklen;
    size_t     addr_text_len;
    void      *addr_text_data;
    void      *proxy_protocol;
    void      *quic;
    apisix_mesh_ngx_ssl_connection_t *ssl;
} apisix_mesh_ngx_connection_t;

typedef struct {
    void      *read_prepare_retvals;
    void      *write_prepare_retvals;
    void      *read_event_handler;
    void      *write_event_handler;
    void      *socket_pool;
    void    ***conf;       /* ngx_stream_lua_srv_conf_t: its first field is ngx_ssl_t *ssl, whose first is SSL_CTX *ctx */
    void      *cleanup;
    void      *request;
    apisix_mesh_ngx_connection_t *peer_connection;  /* ngx_peer_connection_t starts with it */
} apisix_mesh_stream_lua_socket_t;
]]

local SOCKET_CTX_INDEX = 1
local errmsg = base.get_errmsg_ptr()
local session_ptr = ffi.new("void *[1]")
local server_name = ffi.new("ngx_str_t[1]")
local openssl_error_code = ffi.new("int[1]")
local alpn_data = ffi.new("const unsigned char *[1]")
local alpn_len = ffi.new("unsigned int[1]")

local _M = {}

-- ALPN protocol list in wire form (length-prefixed), at most 255 bytes per protocol.
function _M.alpn_wire(list)
    local parts = {}
    for i, p in ipairs(list or {}) do
        if #p == 0 or #p > 255 then
            return nil, "ALPN protocol " .. i .. " has a length of " .. #p
        end
        parts[i] = string.char(#p) .. p
    end
    return table.concat(parts)
end

local function upstream_of(sock)
    local u = sock[SOCKET_CTX_INDEX]
    if u == nil then
        return nil
    end
    return ffi.cast("apisix_mesh_stream_lua_socket_t*", u)
end

-- Handshake as a client on a connected cosocket: `cert` (parsed chain, leaf first) and `key`
-- presented, `sni` sent (may be empty), `alpn_wire` offered, `session` (from session()) offered
-- for resumption; no verification (see above). Returns true and whether the session was resumed.
function _M.handshake(sock, sni, alpn_wire, cert, key, session)
    local u = upstream_of(sock)
    if not u then
        return nil, "not a connected cosocket"
    end
    local r = get_request()
    if not r then
        return nil, "no request"
    end
    local ctx = ffi.cast("SSL_CTX*", u.conf[0][0])
    if ctx == nil then
        return nil, "no SSL_CTX for cosockets"
    end
    local wire = alpn_wire or ""
    -- returns 0 on success (sic); an empty list clears it
    if C.SSL_CTX_set_alpn_protos(ctx, wire, #wire) ~= 0 then
        C.ERR_clear_error()
        return nil, "cannot set the ALPN list"
    end
    if sni and #sni > 0 then
        server_name[0].data = sni
        server_name[0].len = #sni
    else
        server_name[0].data = nil
        server_name[0].len = 0
    end
    session_ptr[0] = nil
    -- enable_session_reuse 0: nginx would save the session at the end of the handshake, before a
    -- TLS 1.3 server's ticket arrives; session() takes it later
    local rc = C.ngx_stream_lua_ffi_socket_tcp_tlshandshake(r, sock[SOCKET_CTX_INDEX], session, 0, server_name,
                                                            0, 0, cert, key, errmsg)
    -- the SSL exists now: later handshakes of other connections may set other lists
    while true do
        if rc == FFI_ERROR then
            C.ERR_clear_error()
            return nil, ffi_str(errmsg[0])
        end
        if rc == FFI_OK then
            local ssl = _M.ssl_of(sock)
            return true, ssl ~= nil and C.SSL_session_reused(ssl) == 1
        end
        co_yield()
        rc = C.ngx_stream_lua_ffi_socket_tcp_get_tlshandshake_result(r, sock[SOCKET_CTX_INDEX], session_ptr,
                                                                      errmsg, openssl_error_code)
    end
end

function _M.ssl_of(sock)
    local u = upstream_of(sock)
    local c = u and u.peer_connection
    local s = c ~= nil and c.ssl
    if not s or s == nil or s.connection == nil then
        return nil
    end
    return s.connection
end

-- The peer's leaf and its chain (resty.openssl objects, copies), after a handshake.
function _M.peer_chain(sock)
    local ssl = _M.ssl_of(sock)
    if not ssl then
        return nil, nil, "no TLS connection"
    end
    local leaf_ptr = C.SSL_get0_peer_certificate(ssl)
    if leaf_ptr == nil then
        return nil, nil, "the server sent no certificate"
    end
    local leaf, err = x509.dup(leaf_ptr)
    if not leaf then
        return nil, nil, err
    end
    local stack = C.SSL_get_peer_cert_chain(ssl)
    local chain
    if stack ~= nil then
        chain, err = chain_lib.dup(stack)
        if not chain then
            return nil, nil, err
        end
    end
    return leaf, chain
end

-- The connection's session if it can be resumed (after the server's first data, a TLS 1.3 server's
-- ticket has arrived), freed when the Lua object is collected.
function _M.session(sock)
    local ssl = _M.ssl_of(sock)
    if not ssl then
        return nil
    end
    local session = C.SSL_get1_session(ssl)
    if session == nil then
        return nil
    end
    if C.SSL_SESSION_is_resumable(session) ~= 1 then
        C.SSL_SESSION_free(session)
        return nil
    end
    return ffi.gc(session, C.SSL_SESSION_free)
end

-- Forgets OpenSSL's queued errors (a failed verification leaves some; nginx would log them later
-- as "ignoring stale global SSL error" on an unrelated connection).
function _M.clear_errors()
    C.ERR_clear_error()
end

-- Sends TLS close_notify on the connection (SSL_shutdown once: our side is done, the peer may go on
-- sending, which TLS 1.3 and OpenSSL's reads after it allow). Only when no write is in progress
-- on the cosocket; the caller then shuts the TCP write side (sock:shutdown("send")), which the
-- cosocket API does without a close_notify. Returns true, or nil and why (the alert could not be
-- written at once, e.g. a full socket buffer: the FIN alone still ends the stream).
function _M.close_notify(sock)
    local ssl = _M.ssl_of(sock)
    if not ssl then
        return nil, "no TLS connection"
    end
    local rc = C.SSL_shutdown(ssl)
    C.ERR_clear_error()
    if rc < 0 then
        return nil, "close_notify not written"
    end
    return true
end

-- The protocol the server selected, or nil.
function _M.selected_alpn(sock)
    local ssl = _M.ssl_of(sock)
    if not ssl then
        return nil
    end
    C.SSL_get0_alpn_selected(ssl, alpn_data, alpn_len)
    if alpn_len[0] == 0 then
        return nil
    end
    return ffi_str(alpn_data[0], alpn_len[0])
end

return _M
