// The guard's own CPU cost per call, measured in-process without gRPC: the
// same implementation called directly and through guarded(), with a verifier
// built exactly as the echo server builds it (JWKS from NATS KV, the
// revocation set fed by the AUTH stream) and the same tokens, round-robin.
// A cross-check of the end-to-end throughput ratio, which on a shared 2-core
// machine also carries the load generator and whatever else runs.
import {
  type CallContext,
  connectNats,
  createLogger,
  EventStore,
  guarded,
  KvJwksSource,
  Namespace,
  openJwksBucket,
  RevocationSet,
  TokenVerifier,
} from "@spool/kit";
import { AdminServiceService } from "@spool/proto/spool/admin/v1/admin.js";
import { summarize } from "../lib/summary.js";
import { bearerMetadata, type Metadata } from "./grpc.js";

export interface GuardCost {
  /** Calls per block. */
  callsPerBlock: number;
  /** Blocks per variant, interleaved. */
  blocks: number;
  /** Best block, ns per call: the implementation called directly. */
  plainNsPerCall: number;
  /** Best block, ns per call: through guarded() (cache hits: every token verified once beforehand). */
  guardedNsPerCall: number;
  /** guarded − plain, µs per call. */
  guardUsPerCall: number;
  /** Median block of each, for the spread. */
  plainMedianNs: number;
  guardedMedianNs: number;
}

export async function measureGuardCost(options: {
  env: Record<string, string>;
  tokens: readonly string[];
  audience: string;
  callsPerBlock?: number;
  blocks?: number;
}): Promise<GuardCost> {
  const { env, tokens } = options;
  const callsPerBlock = options.callsPerBlock ?? 50_000;
  const blocks = options.blocks ?? 5;
  const logger = createLogger({ service: "bench-guard-cost", level: "warn" });
  const namespace = new Namespace(env.SPOOL_STREAM_PREFIX ?? "");
  const nc = await connectNats({ url: env.SPOOL_NATS_URL ?? "", name: "bench-guard-cost" });
  const store = new EventStore(nc, { namespace });
  const revocations = new RevocationSet({ store, logger });
  try {
    await revocations.start();
    await revocations.ready;
    const verifier = new TokenVerifier({
      keys: new KvJwksSource(await openJwksBucket(nc, namespace)),
      issuer: env.SPOOL_AUTH_ISSUER ?? "spool-auth",
      audience: options.audience,
      revocations,
    });
    const plain = {
      listProjections: async () => ({ projections: [] }),
      getProjection: async () => ({ projection: undefined }),
      rebuildProjection: async () => ({ targetVersion: 0 }),
      listDeadLetters: async () => ({ deadLetters: [], nextPageToken: "" }),
      replayDeadLetter: async () => ({ deadLetter: undefined }),
    };
    const any = { kind: "any" } as const;
    const guard = guarded(AdminServiceService, plain, {
      verifier,
      policies: {
        listProjections: any,
        getProjection: any,
        rebuildProjection: any,
        listDeadLetters: any,
        replayDeadLetter: any,
      },
      rules: {
        listProjections: {},
        getProjection: {},
        rebuildProjection: {},
        listDeadLetters: {},
        replayDeadLetter: {},
      },
    });
    const metadata: Metadata[] = tokens.map(bearerMetadata);
    for (const token of tokens) await verifier.verify(token); // the steady state: every token cached

    // A fresh context object per call, as the handler adapter makes one; only `metadata` is read.
    type Handler = (request: object, ctx: CallContext) => Promise<unknown>;
    const run = async (fn: Handler, n: number): Promise<number> => {
      const t = process.hrtime.bigint();
      for (let i = 0; i < n; i++) {
        const ctx = { metadata: metadata[i % metadata.length] } as unknown as CallContext;
        await fn({}, ctx);
      }
      return Number(process.hrtime.bigint() - t) / n;
    };
    const direct: Handler = () => plain.listProjections();
    const viaGuard: Handler = (request, ctx) => guard.listProjections(request, ctx);
    await run(direct, callsPerBlock);
    await run(viaGuard, callsPerBlock);
    const a: number[] = [];
    const b: number[] = [];
    for (let i = 0; i < blocks; i++) {
      a.push(await run(direct, callsPerBlock));
      b.push(await run(viaGuard, callsPerBlock));
    }
    const sa = summarize(a);
    const sb = summarize(b);
    const plainNs = Math.min(...a);
    const guardedNs = Math.min(...b);
    return {
      callsPerBlock,
      blocks,
      plainNsPerCall: plainNs,
      guardedNsPerCall: guardedNs,
      guardUsPerCall: (guardedNs - plainNs) / 1000,
      plainMedianNs: sa.p50,
      guardedMedianNs: sb.p50,
    };
  } finally {
    await revocations.stop();
    await nc.drain();
  }
}
