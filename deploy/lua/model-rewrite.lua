-- tollgate model rewrite (envoy.filters.http.lua, after ext_authz, before the router).
--
-- Source of truth: deploy/lua/model-rewrite.lua. `node scripts/sync-envoy-lua.mjs` copies it into
-- envoy.yaml, deploy/kubernetes/base/envoy.yaml and deploy/istio/envoyfilter-tollgate.yaml;
-- test/envoy-lua.test.ts fails when a copy differs and runs this file under Lua 5.1 and LuaJIT.
--
-- When tollgate reroutes a call it adds x-tollgate-model to the upstream request (clients cannot
-- send that header: a header_mutation filter strips it before ext_authz). The route re-selected on
-- that header picks the cluster, but the provider serves whatever model the JSON body names, so the
-- body must name the same model or the caller gets the expensive model at the cheap model's price.
-- Hence, whenever x-tollgate-model is present:
--  * the whole body is read (request_handle:body() buffers it, whatever its size and framing:
--    content-length, chunked HTTP/1.1 or HTTP/2 without content-length);
--  * the body is checked as JSON (RFC 8259) and EVERY top-level "model" key is found, keys compared
--    after unescaping ("\u006dodel" is "model"), so duplicate keys cannot split what tollgate
--    counted (a last-key-wins parser) from what the provider reads (first or last key);
--  * each such value is replaced by the rerouted model (JSON-escaped); nested keys
--    (metadata.model, tools[].model) are left alone; content-length is set to the new length;
--  * if that cannot be done (not JSON, not an object, no top-level "model", a non-string "model",
--    no body) the request is refused here with a local JSON reply: fail closed, never forwarded
--    unrewritten. Envoy itself answers 413 if the body exceeds the connection's buffer limit.
-- Without x-tollgate-model nothing is read or changed.

local byte, sub, find, char, format = string.byte, string.sub, string.find, string.char, string.format

local ESCAPES = { [34] = '"', [92] = "\\", [47] = "/", [98] = "\b", [102] = "\f", [110] = "\n", [114] = "\r", [116] = "\t" }

