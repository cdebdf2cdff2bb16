-- wrk script for the load benchmark: invoke `echo` with a small JSON input.
-- CORRAL_KEY: the API key. WRK_DELAY_MS: pause per request and connection (0 = flat out).
wrk.method = "POST"
wrk.body = '{"action":"echo","input":{"message":"hello","n":[1,2,3]}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("CORRAL_KEY")
local pause = tonumber(os.getenv("WRK_DELAY_MS") or "0")
if pause > 0 then
  function delay() return pause end
end
