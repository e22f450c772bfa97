-- wrk script of the benchmark (bench/driver.py sets the environment):
--   BENCH_METHOD  GET or POST (default GET)
--   BENCH_BODY    request body sent with Content-Type: application/json (POST only)
--   BENCH_EXPECT  text every 200 answer must contain, e.g. "result":9,
--   BENCH_TRACEPARENT  optional: a W3C traceparent sent with every request (the unsampled path)
-- Every 200 answer whose body lacks BENCH_EXPECT counts as a wrong answer; the
-- driver treats it like an error or a non-2xx answer: the run is invalid.
-- done() prints one line `BENCH_JSON {...}` with wrk's exact counters and
-- percentiles (microseconds), which the driver cross-checks with the text report.

local method = os.getenv("BENCH_METHOD") or "GET"
local body = os.getenv("BENCH_BODY")
local expect = os.getenv("BENCH_EXPECT") or ""
local traceparent = os.getenv("BENCH_TRACEPARENT")

wrk.method = method
if traceparent and traceparent ~= "" then
  wrk.headers["traceparent"] = traceparent
end
if method == "POST" then
  wrk.headers["Content-Type"] = "application/json"
  wrk.body = body or ""
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  wrong = 0
end

function response(status, headers, resp_body)
  if status == 200 and expect ~= "" and not string.find(resp_body, expect, 1, true) then
    wrong = wrong + 1
  end
end

function done(summary, latency, requests)
  local wrong_total = 0
  for _, thread in ipairs(threads) do
    wrong_total = wrong_total + (thread:get("wrong") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"wrong_body":%d,"mean_us":%.1f,"max_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout, wrong_total,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9)))
end
