/** Exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter"). */

export interface BackoffOptions {
  /** The first delay's ceiling, in ms. Default 250. */
  initialMs?: number;
  /** The largest ceiling, in ms. Default 30,000. */
  maxMs?: number;
  /** How much the ceiling grows per attempt. Default 2. */
  factor?: number;
}

export class Backoff {
  private attempt = 0;
  private readonly initialMs: number;
  private readonly maxMs: number;
  private readonly factor: number;

  constructor(
    options: BackoffOptions = {},
    private readonly random: () => number = Math.random,
  ) {
    this.initialMs = options.initialMs ?? 250;
    this.maxMs = options.maxMs ?? 30_000;
    this.factor = options.factor ?? 2;
  }

  /** The next delay: uniform in [0, min(max, initial · factor^attempt)], at least `floorMs`. */
  next(floorMs = 0): number {
    const ceiling = Math.min(this.maxMs, this.initialMs * this.factor ** this.attempt);
    this.attempt += 1;
    return Math.max(floorMs, Math.round(this.random() * ceiling));
  }

  get attempts(): number {
    return this.attempt;
  }

  reset(): void {
    this.attempt = 0;
  }
}
