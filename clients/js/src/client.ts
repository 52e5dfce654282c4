/**
 * `EnfClient`: one logical connection to the ENF session server that
 * survives dropped sockets, expiring tokens and server restarts.
 *
 * - Connects with a token from a provider, in the first `hello` frame.
 * - Before the token's `exp`, opens a second socket with a fresh token,
 *   follows again what the first followed, then moves over (make before
 *   break); on 4401 it reconnects with a fresh token too.
 * - Reconnects after a drop with jittered exponential backoff, re-joins every
 *   followed session with `since_seq` (and `presence.online` with `since_seq`
 *   for a notary that was online), and drops events already delivered, by
 *   `(topic, seq)`: the application sees each durable event once, in order.
 * - Requests not answered when a socket dropped are sent again with the same
 *   id: the server answers a repeat of an applied request with its first reply
 *   (docs/design.md "Idempotency"); ids are unique per client, never reused.
 *   `session.request` gets an `idempotency_key` when it has none.
 */

import { Backoff, type BackoffOptions } from "./backoff.js";
import { frameBytes, jsonCodec, type Codec } from "./codec.js";
import type { EnfEvent, EventName, ReplyData, RequestInput, RequestType } from "./contract.js";
import {
  EnfClosedError,
  EnfConnectionLostError,
  EnfError,
  EnfRequestError,
  EnfTimeoutError,
  EnfTooLargeError,
} from "./errors.js";
import { EventHub, type AnyHandler, type WaitOptions } from "./events.js";
import { Following } from "./following.js";
import { Link, LinkClosed, type Pending } from "./link.js";
import {
  CloseCode,
  MAX_FRAME_BYTES,
  isObject,
  type EventFrameOf,
  type ReplyFrame,
  type Welcome,
} from "./protocol.js";
import {
  socketFactory,
  wsUrl,
  type WebSocketConstructor,
  type WebSocketFactory,
} from "./socket.js";
import { randomBytes, randomUUID } from "./text.js";
import { tokenTimes, type TokenProvider, type TokenReason, type TokenTimes } from "./token.js";

export type ClientStatus = "idle" | "connecting" | "open" | "reconnecting" | "closed";

export interface StatusChange {
  status: ClientStatus;
  /** The close code that caused it, if a socket's close did. */
  code?: number;
  reason?: string;
  /** Set when the client closed for good because of an error. */
  error?: unknown;
}

/** What the SDK did again on a new connection, and what the server answered. */
export type Resync =
  | { kind: "session.join"; session_id: string; data: ReplyData<"session.join"> }
  | { kind: "presence.online"; data: ReplyData<"presence.online"> }
  | { kind: "presence.subscribe"; data: ReplyData<"presence.subscribe"> }
  /** A followed session or presence the server no longer lets us follow: the SDK stopped following it. */
  | {
      kind: "failed";
      request: "session.join" | "presence.online" | "presence.subscribe";
      session_id?: string;
      error: EnfRequestError;
    };

export interface EnfClientOptions {
  /** `ws(s)://host/v1/ws`, or the server's `http(s)://host` (then `/v1/ws`). */
  url: string;
  /** A JWT, or a function that returns one (called again for each fresh token needed). */
  token: string | TokenProvider;
  /** `jsonCodec` (default), or `msgpackCodec` from `@enf/client/msgpack`. */
  codec?: Codec;
  /** A WebSocket class (default: the global one; on Node 20, `ws`'s). */
  WebSocket?: WebSocketConstructor;
  /** Or a function that makes each socket (takes precedence over `WebSocket`). */
  createWebSocket?: WebSocketFactory;
  /** Reconnect delays: full jitter, from 250 ms doubling to 30 s. */
  backoff?: BackoffOptions;
  /** How long a request may wait for its reply, reconnects included. Default 30,000 ms. */
  requestTimeoutMs?: number;
  /** From a socket's creation to `welcome`. Default 10,000 ms. */
  connectTimeoutMs?: number;
  /**
   * How long before the token's `exp` a new connection replaces the open one:
   * at most this, at most a quarter of the token's lifetime. Default 30,000 ms.
   */
  refreshMarginMs?: number;
  /** Send a request again (same id, with backoff) when answered `unavailable`. Default true. */
  retryUnavailable?: boolean;
  /** Handlers' exceptions and frames that could not be read. Default: `console.error`. */
  onError?: (error: unknown, context: string) => void;
  /** Diagnostics (connections, closes, retries). Default: none. */
  log?: (message: string) => void;
}

