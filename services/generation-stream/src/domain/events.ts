// Event types of the GEN stream (lifecycle, kept for good) and the output
// event carried on GEN_OUTPUT (what followers see).
import { eventType } from "@spool/kit";
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

export const Subjects = {
  generation: (id: string) => `gen.generation.${id}`,
  output: (id: string) => `gen.output.${id}`,
} as const;

export const GEN_STREAM = { name: "GEN", subjects: ["gen.generation.>"] };
export const outputStream = (retentionMs: number) => ({
  name: "GEN_OUTPUT",
  subjects: ["gen.output.>"],
  maxAgeMs: retentionMs,
});
