-- wrk script: POST chat requests whose prompt differs every time (cache misses by construction),
-- otherwise like post.lua (about 420 bytes, STREAM=1 adds "stream":true).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local system = "You are a concise assistant taking part in a proxy benchmark. Answer in one short "
  .. "sentence, plainly, without lists, code or markdown, and do not ask follow-up questions."
local user = "Say hello to the benchmark and name one thing a proxy in front of an inference "
  .. "server must never do. #"
local stream = os.getenv("STREAM") == "1" and ',"stream":true' or ""
local n = 0
-- Unique per run and per wrk thread: the time, plus the address of a table in this thread's Lua
-- state (math.random is not seeded, so it alone repeats the same prompts run after run, and a
-- second run against the same cache would measure hits).
local tag = tostring(os.time()) .. "-" .. tostring({}):sub(8)
request = function()
  n = n + 1
  local body = '{"model":"sim-model","messages":[{"role":"system","content":"' .. system
    .. '"},{"role":"user","content":"' .. user .. tag .. ' ' .. n .. '"}],"max_tokens":16,"temperature":0'
    .. stream .. '}'
  return wrk.format(nil, nil, nil, body)
end
