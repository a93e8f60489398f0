// Event types of the GEN stream (lifecycle, kept for good) and the output
// event carried on GEN_OUTPUT (what followers see).
import { defineStreams, eventType, family } from "@spool/kit";
import * as ev from "@spool/proto/spool/generation/v1/events.js";
import { GenerationEvent } from "@spool/proto/spool/generation/v1/generation.js";

const t = <T>(name: string, fns: Parameters<typeof eventType<T>>[1]) =>
  eventType<T>(`spool.generation.v1.${name}`, fns);

export const GenerationRequested = t("GenerationRequested", ev.GenerationRequested);
export const GenerationLeaseGranted = t("GenerationLeaseGranted", ev.GenerationLeaseGranted);
export const GenerationLeaseRenewed = t("GenerationLeaseRenewed", ev.GenerationLeaseRenewed);
export const GenerationRequeued = t("GenerationRequeued", ev.GenerationRequeued);
export const GenerationCancelRequested = t("GenerationCancelRequested", ev.GenerationCancelRequested);
export const GenerationFinished = t("GenerationFinished", ev.GenerationFinished);
/** The one message type of the output subjects. */
export const OutputEvent = t("GenerationEvent", GenerationEvent);

/** GEN holds each generation's lifecycle (kept for good); GEN_OUTPUT what followers see (retention configured). */
export const GenStreams = defineStreams({
  GEN: { subjects: { generation: family("gen.generation") } },
  GEN_OUTPUT: { subjects: { output: family("gen.output") } },
});
export const Subjects = { ...GenStreams.GEN.subjects, ...GenStreams.GEN_OUTPUT.subjects };

export const GEN_STREAM = GenStreams.GEN.definition();
export const outputStream = (retentionMs: number) =>
  GenStreams.GEN_OUTPUT.definition({ maxAgeMs: retentionMs });
