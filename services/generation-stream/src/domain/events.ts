// Event types of the GEN stream (lifecycle, kept for good) and the output
// event carried on GEN_OUTPUT (what followers see).
import { defineEvents, defineStreams, eventType, family } from "@spool/kit";
import * as ev from "@spool/proto/spool/generation/v1/events.js";
import { GenerationEvent } from "@spool/proto/spool/generation/v1/generation.js";

/** The lifecycle events of the GEN stream; the type header is "spool.generation.v1." + the short name. */
export const GenerationEvents = defineEvents(
  {
    GenerationRequested: ev.GenerationRequested,
    GenerationLeaseGranted: ev.GenerationLeaseGranted,
    GenerationLeaseRenewed: ev.GenerationLeaseRenewed,
    GenerationRequeued: ev.GenerationRequeued,
    GenerationCancelRequested: ev.GenerationCancelRequested,
    GenerationFinished: ev.GenerationFinished,
  },
  { prefix: "spool.generation.v1." },
);

export const {
  GenerationRequested,
  GenerationLeaseGranted,
  GenerationLeaseRenewed,
  GenerationRequeued,
  GenerationCancelRequested,
  GenerationFinished,
} = GenerationEvents.types;
/** The one message type of the output subjects. */
export const OutputEvent = eventType("spool.generation.v1.GenerationEvent", GenerationEvent);

/** GEN holds each generation's lifecycle (kept for good); GEN_OUTPUT what followers see (retention configured). */
export const GenStreams = defineStreams({
  GEN: { subjects: { generation: family("gen.generation") } },
  GEN_OUTPUT: { subjects: { output: family("gen.output") } },
});
export const Subjects = { ...GenStreams.GEN.subjects, ...GenStreams.GEN_OUTPUT.subjects };

export const GEN_STREAM = GenStreams.GEN.definition();
/** JetStream's default dedupe window, shortened for a shorter retention (the window may not exceed max age). */
const OUTPUT_DUPLICATE_WINDOW_MS = 120_000;
export const outputStream = (retentionMs: number) =>
  GenStreams.GEN_OUTPUT.definition({
    maxAgeMs: retentionMs,
    duplicateWindowMs: Math.min(OUTPUT_DUPLICATE_WINDOW_MS, retentionMs),
  });
