-- wrk script: POST chat requests whose prompt differs every time (cache misses by construction).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local n = 0
-- Unique per run and per wrk thread: the time, plus the address of a table in this thread's Lua
-- state (math.random is not seeded, so it alone repeats the same prompts run after run, and a
-- second run against the same cache would measure hits).
local tag = tostring(os.time()) .. "-" .. tostring({}):sub(8)
request = function()
  n = n + 1
  local body = '{"model":"sim-model","messages":[{"role":"user","content":"miss ' .. tag .. ' ' .. n .. '"}],"max_tokens":16,"temperature":0}'
  return wrk.format(nil, nil, nil, body)
end
