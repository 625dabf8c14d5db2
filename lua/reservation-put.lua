--[[
  reservation-put: on a Valkey Cluster, write a reservation record whose call's limits live in other
  slots (src/store/cluster.ts): the slot-by-slot check debits first, then records here what it debited,
  in the form lua/check-limits.lua writes (r, id, e), with the same expiry.

  KEYS[1]  the record   ARGV  1 the candidate's record  2 the reservation id  3 entries (JSON)  4 ttl ms
]]

redis.call('HSET', KEYS[1], 'r', ARGV[1], 'id', ARGV[2], 'e', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
