/**
 * Delivering events to the application: handlers by name, async iterators,
 * one-shot waits. A handler that throws is reported, and the others still run.
 */

import type { EnfEvent } from "./contract.js";
import { EnfClosedError, EnfError } from "./errors.js";

export type AnyHandler = (event: EnfEvent) => void;

interface Listener {
  names: ReadonlySet<string> | undefined;
  topic: string | undefined;
  push(event: EnfEvent): void;
  /** The client closed. */
  end(): void;
}

export interface WaitOptions<E> {
  /** Only an event for which this holds. */
  match?: (event: E) => boolean;
  /** Only events on this topic (`session:<id>`, `notary:<id>`, `presence`). */
  topic?: string;
  /** Default 30,000 ms. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

const DEFAULT_WAIT_MS = 30_000;

export class EventHub {
  private readonly handlers = new Map<string, Set<AnyHandler>>();
  private readonly listeners = new Set<Listener>();
  private ended = false;

  constructor(private readonly reportError: (error: unknown, context: string) => void) {}

  on(name: string, handler: AnyHandler): () => void {
    let set = this.handlers.get(name);
    if (set === undefined) this.handlers.set(name, (set = new Set()));
    set.add(handler);
    return () => {
      set.delete(handler);
    };
  }

  events(
    names: readonly string[] | undefined,
    topic: string | undefined,
  ): AsyncIterableIterator<EnfEvent> {
    const buffer: EnfEvent[] = [];
    let wake: ((r: IteratorResult<EnfEvent>) => void) | undefined;
    let done = this.ended;
    const finish = (): IteratorResult<EnfEvent> => {
      done = true;
      this.listeners.delete(listener);
      wake?.({ value: undefined, done: true });
      wake = undefined;
      return { value: undefined, done: true };
    };
    const listener: Listener = {
      names: names ? new Set(names) : undefined,
      topic,
      push: (event) => {
        if (wake === undefined) buffer.push(event);
        else {
          const w = wake;
          wake = undefined;
          w({ value: event, done: false });
        }
      },
      end: () => void finish(),
    };
    if (!done) this.listeners.add(listener);
    const iterator: AsyncIterableIterator<EnfEvent> = {
      next: () => {
        const value = buffer.shift();
        if (value !== undefined) return Promise.resolve({ value, done: false });
        if (done) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => {
          wake = resolve;
        });
      },
      return: () => Promise.resolve(finish()),
      [Symbol.asyncIterator]: () => iterator,
    };
    return iterator;
  }

  waitFor(name: string, options: WaitOptions<EnfEvent>): Promise<EnfEvent> {
    return new Promise((resolve, reject) => {
      if (this.ended) {
        reject(new EnfClosedError(`closed while waiting for ${name}`));
        return;
      }
      const timeoutMs = options.timeoutMs ?? DEFAULT_WAIT_MS;
      const settle = (outcome: () => void): void => {
        this.listeners.delete(listener);
        clearTimeout(timer);
        options.signal?.removeEventListener("abort", aborted);
        outcome();
      };
      const listener: Listener = {
        names: new Set([name]),
        topic: options.topic,
        push: (event) => {
          if (!options.match || options.match(event)) settle(() => resolve(event));
        },
        end: () => settle(() => reject(new EnfClosedError(`closed while waiting for ${name}`))),
      };
      const timer = setTimeout(
        () => settle(() => reject(new EnfError(`no ${name} event within ${timeoutMs} ms`))),
        timeoutMs,
      );
      const aborted = (): void =>
        settle(() => reject(options.signal?.reason ?? new EnfError("aborted")));
      options.signal?.addEventListener("abort", aborted);
      this.listeners.add(listener);
    });
  }

  dispatch(event: EnfEvent): void {
    for (const set of [this.handlers.get(event.name), this.handlers.get("*")]) {
      for (const handler of set ?? []) {
        try {
          handler(event);
        } catch (error) {
          this.reportError(error, `a handler of ${event.name} threw`);
        }
      }
    }
    for (const listener of [...this.listeners]) {
      if (listener.names && !listener.names.has(event.name)) continue;
      if (listener.topic !== undefined && listener.topic !== event.topic) continue;
      try {
        listener.push(event);
      } catch (error) {
        this.reportError(error, `a listener of ${event.name} threw`);
      }
    }
  }

  /** The client closed: iterators end, waits reject. */
  end(): void {
    this.ended = true;
    for (const listener of [...this.listeners]) listener.end();
    this.listeners.clear();
  }
}
