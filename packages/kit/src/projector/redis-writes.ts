import type { Redis } from "ioredis";

/** One write of a Redis read model; keys are relative to the projector's key prefix. */
export type RedisWrite =
  | { op: "set"; key: string; value: string }
  | { op: "del"; key: string }
  | { op: "hset"; key: string; field: string; value: string }
  | { op: "hdel"; key: string; field: string }
  | { op: "hincrby"; key: string; field: string; by: number | bigint }
  | { op: "incrby"; key: string; by: number | bigint }
  | { op: "sadd"; key: string; member: string }
  | { op: "srem"; key: string; member: string }
  | { op: "zadd"; key: string; score: number; member: string }
  | { op: "zrem"; key: string; member: string };

/**
 * Applies a batch's writes and moves the checkpoint in one script, so Redis
 * runs them as one step. The projection's metadata hash must name the
 * batch's version in the given field ("version" live, "rebuild_version" for
 * a rebuild), so nothing is written to a retired version. Mode "batch"
 * applies only when the checkpoint field is below the batch's first sequence
 * (a redelivered batch is a no-op), then sets it to the last. Mode "once"
 * (replay of a dead letter) applies only if the guard key is absent, then
 * sets it.
 *
 * Redis does not roll a script back when a command fails halfway, so a first
 * pass checks every write against the keys' types and integer values (as the
 * batch's earlier writes leave them) and refuses the whole batch before
 * anything is written.
 *
 * KEYS: [metadata hash, guard (mode "once"; the hash again otherwise), ...one key per write]
 * ARGV: [mode, first, last, version field, version, checkpoint field,
 *        then per write: op, argument count, arguments...]
 * Returns 1 when applied, 0 when already applied, -1 when the version is not current.
 */
const APPLY_SCRIPT = `
local mode = ARGV[1]
if redis.call('HGET', KEYS[1], ARGV[4]) ~= ARGV[5] then return -1 end
if mode == 'batch' then
  local stored = tonumber(redis.call('HGET', KEYS[1], ARGV[6]) or '0')
  if stored >= tonumber(ARGV[2]) then return 0 end
elseif redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end

local kinds = { set = 'string', incrby = 'string', hset = 'hash', hdel = 'hash', hincrby = 'hash',
                sadd = 'set', srem = 'set', zadd = 'zset', zrem = 'zset' }
local keys = {}
local function state(k)
  local s = keys[k]
  if not s then
    s = { t = redis.call('TYPE', k).ok, v = {}, cleared = false }
    keys[k] = s
  end
  return s
end
local function value(k, s, field)
  local v = s.v[field or '']
  if v ~= nil then return v end
  if s.cleared then return false end
  if field then return redis.call('HGET', k, field) end
  return redis.call('GET', k)
end
local function integer(v)
  return (not v) or string.match(v, '^%-?%d+$') ~= nil
end

local a = 7
for i = 3, #KEYS do
  local k, op, n = KEYS[i], ARGV[a], tonumber(ARGV[a + 1])
  local s = state(k)
  if op == 'del' then
    s.t, s.v, s.cleared = 'none', {}, true
  elseif op == 'set' then
    s.t, s.v, s.cleared = 'string', { [''] = ARGV[a + 2] }, true
  else
    local want = kinds[op]
    if not want then return redis.error_reply('ERR unsupported write ' .. tostring(op)) end
    if s.t ~= 'none' and s.t ~= want then
      return redis.error_reply('WRONGTYPE ' .. op .. ' on ' .. k .. ', which holds a ' .. s.t)
    end
    s.t = want
    if op == 'incrby' then
      if not integer(value(k, s, nil)) then return redis.error_reply('ERR ' .. k .. ' is not an integer') end
      s.v[''] = '0'
    elseif op == 'hincrby' then
      local f = ARGV[a + 2]
      if not integer(value(k, s, f)) then return redis.error_reply('ERR ' .. k .. ' ' .. f .. ' is not an integer') end
      s.v[f] = '0'
    elseif op == 'hset' then
      s.v[ARGV[a + 2]] = ARGV[a + 3]
    elseif op == 'hdel' then
      s.v[ARGV[a + 2]] = false
    elseif op == 'zadd' and not tonumber(ARGV[a + 2]) then
      return redis.error_reply('ERR zadd score is not a number')
    end
  end
  a = a + 2 + n
end

a = 7
for i = 3, #KEYS do
  local n = tonumber(ARGV[a + 1])
  redis.call(ARGV[a], KEYS[i], unpack(ARGV, a + 2, a + 1 + n))
  a = a + 2 + n
end
if mode == 'batch' then
  redis.call('HSET', KEYS[1], ARGV[6], ARGV[3])
else
  redis.call('SET', KEYS[2], '1')
end
return 1
`;

