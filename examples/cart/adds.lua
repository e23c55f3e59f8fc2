-- wrk's load for the cart API: every request adds one item to a user's cart, from a "web" or a "mobile"
-- device, with a unique Idempotency-Key. Consecutive requests of a thread go to the same user from the two
-- devices, on different connections: both devices of a user are in flight at once.
--
--   CART_USERS=50 wrk -t2 -c64 -d10s --latency --timeout 30s -s examples/cart/adds.lua http://127.0.0.1:8080
--
-- The server echoes the key (response header Idempotency-Key), which is how an answer is matched to its
-- request. done() prints, for `python -m examples.cart.versus` to check against the carts:
--   ACKED <user> <n>          2xx answers per user
--   PENDING <key> <user> <sku> sent, no 2xx answer (still in flight when wrk stopped, or refused)
--   LASTACK <key> <user> <sku> the last add of each user with a 2xx answer (per wrk thread): sent again,
--                              it must be answered as a replay and not added twice
--   STATUS <code> <n>         answers that were not 2xx
--   SUMMARY <requests> <duration us> <connect> <read> <write> <status> <timeout errors>
--   LATENCY <p50 us> <p90 us> <p99 us> <max us>

local users = tonumber(os.getenv("CART_USERS") or "50")
local skus = {"tee", "mug", "socks", "sticker"}
local threads = {}

function setup(thread)
   table.insert(threads, thread)
   thread:set("id", #threads)
end

function init(args)
   n = 0
   acked = {}    -- user -> 2xx count
   pending = {}  -- key -> "user sku"
   last = {}     -- user -> "key sku" of its last 2xx add
   statuses = {} -- non-2xx status -> count
end

function request()
   n = n + 1
   local pair = math.floor(n / 2)
   local user = "u" .. (pair % users)
   local device = (n % 2 == 0) and "web" or "mobile"
   local sku = skus[pair % #skus + 1]
   local key = user .. "." .. device .. "." .. id .. "." .. n
   pending[key] = user .. " " .. sku
   return wrk.format("POST", "/carts/" .. user .. "/items",
                     {["Content-Type"] = "application/json", ["Idempotency-Key"] = key},
                     '{"sku": "' .. sku .. '", "qty": 1}')
end

function response(status, headers, body)
   local key = headers["Idempotency-Key"]
   if status >= 200 and status < 300 and key ~= nil and pending[key] ~= nil then
      local user, sku = string.match(pending[key], "^(%S+) (%S+)")
      pending[key] = nil
      acked[user] = (acked[user] or 0) + 1
      last[user] = key .. " " .. sku
   else
      statuses[status] = (statuses[status] or 0) + 1
   end
end

function done(summary, latency, requests)
   for _, thread in ipairs(threads) do
      for user, count in pairs(thread:get("acked")) do
         io.write(string.format("ACKED %s %d\n", user, count))
      end
      for key, what in pairs(thread:get("pending")) do
         io.write(string.format("PENDING %s %s\n", key, what))
      end
      for user, what in pairs(thread:get("last")) do
         local key, sku = string.match(what, "^(%S+) (%S+)")
         io.write(string.format("LASTACK %s %s %s\n", key, user, sku))
      end
      for status, count in pairs(thread:get("statuses")) do
         io.write(string.format("STATUS %d %d\n", status, count))
      end
   end
   local e = summary.errors
   io.write(string.format("SUMMARY %d %d %d %d %d %d %d\n", summary.requests, summary.duration,
                          e.connect, e.read, e.write, e.status, e.timeout))
   io.write(string.format("LATENCY %d %d %d %d\n", latency:percentile(50), latency:percentile(90),
                          latency:percentile(99), latency.max))
end