export interface RequestOptions {
  /** Default: the client's `requestTimeoutMs`. */
  timeoutMs?: number;
  /**
   * Send it again after a reconnect if it was not answered (default true but
   * for `signal`, whose SDP would be stale). With false, such a request
   * rejects with `EnfConnectionLostError`.
   */
  retry?: boolean;
  signal?: AbortSignal;
}

export interface ClientStats {
  /** Sockets welcomed. */
  connections: number;
  /** Connections that replaced one lost (not a token refresh). */
  reconnects: number;
  /** Connections that replaced one whose token neared `exp`. */
  refreshes: number;
  /** Events dropped because their `(topic, seq)` was already delivered. */
  duplicatesDropped: number;
  /** Ephemeral events dropped from a socket being replaced. */
  ephemeralDropped: number;
  /** Events whose seq jumped past the next one expected (the contract says never). */
  gaps: number;
  /** Requests sent again after a reconnect or an `unavailable`. */
  retried: number;
  /** Replies to no request of ours (late, after a timeout). */
  strayReplies: number;
}

const DEFAULT_TIMEOUT_MS = 30_000;
const TOO_SLOW_DELAY_MS = 50;
const FLOOD_FLOOR_MS = 5_000;
const MAX_TOKEN_REFUSALS = 3;

export class EnfClient {
  private readonly url: string;
  private readonly makeSocket: WebSocketFactory;
  private readonly codec: Codec;
  private readonly codecs: Codec[];
  private readonly backoff: Backoff;
  private readonly options: Required<
    Pick<
      EnfClientOptions,
      "requestTimeoutMs" | "connectTimeoutMs" | "refreshMarginMs" | "retryUnavailable"
    >
  >;
  private readonly reportError: (error: unknown, context: string) => void;
  private readonly log: (message: string) => void;

  private state: ClientStatus = "idle";
  private primary: Link | undefined;
  /** A link being opened and resynced (a reconnect or a refresh). */
  private pending: Link | undefined;
  private establishing = false;
  /** Who waits for the next connection to be open (`reconnect()`); `fresh`: one with a new token. */
  private promoted: { fresh: boolean; resolve: () => void }[] = [];
  /** A fresh token was asked for while a connection was being made: make another after it. */
  private forceNext = false;
  private readonly draining = new Set<Link>();
  /** Requests to send when a link is ready, in order (new ones and retries). */
  private queue: Pending[] = [];
  private token: { value: string; times: TokenTimes } | undefined;
  private tokenRefusals = 0;
  private timers = new Set<ReturnType<typeof setTimeout>>();
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private refreshTimer: ReturnType<typeof setTimeout> | undefined;
  private watchdog: ReturnType<typeof setInterval> | undefined;
  private firstWelcome: {
    promise: Promise<Welcome>;
    resolve(w: Welcome): void;
    reject(e: unknown): void;
  };
  private fatal: unknown;
  private lastCloseCode: number | undefined;

  private readonly following = new Following();
  private readonly hub: EventHub;
  private readonly statusHandlers = new Set<(change: StatusChange) => void>();
  private readonly resyncHandlers = new Set<(resync: Resync) => void>();

  private readonly idPrefix = randomId();
  private nextId = 0;

  /** Counters, for diagnostics and tests. */
  readonly stats: ClientStats = {
    connections: 0,
    reconnects: 0,
    refreshes: 0,
    duplicatesDropped: 0,
    ephemeralDropped: 0,
    gaps: 0,
    retried: 0,
    strayReplies: 0,
  };

