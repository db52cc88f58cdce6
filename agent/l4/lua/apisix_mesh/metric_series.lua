-- What Istio's HTTP metrics (istio_metrics.lua) and the L4 front's TCP metrics (l4_metrics.lua)
-- share: series kept in an nginx shared dictionary by every worker, registered so that a reader who
-- finds a series' id finds its labels and counters, never at the cost of another series' counts
-- (safe_add never evicts); the exposition's number format; warnings at most once a minute.
local floor = math.floor

local _M = {}

local function drop(d, counter_keys, label_key)
    for _, k in ipairs(counter_keys) do
        d:delete(k)
    end
    d:delete(label_key)
end

-- Registers series `id`: its counters (`counter_keys`, created at 0), then its label text under
-- `label_key`, then `index_key` → id. Returns the id that holds these labels (another worker's,
-- when it registered the same labels meanwhile: `id` stays a gap), or nil when the dict is full —
-- then with the error when a counter did not fit (the caller says so) — and nothing of `id` is left.
function _M.register(d, id, counter_keys, label_key, text, index_key)
    for _, k in ipairs(counter_keys) do
        local ok, err = d:safe_add(k, 0)
        if not ok and err ~= "exists" then
            drop(d, counter_keys, label_key)
            return nil, err
        end
    end
    local ok, err = d:safe_add(label_key, text)
    if not ok and err ~= "exists" then
        drop(d, counter_keys, label_key)
        return nil
    end
    ok, err = d:safe_add(index_key, id)
    if ok then
        return id
    end
    drop(d, counter_keys, label_key)
    return err == "exists" and d:get(index_key) or nil
end

-- A counter's value as the exposition format writes it: integers in full, others exactly.
function _M.number(v)
    if v == floor(v) and v < 1e15 then
        return string.format("%d", v)
    end
    return string.format("%.17g", v)
end

-- A function that logs its arguments at warn, after `prefix`, at most once a minute per worker.
function _M.complainer(prefix)
    local last = 0
    return function(...)
        local now = ngx.now()
        if now - last >= 60 then
            last = now
            ngx.log(ngx.WARN, prefix, ...)
        end
    end
end

return _M
