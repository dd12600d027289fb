-- wrk script: POST one fixed OpenAI chat request of about 420 bytes (issue 11's request size): a
-- system and a user message, max_tokens 16, temperature 0. STREAM=1 in the environment adds
-- "stream":true. BODY_FILE overrides the body.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local system = "You are a concise assistant taking part in a proxy benchmark. Answer in one short "
  .. "sentence, plainly, without lists, code or markdown, and do not ask follow-up questions."
local user = "Say hello to the benchmark and name one thing a reverse proxy in front of an "
  .. "inference server must never do to a streamed answer."
local stream = os.getenv("STREAM") == "1" and ',"stream":true' or ""
local f = os.getenv("BODY_FILE")
if f then
  local h = io.open(f, "r")
  wrk.body = h:read("*a")
  h:close()
else
  wrk.body = '{"model":"sim-model","messages":[{"role":"system","content":"' .. system
    .. '"},{"role":"user","content":"' .. user .. '"}],"max_tokens":16,"temperature":0' .. stream .. '}'
end