  /** The last `welcome`: who the server says we are. */
  welcome: Welcome | undefined;

  constructor(private readonly config: EnfClientOptions) {
    this.url = wsUrl(config.url);
    this.makeSocket = socketFactory(config.createWebSocket, config.WebSocket);
    this.codec = config.codec ?? jsonCodec;
    this.codecs = this.codec === jsonCodec ? [jsonCodec] : [this.codec, jsonCodec];
    this.backoff = new Backoff(config.backoff);
    this.options = {
      requestTimeoutMs: config.requestTimeoutMs ?? DEFAULT_TIMEOUT_MS,
      connectTimeoutMs: config.connectTimeoutMs ?? 10_000,
      refreshMarginMs: config.refreshMarginMs ?? 30_000,
      retryUnavailable: config.retryUnavailable ?? true,
    };
    this.reportError =
      config.onError ?? ((error, context) => console.error(`enf: ${context}`, error));
    this.log = config.log ?? (() => undefined);
    this.hub = new EventHub(this.reportError);
    let settle!: { resolve(w: Welcome): void; reject(e: unknown): void };
    const promise = new Promise<Welcome>((resolve, reject) => {
      settle = { resolve, reject };
    });
    promise.catch(() => undefined);
    this.firstWelcome = { promise, ...settle };
  }

  // -- public API ---------------------------------------------------------------

  get status(): ClientStatus {
    return this.state;
  }

  /** Connect (once; later calls return the same promise): resolves with the first `welcome`. */
  connect(): Promise<Welcome> {
    if (this.state === "idle") {
      this.setStatus({ status: "connecting" });
      void this.establish("initial");
    }
    return this.firstWelcome.promise;
  }

  /**
   * Send a request; resolves with its reply's data, rejects with
   * `EnfRequestError` (the server's `{code, message}`), `EnfTimeoutError`,
   * `EnfClosedError`, `EnfTooLargeError` or `EnfConnectionLostError`.
   * Connects first if `connect()` was not called.
   */
  request<T extends RequestType>(
    type: T,
    ...args: {} extends RequestInput<T>
      ? [data?: RequestInput<T>, options?: RequestOptions]
      : [data: RequestInput<T>, options?: RequestOptions]
  ): Promise<ReplyData<T>> {
    const [input, options = {}] = args;
    return this.send(type, prepare(type, input ?? {}), options, false) as Promise<ReplyData<T>>;
  }

  /** Call `handler` for each event of this name (`"*"`: every event). Returns an unsubscribe function. */
  on<N extends EventName>(name: N, handler: (event: EnfEvent<N>) => void): () => void;
  on(name: "*", handler: (event: EnfEvent) => void): () => void;
  on(name: string, handler: (event: never) => void): () => void {
    return this.hub.on(name, handler as AnyHandler);
  }

  /** Connection status changes (`connecting`, `open`, `reconnecting`, `closed`). */
  onStatus(handler: (change: StatusChange) => void): () => void {
    this.statusHandlers.add(handler);
    return () => {
      this.statusHandlers.delete(handler);
    };
  }

  /**
   * What the SDK re-did on each new connection: every re-join's reply (a
   * session's snapshot and, in a call, fresh `video` settings), the notary's
   * `presence.online`, a fresh presence list; or what the server refused.
   */
  onResync(handler: (resync: Resync) => void): () => void {
    this.resyncHandlers.add(handler);
    return () => {
      this.resyncHandlers.delete(handler);
    };
  }

  /**
   * Events as an async iterator, from now on (buffered until read). Ends
   * when the client closes, or when the loop is left.
   *
   *     for await (const event of client.events({ names: ["offer"] })) { … }
   */
  events<N extends EventName = EventName>(
    filter: { names?: readonly N[]; topic?: string } = {},
  ): AsyncIterableIterator<EnfEvent<N>> {
    return this.hub.events(filter.names, filter.topic) as AsyncIterableIterator<EnfEvent<N>>;
  }

