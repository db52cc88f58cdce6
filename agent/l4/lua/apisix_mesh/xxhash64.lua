-- xxHash64 (seed 0) in LuaJIT's 64-bit integers: Envoy derives the value of a hash-policy cookie it
-- generates from it (HashUtil::xxHash64 of the client's address), so the sidecar does the same.
-- Inputs are short (an address), so the plain byte-wise reads are cheap enough.
local bit = require("bit")
local ffi = require("ffi")
local bxor, rol, rshift, tohex = bit.bxor, bit.rol, bit.rshift, bit.tohex
local byte = string.byte

local P1 = 0x9E3779B185EBCA87ULL
local P2 = 0xC2B2AE3D27D4EB4FULL
local P3 = 0x165667B19E3779F9ULL
local P4 = 0x85EBCA77C2B2AE63ULL
local P5 = 0x27D4EB2F165667C5ULL

local u64 = ffi.typeof("uint64_t")

local function read64(s, i)
    local v = u64(0)
    for k = 7, 0, -1 do
        v = v * 256 + byte(s, i + k)
    end
    return v
end

local function read32(s, i)
    local b1, b2, b3, b4 = byte(s, i, i + 3)
    return u64(b1 + b2 * 0x100 + b3 * 0x10000 + b4 * 0x1000000)
end

local function round(acc, lane)
    return rol(acc + lane * P2, 31) * P1
end

local function merge(h, acc)
    return bxor(h, round(0ULL, acc)) * P1 + P4
end

local _M = {}

--- the 64-bit hash of `s`, as uint64_t cdata
function _M.hash(s)
    local len = #s
    local i = 1
    local h
    if len >= 32 then
        local v1, v2, v3, v4 = P1 + P2, P2 + 0ULL, 0ULL, 0ULL - P1
        while i + 31 <= len do
            v1 = round(v1, read64(s, i))
            v2 = round(v2, read64(s, i + 8))
            v3 = round(v3, read64(s, i + 16))
            v4 = round(v4, read64(s, i + 24))
            i = i + 32
        end
        h = rol(v1, 1) + rol(v2, 7) + rol(v3, 12) + rol(v4, 18)
        h = merge(merge(merge(merge(h, v1), v2), v3), v4)
    else
        h = P5 + 0ULL
    end
    h = h + len
    while i + 7 <= len do
        h = rol(bxor(h, round(0ULL, read64(s, i))), 27) * P1 + P4
        i = i + 8
    end
    if i + 3 <= len then
        h = rol(bxor(h, read32(s, i) * P1), 23) * P2 + P3
        i = i + 4
    end
    while i <= len do
        h = rol(bxor(h, byte(s, i) * P5), 11) * P1
        i = i + 1
    end
    h = bxor(h, rshift(h, 33)) * P2
    h = bxor(h, rshift(h, 29)) * P3
    return bxor(h, rshift(h, 32))
end

--- 16 lowercase hex digits, as Envoy's Hex::uint64ToHex writes the hash
function _M.hex(s)
    return tohex(_M.hash(s), 16)
end

return _M