-- The JSON string whose opening quote is at s: index just past its closing quote, or nil if it is
-- not a valid JSON string. With decode, also its text (code points >= 128 become "\255": enough to
-- compare with an ASCII key).
local function scan_string(body, s, decode)
  local j = s + 1
  local parts = decode and {} or nil
  while true do
    local q = find(body, '["\\%z\1-\31]', j)
    if q == nil then return nil end
    if parts and q > j then parts[#parts + 1] = sub(body, j, q - 1) end
    local c = byte(body, q)
    if c == 34 then return q + 1, parts and table.concat(parts) end
    if c ~= 92 then return nil end -- a raw control character
    local e = byte(body, q + 1)
    if e == 117 then -- \uXXXX
      local hex = sub(body, q + 2, q + 5)
      if not find(hex, "^%x%x%x%x$") then return nil end
      if parts then
        local cp = tonumber(hex, 16)
        parts[#parts + 1] = cp < 128 and char(cp) or "\255"
      end
      j = q + 6
    else
      local v = e and ESCAPES[e]
      if v == nil then return nil end
      if parts then parts[#parts + 1] = v end
      j = q + 2
    end
  end
end

-- A JSON number or literal at i: index just past it, or nil.
local function scan_scalar(body, i)
  local _, e = find(body, "^-?[1-9]%d*", i)
  if e == nil then _, e = find(body, "^-?0", i) end
  if e ~= nil then
    local _, f = find(body, "^%.%d+", e + 1)
    if f then e = f end
    _, f = find(body, "^[eE][+-]?%d+", e + 1)
    if f then e = f end
    return e + 1
  end
  for _, lit in ipairs({ "true", "false", "null" }) do
    if sub(body, i, i + #lit - 1) == lit then return i + #lit end
  end
  return nil
end

-- The spans {first, last} of every top-level "model" string value, or nil and the reason. Iterative
-- (an explicit stack), so deep nesting cannot overflow Lua's C stack.
local function model_values(body)
  local n = #body
  local i = select(2, find(body, "^[ \t\n\r]*", 1)) + 1
  if byte(body, i) ~= 123 then return nil, "the body is not a JSON object" end
  local stack, depth, spans = {}, 0, {}
  local state, is_model = "value", false
  while true do
    i = select(2, find(body, "^[ \t\n\r]*", i)) + 1
    if state == "after" and depth == 0 then
      if i <= n then return nil, "the body is not valid JSON" end
      return spans
    end
    local c = byte(body, i)
    if c == nil then return nil, "the body is not valid JSON (truncated)" end
    if state == "value" or state == "value_or_close" then
      if is_model and c ~= 34 then return nil, 'a top-level "model" is not a string' end
      if state == "value_or_close" and c == 93 then
        stack[depth] = nil
        depth = depth - 1
        i = i + 1
        state = "after"
      elseif c == 123 then
        depth = depth + 1
        stack[depth] = "o"
        i = i + 1
        state = "key_or_close"
      elseif c == 91 then
        depth = depth + 1
        stack[depth] = "a"
        i = i + 1
        state = "value_or_close"
      elseif c == 34 then
        local e = scan_string(body, i, false)
        if e == nil then return nil, "the body is not valid JSON" end
        if is_model then spans[#spans + 1] = { i, e - 1 } end
        i = e
        state = "after"
      else
        local e = scan_scalar(body, i)
        if e == nil then return nil, "the body is not valid JSON" end
        i = e
        state = "after"
      end
      is_model = false
    elseif state == "key" or state == "key_or_close" then
      if state == "key_or_close" and c == 125 then
        stack[depth] = nil
        depth = depth - 1
        i = i + 1
        state = "after"
      elseif c == 34 then
        local e, key = scan_string(body, i, depth == 1)
        if e == nil then return nil, "the body is not valid JSON" end
        i = select(2, find(body, "^[ \t\n\r]*", e)) + 1
        if byte(body, i) ~= 58 then return nil, "the body is not valid JSON" end
        i = i + 1
        is_model = depth == 1 and key == "model"
        state = "value"
      else
        return nil, "the body is not valid JSON"
      end
    else -- after a value inside a container
      local top = stack[depth]
      if c == 44 then
        i = i + 1
        state = top == "o" and "key" or "value"
      elseif (c == 125 and top == "o") or (c == 93 and top == "a") then
        stack[depth] = nil
        depth = depth - 1
        i = i + 1
      else
        return nil, "the body is not valid JSON"
      end
    end
  end
end

local function json_string(s)
  return '"' .. (string.gsub(s, '[%c"\\]', function(ch)
    if ch == '"' then return '\\"' end
    if ch == "\\" then return "\\\\" end
    return format("\\u%04x", byte(ch))
  end)) .. '"'
end

-- body with every top-level "model" value set to model; or nil and the reason.
function tollgate_rewrite_model(body, model)
  local spans, why = model_values(body)
  if spans == nil then return nil, why end
  if #spans == 0 then return nil, 'the body has no top-level "model"' end
  local out, last, value = {}, 1, json_string(model)
  for _, span in ipairs(spans) do
    out[#out + 1] = sub(body, last, span[1] - 1)
    out[#out + 1] = value
    last = span[2] + 1
  end
  out[#out + 1] = sub(body, last)
  return table.concat(out)
end

local function refuse(request_handle, status, why)
  request_handle:respond({ [":status"] = status, ["content-type"] = "application/json" },
    '{"error":{"message":"tollgate rerouted this request to another model but the gateway could not '
      .. "rewrite its body: " .. string.gsub(why, '"', '\\"')
      .. '","type":"invalid_request_error","code":"reroute_not_applied","param":"model"}}')
end

function envoy_on_request(request_handle)
  local headers = request_handle:headers()
  local model = headers:get("x-tollgate-model")
  if model == nil then return end
  if model == "" then return refuse(request_handle, "500", "empty x-tollgate-model") end
  local body = request_handle:body()
  if body == nil then return refuse(request_handle, "400", "the request has no body") end
  local ok, out, why = pcall(tollgate_rewrite_model, body:getBytes(0, body:length()), model)
  if not ok then return refuse(request_handle, "500", "internal error") end
  if out == nil then return refuse(request_handle, "400", why) end
  -- setBytes also sets content-length (Envoy's BufferWrapper::luaSetBytes, filters/common/lua/wrappers.cc)
  body:setBytes(out)
  if headers:get("content-length") ~= tostring(#out) then headers:replace("content-length", tostring(#out)) end
end