  /** The next event of this name (from now on) that passes `options.match`. */
  waitFor<N extends EventName>(
    name: N,
    options: WaitOptions<EnfEvent<N>> = {},
  ): Promise<EnfEvent<N>> {
    return this.hub.waitFor(name, options as WaitOptions<EnfEvent>) as Promise<EnfEvent<N>>;
  }

  /** The last seq delivered on a topic (`session:<id>`, `notary:<id>`), 0 if none. */
  lastSeq(topic: string): number {
    return this.following.lastSeq(topic);
  }

  /** Sessions this client follows again after a reconnect. */
  followedSessions(): string[] {
    return this.following.followedSessions();
  }

  /** Stop following a session after reconnects (it stays followed on the open socket). */
  unfollow(sessionId: string): void {
    this.following.unfollow(sessionId);
  }

  /**
   * Replace the connection now (make before break); with `freshToken`, ask
   * the provider for a new token first (e.g. a token issued after a pause).
   */
  reconnect(options: { freshToken?: boolean } = {}): Promise<void> {
    if (this.state === "closed" || this.state === "idle") return Promise.resolve();
    // Resolves once a connection made after this call is open and resynced:
    // requests made after that go on it (with a fresh token, signed in with
    // that one; a connection already being made may hold an older token, so
    // another one follows it).
    const fresh = options.freshToken === true;
    const opened = new Promise<void>((resolve) => this.promoted.push({ fresh, resolve }));
    if (fresh) this.token = undefined;
    if (this.establishing) {
      if (fresh) this.forceNext = true;
    } else {
      this.clearReconnect();
      void this.establish(fresh ? "forced" : "reconnect");
    }
    return opened;
  }

  /** Close for good: pending requests reject with `EnfClosedError`. Safe to call twice. */
  async close(): Promise<void> {
    this.shutDown(undefined);
  }

  // -- requests -----------------------------------------------------------------

  private send(
    type: string,
    data: unknown,
    options: RequestOptions,
    internal: boolean,
    on?: Link,
  ): Promise<unknown> {
    if (this.state === "closed") {
      return Promise.reject(this.fatal ?? new EnfClosedError("the client is closed"));
    }
    const id = `${this.idPrefix}.${(this.nextId += 1)}`;
    const size = frameBytes(this.codec.encode({ id, type, data }));
    if (size > MAX_FRAME_BYTES) return Promise.reject(new EnfTooLargeError(type, size));
    return new Promise((resolve, reject) => {
      const timeoutMs = options.timeoutMs ?? this.options.requestTimeoutMs;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const aborted = (): void =>
        p.reject(options.signal?.reason ?? new EnfError(`${type}: aborted`));
      const p: Pending = {
        id,
        type,
        data,
        retry: options.retry ?? type !== "signal",
        internal,
        sent: false,
        resent: false,
        unavailable: 0,
        settled: false,
        resolve: (value) => {
          if (p.settled) return;
          p.settled = true;
          clearTimeout(timer);
          options.signal?.removeEventListener("abort", aborted);
          resolve(value);
        },
        reject: (error) => {
          if (p.settled) return;
          p.settled = true;
          clearTimeout(timer);
          options.signal?.removeEventListener("abort", aborted);
          this.forget(p);
          reject(error);
        },
      };
      timer = setTimeout(() => p.reject(new EnfTimeoutError(type, id, timeoutMs)), timeoutMs);
      if (options.signal?.aborted) return aborted();
      options.signal?.addEventListener("abort", aborted);
      if (on !== undefined) {
        if (!on.send(p)) p.reject(new LinkClosed(on.closeCode ?? CloseCode.ABNORMAL, "closed"));
        return;
      }
      this.queue.push(p);
      if (this.state === "idle") this.connect().catch(() => undefined);
      this.pump();
    });
  }

  /** Send what waits, on the primary link. */
  private pump(): void {
    const link = this.primary;
    if (link === undefined || link.state !== "ready") return;
    while (this.queue.length > 0) {
      const p = this.queue.shift()!;
      if (p.settled) continue;
      if (!link.send(p)) {
        // Its close is being reported: the request moves back with the others.
        return;
      }
    }
  }

