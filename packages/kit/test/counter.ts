// The example counter aggregate used by the kit's tests and benchmarks.
import { CounterIncremented, CounterNoted } from "@spool/proto/spool/example/v1/example.js";
import { defineEvents, type EventOf, unreachable } from "../src/event-codec.js";
import type { Reducer } from "../src/event-store.js";

export const CounterEvents = defineEvents(
  { CounterIncremented, CounterNoted },
  { prefix: "spool.example.v1." },
);
export type CounterEvent = EventOf<typeof CounterEvents>;

export const Incremented = CounterEvents.types.CounterIncremented;
export const Noted = CounterEvents.types.CounterNoted;

export interface Counter {
  total: bigint;
  increments: string[];
}

export const counterReducer: Reducer<Counter, CounterEvent> = {
  initial: () => ({ total: 0n, increments: [] }),
  decode: CounterEvents.decode,
  evolve: (state, event) => {
    switch (event.type) {
      case "CounterIncremented":
        return {
          total: state.total + event.data.amount,
          increments: [...state.increments, event.data.incrementId],
        };
      case "CounterNoted":
      case "unknown":
        return state;
      default:
        return unreachable(event);
    }
  },
};
