import type { RecordedEvent } from "../events.js";
import type { TransactionSql } from "../postgres.js";
import type { ProjectionSource } from "./types.js";

/** Physical table names of one version: names.counter_totals === "counter_totals_v3". */
export type TableNames<T extends string> = { readonly [K in T]: string };

export interface ApplyContext<T extends string> {
  /** The physical tables to write (the live version, or the one a rebuild fills). */
  tables: TableNames<T>;
  version: number;
  /** True while filling the tables of a rebuild. */
  rebuild: boolean;
}

/**
 * A PostgreSQL read model. Its tables are versioned: version N of logical
 * table "counter_totals" is "counter_totals_vN", and readers query the view
 * "counter_totals", which points at the version serving reads.
 *
 * Give apply (one event at a time) or applyBatch (a whole batch, for set-based
 * SQL); both run inside the transaction that also moves the checkpoint.
 */
export interface ProjectionDefinition<T extends string = string> extends ProjectionSource {
  /** Logical table names: lowercase letters, digits and '_', up to 50 characters. */
  tables: readonly T[];
  /** Creates one version's tables (and their indexes) under the given names. */
  migrate(tx: TransactionSql, tables: TableNames<T>): Promise<void>;
  apply?(tx: TransactionSql, event: RecordedEvent, context: ApplyContext<T>): Promise<void>;
  applyBatch?(tx: TransactionSql, events: readonly RecordedEvent[], context: ApplyContext<T>): Promise<void>;
}

/**
 * A projection over a codec's typed events: the kit decodes each recorded event
 * once (events.decode, e.g. an EventCodec) and apply / applyBatch get the
 * decoded union, to `switch` over.
 */
export interface TypedProjectionDefinition<T extends string, E>
  extends Omit<ProjectionDefinition<T>, "apply" | "applyBatch"> {
  events: { decode(event: RecordedEvent): E };
  apply?(tx: TransactionSql, event: E, context: ApplyContext<T>): Promise<void>;
  applyBatch?(tx: TransactionSql, events: readonly E[], context: ApplyContext<T>): Promise<void>;
}

/**
 * Identity for a projection over raw recorded events (type inference of the
 * table names); with `events`, wraps apply / applyBatch to decode once.
 */
export function defineProjection<T extends string, E>(
  definition: TypedProjectionDefinition<T, E>,
): ProjectionDefinition<T>;
export function defineProjection<T extends string>(
  definition: ProjectionDefinition<T>,
): ProjectionDefinition<T>;
export function defineProjection<T extends string, E>(
  definition: ProjectionDefinition<T> | TypedProjectionDefinition<T, E>,
): ProjectionDefinition<T> {
  if (!("events" in definition)) return definition;
  const { events: codec, apply, applyBatch, ...rest } = definition;
  return {
    ...rest,
    ...(apply ? { apply: (tx, event, context) => apply(tx, codec.decode(event), context) } : {}),
    ...(applyBatch
      ? { applyBatch: (tx, events, context) => applyBatch(tx, events.map(codec.decode), context) }
      : {}),
  };
}

const NAME = /^[a-z][a-z0-9_]{0,49}$/;

export function validateDefinition(definition: ProjectionDefinition<string>): void {
  if (!NAME.test(definition.name)) {
    throw new Error(
      `projection name ${JSON.stringify(definition.name)}: lowercase letters, digits, '_' (max 50)`,
    );
  }
  if (definition.tables.length === 0) throw new Error(`projection ${definition.name} declares no tables`);
  for (const t of definition.tables) {
    if (!NAME.test(t))
      throw new Error(`table name ${JSON.stringify(t)}: lowercase letters, digits, '_' (max 50)`);
  }
  if (!definition.apply && !definition.applyBatch) {
    throw new Error(`projection ${definition.name} needs apply or applyBatch`);
  }
}

export function tableNames<T extends string>(tables: readonly T[], version: number): TableNames<T> {
  return Object.fromEntries(tables.map((t) => [t, `${t}_v${version}`])) as TableNames<T>;
}

export async function applyEvents<T extends string>(
  definition: ProjectionDefinition<T>,
  tx: TransactionSql,
  events: readonly RecordedEvent[],
  context: ApplyContext<T>,
): Promise<void> {
  if (definition.applyBatch) {
    await definition.applyBatch(tx, events, context);
    return;
  }
  for (const event of events) await definition.apply?.(tx, event, context);
}
