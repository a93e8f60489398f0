import type { TestProject } from "vitest/node";
import { type InfraUrls, type StartedInfra, startInfra } from "./infra.js";

declare module "vitest" {
  export interface ProvidedContext {
    infra: InfraUrls;
  }
}

let started: StartedInfra | undefined;

export async function setup(project: TestProject): Promise<void> {
  started = await startInfra();
  project.provide("infra", started.urls);
}

export async function teardown(): Promise<void> {
  await started?.stop();
}
