import { afterAll, beforeAll, inject } from "vitest";
import { type Isolated, isolate } from "./isolation.js";

/**
 * Gives the calling test file its own slice of the real servers, created
 * before its tests and removed after them.
 *
 *   const infra = useInfra("projector");
 *   it("...", () => { infra().natsUrl ... });
 */
export function useInfra(label = "t"): () => Isolated {
  let slice: Isolated | undefined;
  beforeAll(async () => {
    slice = await isolate(inject("infra"), label);
  });
  afterAll(async () => {
    await slice?.cleanup();
  });
  return () => {
    if (!slice)
      throw new Error("useInfra(): infrastructure is set up in beforeAll; use it inside tests or hooks");
    return slice;
  };
}