const COMMAND = "spoolProjectionApply";

type ApplyCommand = (numKeys: number, ...args: (string | number)[]) => Promise<number>;

/** Registers the script on the client (EVALSHA, loaded again on NOSCRIPT by ioredis). */
function command(redis: Redis): ApplyCommand {
  const commands = redis as unknown as Record<string, ApplyCommand | undefined>;
  if (!commands[COMMAND]) redis.defineCommand(COMMAND, { lua: APPLY_SCRIPT });
  const fn = commands[COMMAND];
  if (!fn) throw new Error("ioredis did not define the projection script");
  return fn.bind(redis);
}

const INTEGER = /^-?\d+$/;

function args(w: RedisWrite): string[] {
  switch (w.op) {
    case "set":
      return [w.value];
    case "del":
      return [];
    case "hset":
      return [w.field, w.value];
    case "hdel":
      return [w.field];
    case "sadd":
    case "srem":
    case "zrem":
      return [w.member];
    case "hincrby":
      return [w.field, integerArg(w.by)];
    case "incrby":
      return [integerArg(w.by)];
    case "zadd":
      if (!Number.isFinite(w.score)) throw new Error(`zadd score ${w.score} is not a finite number`);
      return [String(w.score), w.member];
    default: {
      const unknown: never = w;
      throw new Error(`unsupported Redis write ${JSON.stringify(unknown)}`);
    }
  }
}

function integerArg(by: number | bigint): string {
  const s = String(by);
  if (!INTEGER.test(s)) throw new Error(`increment ${s} is not an integer`);
  return s;
}

export interface ApplyWritesOptions {
  /** Full key of the projection's metadata hash (version and checkpoint fields). */
  metaKey: string;
  /** The hash field that must hold `version`: "version" (live) or "rebuild_version". */
  versionField: string;
  version: number;
  /** Mode "batch": the hash field holding the checkpoint the batch moves. */
  checkpointField: string;
  /** Mode "once": full key of the replay guard. */
  guardKey?: string;
  mode: "batch" | "once";
  /** First and last stream sequence of the batch (mode "batch"). */
  first: number;
  last: number;
  /** Prepended to every write's key. */
  keyPrefix: string;
  writes: readonly RedisWrite[];
}

/**
 * Runs the apply script: "applied"; "already" when the batch was already
 * applied (checkpoint at or past its first sequence) or the replay guard was
 * already set; "retired" when the metadata no longer names the version.
 */
export async function applyRedisWrites(
  redis: Redis,
  o: ApplyWritesOptions,
): Promise<"applied" | "already" | "retired"> {
  if (o.mode === "once" && !o.guardKey) throw new Error("mode once needs a guard key");
  const keys = [o.metaKey, o.guardKey ?? o.metaKey, ...o.writes.map((w) => o.keyPrefix + w.key)];
  const argv: string[] = [
    o.mode,
    String(o.first),
    String(o.last),
    o.versionField,
    String(o.version),
    o.checkpointField,
  ];
  for (const w of o.writes) {
    const a = args(w);
    argv.push(w.op, String(a.length), ...a);
  }
  const result = await command(redis)(keys.length, ...keys, ...argv);
  return result === 1 ? "applied" : result === 0 ? "already" : "retired";
}
