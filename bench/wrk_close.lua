-- wrk script for the connection-rate benchmark: every request asks the server to close,
-- so each request is a new TCP connection; BENCH_DELAY_MS > 0 paces each connection
-- (fixed offered load for CPU accounting); done() prints one machine-readable line.
wrk.headers["Connection"] = "close"

local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
if delay_ms > 0 then
  function delay()
    return delay_ms
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d " ..
    "p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