  /** A settled request leaves wherever it waited. */
  private forget(p: Pending): void {
    const i = this.queue.indexOf(p);
    if (i >= 0) this.queue.splice(i, 1);
    for (const link of [this.primary, this.pending, ...this.draining]) {
      if (link?.inFlight.get(p.id) === p) {
        link.inFlight.delete(p.id);
        this.closeIfDrained(link);
      }
    }
  }

  private onReply(link: Link, frame: ReplyFrame): void {
    const p = frame.re === null ? undefined : link.inFlight.get(String(frame.re));
    if (p === undefined) {
      this.stats.strayReplies += 1;
      if (frame.re === null && !frame.ok)
        this.reportError(new Error(frame.error.message), "a frame the server could not read");
      return;
    }
    link.inFlight.delete(p.id);
    if (frame.ok) {
      this.following.observe(p.type, p.data, frame.data, this.welcome?.user_id);
      p.resolve(frame.data);
    } else if (
      frame.error.code === "unavailable" &&
      p.retry &&
      !p.internal &&
      this.options.retryUnavailable
    ) {
      // Nothing was applied (PROTOCOL §7): the same request again, later.
      p.unavailable += 1;
      const delay = Math.round(Math.random() * Math.min(5_000, 250 * 2 ** p.unavailable));
      this.log(`${p.type} ${p.id}: unavailable, again in ${delay} ms`);
      this.later(delay, () => {
        if (p.settled || this.state === "closed") return;
        this.stats.retried += 1;
        this.queue.push(p);
        this.pump();
      });
    } else {
      p.reject(new EnfRequestError(frame.error.code, frame.error.message, p.type, p.id));
    }
    this.closeIfDrained(link);
  }

  // -- events -------------------------------------------------------------------

  private onEvent(link: Link, frame: EventFrameOf): void {
    if (typeof frame.seq === "number") {
      if (!this.following.accept(frame as EventFrameOf & { seq: number })) {
        this.stats.duplicatesDropped += 1;
        return;
      }
      this.stats.gaps = this.following.gaps;
    } else if (link !== this.primary && this.primary?.state === "ready") {
      // Ephemeral: during a refresh both sockets get it; the primary's copy counts.
      this.stats.ephemeralDropped += 1;
      return;
    }
    this.hub.dispatch(frame as EnfEvent);
  }

  // -- connections ----------------------------------------------------------------

  /** Open a link, resync it, and make it the primary. One at a time. */
  private async establish(reason: TokenReason): Promise<void> {
    if (this.establishing || this.state === "closed") return;
    this.establishing = true;
    this.clearReconnect();
    let link: Link | undefined;
    try {
      const token = await this.tokenFor(reason);
      if (this.isClosed()) return;
      const current = this.primary?.tokenTimes.expMs;
      if (reason === "refresh" && current !== undefined && (token.times.expMs ?? 0) <= current) {
        // The provider gave no fresher token: keep this link until the server closes it (4401).
        this.log("token refresh: the provider returned no later exp; waiting for 4401");
        return;
      }
      link = new Link(
        this.url,
        token.value,
        token.times,
        this.codec,
        this.codecs,
        this.makeSocket,
        {
          onEvent: (l, f) => this.onEvent(l, f),
          onReply: (l, f) => this.onReply(l, f),
          onClose: (l, code, why) => this.onClose(l, code, why),
          onBadFrame: (_l, error) => this.reportError(error, "a frame that could not be read"),
        },
      );
      this.pending = link;
      this.log(`link ${link.n}: connecting (${reason})`);
      const welcome = await withTimeout(link.ready, this.options.connectTimeoutMs, () => {
        link?.close(CloseCode.NORMAL, "no welcome in time");
      });
      this.welcome = welcome;
      this.tokenRefusals = 0;
      const resynced = await this.resync(link);
      if (this.isClosed()) return;
      this.promote(link, reason);
      this.reportResync(resynced);
    } catch (error) {
      if (link !== undefined && link.state !== "closed")
        link.close(CloseCode.NORMAL, "not resynced");
      this.failed(error, reason);
    } finally {
      if (this.pending === link) this.pending = undefined;
      this.establishing = false;
      if (this.forceNext && !this.isClosed()) {
        // reconnect({freshToken}) came while this ran, perhaps with an older token.
        this.forceNext = false;
        void this.establish("forced");
        return;
      }
      // The primary closed while this ran, and this did not replace it.
      if (this.primary === undefined && !this.isClosed() && this.reconnectTimer === undefined) {
        this.scheduleReconnect(this.lastCloseCode);
      }
    }
  }

