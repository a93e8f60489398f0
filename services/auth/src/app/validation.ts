import { type FieldViolation, InvalidArgumentError } from "@spool/kit";

/** Collects field violations and throws them together, so a caller fixes everything at once. */
export class Violations {
  readonly #list: FieldViolation[] = [];

  check(field: string, problem: string | undefined): this {
    if (problem) this.#list.push({ field, description: problem });
    return this;
  }

  required(field: string, value: string, max = 1_000): this {
    if (value.trim().length === 0) return this.check(field, "is required");
    if (value.length > max) return this.check(field, `must be at most ${max} characters`);
    return this;
  }

  throwIfAny(message = "invalid request"): void {
    if (this.#list.length > 0) throw new InvalidArgumentError(message, this.#list);
  }
}
