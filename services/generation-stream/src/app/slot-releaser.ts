import { type DeadLetterStore, type EventStore, type Logger, Reactor } from "@spool/kit";
import { GenerationFinished, GenStreams, Subjects } from "../domain/events.js";
import { generationReducer } from "../domain/generation.js";
import type { UserLimits } from "../limits/user-limits.js";
import { releaseSlot } from "./finish.js";

/**
 * Frees a user's active-generation slot when the generation finishes,
 * whichever way it ended (built-in worker, external producer, cancel before a
 * producer, lease sweeper) and even if the process that ended it died right
 * after. Releasing is idempotent, so redelivery is harmless.
 */
export function slotReleaser(deps: {
  store: EventStore;
  limits: UserLimits;
  deadLetters: DeadLetterStore;
  logger: Logger;
}): Reactor {
  return new Reactor({
    name: "gen_slot_releaser",
    store: deps.store,
    stream: GenStreams.GEN.name,
    filterSubject: Subjects.generation.all,
    deliverFrom: "new",
    deadLetters: deps.deadLetters,
    logger: deps.logger,
    handle: async (events) => {
      const finished = events.find((e) => GenerationFinished.is(e));
      if (!finished) return;
      const id = Subjects.generation.idOf(finished.subject);
      const { state } = await deps.store.load(Subjects.generation(id), generationReducer);
      if (state.kind !== "none") await releaseSlot(deps.limits, state.request.ownerId, id);
    },
  });
}
