-- wrk script of the benchmark: sends prebuilt raw requests in turn, so that every request of a
-- case carries a different credential (and, for the ingestion cases, a 2 KiB body).
--
--   wrk -t2 -c32 -d3s -s bench/rotate.lua http://127.0.0.1:PORT/ -- REQUESTS_FILE
--   wrk -t2 -c32 -d3s -s bench/rotate.lua http://127.0.0.1:PORT/ -- FILE_A FILE_B SLICE GUARD
--
-- A REQUESTS_FILE holds complete HTTP/1.1 requests (request line, headers, blank line, body),
-- each followed by one NUL byte; bench/run.py writes it. Each wrk thread loads the whole list
-- and starts at a different place in it. Every case of a run goes through this script, the
-- unauthenticated ones included, so that the client does the same work in every case.
--
-- Paired mode (two files): the load alternates between the two cases in slices of SLICE ms of
-- the monotonic clock (even slices A, odd slices B, the same slices in every thread), so that
-- both cases see the same machine, whose speed here changes within a second. A request is
-- counted in its slice when it is sent, except in the first GUARD ms of each slice, when the
-- responses that trigger the sends may still be the other case's; the first and last slices
-- (partial) are not counted. In a closed loop every send follows a response, so the counts are
-- each case's throughput.
--
-- At the end one line "BENCH {json}" gives the totals and latency percentiles (microseconds),
-- and in paired mode the counted requests and milliseconds of each case.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } ka_bench_timespec;
int clock_gettime(int clk, ka_bench_timespec *ts);
]]
local CLOCK_MONOTONIC = 1
local ts = ffi.new("ka_bench_timespec")

local function now_ms()
   ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
   return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local counter = 0
local threads = {}

function setup(thread)
   counter = counter + 1
   thread:set("tid", counter)
   threads[counter] = thread
end

local function load(path)
   local f = assert(io.open(path, "rb"))
   local data = f:read("*a")
   f:close()
   local list, pos = {}, 1
   while true do
      local z = string.find(data, "\0", pos, true)
      if z == nil then
         break
      end
      list[#list + 1] = string.sub(data, pos, z - 1)
      pos = z + 1
   end
   if #list == 0 then
      error("no requests in " .. path)
   end
   return list
end

local lists, pos = {}, {}
-- Globals of each thread's Lua state, read by done() (main state) through thread:get.
slice, guard = nil, 0
counts = {} -- requests counted per slice number

function init(args)
   if args[1] == nil or (args[2] ~= nil and args[4] == nil) then
      error("usage: wrk ... -s rotate.lua URL -- REQUESTS_FILE [REQUESTS_FILE_B SLICE_MS GUARD_MS]")
   end
   lists[1] = load(args[1])
   if args[2] ~= nil then
      lists[2] = load(args[2])
      slice, guard = tonumber(args[3]), tonumber(args[4])
   end
   for k, list in ipairs(lists) do
      pos[k] = ((tid or 1) * 7919) % #list
   end
end

local function next_of(k)
   local list = lists[k]
   local i = pos[k] + 1
   if i > #list then
      i = 1
   end
   pos[k] = i
   return list[i]
end

function request()
   if slice == nil then
      return next_of(1)
   end
   local t = now_ms()
   local s = math.floor(t / slice)
   if t - s * slice >= guard then
      counts[s] = (counts[s] or 0) + 1
   end
   return next_of(s % 2 + 1)
end

-- Counted requests and milliseconds of each case ("a", "b"), over the whole slices of the run.
local function paired(slice, guard)
   local total, lo, hi = {}, nil, nil
   for _, thread in ipairs(threads) do
      for s, v in pairs(thread:get("counts")) do
         total[s] = (total[s] or 0) + v
         lo = (lo == nil or s < lo) and s or lo
         hi = (hi == nil or s > hi) and s or hi
      end
   end
   local n, ms = {0, 0}, {0, 0}
   if lo ~= nil then
      for s = lo + 1, hi - 1 do
         local k = s % 2 + 1
         n[k] = n[k] + (total[s] or 0)
         ms[k] = ms[k] + (slice - guard)
      end
   end
   return string.format(',"paired":{"a":%d,"a_ms":%d,"b":%d,"b_ms":%d}', n[1], ms[1], n[2], ms[2])
end

function done(summary, latency, requests)
   local e = summary.errors
   local slice = threads[1]:get("slice")
   io.write(string.format(
      'BENCH {"requests":%d,"duration_us":%d,"bytes":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"stdev_us":%.1f,"max_us":%d%s}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.mean, latency.stdev, latency.max, slice and paired(slice, threads[1]:get("guard")) or ""))
end
