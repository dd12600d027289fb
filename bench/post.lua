-- wrk script: POST a small OpenAI chat request (non-streaming). BODY_FILE overrides the body.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = os.getenv("BODY_FILE")
if f then
  local h = io.open(f, "r")
  wrk.body = h:read("*a")
  h:close()
else
  wrk.body = '{"model":"sim-model","messages":[{"role":"user","content":"Say hello to the benchmark."}],"max_tokens":16,"temperature":0}'
end
