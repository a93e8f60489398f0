/**
 * Stream and subject names take a configurable prefix so tests and
 * environments can share one NATS server. With prefix "t1", stream AUTH is
 * "t1_AUTH" and subject "auth.user.42" is "t1.auth.user.42". An empty prefix
 * leaves names as they are.
 */
export class Namespace {
  readonly prefix: string;
  constructor(prefix = "") {
    if (!/^[A-Za-z0-9_-]*$/.test(prefix)) {
      throw new Error(`invalid stream prefix ${JSON.stringify(prefix)}: letters, digits, '_' and '-' only`);
    }
    this.prefix = prefix;
  }

  stream(name: string): string {
    return this.prefix ? `${this.prefix}_${name}` : name;
  }

  subject(relative: string): string {
    return this.prefix ? `${this.prefix}.${relative}` : relative;
  }

  /** The subject without the prefix; the inverse of subject(). */
  relative(subject: string): string {
    if (!this.prefix) return subject;
    const head = `${this.prefix}.`;
    if (!subject.startsWith(head)) throw new Error(`subject ${subject} is outside namespace ${this.prefix}`);
    return subject.slice(head.length);
  }

  /** Durable consumer names: same prefix rule as streams. */
  consumer(name: string): string {
    return this.stream(name);
  }
}

/** A subject token safe to embed (ids): no dots, wildcards or whitespace. */
export function assertSubjectToken(token: string, what = "id"): string {
  if (!/^[A-Za-z0-9_-]{1,128}$/.test(token)) {
    throw new Error(
      `invalid ${what} ${JSON.stringify(token.slice(0, 40))}: 1-128 of letters, digits, '_' and '-'`,
    );
  }
  return token;
}