  /** Ask the provider for a token, unless the cached one has long enough to live. */
  private async tokenFor(reason: TokenReason): Promise<{ value: string; times: TokenTimes }> {
    const source = this.config.token;
    if (typeof source === "string") return { value: source, times: tokenTimes(source) };
    const cached = this.token;
    if (
      cached &&
      reason === "reconnect" &&
      (cached.times.expMs ?? Infinity) - Date.now() > this.marginFor(cached.times)
    ) {
      return cached;
    }
    const value = await source({ reason });
    if (typeof value !== "string" || value === "")
      throw new EnfError("the token provider returned no token");
    this.token = { value, times: tokenTimes(value) };
    return this.token;
  }

  private marginFor(times: TokenTimes): number {
    if (times.expMs === undefined) return 0;
    const lifetime = times.expMs - (times.iatMs ?? Date.now());
    return Math.min(this.options.refreshMarginMs, Math.max(0, lifetime / 4));
  }

  /** Follow again, on a new link, what the client follows; what the server answered. */
  private async resync(link: Link): Promise<Resync[]> {
    const results: Resync[] = [];
    const internal = (type: string, data: unknown): Promise<unknown> =>
      this.send(type, data, { retry: false }, true, link);
    const jobs = this.following.resync(this.welcome?.user_id).map((step) =>
      internal(step.type, step.data).then(
        async (data) => {
          results.push(
            step.session_id === undefined
              ? ({ kind: step.type, data } as Resync)
              : ({ kind: "session.join", session_id: step.session_id, data } as Resync),
          );
          if (step.then) await internal(step.then.type, step.then.data);
        },
        (error: unknown) => {
          // Refused (no longer ours, no longer allowed): stop following it; anything else: a failed link.
          const refused = ["not_found", "forbidden", "bad_request"];
          if (!(error instanceof EnfRequestError && refused.includes(error.code))) throw error;
          step.forget();
          results.push({ kind: "failed", request: step.type, session_id: step.session_id, error });
        },
      ),
    );
    const outcomes = await Promise.allSettled(jobs);
    const failure = outcomes.find((o): o is PromiseRejectedResult => o.status === "rejected");
    if (failure) throw failure.reason;
    return results;
  }

  private reportResync(results: readonly Resync[]): void {
    for (const r of results) {
      for (const handler of this.resyncHandlers) {
        try {
          handler(r);
        } catch (error) {
          this.reportError(error, "a resync handler threw");
        }
      }
    }
  }

  private promote(link: Link, reason: TokenReason): void {
    const old = this.primary;
    this.primary = link;
    this.stats.connections += 1;
    if (reason === "refresh") this.stats.refreshes += 1;
    else if (reason !== "initial") this.stats.reconnects += 1;
    this.backoff.reset();
    this.log(`link ${link.n}: open (${reason})`);
    if (old !== undefined && old.state !== "closed") {
      old.draining = true;
      this.draining.add(old);
      this.closeIfDrained(old);
    }
    this.scheduleRefresh(link);
    this.startWatchdog(link);
    this.setStatus({ status: "open" });
    this.firstWelcome.resolve(link.welcome!);
    const ready = this.promoted.filter((w) => !w.fresh || reason === "forced");
    this.promoted = this.promoted.filter((w) => !ready.includes(w));
    for (const w of ready) w.resolve();
    this.pump();
  }

