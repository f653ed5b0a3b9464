-- wrk script of the benchmark: sends prebuilt raw requests in turn, so that every request of a
-- case carries a different credential (and, for the ingestion cases, a 2 KiB body).
--
--   wrk -t2 -c32 -d3s -s bench/rotate.lua http://127.0.0.1:PORT/ -- REQUESTS_FILE
--
-- REQUESTS_FILE holds complete HTTP/1.1 requests (request line, headers, blank line, body),
-- each followed by one NUL byte; bench/run.py writes it. Each wrk thread loads the whole list
-- and starts at a different place in it. Every case of a run goes through this script, the
-- unauthenticated ones included, so that the client does the same work in every case.
-- At the end one line "BENCH {json}" gives the totals and latency percentiles (microseconds).

local counter = 0

function setup(thread)
   counter = counter + 1
   thread:set("tid", counter)
end

local reqs, n, i = {}, 0, 0

function init(args)
   local path = args[1]
   if path == nil then
      error("usage: wrk ... -s rotate.lua URL -- REQUESTS_FILE")
   end
   local f = assert(io.open(path, "rb"))
   local data = f:read("*a")
   f:close()
   local pos = 1
   while true do
      local z = string.find(data, "\0", pos, true)
      if z == nil then
         break
      end
      n = n + 1
      reqs[n] = string.sub(data, pos, z - 1)
      pos = z + 1
   end
   if n == 0 then
      error("no requests in " .. path)
   end
   i = ((tid or 1) * 7919) % n
end

function request()
   i = i + 1
   if i > n then
      i = 1
   end
   return reqs[i]
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'BENCH {"requests":%d,"duration_us":%d,"bytes":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"stdev_us":%.1f,"max_us":%d}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.mean, latency.stdev, latency.max))
end
