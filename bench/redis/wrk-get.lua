-- wrk script of bench/redis/compare: GET one random key of KEYS per request, the key
-- `k:<12 digits>` appended to PATH_PREFIX ("/v1/state/" for hello-streams, "/GET/" for
-- webdis), so both servers see the same request mix apart from the URL shape.
-- done() prints one line "WRK_JSON {...}" (requests, duration, req/s, latency percentiles
-- in µs, wrk's error counts) for compare_lib.py record-wrk.
--
-- Environment: KEYS (number of keys loaded), PATH_PREFIX.
-- Usage: KEYS=100000 PATH_PREFIX=/v1/state/ wrk -t2 -c50 -d10s -s wrk-get.lua http://127.0.0.1:PORT

local keys = tonumber(os.getenv("KEYS") or "")
local prefix = os.getenv("PATH_PREFIX")
assert(keys and keys > 0, "KEYS must be a positive number")
assert(prefix, "PATH_PREFIX must be set")

-- Each wrk thread runs its own Lua state: give each a seed of its own so the threads do not
-- walk the same key sequence.
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end

function init(args)
  math.randomseed(os.time() * 1000 + (thread_id or 0) * 7919)
end

function request()
  return wrk.format("GET", string.format("%sk:%012d", prefix, math.random(0, keys - 1)))
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"rps": %.3f, "avg_us": %.3f, "stdev_us": %.3f, "min_us": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p95_us": %d, "p99_us": %d, "p999_us": %d, "max_us": %d, ' ..
    '"errors_connect": %d, "errors_read": %d, "errors_write": %d, ' ..
    '"errors_status": %d, "errors_timeout": %d}\n',
    summary.requests, summary.duration, summary.bytes,
    summary.requests / (summary.duration / 1e6), latency.mean, latency.stdev, latency.min,
    latency:percentile(50), latency:percentile(90), latency:percentile(95), latency:percentile(99),
    latency:percentile(99.9), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