  private closeIfDrained(link: Link): void {
    if (link.draining && link.inFlight.size === 0 && link.state !== "closed") {
      link.close(CloseCode.NORMAL, "replaced by a newer connection");
    }
  }

  private onClose(link: Link, code: number, reason: string): void {
    this.log(`link ${link.n}: closed ${code} ${reason}`);
    this.draining.delete(link);
    // Its internal requests (re-joins) fail with it; the client's go back in the queue.
    const waiting = [...link.inFlight.values()];
    link.inFlight.clear();
    const moved: Pending[] = [];
    for (const p of waiting) {
      if (p.internal) p.reject(new LinkClosed(code, reason));
      else if (!p.retry) p.reject(new EnfConnectionLostError(p.type, p.id));
      else {
        p.resent = true;
        moved.push(p);
      }
    }
    if (moved.length > 0) {
      this.stats.retried += moved.length;
      this.queue = [...moved, ...this.queue];
    }
    if (link !== this.primary) {
      this.pump();
      return; // a pending link's failure is handled where it is awaited
    }
    this.primary = undefined;
    this.lastCloseCode = code;
    this.stopTimers();
    if (this.state === "closed") return;
    if (code === CloseCode.PROTOCOL) {
      this.shutDown(
        new EnfClosedError(
          `the server closed with 4400 (protocol violation): ${reason}`,
          false,
          code,
        ),
      );
      return;
    }
    this.setStatus({ status: "reconnecting", code, reason });
    if (!this.establishing) this.scheduleReconnect(code);
  }

  /** A link could not be opened or resynced. */
  private failed(error: unknown, reason: TokenReason): void {
    if (this.state === "closed") return;
    const code = error instanceof LinkClosed ? error.code : undefined;
    this.log(`connecting failed (${reason}): ${String(error)}`);
    if (code === CloseCode.PROTOCOL) {
      this.shutDown(
        new EnfClosedError(`the server closed with 4400 (protocol violation)`, false, code),
      );
      return;
    }
    if (code === CloseCode.BAD_TOKEN && error instanceof LinkClosed) {
      this.token = undefined; // refused: never offered again
      this.tokenRefusals += 1;
      if (this.tokenRefusals >= MAX_TOKEN_REFUSALS || typeof this.config.token === "string") {
        this.shutDown(
          new EnfClosedError(`the server refused the token: ${error.reason}`, false, code),
        );
        return;
      }
    }
    if (this.primary?.state === "ready") {
      // A refresh failed while the old link still works: try again later.
      this.scheduleReconnect(code, "refresh");
      return;
    }
    if (this.state !== "reconnecting") this.setStatus({ status: "reconnecting", code });
    this.scheduleReconnect(code);
  }

