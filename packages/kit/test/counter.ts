// The example counter aggregate used by the kit's tests and benchmarks.
import { CounterIncremented, CounterNoted } from "@spool/proto/spool/example/v1/example.js";
import type { Reducer } from "../src/event-store.js";
import { eventType } from "../src/events.js";

export const Incremented = eventType("spool.example.v1.CounterIncremented", CounterIncremented);
export const Noted = eventType("spool.example.v1.CounterNoted", CounterNoted);

export interface Counter {
  total: bigint;
  increments: string[];
}

export const counterReducer: Reducer<Counter> = {
  initial: () => ({ total: 0n, increments: [] }),
  evolve: (state, event) => {
    if (Incremented.is(event)) {
      const e = Incremented.decode(event.data);
      return { total: state.total + e.amount, increments: [...state.increments, e.incrementId] };
    }
    return state;
  },
};
