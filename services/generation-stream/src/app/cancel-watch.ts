import type { ConsumerMessages } from "@nats-io/jetstream";
import { DeliverPolicy } from "@nats-io/jetstream";
import type { EventStore, Logger } from "@spool/kit";
import { GenerationEvents, Subjects } from "../domain/events.js";

/** Only the cancel request is decoded; the lifecycle's other events pass as unknown. */
const CancelEvents = GenerationEvents.pick("GenerationCancelRequested");

/**
 * Calls onCancel (once) when a cancel request lands on the generation's
 * lifecycle subject, including one already there. One ordered consumer per
 * running generation on this replica — as many as generations produced here,
 * not as many as followers. Returns a stop function.
 */
export function watchCancel(
  store: EventStore,
  logger: Logger,
  generationId: string,
  onCancel: (requestedBy: string) => void,
): () => void {
  let messages: ConsumerMessages | undefined;
  let stopped = false;
  void (async () => {
    try {
      const consumer = await store.js.consumers.get(store.namespace.stream("GEN"), {
        filter_subjects: store.namespace.subject(Subjects.generation(generationId)),
        deliver_policy: DeliverPolicy.All,
      });
      messages = await consumer.consume({ max_messages: 16 });
      if (stopped) await messages.close();
      for await (const m of messages) {
        const cancel = store
          .decode(m.info.stream, m)
          .map(CancelEvents.decode)
          .find((e) => e.type === "GenerationCancelRequested");
        if (cancel?.type === "GenerationCancelRequested") {
          onCancel(cancel.data.requestedBy);
          break;
        }
      }
    } catch (e) {
      if (!stopped) logger.warn({ err: e, generationId }, "cancel watch failed");
    }
  })();
  return () => {
    stopped = true;
    void messages?.close();
  };
}
