-- wrk script for bench/load.py. Arguments after "--": the HTTP method and the most responses this thread may
-- receive (0: no cap), so that every load is bounded in count as well as by wrk's -d duration. At the cap the
-- thread stops and prints "WRKCAP"; wrk itself would still sleep out -d, so load.py then sends it SIGINT, which
-- ends the run at once with the usual summary. At the end it prints one line "WRKJSON {...}" with the figures
-- load.py reads (latencies in microseconds).
local cap, seen = 0, 0
local req

function init(args)
  local method = args[1] or "GET"
  cap = tonumber(args[2] or "0") or 0
  local body = nil
  if method == "PUT" or method == "POST" then
    body = ""  -- wrk then sends Content-Length: 0, as Zero Problem's empty PUT does
  end
  req = wrk.format(method, nil, nil, body)
end

function request()
  return req
end

function response(status, headers, body)
  seen = seen + 1
  if cap > 0 and seen == cap then
    wrk.thread:stop()
    io.write("WRKCAP\n")
    io.flush()
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"duration_us":%d,"requests":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,"status":%d,' ..
    '"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.duration, summary.requests, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