  private scheduleReconnect(code: number | undefined, reason: TokenReason = "reconnect"): void {
    this.clearReconnect();
    let delay: number;
    let why = reason;
    if (code === CloseCode.TOO_SLOW) delay = Math.round(Math.random() * TOO_SLOW_DELAY_MS);
    else if (code === CloseCode.FLOOD) delay = this.backoff.next(FLOOD_FLOOR_MS);
    else if (code === CloseCode.BAD_TOKEN && this.backoff.attempts === 0 && reason !== "refresh") {
      delay = 0; // an expired token: a fresh one at once
      this.backoff.next();
    } else delay = this.backoff.next();
    if (code === CloseCode.BAD_TOKEN && reason !== "refresh") why = "expired";
    this.log(`reconnecting in ${delay} ms (${why})`);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      void this.establish(why);
    }, delay);
  }

  private clearReconnect(): void {
    if (this.reconnectTimer !== undefined) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
  }

  private scheduleRefresh(link: Link): void {
    if (this.refreshTimer !== undefined) clearTimeout(this.refreshTimer);
    this.refreshTimer = undefined;
    const exp = link.tokenTimes.expMs;
    if (exp === undefined || typeof this.config.token === "string") return;
    const delay = Math.max(0, exp - this.marginFor(link.tokenTimes) - Date.now());
    this.refreshTimer = setTimeout(() => {
      this.refreshTimer = undefined;
      if (this.primary === link && !this.establishing) void this.establish("refresh");
    }, delay);
  }

  /**
   * Browsers cannot see WebSocket pings: after a silent heartbeat interval
   * the SDK sends a `ping` request, and drops a link that stays silent for
   * another interval (a dead network), then reconnects.
   */
  private startWatchdog(link: Link): void {
    if (this.watchdog !== undefined) clearInterval(this.watchdog);
    const everyMs = Math.max(1, link.welcome?.heartbeat_s ?? 20) * 1000;
    let pinged = false;
    this.watchdog = setInterval(() => {
      if (this.primary !== link) return;
      const silent = Date.now() - link.lastHeard;
      if (silent < everyMs) {
        pinged = false;
        return;
      }
      if (pinged && silent >= 2 * everyMs) {
        this.log(`link ${link.n}: silent for ${silent} ms, dropping it`);
        link.close(4000, "no answer to ping");
        return;
      }
      if (!pinged) {
        pinged = true;
        this.send("ping", {}, { retry: false, timeoutMs: 2 * everyMs }, true, link).catch(
          () => undefined,
        );
      }
    }, everyMs / 2);
  }

  private stopTimers(): void {
    if (this.refreshTimer !== undefined) clearTimeout(this.refreshTimer);
    if (this.watchdog !== undefined) clearInterval(this.watchdog);
    this.refreshTimer = this.watchdog = undefined;
  }

  private later(delay: number, fn: () => void): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, delay);
    this.timers.add(t);
  }

  /** (A method: the compiler would narrow `this.state` across awaits.) */
  private isClosed(): boolean {
    return this.state === "closed";
  }

  private setStatus(change: StatusChange): void {
    if (this.state === change.status && change.status !== "reconnecting") return;
    this.state = change.status;
    for (const handler of this.statusHandlers) {
      try {
        handler(change);
      } catch (error) {
        this.reportError(error, "a status handler threw");
      }
    }
  }

  private shutDown(error: unknown): void {
    if (this.state === "closed") return;
    this.fatal = error;
    this.setStatus(error === undefined ? { status: "closed" } : { status: "closed", error });
    for (const w of this.promoted.splice(0)) w.resolve(); // what they send next is refused
    this.clearReconnect();
    this.stopTimers();
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    const links = [this.primary, this.pending, ...this.draining].filter(
      (l): l is Link => l !== undefined,
    );
    this.primary = this.pending = undefined;
    this.draining.clear();
    const waiting = [...this.queue, ...links.flatMap((l) => [...l.inFlight.values()])];
    this.queue = [];
    for (const link of links) {
      link.inFlight.clear();
      link.close(CloseCode.NORMAL, "client closed");
    }
    for (const p of waiting) {
      p.reject(
        error instanceof EnfClosedError
          ? new EnfClosedError(error.message, p.sent, error.closeCode)
          : new EnfClosedError("the client is closed", p.sent),
      );
    }
    this.hub.end();
    this.firstWelcome.reject(error ?? new EnfClosedError("the client is closed"));
  }
}

/** The data as sent: `session.request` gets an idempotency key if it has none. */
function prepare(type: string, data: unknown): unknown {
  if (type === "session.request" && isObject(data) && data.idempotency_key === undefined) {
    return { ...data, idempotency_key: randomUUID() };
  }
  return data;
}

/** A prefix for this client's request ids: unique per client, so that no id is ever reused. */
function randomId(): string {
  return Array.from(randomBytes(9), (b) => b.toString(36).padStart(2, "0")).join("");
}

function withTimeout<T>(promise: Promise<T>, ms: number, onTimeout: () => void): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      onTimeout();
      reject(new LinkClosed(CloseCode.ABNORMAL, `no welcome within ${ms} ms`));
    }, ms);
    promise.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(timer);
        reject(e);
      },
    );
  });
}
