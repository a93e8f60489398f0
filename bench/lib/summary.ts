// Summaries of measured values (latencies, delays): exact ones of small
// samples, a histogram for the millions of deliveries of a throughput step.

export interface Summary {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
}

/** Nearest-rank percentile of an ascending array. */
export function percentile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i] ?? Number.NaN;
}

/** Exact summary of a small sample (nearest-rank percentiles). */
export function summarize(values: readonly number[]): Summary {
  const sorted = Array.from(Float64Array.from(values).sort());
  const sum = sorted.reduce((a, b) => a + b, 0);
  return {
    count: sorted.length,
    p50: percentile(sorted, 0.5),
    p90: percentile(sorted, 0.9),
    p99: percentile(sorted, 0.99),
    p999: percentile(sorted, 0.999),
    max: sorted.at(-1) ?? Number.NaN,
    mean: sorted.length > 0 ? sum / sorted.length : Number.NaN,
  };
}

/**
 * Delay histogram: 10 µs buckets up to 100 ms, then 1 ms buckets up to 10
 * minutes; the maximum is exact. Percentiles are nearest-rank on bucket upper
 * bounds (so they read at most one bucket high).
 */
export class Histogram {
  static readonly FINE_MS = 100;
  static readonly FINE_STEP = 0.01;
  static readonly COARSE_MAX_MS = 600_000;
  readonly #fine = new Float64Array(Histogram.FINE_MS / Histogram.FINE_STEP);
  readonly #coarse = new Float64Array(Histogram.COARSE_MAX_MS - Histogram.FINE_MS + 1);
  count = 0;
  sum = 0;
  max = Number.NEGATIVE_INFINITY;

  record(valueMs: number): void {
    const v = Math.max(valueMs, 0);
    this.count++;
    this.sum += v;
    if (v > this.max) this.max = v;
    if (v < Histogram.FINE_MS) {
      const i = Math.floor(v / Histogram.FINE_STEP);
      this.#fine[i] = (this.#fine[i] ?? 0) + 1;
    } else {
      const i = Math.min(this.#coarse.length - 1, Math.floor(v - Histogram.FINE_MS));
      this.#coarse[i] = (this.#coarse[i] ?? 0) + 1;
    }
  }

  quantile(q: number): number {
    if (this.count === 0) return Number.NaN;
    const rank = Math.max(1, Math.ceil(q * this.count));
    let seen = 0;
    for (let i = 0; i < this.#fine.length; i++) {
      seen += this.#fine[i] ?? 0;
      if (seen >= rank) return Math.min(this.max, (i + 1) * Histogram.FINE_STEP);
    }
    for (let i = 0; i < this.#coarse.length; i++) {
      seen += this.#coarse[i] ?? 0;
      if (seen >= rank) return Math.min(this.max, Histogram.FINE_MS + i + 1);
    }
    return this.max;
  }

  summary(): Summary {
    return {
      count: this.count,
      p50: this.quantile(0.5),
      p90: this.quantile(0.9),
      p99: this.quantile(0.99),
      p999: this.quantile(0.999),
      max: this.count === 0 ? Number.NaN : this.max,
      mean: this.count === 0 ? Number.NaN : this.sum / this.count,
    };
  }
}
