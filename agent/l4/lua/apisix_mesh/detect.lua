-- What a captured connection speaks, from its first bytes, without consuming them (peek):
-- Envoy's tls_inspector (SNI, ALPN) and http_inspector (HTTP/1.x, h2c) as istiod enables them.
-- Only called when the listener's chains differ by SNI, transport or application protocol, so
-- server-first protocols on ports istiod declares as TCP never wait for client bytes.
local byte = string.byte
local sub = string.sub

local MAX_CLIENT_HELLO = 16384 + 5

local _M = {}

local function u16(s, i)
    local a, b = byte(s, i, i + 1)
    return a * 256 + b
end

-- server name and ALPN list of a ClientHello held in `s` (one TLS record); nil when malformed
local function parse_client_hello(s)
    local n = #s
    if n < 5 + 4 + 2 + 32 + 1 or byte(s, 6) ~= 1 then
        return nil
    end
    local i = 5 + 4 + 2 + 32 + 1     -- record, handshake header, version, random, session id length
    i = i + byte(s, i)               -- session id
    if i + 2 > n then return nil end
    i = i + 1 + 2 + u16(s, i + 1)    -- cipher suites
    if i > n then return nil end
    i = i + 1 + byte(s, i)           -- compression methods
    if i + 1 > n then return {} end  -- no extensions
    local ext_end = math.min(n, i + 1 + u16(s, i))
    i = i + 2
    local out = {}
    while i + 3 <= ext_end do
        local ext_type, ext_len = u16(s, i), u16(s, i + 2)
        local body = i + 4
        local last = body + ext_len - 1
        if last > ext_end then break end
        -- lengths inside an extension are the client's word: never read past the extension
        if ext_type == 0 and ext_len >= 5 and byte(s, body + 2) == 0 then
            local len = u16(s, body + 3)
            if body + 4 + len <= last then
                out.sni = string.lower(sub(s, body + 5, body + 4 + len))
            end
        elseif ext_type == 16 and ext_len >= 2 then
            local j, stop = body + 2, math.min(last, body + 1 + u16(s, body))
            local alpn = {}
            while j <= stop do
                local l = byte(s, j)
                if j + l > stop then break end
                alpn[#alpn + 1] = sub(s, j + 1, j + l)
                j = j + 1 + l
            end
            out.alpn = alpn
        end
        i = body + ext_len
    end
    return out
end

local HTTP_METHODS = {
    GET = true, HEAD = true, POST = true, PUT = true, DELETE = true, CONNECT = true,
    OPTIONS = true, TRACE = true, PATCH = true, PRI = true, PROPFIND = true,
    PROPPATCH = true, MKCOL = true, COPY = true, MOVE = true, LOCK = true, UNLOCK = true,
}

-- { transport = "tls"|"raw_buffer", sni = ?, alpn = {...} }; nil, err when the client went away.
-- HTTP/1.x is recognised by its method token (at most 9 letters and a space), h2c by the
-- preface's "PRI " (its full preface follows); a short message that is not a method stops
-- the look at the first non-letter, so it never waits for bytes that will not come.
function _M.inspect(sock)
    local first, err = sock:peek(1)
    if not first then
        return nil, err
    end
    local b = byte(first)
    if b == 0x16 then
        local head = sock:peek(5)
        if not head then return { transport = "tls" } end
        local total = 5 + u16(head, 4)
        if total > MAX_CLIENT_HELLO then return { transport = "tls" } end
        local record = sock:peek(total)
        local hello = record and parse_client_hello(record) or {}
        return { transport = "tls", sni = hello.sni, alpn = hello.alpn or {} }
    end
    if b >= 0x41 and b <= 0x5a then
        for n = 2, 10 do
            local s = sock:peek(n)
            if not s then break end
            local last = byte(s, n)
            if last == 0x20 then
                local method = sub(s, 1, n - 1)
                if method == "PRI" then
                    return { transport = "raw_buffer", alpn = { "h2c" } }
                end
                if HTTP_METHODS[method] then
                    return { transport = "raw_buffer", alpn = { "http/1.1", "http/1.0" } }
                end
                break
            end
            if last < 0x41 or last > 0x5a then break end
        end
    end
    return { transport = "raw_buffer", alpn = {} }
end

_M.parse_client_hello = parse_client_hello

return _M
