// A projector in its own process, for tests that SIGKILL it at chosen points:
//   PROJECTOR_PAUSE_AFTER_COMMIT=n  after the n-th batch committed, print "PAUSED <seq>" and hang
//   PROJECTOR_HANG_IN_TX=n          in the n-th batch, after the rows are written but before the
//                                   checkpoint moves and the transaction commits, print "IN_TX <seq>" and hang
// Every commit prints "COMMITTED <last sequence>". It first prints "PID <pid>": tsx runs the
// script in a process of its own under the CLI, and a SIGKILL cannot be relayed, so the test
// kills this pid.
import { DeadLetterStore } from "../src/dead-letters.js";
import { EventStore } from "../src/event-store.js";
import { createLogger } from "../src/logger.js";
import { Namespace } from "../src/namespace.js";
import { connectNats } from "../src/nats.js";
import { createPool } from "../src/postgres.js";
import { defineProjection, Projector } from "../src/projector/index.js";
import { type CounterTables, counterProjection } from "./projector-counter.js";

const env = (name: string): string => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is required`);
  return v;
};
process.stdout.write(`PID ${process.pid}\n`);
const pauseAfterCommit = Number(process.env.PROJECTOR_PAUSE_AFTER_COMMIT ?? 0);
const hangInTx = Number(process.env.PROJECTOR_HANG_IN_TX ?? 0);
const hang = () => new Promise<never>(() => {});

const nc = await connectNats({ url: env("SPOOL_NATS_URL"), name: "projector-child" });
const store = new EventStore(nc, { namespace: new Namespace(env("SPOOL_STREAM_PREFIX")) });
const sql = createPool({ url: env("SPOOL_DATABASE_URL"), schema: env("PROJECTOR_SCHEMA"), max: 4 });
const base = counterProjection().definition;
let batches = 0;
const definition = defineProjection<CounterTables>({
  ...base,
  async applyBatch(tx, events, context) {
    batches++;
    await base.applyBatch?.(tx, events, context);
    if (batches === hangInTx) {
      process.stdout.write(`IN_TX ${events.at(-1)?.streamSequence}\n`);
      await hang();
    }
  },
});
let commits = 0;
const projector = new Projector(definition, {
  store,
  sql,
  deadLetters: new DeadLetterStore(sql),
  logger: createLogger({ service: "projector-child", level: "warn" }),
  batchSize: Number(process.env.PROJECTOR_BATCH_SIZE ?? 100),
  onBatchCommitted: async (b) => {
    commits++;
    process.stdout.write(`COMMITTED ${b.lastSequence}\n`);
    if (commits === pauseAfterCommit) {
      process.stdout.write(`PAUSED ${b.lastSequence}\n`);
      await hang();
    }
  },
});
await projector.start();
process.stdout.write("STARTED\n");
