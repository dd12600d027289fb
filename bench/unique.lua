-- wrk script: POST chat requests whose prompt differs every time (cache misses by construction).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local n = 0
local tag = tostring(math.random(1, 1e9))
request = function()
  n = n + 1
  local body = '{"model":"sim-model","messages":[{"role":"user","content":"miss ' .. tag .. ' ' .. n .. '"}],"max_tokens":16,"temperature":0}'
  return wrk.format(nil, nil, nil, body)
end
