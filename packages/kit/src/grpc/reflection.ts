// Server reflection needs the services' file descriptors. ts-proto output has
// none, so they come from a FileDescriptorSet compiled by `buf build` (exact
// compiler output, imports included); health.proto's come from
// grpc-health-check's own loaded definition.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { ReflectionService } from "@grpc/reflection";
import { lengthDelimited, stringField } from "./wire.js";

type PackageDefinition = ConstructorParameters<typeof ReflectionService>[0];

/** The encoded FileDescriptorProtos of a FileDescriptorSet (or buf image), kept byte for byte. */
export function fileDescriptorsOf(descriptorSet: Uint8Array): Buffer[] {
  return lengthDelimited(descriptorSet, 1).map((file) => Buffer.from(file));
}

/** Reads a descriptor set file, e.g. the output of `buf build -o spool.binpb`. */
export function readDescriptorSet(path: string): Uint8Array {
  return readFileSync(path);
}

/** Where the proto package ships the descriptor set of every Spool proto (built by its generate step). */
export const SPOOL_DESCRIPTOR_SET = "@spool/proto/descriptors.binpb";

/**
 * The Spool descriptor set when the proto package ships one; empty otherwise
 * (reflection then lists only the health service, and the server says so).
 */
export function spoolDescriptorSets(): Uint8Array[] {
  try {
    return [readDescriptorSet(createRequire(import.meta.url).resolve(SPOOL_DESCRIPTOR_SET))];
  } catch {
    return [];
  }
}

/** Fully-qualified names of the services a file declares. */
function servicesOf(file: Uint8Array): string[] {
  const pkg = stringField(file, 2);
  return lengthDelimited(file, 6).map((service) => {
    const name = stringField(service, 1);
    return pkg ? `${pkg}.${name}` : name;
  });
}

export interface Reflection {
  service: ReflectionService;
  /** Served services no descriptor declares: reflection cannot describe them. */
  missing: string[];
}

/**
 * Reflection over the given files, listing only the services this server
 * actually serves (a shared descriptor set declares every Spool service).
 */
export function createReflection(files: readonly Buffer[], servedServices: readonly string[]): Reflection {
  const declared = new Set(files.flatMap(servicesOf));
  const unique = dedupeByName(files);
  // @grpc/reflection reads only `fileDescriptorProtos` from each package entry.
  const pkg = { descriptors: { fileDescriptorProtos: unique } } as unknown as PackageDefinition;
  const services = servedServices.filter((s) => declared.has(s));
  return {
    service: new ReflectionService(pkg, { services }),
    missing: servedServices.filter((s) => !declared.has(s)),
  };
}

function dedupeByName(files: readonly Buffer[]): Buffer[] {
  const byName = new Map<string, Buffer>();
  for (const f of files) {
    const name = stringField(f, 1);
    if (!byName.has(name)) byName.set(name, f);
  }
  return [...byName.values()];
}
