// @enf/client 0.1.0: the ENF session server's client SDK, built from clients/js
// by `npm run bundle` (esbuild). Do not edit: change clients/js/src and rebuild.

// src/backoff.ts
var Backoff = class {
  constructor(options = {}, random = Math.random) {
    this.random = random;
    this.initialMs = options.initialMs ?? 250;
    this.maxMs = options.maxMs ?? 3e4;
    this.factor = options.factor ?? 2;
  }
  random;
  attempt = 0;
  initialMs;
  maxMs;
  factor;
  /** The next delay: uniform in [0, min(max, initial · factor^attempt)], at least `floorMs`. */
  next(floorMs = 0) {
    const ceiling = Math.min(this.maxMs, this.initialMs * this.factor ** this.attempt);
    this.attempt += 1;
    return Math.max(floorMs, Math.round(this.random() * ceiling));
  }
  get attempts() {
    return this.attempt;
  }
  reset() {
    this.attempt = 0;
  }
};

// src/protocol.ts
var SUBPROTOCOL_JSON = "enf.v1.json";
var SUBPROTOCOL_MSGPACK = "enf.v1.msgpack";
var MAX_FRAME_BYTES = 65536;
var CloseCode = {
  /** Normal closure (the client's own close). */
  NORMAL: 1e3,
  /** The server is shutting down. */
  GOING_AWAY: 1001,
  /** Abnormal closure: no close frame (a dropped network, a killed server). */
  ABNORMAL: 1006,
  /** A frame over 65,536 bytes. */
  TOO_BIG: 1009,
  /** The client read too slowly: resume with `since_seq`. */
  TOO_SLOW: 1013,
  /** Protocol violation (a binary frame on `enf.v1.json`, text on msgpack). */
  PROTOCOL: 4400,
  /** The token in `hello` was refused, or the connection's token expired. */
  BAD_TOKEN: 4401,
  /** No `hello` within 5 s. */
  NO_HELLO: 4408,
  /** Sustained flooding, or too many open connections for this user. */
  FLOOD: 4429
};
var TERMINAL_STATES = ["COMPLETED", "CANCELLED", "FAILED"];
function isObject(value) {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

// src/text.ts
var g = globalThis;
var encoder = g.TextEncoder ? new g.TextEncoder() : void 0;
var decoder = g.TextDecoder ? new g.TextDecoder() : void 0;
function utf8Length(text) {
  return encoder ? encoder.encode(text).byteLength : utf8LengthSlow(text);
}
function utf8LengthSlow(text) {
  let bytes = 0;
  for (const ch of text) {
    const cp = ch.codePointAt(0);
    bytes += cp < 128 ? 1 : cp < 2048 ? 2 : cp < 65536 ? 3 : 4;
  }
  return bytes;
}
function utf8Decode(bytes) {
  return decoder ? decoder.decode(bytes) : utf8DecodeSlow(bytes);
}
function utf8DecodeSlow(bytes) {
  let out = "";
  for (let i = 0; i < bytes.length; ) {
    const b = bytes[i];
    const n = b < 128 ? 1 : b >= 240 ? 4 : b >= 224 ? 3 : 2;
    let cp = n === 1 ? b : b & 255 >> n + 1;
    for (let k = 1; k < n; k++) cp = cp << 6 | (bytes[i + k] ?? 0) & 63;
    out += String.fromCodePoint(cp);
    i += n;
  }
  return out;
}
var B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
function base64Decode(data) {
  const clean = data.replace(/=+$/, "");
  if (!g.atob) return base64DecodeSlow(clean);
  return Uint8Array.from(
    g.atob(clean + "=".repeat((4 - clean.length % 4) % 4)),
    (c) => c.charCodeAt(0)
  );
}
function base64DecodeSlow(data) {
  const clean = data.replace(/=+$/, "");
  const out = [];
  let bits = 0;
  let value = 0;
  for (const ch of clean) {
    const v = B64.indexOf(ch);
    if (v < 0) throw new Error("not base64");
    value = value << 6 | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push(value >> bits & 255);
    }
  }
  return Uint8Array.from(out);
}
function randomBytes(n) {
  const bytes = new Uint8Array(n);
  if (g.crypto?.getRandomValues) return g.crypto.getRandomValues(bytes);
  for (let i = 0; i < n; i++) bytes[i] = Math.floor(Math.random() * 256);
  return bytes;
}
function randomUUID() {
  return g.crypto?.randomUUID ? g.crypto.randomUUID() : uuidOf(randomBytes(16));
}
function uuidOf(random) {
  const b = Uint8Array.from(random);
  b[6] = b[6] & 15 | 64;
  b[8] = b[8] & 63 | 128;
  const hex = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

// src/codec.ts
function frameBytes(encoded) {
  if (typeof encoded !== "string") return encoded.byteLength;
  return encoded.length * 3 <= 65536 ? encoded.length : utf8Length(encoded);
}
var jsonCodec = {
  subprotocol: SUBPROTOCOL_JSON,
  binary: false,
  encode: (frame) => JSON.stringify(frame),
  decode: (data) => JSON.parse(typeof data === "string" ? data : utf8Decode(data))
};

// src/errors.ts
var EnfError = class extends Error {
  name = "EnfError";
};
var EnfRequestError = class extends EnfError {
  constructor(code, message, type, id) {
    super(`${type}: ${code}: ${message}`);
    this.code = code;
    this.type = type;
    this.id = id;
  }
  code;
  type;
  id;
  name = "EnfRequestError";
};
var EnfTimeoutError = class extends EnfError {
  constructor(type, id, timeoutMs) {
    super(`${type}: no reply within ${timeoutMs} ms`);
    this.type = type;
    this.id = id;
  }
  type;
  id;
  name = "EnfTimeoutError";
};
var EnfClosedError = class extends EnfError {
  constructor(message, maybeApplied = false, closeCode) {
    super(message);
    this.maybeApplied = maybeApplied;
    this.closeCode = closeCode;
  }
  maybeApplied;
  closeCode;
  name = "EnfClosedError";
};
var EnfConnectionLostError = class extends EnfError {
  constructor(type, id) {
    super(
      `${type}: the connection dropped before the reply (not retried; it may have been applied)`
    );
    this.type = type;
    this.id = id;
  }
  type;
  id;
  name = "EnfConnectionLostError";
  maybeApplied = true;
};
var EnfTooLargeError = class extends EnfError {
  constructor(type, bytes) {
    super(`${type}: the frame is ${bytes} bytes, over the 65,536 the server accepts`);
    this.type = type;
  }
  type;
  name = "EnfTooLargeError";
  code = "too_large";
};

// src/events.ts
var DEFAULT_WAIT_MS = 3e4;
var EventHub = class {
  constructor(reportError) {
    this.reportError = reportError;
  }
  reportError;
  handlers = /* @__PURE__ */ new Map();
  listeners = /* @__PURE__ */ new Set();
  ended = false;
  on(name, handler) {
    let set = this.handlers.get(name);
    if (set === void 0) this.handlers.set(name, set = /* @__PURE__ */ new Set());
    set.add(handler);
    return () => {
      set.delete(handler);
    };
  }
  events(names, topic) {
    const buffer = [];
    let wake;
    let done = this.ended;
    const finish = () => {
      done = true;
      this.listeners.delete(listener);
      wake?.({ value: void 0, done: true });
      wake = void 0;
      return { value: void 0, done: true };
    };
    const listener = {
      names: names ? new Set(names) : void 0,
      topic,
      push: (event) => {
        if (wake === void 0) buffer.push(event);
        else {
          const w = wake;
          wake = void 0;
          w({ value: event, done: false });
        }
      },
      end: () => void finish()
    };
    if (!done) this.listeners.add(listener);
    const iterator = {
      next: () => {
        const value = buffer.shift();
        if (value !== void 0) return Promise.resolve({ value, done: false });
        if (done) return Promise.resolve({ value: void 0, done: true });
        return new Promise((resolve) => {
          wake = resolve;
        });
      },
      return: () => Promise.resolve(finish()),
      [Symbol.asyncIterator]: () => iterator
    };
    return iterator;
  }
  waitFor(name, options) {
    return new Promise((resolve, reject) => {
      if (this.ended) {
        reject(new EnfClosedError(`closed while waiting for ${name}`));
        return;
      }
      const timeoutMs = options.timeoutMs ?? DEFAULT_WAIT_MS;
      const settle = (outcome) => {
        this.listeners.delete(listener);
        clearTimeout(timer);
        options.signal?.removeEventListener("abort", aborted);
        outcome();
      };
      const listener = {
        names: /* @__PURE__ */ new Set([name]),
        topic: options.topic,
        push: (event) => {
          if (!options.match || options.match(event)) settle(() => resolve(event));
        },
        end: () => settle(() => reject(new EnfClosedError(`closed while waiting for ${name}`)))
      };
      const timer = setTimeout(
        () => settle(() => reject(new EnfError(`no ${name} event within ${timeoutMs} ms`))),
        timeoutMs
      );
      const aborted = () => settle(() => reject(options.signal?.reason ?? new EnfError("aborted")));
      options.signal?.addEventListener("abort", aborted);
      this.listeners.add(listener);
    });
  }
  dispatch(event) {
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
      if (listener.topic !== void 0 && listener.topic !== event.topic) continue;
      try {
        listener.push(event);
      } catch (error) {
        this.reportError(error, `a listener of ${event.name} threw`);
      }
    }
  }
  /** The client closed: iterators end, waits reject. */
  end() {
    this.ended = true;
    for (const listener of [...this.listeners]) listener.end();
    this.listeners.clear();
  }
};

// src/following.ts
var Following = class {
  lastSeqs = /* @__PURE__ */ new Map();
  /** Followed sessions; terminal ones are not re-joined. */
  sessions = /* @__PURE__ */ new Map();
  presence = { online: false, away: false, subscribed: false };
  /** Events whose seq jumped past the next one expected (the contract says never). */
  gaps = 0;
  lastSeq(topic) {
    return this.lastSeqs.get(topic) ?? 0;
  }
  followedSessions() {
    return [...this.sessions].filter(([, s]) => !s.terminal).map(([id]) => id);
  }
  unfollow(sessionId) {
    this.sessions.delete(sessionId);
  }
  /** Note what a successful request made this client follow (or stop following). */
  observe(type, sent, reply, userId) {
    const data = isObject(sent) ? sent : {};
    const got = isObject(reply) ? reply : {};
    switch (type) {
      case "session.request":
      // followed from its first event (PROTOCOL §8)
      case "offer.accept":
        if (typeof got.session_id === "string") this.follow(got.session_id);
        break;
      case "session.join": {
        if (typeof data.session_id !== "string") break;
        const session = isObject(got.session) ? got.session : {};
        const since = typeof data.since_seq === "number" ? data.since_seq : session.seq;
        this.follow(data.session_id, typeof since === "number" ? since : void 0);
        if (typeof session.state === "string" && TERMINAL_STATES.includes(session.state)) {
          this.sessions.get(data.session_id).terminal = true;
        }
        break;
      }
      case "session.leave":
        if (typeof data.session_id === "string") this.sessions.delete(data.session_id);
        break;
      case "presence.online":
        this.presence.online = true;
        if (typeof got.seq === "number" && userId !== void 0)
          this.advance(`notary:${userId}`, got.seq);
        break;
      case "presence.offline":
        this.presence.online = this.presence.away = false;
        break;
      case "presence.set":
        this.presence.away = data.status === "away";
        break;
      case "presence.subscribe":
        this.presence.subscribed = true;
        break;
    }
  }
  /** Whether a durable event is new for the application (and note it), or a duplicate. */
  accept(event) {
    const last = this.lastSeqs.get(event.topic) ?? 0;
    if (event.seq <= last) return false;
    if (last > 0 && event.seq > last + 1) this.gaps += 1;
    this.lastSeqs.set(event.topic, event.seq);
    if (event.name === "session.state" && isObject(event.data)) {
      const session = this.sessions.get(event.topic.slice("session:".length));
      const state = event.data.state;
      if (session && typeof state === "string" && TERMINAL_STATES.includes(state)) {
        session.terminal = true;
      }
    }
    return true;
  }
  /** What to send on a new connection to follow again all that is followed, from where it stands. */
  resync(userId) {
    const steps = this.followedSessions().map((sid) => ({
      type: "session.join",
      data: { session_id: sid, since_seq: this.lastSeq(`session:${sid}`) },
      session_id: sid,
      forget: () => this.sessions.delete(sid)
    }));
    if (this.presence.online && userId !== void 0) {
      const seq = this.lastSeqs.get(`notary:${userId}`);
      steps.push({
        type: "presence.online",
        data: seq === void 0 ? {} : { since_seq: seq },
        ...this.presence.away ? { then: { type: "presence.set", data: { status: "away" } } } : {},
        forget: () => {
          this.presence.online = false;
        }
      });
    }
    if (this.presence.subscribed) {
      steps.push({
        type: "presence.subscribe",
        data: {},
        forget: () => {
          this.presence.subscribed = false;
        }
      });
    }
    return steps;
  }
  follow(sessionId, since) {
    if (!this.sessions.has(sessionId)) this.sessions.set(sessionId, { terminal: false });
    if (since !== void 0) this.advance(`session:${sessionId}`, since);
  }
  advance(topic, seq) {
    if (seq > (this.lastSeqs.get(topic) ?? 0)) this.lastSeqs.set(topic, seq);
  }
};

// src/socket.ts
var OPEN = 1;
function socketFactory(factory, ctor) {
  if (factory) return factory;
  const found = ctor ?? globalThis.WebSocket ?? void 0;
  if (found === void 0) {
    throw new TypeError(
      'no WebSocket here: pass the WebSocket option (on Node 20: `import { WebSocket } from "ws"`), or import EnfClient from "@enf/client/node"'
    );
  }
  return (url, protocols) => new found(url, protocols);
}
function wsUrl(url) {
  const u = new URL(url);
  if (u.protocol === "http:") u.protocol = "ws:";
  else if (u.protocol === "https:") u.protocol = "wss:";
  if (u.pathname === "" || u.pathname === "/") u.pathname = "/v1/ws";
  return u.toString();
}

// src/link.ts
var LinkClosed = class extends Error {
  constructor(code, reason) {
    super(`closed with ${code}${reason ? `: ${reason}` : ""}`);
    this.code = code;
    this.reason = reason;
  }
  code;
  reason;
};
var linkNumbers = 0;
var Link = class {
  constructor(url, token, tokenTimes2, preferred, codecs, factory, handlers) {
    this.token = token;
    this.tokenTimes = tokenTimes2;
    this.handlers = handlers;
    this.ready = new Promise((resolve, reject) => {
      this.settleReady = { resolve, reject };
    });
    this.ready.catch(() => void 0);
    this.socket = factory(url, [preferred.subprotocol]);
    this.socket.binaryType = "arraybuffer";
    this.socket.onopen = () => {
      const chosen = codecs.find((c) => c.subprotocol === this.socket.protocol);
      this.codec = chosen ?? jsonCodec;
      this.write({ type: "hello", data: { token: this.token } });
    };
    this.socket.onmessage = (event) => this.received(event.data);
    this.socket.onclose = (event) => this.ended(event.code ?? CloseCode.ABNORMAL, event.reason ?? "");
    this.socket.onerror = () => void 0;
  }
  token;
  tokenTimes;
  handlers;
  /** A number for logs: the n-th link of this process. */
  n = ++linkNumbers;
  socket;
  codec = jsonCodec;
  welcome;
  state = "opening";
  /** Replaced by a newer link: it takes no new requests, and closes once its own are answered. */
  draining = false;
  inFlight = /* @__PURE__ */ new Map();
  /** When a frame last arrived (ms, `Date.now()`). */
  lastHeard = Date.now();
  closeCode;
  /** Resolves with `welcome`; rejects with `LinkClosed` if the socket ends first. */
  ready;
  settleReady;
  /** Write a frame; false when the socket is not open (its close is on the way). */
  write(frame) {
    if (this.state === "closed" || this.socket.readyState !== OPEN) return false;
    try {
      this.socket.send(this.codec.encode(frame));
      return true;
    } catch {
      return false;
    }
  }
  send(pending) {
    this.inFlight.set(pending.id, pending);
    pending.sent = true;
    return this.write({ id: pending.id, type: pending.type, data: pending.data });
  }
  /** Close it ourselves, and report it closed now (not when the peer answers). */
  close(code = CloseCode.NORMAL, reason = "") {
    if (this.state === "closed") return;
    try {
      this.socket.close(code, reason);
    } catch {
    }
    this.ended(code, reason);
  }
  received(raw) {
    if (this.state === "closed") return;
    this.lastHeard = Date.now();
    let frame;
    try {
      frame = this.codec.decode(toFrameData(raw));
    } catch (error) {
      this.handlers.onBadFrame(this, error);
      return;
    }
    if (!isObject(frame)) {
      this.handlers.onBadFrame(this, new Error("a frame that is not an object"));
      return;
    }
    if (frame.type === "event") {
      this.handlers.onEvent(this, frame);
    } else if ("re" in frame) {
      this.handlers.onReply(this, frame);
    } else if (frame.type === "welcome" && isObject(frame.data)) {
      this.welcome = frame.data;
      this.state = "ready";
      this.settleReady.resolve(this.welcome);
    } else {
      this.handlers.onBadFrame(this, new Error(`an unknown frame: ${String(frame.type)}`));
    }
  }
  ended(code, reason) {
    if (this.state === "closed") return;
    this.state = "closed";
    this.closeCode = code;
    this.socket.onopen = this.socket.onmessage = this.socket.onclose = null;
    this.socket.onerror = () => void 0;
    this.settleReady.reject(new LinkClosed(code, reason));
    this.handlers.onClose(this, code, reason);
  }
};
function toFrameData(raw) {
  if (typeof raw === "string") return raw;
  if (raw instanceof ArrayBuffer) return new Uint8Array(raw);
  if (ArrayBuffer.isView(raw)) return new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength);
  if (Array.isArray(raw)) {
    const parts = raw.filter((p) => ArrayBuffer.isView(p));
    const total = parts.reduce((n, p) => n + p.byteLength, 0);
    const out = new Uint8Array(total);
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.byteLength;
    }
    return out;
  }
  throw new TypeError(`cannot read a frame of type ${typeof raw}`);
}

// src/token.ts
function base64UrlDecode(part) {
  return utf8Decode(base64Decode(part.replace(/-/g, "+").replace(/_/g, "/")));
}
function tokenTimes(token) {
  const payload = token.split(".")[1];
  if (payload === void 0) return {};
  try {
    const claims = JSON.parse(base64UrlDecode(payload));
    if (typeof claims !== "object" || claims === null) return {};
    const { exp, iat } = claims;
    const times = {};
    if (typeof exp === "number" && Number.isFinite(exp)) times.expMs = exp * 1e3;
    if (typeof iat === "number" && Number.isFinite(iat)) times.iatMs = iat * 1e3;
    return times;
  } catch {
    return {};
  }
}

// src/client.ts
var DEFAULT_TIMEOUT_MS = 3e4;
var TOO_SLOW_DELAY_MS = 50;
var FLOOD_FLOOR_MS = 5e3;
var MAX_TOKEN_REFUSALS = 3;
var EnfClient = class {
  constructor(config) {
    this.config = config;
    this.url = wsUrl(config.url);
    this.makeSocket = socketFactory(config.createWebSocket, config.WebSocket);
    this.codec = config.codec ?? jsonCodec;
    this.codecs = this.codec === jsonCodec ? [jsonCodec] : [this.codec, jsonCodec];
    this.backoff = new Backoff(config.backoff);
    this.options = {
      requestTimeoutMs: config.requestTimeoutMs ?? DEFAULT_TIMEOUT_MS,
      connectTimeoutMs: config.connectTimeoutMs ?? 1e4,
      refreshMarginMs: config.refreshMarginMs ?? 3e4,
      retryUnavailable: config.retryUnavailable ?? true
    };
    this.reportError = config.onError ?? ((error, context) => console.error(`enf: ${context}`, error));
    this.log = config.log ?? (() => void 0);
    this.hub = new EventHub(this.reportError);
    let settle;
    const promise = new Promise((resolve, reject) => {
      settle = { resolve, reject };
    });
    promise.catch(() => void 0);
    this.firstWelcome = { promise, ...settle };
  }
  config;
  url;
  makeSocket;
  codec;
  codecs;
  backoff;
  options;
  reportError;
  log;
  state = "idle";
  primary;
  /** A link being opened and resynced (a reconnect or a refresh). */
  pending;
  establishing = false;
  /** Who waits for the next connection to be open (`reconnect()`); `fresh`: one with a new token. */
  promoted = [];
  /** A fresh token was asked for while a connection was being made: make another after it. */
  forceNext = false;
  draining = /* @__PURE__ */ new Set();
  /** Requests to send when a link is ready, in order (new ones and retries). */
  queue = [];
  token;
  tokenRefusals = 0;
  timers = /* @__PURE__ */ new Set();
  reconnectTimer;
  refreshTimer;
  watchdog;
  firstWelcome;
  fatal;
  lastCloseCode;
  following = new Following();
  hub;
  statusHandlers = /* @__PURE__ */ new Set();
  resyncHandlers = /* @__PURE__ */ new Set();
  idPrefix = randomId();
  nextId = 0;
  /** Counters, for diagnostics and tests. */
  stats = {
    connections: 0,
    reconnects: 0,
    refreshes: 0,
    duplicatesDropped: 0,
    ephemeralDropped: 0,
    gaps: 0,
    retried: 0,
    strayReplies: 0
  };
  /** The last `welcome`: who the server says we are. */
  welcome;
  // -- public API ---------------------------------------------------------------
  get status() {
    return this.state;
  }
  /** Connect (once; later calls return the same promise): resolves with the first `welcome`. */
  connect() {
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
  request(type, ...args) {
    const [input, options = {}] = args;
    return this.send(type, prepare(type, input ?? {}), options, false);
  }
  on(name, handler) {
    return this.hub.on(name, handler);
  }
  /** Connection status changes (`connecting`, `open`, `reconnecting`, `closed`). */
  onStatus(handler) {
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
  onResync(handler) {
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
  events(filter = {}) {
    return this.hub.events(filter.names, filter.topic);
  }
  /** The next event of this name (from now on) that passes `options.match`. */
  waitFor(name, options = {}) {
    return this.hub.waitFor(name, options);
  }
  /** The last seq delivered on a topic (`session:<id>`, `notary:<id>`), 0 if none. */
  lastSeq(topic) {
    return this.following.lastSeq(topic);
  }
  /** Sessions this client follows again after a reconnect. */
  followedSessions() {
    return this.following.followedSessions();
  }
  /** Stop following a session after reconnects (it stays followed on the open socket). */
  unfollow(sessionId) {
    this.following.unfollow(sessionId);
  }
  /**
   * Replace the connection now (make before break); with `freshToken`, ask
   * the provider for a new token first (e.g. a token issued after a pause).
   */
  reconnect(options = {}) {
    if (this.state === "closed" || this.state === "idle") return Promise.resolve();
    const fresh = options.freshToken === true;
    const opened = new Promise((resolve) => this.promoted.push({ fresh, resolve }));
    if (fresh) this.token = void 0;
    if (this.establishing) {
      if (fresh) this.forceNext = true;
    } else {
      this.clearReconnect();
      void this.establish(fresh ? "forced" : "reconnect");
    }
    return opened;
  }
  /** Close for good: pending requests reject with `EnfClosedError`. Safe to call twice. */
  async close() {
    this.shutDown(void 0);
  }
  // -- requests -----------------------------------------------------------------
  send(type, data, options, internal, on) {
    if (this.state === "closed") {
      return Promise.reject(this.fatal ?? new EnfClosedError("the client is closed"));
    }
    const id = `${this.idPrefix}.${this.nextId += 1}`;
    const size = frameBytes(this.codec.encode({ id, type, data }));
    if (size > MAX_FRAME_BYTES) return Promise.reject(new EnfTooLargeError(type, size));
    return new Promise((resolve, reject) => {
      const timeoutMs = options.timeoutMs ?? this.options.requestTimeoutMs;
      let timer;
      const aborted = () => p.reject(options.signal?.reason ?? new EnfError(`${type}: aborted`));
      const p = {
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
        }
      };
      timer = setTimeout(() => p.reject(new EnfTimeoutError(type, id, timeoutMs)), timeoutMs);
      if (options.signal?.aborted) return aborted();
      options.signal?.addEventListener("abort", aborted);
      if (on !== void 0) {
        if (!on.send(p)) p.reject(new LinkClosed(on.closeCode ?? CloseCode.ABNORMAL, "closed"));
        return;
      }
      this.queue.push(p);
      if (this.state === "idle") this.connect().catch(() => void 0);
      this.pump();
    });
  }
  /** Send what waits, on the primary link. */
  pump() {
    const link = this.primary;
    if (link === void 0 || link.state !== "ready") return;
    while (this.queue.length > 0) {
      const p = this.queue.shift();
      if (p.settled) continue;
      if (!link.send(p)) {
        return;
      }
    }
  }
  /** A settled request leaves wherever it waited. */
  forget(p) {
    const i = this.queue.indexOf(p);
    if (i >= 0) this.queue.splice(i, 1);
    for (const link of [this.primary, this.pending, ...this.draining]) {
      if (link?.inFlight.get(p.id) === p) {
        link.inFlight.delete(p.id);
        this.closeIfDrained(link);
      }
    }
  }
  onReply(link, frame) {
    const p = frame.re === null ? void 0 : link.inFlight.get(String(frame.re));
    if (p === void 0) {
      this.stats.strayReplies += 1;
      if (frame.re === null && !frame.ok)
        this.reportError(new Error(frame.error.message), "a frame the server could not read");
      return;
    }
    link.inFlight.delete(p.id);
    if (frame.ok) {
      this.following.observe(p.type, p.data, frame.data, this.welcome?.user_id);
      p.resolve(frame.data);
    } else if (frame.error.code === "unavailable" && p.retry && !p.internal && this.options.retryUnavailable) {
      p.unavailable += 1;
      const delay = Math.round(Math.random() * Math.min(5e3, 250 * 2 ** p.unavailable));
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
  onEvent(link, frame) {
    if (typeof frame.seq === "number") {
      if (!this.following.accept(frame)) {
        this.stats.duplicatesDropped += 1;
        return;
      }
      this.stats.gaps = this.following.gaps;
    } else if (link !== this.primary && this.primary?.state === "ready") {
      this.stats.ephemeralDropped += 1;
      return;
    }
    this.hub.dispatch(frame);
  }
  // -- connections ----------------------------------------------------------------
  /** Open a link, resync it, and make it the primary. One at a time. */
  async establish(reason) {
    if (this.establishing || this.state === "closed") return;
    this.establishing = true;
    this.clearReconnect();
    let link;
    try {
      const token = await this.tokenFor(reason);
      if (this.isClosed()) return;
      const current = this.primary?.tokenTimes.expMs;
      if (reason === "refresh" && current !== void 0 && (token.times.expMs ?? 0) <= current) {
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
          onBadFrame: (_l, error) => this.reportError(error, "a frame that could not be read")
        }
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
      if (link !== void 0 && link.state !== "closed")
        link.close(CloseCode.NORMAL, "not resynced");
      this.failed(error, reason);
    } finally {
      if (this.pending === link) this.pending = void 0;
      this.establishing = false;
      if (this.forceNext && !this.isClosed()) {
        this.forceNext = false;
        void this.establish("forced");
        return;
      }
      if (this.primary === void 0 && !this.isClosed() && this.reconnectTimer === void 0) {
        this.scheduleReconnect(this.lastCloseCode);
      }
    }
  }
  /** Ask the provider for a token, unless the cached one has long enough to live. */
  async tokenFor(reason) {
    const source = this.config.token;
    if (typeof source === "string") return { value: source, times: tokenTimes(source) };
    const cached = this.token;
    if (cached && reason === "reconnect" && (cached.times.expMs ?? Infinity) - Date.now() > this.marginFor(cached.times)) {
      return cached;
    }
    const value = await source({ reason });
    if (typeof value !== "string" || value === "")
      throw new EnfError("the token provider returned no token");
    this.token = { value, times: tokenTimes(value) };
    return this.token;
  }
  marginFor(times) {
    if (times.expMs === void 0) return 0;
    const lifetime = times.expMs - (times.iatMs ?? Date.now());
    return Math.min(this.options.refreshMarginMs, Math.max(0, lifetime / 4));
  }
  /** Follow again, on a new link, what the client follows; what the server answered. */
  async resync(link) {
    const results = [];
    const internal = (type, data) => this.send(type, data, { retry: false }, true, link);
    const jobs = this.following.resync(this.welcome?.user_id).map(
      (step) => internal(step.type, step.data).then(
        async (data) => {
          results.push(
            step.session_id === void 0 ? { kind: step.type, data } : { kind: "session.join", session_id: step.session_id, data }
          );
          if (step.then) await internal(step.then.type, step.then.data);
        },
        (error) => {
          const refused = ["not_found", "forbidden", "bad_request"];
          if (!(error instanceof EnfRequestError && refused.includes(error.code))) throw error;
          step.forget();
          results.push({ kind: "failed", request: step.type, session_id: step.session_id, error });
        }
      )
    );
    const outcomes = await Promise.allSettled(jobs);
    const failure = outcomes.find((o) => o.status === "rejected");
    if (failure) throw failure.reason;
    return results;
  }
  reportResync(results) {
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
  promote(link, reason) {
    const old = this.primary;
    this.primary = link;
    this.stats.connections += 1;
    if (reason === "refresh") this.stats.refreshes += 1;
    else if (reason !== "initial") this.stats.reconnects += 1;
    this.backoff.reset();
    this.log(`link ${link.n}: open (${reason})`);
    if (old !== void 0 && old.state !== "closed") {
      old.draining = true;
      this.draining.add(old);
      this.closeIfDrained(old);
    }
    this.scheduleRefresh(link);
    this.startWatchdog(link);
    this.setStatus({ status: "open" });
    this.firstWelcome.resolve(link.welcome);
    const ready = this.promoted.filter((w) => !w.fresh || reason === "forced");
    this.promoted = this.promoted.filter((w) => !ready.includes(w));
    for (const w of ready) w.resolve();
    this.pump();
  }
  closeIfDrained(link) {
    if (link.draining && link.inFlight.size === 0 && link.state !== "closed") {
      link.close(CloseCode.NORMAL, "replaced by a newer connection");
    }
  }
  onClose(link, code, reason) {
    this.log(`link ${link.n}: closed ${code} ${reason}`);
    this.draining.delete(link);
    const waiting = [...link.inFlight.values()];
    link.inFlight.clear();
    const moved = [];
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
      return;
    }
    this.primary = void 0;
    this.lastCloseCode = code;
    this.stopTimers();
    if (this.state === "closed") return;
    if (code === CloseCode.PROTOCOL) {
      this.shutDown(
        new EnfClosedError(
          `the server closed with 4400 (protocol violation): ${reason}`,
          false,
          code
        )
      );
      return;
    }
    this.setStatus({ status: "reconnecting", code, reason });
    if (!this.establishing) this.scheduleReconnect(code);
  }
  /** A link could not be opened or resynced. */
  failed(error, reason) {
    if (this.state === "closed") return;
    const code = error instanceof LinkClosed ? error.code : void 0;
    this.log(`connecting failed (${reason}): ${String(error)}`);
    if (code === CloseCode.PROTOCOL) {
      this.shutDown(
        new EnfClosedError(`the server closed with 4400 (protocol violation)`, false, code)
      );
      return;
    }
    if (code === CloseCode.BAD_TOKEN && error instanceof LinkClosed) {
      this.token = void 0;
      this.tokenRefusals += 1;
      if (this.tokenRefusals >= MAX_TOKEN_REFUSALS || typeof this.config.token === "string") {
        this.shutDown(
          new EnfClosedError(`the server refused the token: ${error.reason}`, false, code)
        );
        return;
      }
    }
    if (this.primary?.state === "ready") {
      this.scheduleReconnect(code, "refresh");
      return;
    }
    if (this.state !== "reconnecting") this.setStatus({ status: "reconnecting", code });
    this.scheduleReconnect(code);
  }
  scheduleReconnect(code, reason = "reconnect") {
    this.clearReconnect();
    let delay;
    let why = reason;
    if (code === CloseCode.TOO_SLOW) delay = Math.round(Math.random() * TOO_SLOW_DELAY_MS);
    else if (code === CloseCode.FLOOD) delay = this.backoff.next(FLOOD_FLOOR_MS);
    else if (code === CloseCode.BAD_TOKEN && this.backoff.attempts === 0 && reason !== "refresh") {
      delay = 0;
      this.backoff.next();
    } else delay = this.backoff.next();
    if (code === CloseCode.BAD_TOKEN && reason !== "refresh") why = "expired";
    this.log(`reconnecting in ${delay} ms (${why})`);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = void 0;
      void this.establish(why);
    }, delay);
  }
  clearReconnect() {
    if (this.reconnectTimer !== void 0) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = void 0;
  }
  scheduleRefresh(link) {
    if (this.refreshTimer !== void 0) clearTimeout(this.refreshTimer);
    this.refreshTimer = void 0;
    const exp = link.tokenTimes.expMs;
    if (exp === void 0 || typeof this.config.token === "string") return;
    const delay = Math.max(0, exp - this.marginFor(link.tokenTimes) - Date.now());
    this.refreshTimer = setTimeout(() => {
      this.refreshTimer = void 0;
      if (this.primary === link && !this.establishing) void this.establish("refresh");
    }, delay);
  }
  /**
   * Browsers cannot see WebSocket pings: after a silent heartbeat interval
   * the SDK sends a `ping` request, and drops a link that stays silent for
   * another interval (a dead network), then reconnects.
   */
  startWatchdog(link) {
    if (this.watchdog !== void 0) clearInterval(this.watchdog);
    const everyMs = Math.max(1, link.welcome?.heartbeat_s ?? 20) * 1e3;
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
        link.close(4e3, "no answer to ping");
        return;
      }
      if (!pinged) {
        pinged = true;
        this.send("ping", {}, { retry: false, timeoutMs: 2 * everyMs }, true, link).catch(
          () => void 0
        );
      }
    }, everyMs / 2);
  }
  stopTimers() {
    if (this.refreshTimer !== void 0) clearTimeout(this.refreshTimer);
    if (this.watchdog !== void 0) clearInterval(this.watchdog);
    this.refreshTimer = this.watchdog = void 0;
  }
  later(delay, fn) {
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, delay);
    this.timers.add(t);
  }
  /** (A method: the compiler would narrow `this.state` across awaits.) */
  isClosed() {
    return this.state === "closed";
  }
  setStatus(change) {
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
  shutDown(error) {
    if (this.state === "closed") return;
    this.fatal = error;
    this.setStatus(error === void 0 ? { status: "closed" } : { status: "closed", error });
    for (const w of this.promoted.splice(0)) w.resolve();
    this.clearReconnect();
    this.stopTimers();
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    const links = [this.primary, this.pending, ...this.draining].filter(
      (l) => l !== void 0
    );
    this.primary = this.pending = void 0;
    this.draining.clear();
    const waiting = [...this.queue, ...links.flatMap((l) => [...l.inFlight.values()])];
    this.queue = [];
    for (const link of links) {
      link.inFlight.clear();
      link.close(CloseCode.NORMAL, "client closed");
    }
    for (const p of waiting) {
      p.reject(
        error instanceof EnfClosedError ? new EnfClosedError(error.message, p.sent, error.closeCode) : new EnfClosedError("the client is closed", p.sent)
      );
    }
    this.hub.end();
    this.firstWelcome.reject(error ?? new EnfClosedError("the client is closed"));
  }
};
function prepare(type, data) {
  if (type === "session.request" && isObject(data) && data.idempotency_key === void 0) {
    return { ...data, idempotency_key: randomUUID() };
  }
  return data;
}
function randomId() {
  return Array.from(randomBytes(9), (b) => b.toString(36).padStart(2, "0")).join("");
}
function withTimeout(promise, ms, onTimeout) {
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
      (e) => {
        clearTimeout(timer);
        reject(e);
      }
    );
  });
}

// src/generated/contract.ts
var REQUEST_TYPES = [
  "act.seal",
  "act.sign",
  "checks.record",
  "notaries.available",
  "offer.accept",
  "offer.decline",
  "ping",
  "presence.offline",
  "presence.online",
  "presence.set",
  "presence.subscribe",
  "session.cancel",
  "session.distribute",
  "session.join",
  "session.leave",
  "session.notarize",
  "session.request",
  "signal",
  "video.end",
  "video.start"
];
var DURABLE_EVENTS = [
  "act.sealed",
  "act.signed",
  "checks.recorded",
  "delivery.status",
  "offer",
  "offer.expired",
  "offer.withdrawn",
  "participant.joined",
  "participant.left",
  "recording.failed",
  "recording.ready",
  "recording.started",
  "session.notarized",
  "session.paused",
  "session.resumed",
  "session.state"
];
var EPHEMERAL_EVENTS = [
  "notary.presence",
  "notification",
  "signal",
  "video.config"
];
var REQUEST_ROLES = {
  "act.seal": ["enp"],
  "act.sign": ["customer"],
  "checks.record": ["enp"],
  "notaries.available": ["customer", "admin"],
  "offer.accept": ["enp"],
  "offer.decline": ["enp"],
  "ping": ["customer", "enp", "admin"],
  "presence.offline": ["enp"],
  "presence.online": ["enp"],
  "presence.set": ["enp"],
  "presence.subscribe": ["customer", "enp", "admin"],
  "session.cancel": ["customer", "enp", "admin"],
  "session.distribute": ["customer", "enp"],
  "session.join": ["customer", "enp", "admin"],
  "session.leave": ["customer", "enp"],
  "session.notarize": ["enp"],
  "session.request": ["customer"],
  "signal": ["customer", "enp"],
  "video.end": ["enp"],
  "video.start": ["enp"]
};
var EVENT_TOPICS = {
  "act.sealed": "^session:",
  "act.signed": "^session:",
  "checks.recorded": "^session:",
  "delivery.status": "^session:",
  "notary.presence": "^presence$",
  "notification": "^session:",
  "offer": "^notary:",
  "offer.expired": "^notary:",
  "offer.withdrawn": "^notary:",
  "participant.joined": "^session:",
  "participant.left": "^session:",
  "recording.failed": "^session:",
  "recording.ready": "^session:",
  "recording.started": "^session:",
  "session.notarized": "^session:",
  "session.paused": "^session:",
  "session.resumed": "^session:",
  "session.state": "^session:",
  "signal": "^session:",
  "video.config": "^session:"
};

// node_modules/@msgpack/msgpack/dist.esm/utils/utf8.mjs
function utf8Count(str) {
  const strLength = str.length;
  let byteLength = 0;
  let pos = 0;
  while (pos < strLength) {
    let value = str.charCodeAt(pos++);
    if ((value & 4294967168) === 0) {
      byteLength++;
      continue;
    } else if ((value & 4294965248) === 0) {
      byteLength += 2;
    } else {
      if (value >= 55296 && value <= 56319) {
        if (pos < strLength) {
          const extra = str.charCodeAt(pos);
          if ((extra & 64512) === 56320) {
            ++pos;
            value = ((value & 1023) << 10) + (extra & 1023) + 65536;
          }
        }
      }
      if ((value & 4294901760) === 0) {
        byteLength += 3;
      } else {
        byteLength += 4;
      }
    }
  }
  return byteLength;
}
function utf8EncodeJs(str, output, outputOffset) {
  const strLength = str.length;
  let offset = outputOffset;
  let pos = 0;
  while (pos < strLength) {
    let value = str.charCodeAt(pos++);
    if ((value & 4294967168) === 0) {
      output[offset++] = value;
      continue;
    } else if ((value & 4294965248) === 0) {
      output[offset++] = value >> 6 & 31 | 192;
    } else {
      if (value >= 55296 && value <= 56319) {
        if (pos < strLength) {
          const extra = str.charCodeAt(pos);
          if ((extra & 64512) === 56320) {
            ++pos;
            value = ((value & 1023) << 10) + (extra & 1023) + 65536;
          }
        }
      }
      if ((value & 4294901760) === 0) {
        output[offset++] = value >> 12 & 15 | 224;
        output[offset++] = value >> 6 & 63 | 128;
      } else {
        output[offset++] = value >> 18 & 7 | 240;
        output[offset++] = value >> 12 & 63 | 128;
        output[offset++] = value >> 6 & 63 | 128;
      }
    }
    output[offset++] = value & 63 | 128;
  }
}
var sharedTextEncoder = new TextEncoder();
var TEXT_ENCODER_THRESHOLD = 50;
function utf8EncodeTE(str, output, outputOffset) {
  sharedTextEncoder.encodeInto(str, output.subarray(outputOffset));
}
function utf8Encode(str, output, outputOffset) {
  if (str.length > TEXT_ENCODER_THRESHOLD) {
    utf8EncodeTE(str, output, outputOffset);
  } else {
    utf8EncodeJs(str, output, outputOffset);
  }
}
var CHUNK_SIZE = 4096;
function utf8DecodeJs(bytes, inputOffset, byteLength) {
  let offset = inputOffset;
  const end = offset + byteLength;
  const units = [];
  let result = "";
  while (offset < end) {
    const byte1 = bytes[offset++];
    if ((byte1 & 128) === 0) {
      units.push(byte1);
    } else if ((byte1 & 224) === 192) {
      const byte2 = bytes[offset++] & 63;
      units.push((byte1 & 31) << 6 | byte2);
    } else if ((byte1 & 240) === 224) {
      const byte2 = bytes[offset++] & 63;
      const byte3 = bytes[offset++] & 63;
      units.push((byte1 & 31) << 12 | byte2 << 6 | byte3);
    } else if ((byte1 & 248) === 240) {
      const byte2 = bytes[offset++] & 63;
      const byte3 = bytes[offset++] & 63;
      const byte4 = bytes[offset++] & 63;
      let unit = (byte1 & 7) << 18 | byte2 << 12 | byte3 << 6 | byte4;
      if (unit > 65535) {
        unit -= 65536;
        units.push(unit >>> 10 & 1023 | 55296);
        unit = 56320 | unit & 1023;
      }
      units.push(unit);
    } else {
      units.push(byte1);
    }
    if (units.length >= CHUNK_SIZE) {
      result += String.fromCharCode(...units);
      units.length = 0;
    }
  }
  if (units.length > 0) {
    result += String.fromCharCode(...units);
  }
  return result;
}
var sharedTextDecoder = new TextDecoder();
var TEXT_DECODER_THRESHOLD = 200;
function utf8DecodeTD(bytes, inputOffset, byteLength) {
  const stringBytes = bytes.subarray(inputOffset, inputOffset + byteLength);
  return sharedTextDecoder.decode(stringBytes);
}
function utf8Decode2(bytes, inputOffset, byteLength) {
  if (byteLength > TEXT_DECODER_THRESHOLD) {
    return utf8DecodeTD(bytes, inputOffset, byteLength);
  } else {
    return utf8DecodeJs(bytes, inputOffset, byteLength);
  }
}

// node_modules/@msgpack/msgpack/dist.esm/ExtData.mjs
var ExtData = class {
  type;
  data;
  constructor(type, data) {
    this.type = type;
    this.data = data;
  }
};

// node_modules/@msgpack/msgpack/dist.esm/DecodeError.mjs
var DecodeError = class _DecodeError extends Error {
  constructor(message) {
    super(message);
    const proto = Object.create(_DecodeError.prototype);
    Object.setPrototypeOf(this, proto);
    Object.defineProperty(this, "name", {
      configurable: true,
      enumerable: false,
      value: _DecodeError.name
    });
  }
};

// node_modules/@msgpack/msgpack/dist.esm/utils/int.mjs
var UINT32_MAX = 4294967295;
function setUint64(view, offset, value) {
  const high = value / 4294967296;
  const low = value;
  view.setUint32(offset, high);
  view.setUint32(offset + 4, low);
}
function setInt64(view, offset, value) {
  const high = Math.floor(value / 4294967296);
  const low = value;
  view.setUint32(offset, high);
  view.setUint32(offset + 4, low);
}
function getInt64(view, offset) {
  const high = view.getInt32(offset);
  const low = view.getUint32(offset + 4);
  return high * 4294967296 + low;
}
function getUint64(view, offset) {
  const high = view.getUint32(offset);
  const low = view.getUint32(offset + 4);
  return high * 4294967296 + low;
}

// node_modules/@msgpack/msgpack/dist.esm/timestamp.mjs
var EXT_TIMESTAMP = -1;
var TIMESTAMP32_MAX_SEC = 4294967296 - 1;
var TIMESTAMP64_MAX_SEC = 17179869184 - 1;
function encodeTimeSpecToTimestamp({ sec, nsec }) {
  if (sec >= 0 && nsec >= 0 && sec <= TIMESTAMP64_MAX_SEC) {
    if (nsec === 0 && sec <= TIMESTAMP32_MAX_SEC) {
      const rv = new Uint8Array(4);
      const view = new DataView(rv.buffer);
      view.setUint32(0, sec);
      return rv;
    } else {
      const secHigh = sec / 4294967296;
      const secLow = sec & 4294967295;
      const rv = new Uint8Array(8);
      const view = new DataView(rv.buffer);
      view.setUint32(0, nsec << 2 | secHigh & 3);
      view.setUint32(4, secLow);
      return rv;
    }
  } else {
    const rv = new Uint8Array(12);
    const view = new DataView(rv.buffer);
    view.setUint32(0, nsec);
    setInt64(view, 4, sec);
    return rv;
  }
}
function encodeDateToTimeSpec(date) {
  const msec = date.getTime();
  const sec = Math.floor(msec / 1e3);
  const nsec = (msec - sec * 1e3) * 1e6;
  const nsecInSec = Math.floor(nsec / 1e9);
  return {
    sec: sec + nsecInSec,
    nsec: nsec - nsecInSec * 1e9
  };
}
function encodeTimestampExtension(object) {
  if (object instanceof Date) {
    const timeSpec = encodeDateToTimeSpec(object);
    return encodeTimeSpecToTimestamp(timeSpec);
  } else {
    return null;
  }
}
function decodeTimestampToTimeSpec(data) {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  switch (data.byteLength) {
    case 4: {
      const sec = view.getUint32(0);
      const nsec = 0;
      return { sec, nsec };
    }
    case 8: {
      const nsec30AndSecHigh2 = view.getUint32(0);
      const secLow32 = view.getUint32(4);
      const sec = (nsec30AndSecHigh2 & 3) * 4294967296 + secLow32;
      const nsec = nsec30AndSecHigh2 >>> 2;
      return { sec, nsec };
    }
    case 12: {
      const sec = getInt64(view, 4);
      const nsec = view.getUint32(0);
      return { sec, nsec };
    }
    default:
      throw new DecodeError(`Unrecognized data size for timestamp (expected 4, 8, or 12): ${data.length}`);
  }
}
function decodeTimestampExtension(data) {
  const timeSpec = decodeTimestampToTimeSpec(data);
  return new Date(timeSpec.sec * 1e3 + timeSpec.nsec / 1e6);
}
var timestampExtension = {
  type: EXT_TIMESTAMP,
  encode: encodeTimestampExtension,
  decode: decodeTimestampExtension
};

// node_modules/@msgpack/msgpack/dist.esm/ExtensionCodec.mjs
var ExtensionCodec = class _ExtensionCodec {
  static defaultCodec = new _ExtensionCodec();
  // ensures ExtensionCodecType<X> matches ExtensionCodec<X>
  // this will make type errors a lot more clear
  // eslint-disable-next-line @typescript-eslint/naming-convention
  __brand;
  // built-in extensions
  builtInEncoders = [];
  builtInDecoders = [];
  // custom extensions
  encoders = [];
  decoders = [];
  constructor() {
    this.register(timestampExtension);
  }
  register({ type, encode: encode2, decode: decode2 }) {
    if (type >= 0) {
      this.encoders[type] = encode2;
      this.decoders[type] = decode2;
    } else {
      const index = -1 - type;
      this.builtInEncoders[index] = encode2;
      this.builtInDecoders[index] = decode2;
    }
  }
  tryToEncode(object, context) {
    for (let i = 0; i < this.builtInEncoders.length; i++) {
      const encodeExt = this.builtInEncoders[i];
      if (encodeExt != null) {
        const data = encodeExt(object, context);
        if (data != null) {
          const type = -1 - i;
          return new ExtData(type, data);
        }
      }
    }
    for (let i = 0; i < this.encoders.length; i++) {
      const encodeExt = this.encoders[i];
      if (encodeExt != null) {
        const data = encodeExt(object, context);
        if (data != null) {
          const type = i;
          return new ExtData(type, data);
        }
      }
    }
    if (object instanceof ExtData) {
      return object;
    }
    return null;
  }
  decode(data, type, context) {
    const decodeExt = type < 0 ? this.builtInDecoders[-1 - type] : this.decoders[type];
    if (decodeExt) {
      return decodeExt(data, type, context);
    } else {
      return new ExtData(type, data);
    }
  }
};

// node_modules/@msgpack/msgpack/dist.esm/utils/typedArrays.mjs
function isArrayBufferLike(buffer) {
  return buffer instanceof ArrayBuffer || typeof SharedArrayBuffer !== "undefined" && buffer instanceof SharedArrayBuffer;
}
function ensureUint8Array(buffer) {
  if (buffer instanceof Uint8Array) {
    return buffer;
  } else if (ArrayBuffer.isView(buffer)) {
    return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  } else if (isArrayBufferLike(buffer)) {
    return new Uint8Array(buffer);
  } else {
    return Uint8Array.from(buffer);
  }
}

// node_modules/@msgpack/msgpack/dist.esm/Encoder.mjs
var DEFAULT_MAX_DEPTH = 100;
var DEFAULT_INITIAL_BUFFER_SIZE = 2048;
var Encoder = class _Encoder {
  extensionCodec;
  context;
  useBigInt64;
  maxDepth;
  initialBufferSize;
  sortKeys;
  forceFloat32;
  ignoreUndefined;
  forceIntegerToFloat;
  pos;
  view;
  bytes;
  entered = false;
  constructor(options) {
    this.extensionCodec = options?.extensionCodec ?? ExtensionCodec.defaultCodec;
    this.context = options?.context;
    this.useBigInt64 = options?.useBigInt64 ?? false;
    this.maxDepth = options?.maxDepth ?? DEFAULT_MAX_DEPTH;
    this.initialBufferSize = options?.initialBufferSize ?? DEFAULT_INITIAL_BUFFER_SIZE;
    this.sortKeys = options?.sortKeys ?? false;
    this.forceFloat32 = options?.forceFloat32 ?? false;
    this.ignoreUndefined = options?.ignoreUndefined ?? false;
    this.forceIntegerToFloat = options?.forceIntegerToFloat ?? false;
    this.pos = 0;
    this.view = new DataView(new ArrayBuffer(this.initialBufferSize));
    this.bytes = new Uint8Array(this.view.buffer);
  }
  clone() {
    return new _Encoder({
      extensionCodec: this.extensionCodec,
      context: this.context,
      useBigInt64: this.useBigInt64,
      maxDepth: this.maxDepth,
      initialBufferSize: this.initialBufferSize,
      sortKeys: this.sortKeys,
      forceFloat32: this.forceFloat32,
      ignoreUndefined: this.ignoreUndefined,
      forceIntegerToFloat: this.forceIntegerToFloat
    });
  }
  reinitializeState() {
    this.pos = 0;
  }
  /**
   * This is almost equivalent to {@link Encoder#encode}, but it returns an reference of the encoder's internal buffer and thus much faster than {@link Encoder#encode}.
   *
   * @returns Encodes the object and returns a shared reference the encoder's internal buffer.
   */
  encodeSharedRef(object) {
    if (this.entered) {
      const instance = this.clone();
      return instance.encodeSharedRef(object);
    }
    try {
      this.entered = true;
      this.reinitializeState();
      this.doEncode(object, 1);
      return this.bytes.subarray(0, this.pos);
    } finally {
      this.entered = false;
    }
  }
  /**
   * @returns Encodes the object and returns a copy of the encoder's internal buffer.
   */
  encode(object) {
    if (this.entered) {
      const instance = this.clone();
      return instance.encode(object);
    }
    try {
      this.entered = true;
      this.reinitializeState();
      this.doEncode(object, 1);
      return this.bytes.slice(0, this.pos);
    } finally {
      this.entered = false;
    }
  }
  doEncode(object, depth) {
    if (depth > this.maxDepth) {
      throw new Error(`Too deep objects in depth ${depth}`);
    }
    if (object == null) {
      this.encodeNil();
    } else if (typeof object === "boolean") {
      this.encodeBoolean(object);
    } else if (typeof object === "number") {
      if (!this.forceIntegerToFloat) {
        this.encodeNumber(object);
      } else {
        this.encodeNumberAsFloat(object);
      }
    } else if (typeof object === "string") {
      this.encodeString(object);
    } else if (this.useBigInt64 && typeof object === "bigint") {
      this.encodeBigInt64(object);
    } else {
      this.encodeObject(object, depth);
    }
  }
  ensureBufferSizeToWrite(sizeToWrite) {
    const requiredSize = this.pos + sizeToWrite;
    if (this.view.byteLength < requiredSize) {
      this.resizeBuffer(requiredSize * 2);
    }
  }
  resizeBuffer(newSize) {
    const newBuffer = new ArrayBuffer(newSize);
    const newBytes = new Uint8Array(newBuffer);
    const newView = new DataView(newBuffer);
    newBytes.set(this.bytes);
    this.view = newView;
    this.bytes = newBytes;
  }
  encodeNil() {
    this.writeU8(192);
  }
  encodeBoolean(object) {
    if (object === false) {
      this.writeU8(194);
    } else {
      this.writeU8(195);
    }
  }
  encodeNumber(object) {
    if (!this.forceIntegerToFloat && Number.isSafeInteger(object)) {
      if (object >= 0) {
        if (object < 128) {
          this.writeU8(object);
        } else if (object < 256) {
          this.writeU8(204);
          this.writeU8(object);
        } else if (object < 65536) {
          this.writeU8(205);
          this.writeU16(object);
        } else if (object < 4294967296) {
          this.writeU8(206);
          this.writeU32(object);
        } else if (!this.useBigInt64) {
          this.writeU8(207);
          this.writeU64(object);
        } else {
          this.encodeNumberAsFloat(object);
        }
      } else {
        if (object >= -32) {
          this.writeU8(224 | object + 32);
        } else if (object >= -128) {
          this.writeU8(208);
          this.writeI8(object);
        } else if (object >= -32768) {
          this.writeU8(209);
          this.writeI16(object);
        } else if (object >= -2147483648) {
          this.writeU8(210);
          this.writeI32(object);
        } else if (!this.useBigInt64) {
          this.writeU8(211);
          this.writeI64(object);
        } else {
          this.encodeNumberAsFloat(object);
        }
      }
    } else {
      this.encodeNumberAsFloat(object);
    }
  }
  encodeNumberAsFloat(object) {
    if (this.forceFloat32) {
      this.writeU8(202);
      this.writeF32(object);
    } else {
      this.writeU8(203);
      this.writeF64(object);
    }
  }
  encodeBigInt64(object) {
    if (object >= BigInt(0)) {
      this.writeU8(207);
      this.writeBigUint64(object);
    } else {
      this.writeU8(211);
      this.writeBigInt64(object);
    }
  }
  writeStringHeader(byteLength) {
    if (byteLength < 32) {
      this.writeU8(160 + byteLength);
    } else if (byteLength < 256) {
      this.writeU8(217);
      this.writeU8(byteLength);
    } else if (byteLength < 65536) {
      this.writeU8(218);
      this.writeU16(byteLength);
    } else if (byteLength < 4294967296) {
      this.writeU8(219);
      this.writeU32(byteLength);
    } else {
      throw new Error(`Too long string: ${byteLength} bytes in UTF-8`);
    }
  }
  encodeString(object) {
    const maxHeaderSize = 1 + 4;
    const byteLength = utf8Count(object);
    this.ensureBufferSizeToWrite(maxHeaderSize + byteLength);
    this.writeStringHeader(byteLength);
    utf8Encode(object, this.bytes, this.pos);
    this.pos += byteLength;
  }
  encodeObject(object, depth) {
    const ext = this.extensionCodec.tryToEncode(object, this.context);
    if (ext != null) {
      this.encodeExtension(ext);
    } else if (Array.isArray(object)) {
      this.encodeArray(object, depth);
    } else if (ArrayBuffer.isView(object)) {
      this.encodeBinary(object);
    } else if (typeof object === "object") {
      this.encodeMap(object, depth);
    } else {
      throw new Error(`Unrecognized object: ${Object.prototype.toString.apply(object)}`);
    }
  }
  encodeBinary(object) {
    const size = object.byteLength;
    if (size < 256) {
      this.writeU8(196);
      this.writeU8(size);
    } else if (size < 65536) {
      this.writeU8(197);
      this.writeU16(size);
    } else if (size < 4294967296) {
      this.writeU8(198);
      this.writeU32(size);
    } else {
      throw new Error(`Too large binary: ${size}`);
    }
    const bytes = ensureUint8Array(object);
    this.writeU8a(bytes);
  }
  encodeArray(object, depth) {
    const size = object.length;
    if (size < 16) {
      this.writeU8(144 + size);
    } else if (size < 65536) {
      this.writeU8(220);
      this.writeU16(size);
    } else if (size < 4294967296) {
      this.writeU8(221);
      this.writeU32(size);
    } else {
      throw new Error(`Too large array: ${size}`);
    }
    for (const item of object) {
      this.doEncode(item, depth + 1);
    }
  }
  countWithoutUndefined(object, keys) {
    let count = 0;
    for (const key of keys) {
      if (object[key] !== void 0) {
        count++;
      }
    }
    return count;
  }
  encodeMap(object, depth) {
    const keys = Object.keys(object);
    if (this.sortKeys) {
      keys.sort();
    }
    const size = this.ignoreUndefined ? this.countWithoutUndefined(object, keys) : keys.length;
    if (size < 16) {
      this.writeU8(128 + size);
    } else if (size < 65536) {
      this.writeU8(222);
      this.writeU16(size);
    } else if (size < 4294967296) {
      this.writeU8(223);
      this.writeU32(size);
    } else {
      throw new Error(`Too large map object: ${size}`);
    }
    for (const key of keys) {
      const value = object[key];
      if (!(this.ignoreUndefined && value === void 0)) {
        this.encodeString(key);
        this.doEncode(value, depth + 1);
      }
    }
  }
  encodeExtension(ext) {
    if (typeof ext.data === "function") {
      const data = ext.data(this.pos + 6);
      const size2 = data.length;
      if (size2 >= 4294967296) {
        throw new Error(`Too large extension object: ${size2}`);
      }
      this.writeU8(201);
      this.writeU32(size2);
      this.writeI8(ext.type);
      this.writeU8a(data);
      return;
    }
    const size = ext.data.length;
    if (size === 1) {
      this.writeU8(212);
    } else if (size === 2) {
      this.writeU8(213);
    } else if (size === 4) {
      this.writeU8(214);
    } else if (size === 8) {
      this.writeU8(215);
    } else if (size === 16) {
      this.writeU8(216);
    } else if (size < 256) {
      this.writeU8(199);
      this.writeU8(size);
    } else if (size < 65536) {
      this.writeU8(200);
      this.writeU16(size);
    } else if (size < 4294967296) {
      this.writeU8(201);
      this.writeU32(size);
    } else {
      throw new Error(`Too large extension object: ${size}`);
    }
    this.writeI8(ext.type);
    this.writeU8a(ext.data);
  }
  writeU8(value) {
    this.ensureBufferSizeToWrite(1);
    this.view.setUint8(this.pos, value);
    this.pos++;
  }
  writeU8a(values) {
    const size = values.length;
    this.ensureBufferSizeToWrite(size);
    this.bytes.set(values, this.pos);
    this.pos += size;
  }
  writeI8(value) {
    this.ensureBufferSizeToWrite(1);
    this.view.setInt8(this.pos, value);
    this.pos++;
  }
  writeU16(value) {
    this.ensureBufferSizeToWrite(2);
    this.view.setUint16(this.pos, value);
    this.pos += 2;
  }
  writeI16(value) {
    this.ensureBufferSizeToWrite(2);
    this.view.setInt16(this.pos, value);
    this.pos += 2;
  }
  writeU32(value) {
    this.ensureBufferSizeToWrite(4);
    this.view.setUint32(this.pos, value);
    this.pos += 4;
  }
  writeI32(value) {
    this.ensureBufferSizeToWrite(4);
    this.view.setInt32(this.pos, value);
    this.pos += 4;
  }
  writeF32(value) {
    this.ensureBufferSizeToWrite(4);
    this.view.setFloat32(this.pos, value);
    this.pos += 4;
  }
  writeF64(value) {
    this.ensureBufferSizeToWrite(8);
    this.view.setFloat64(this.pos, value);
    this.pos += 8;
  }
  writeU64(value) {
    this.ensureBufferSizeToWrite(8);
    setUint64(this.view, this.pos, value);
    this.pos += 8;
  }
  writeI64(value) {
    this.ensureBufferSizeToWrite(8);
    setInt64(this.view, this.pos, value);
    this.pos += 8;
  }
  writeBigUint64(value) {
    this.ensureBufferSizeToWrite(8);
    this.view.setBigUint64(this.pos, value);
    this.pos += 8;
  }
  writeBigInt64(value) {
    this.ensureBufferSizeToWrite(8);
    this.view.setBigInt64(this.pos, value);
    this.pos += 8;
  }
};

// node_modules/@msgpack/msgpack/dist.esm/encode.mjs
function encode(value, options) {
  const encoder2 = new Encoder(options);
  return encoder2.encodeSharedRef(value);
}

// node_modules/@msgpack/msgpack/dist.esm/utils/prettyByte.mjs
function prettyByte(byte) {
  return `${byte < 0 ? "-" : ""}0x${Math.abs(byte).toString(16).padStart(2, "0")}`;
}

// node_modules/@msgpack/msgpack/dist.esm/CachedKeyDecoder.mjs
var DEFAULT_MAX_KEY_LENGTH = 16;
var DEFAULT_MAX_LENGTH_PER_KEY = 16;
var CachedKeyDecoder = class {
  hit = 0;
  miss = 0;
  caches;
  maxKeyLength;
  maxLengthPerKey;
  constructor(maxKeyLength = DEFAULT_MAX_KEY_LENGTH, maxLengthPerKey = DEFAULT_MAX_LENGTH_PER_KEY) {
    this.maxKeyLength = maxKeyLength;
    this.maxLengthPerKey = maxLengthPerKey;
    this.caches = [];
    for (let i = 0; i < this.maxKeyLength; i++) {
      this.caches.push([]);
    }
  }
  canBeCached(byteLength) {
    return byteLength > 0 && byteLength <= this.maxKeyLength;
  }
  find(bytes, inputOffset, byteLength) {
    const records = this.caches[byteLength - 1];
    FIND_CHUNK: for (const record of records) {
      const recordBytes = record.bytes;
      for (let j = 0; j < byteLength; j++) {
        if (recordBytes[j] !== bytes[inputOffset + j]) {
          continue FIND_CHUNK;
        }
      }
      return record.str;
    }
    return null;
  }
  store(bytes, value) {
    const records = this.caches[bytes.length - 1];
    const record = { bytes, str: value };
    if (records.length >= this.maxLengthPerKey) {
      records[Math.random() * records.length | 0] = record;
    } else {
      records.push(record);
    }
  }
  decode(bytes, inputOffset, byteLength) {
    const cachedValue = this.find(bytes, inputOffset, byteLength);
    if (cachedValue != null) {
      this.hit++;
      return cachedValue;
    }
    this.miss++;
    const str = utf8DecodeJs(bytes, inputOffset, byteLength);
    const slicedCopyOfBytes = Uint8Array.prototype.slice.call(bytes, inputOffset, inputOffset + byteLength);
    this.store(slicedCopyOfBytes, str);
    return str;
  }
};

// node_modules/@msgpack/msgpack/dist.esm/Decoder.mjs
var STATE_ARRAY = "array";
var STATE_MAP_KEY = "map_key";
var STATE_MAP_VALUE = "map_value";
var mapKeyConverter = (key) => {
  if (typeof key === "string" || typeof key === "number") {
    return key;
  }
  throw new DecodeError("The type of key must be string or number but " + typeof key);
};
var StackPool = class {
  stack = [];
  stackHeadPosition = -1;
  get length() {
    return this.stackHeadPosition + 1;
  }
  top() {
    return this.stack[this.stackHeadPosition];
  }
  pushArrayState(size) {
    const state = this.getUninitializedStateFromPool();
    state.type = STATE_ARRAY;
    state.position = 0;
    state.size = size;
    state.array = new Array(size);
  }
  pushMapState(size) {
    const state = this.getUninitializedStateFromPool();
    state.type = STATE_MAP_KEY;
    state.readCount = 0;
    state.size = size;
    state.map = {};
  }
  getUninitializedStateFromPool() {
    this.stackHeadPosition++;
    if (this.stackHeadPosition === this.stack.length) {
      const partialState = {
        type: void 0,
        size: 0,
        array: void 0,
        position: 0,
        readCount: 0,
        map: void 0,
        key: null
      };
      this.stack.push(partialState);
    }
    return this.stack[this.stackHeadPosition];
  }
  release(state) {
    const topStackState = this.stack[this.stackHeadPosition];
    if (topStackState !== state) {
      throw new Error("Invalid stack state. Released state is not on top of the stack.");
    }
    if (state.type === STATE_ARRAY) {
      const partialState = state;
      partialState.size = 0;
      partialState.array = void 0;
      partialState.position = 0;
      partialState.type = void 0;
    }
    if (state.type === STATE_MAP_KEY || state.type === STATE_MAP_VALUE) {
      const partialState = state;
      partialState.size = 0;
      partialState.map = void 0;
      partialState.readCount = 0;
      partialState.type = void 0;
    }
    this.stackHeadPosition--;
  }
  reset() {
    this.stack.length = 0;
    this.stackHeadPosition = -1;
  }
};
var HEAD_BYTE_REQUIRED = -1;
var EMPTY_VIEW = new DataView(new ArrayBuffer(0));
var EMPTY_BYTES = new Uint8Array(EMPTY_VIEW.buffer);
try {
  EMPTY_VIEW.getInt8(0);
} catch (e) {
  if (!(e instanceof RangeError)) {
    throw new Error("This module is not supported in the current JavaScript engine because DataView does not throw RangeError on out-of-bounds access");
  }
}
var MORE_DATA = new RangeError("Insufficient data");
var sharedCachedKeyDecoder = new CachedKeyDecoder();
var Decoder = class _Decoder {
  extensionCodec;
  context;
  useBigInt64;
  rawStrings;
  maxStrLength;
  maxBinLength;
  maxArrayLength;
  maxMapLength;
  maxExtLength;
  keyDecoder;
  mapKeyConverter;
  totalPos = 0;
  pos = 0;
  view = EMPTY_VIEW;
  bytes = EMPTY_BYTES;
  headByte = HEAD_BYTE_REQUIRED;
  stack = new StackPool();
  entered = false;
  constructor(options) {
    this.extensionCodec = options?.extensionCodec ?? ExtensionCodec.defaultCodec;
    this.context = options?.context;
    this.useBigInt64 = options?.useBigInt64 ?? false;
    this.rawStrings = options?.rawStrings ?? false;
    this.maxStrLength = options?.maxStrLength ?? UINT32_MAX;
    this.maxBinLength = options?.maxBinLength ?? UINT32_MAX;
    this.maxArrayLength = options?.maxArrayLength ?? UINT32_MAX;
    this.maxMapLength = options?.maxMapLength ?? UINT32_MAX;
    this.maxExtLength = options?.maxExtLength ?? UINT32_MAX;
    this.keyDecoder = options?.keyDecoder !== void 0 ? options.keyDecoder : sharedCachedKeyDecoder;
    this.mapKeyConverter = options?.mapKeyConverter ?? mapKeyConverter;
  }
  clone() {
    return new _Decoder({
      extensionCodec: this.extensionCodec,
      context: this.context,
      useBigInt64: this.useBigInt64,
      rawStrings: this.rawStrings,
      maxStrLength: this.maxStrLength,
      maxBinLength: this.maxBinLength,
      maxArrayLength: this.maxArrayLength,
      maxMapLength: this.maxMapLength,
      maxExtLength: this.maxExtLength,
      keyDecoder: this.keyDecoder
    });
  }
  reinitializeState() {
    this.totalPos = 0;
    this.headByte = HEAD_BYTE_REQUIRED;
    this.stack.reset();
  }
  setBuffer(buffer) {
    const bytes = ensureUint8Array(buffer);
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = 0;
  }
  appendBuffer(buffer) {
    if (this.headByte === HEAD_BYTE_REQUIRED && !this.hasRemaining(1)) {
      this.setBuffer(buffer);
    } else {
      const remainingData = this.bytes.subarray(this.pos);
      const newData = ensureUint8Array(buffer);
      const newBuffer = new Uint8Array(remainingData.length + newData.length);
      newBuffer.set(remainingData);
      newBuffer.set(newData, remainingData.length);
      this.setBuffer(newBuffer);
    }
  }
  hasRemaining(size) {
    return this.view.byteLength - this.pos >= size;
  }
  createExtraByteError(posToShow) {
    const { view, pos } = this;
    return new RangeError(`Extra ${view.byteLength - pos} of ${view.byteLength} byte(s) found at buffer[${posToShow}]`);
  }
  /**
   * @throws {@link DecodeError}
   * @throws {@link RangeError}
   */
  decode(buffer) {
    if (this.entered) {
      const instance = this.clone();
      return instance.decode(buffer);
    }
    try {
      this.entered = true;
      this.reinitializeState();
      this.setBuffer(buffer);
      const object = this.doDecodeSync();
      if (this.hasRemaining(1)) {
        throw this.createExtraByteError(this.pos);
      }
      return object;
    } finally {
      this.entered = false;
    }
  }
  *decodeMulti(buffer) {
    if (this.entered) {
      const instance = this.clone();
      yield* instance.decodeMulti(buffer);
      return;
    }
    try {
      this.entered = true;
      this.reinitializeState();
      this.setBuffer(buffer);
      while (this.hasRemaining(1)) {
        yield this.doDecodeSync();
      }
    } finally {
      this.entered = false;
    }
  }
  async decodeAsync(stream) {
    if (this.entered) {
      const instance = this.clone();
      return instance.decodeAsync(stream);
    }
    try {
      this.entered = true;
      let decoded = false;
      let object;
      for await (const buffer of stream) {
        if (decoded) {
          this.entered = false;
          throw this.createExtraByteError(this.totalPos);
        }
        this.appendBuffer(buffer);
        try {
          object = this.doDecodeSync();
          decoded = true;
        } catch (e) {
          if (!(e instanceof RangeError)) {
            throw e;
          }
        }
        this.totalPos += this.pos;
      }
      if (decoded) {
        if (this.hasRemaining(1)) {
          throw this.createExtraByteError(this.totalPos);
        }
        return object;
      }
      const { headByte, pos, totalPos } = this;
      throw new RangeError(`Insufficient data in parsing ${prettyByte(headByte)} at ${totalPos} (${pos} in the current buffer)`);
    } finally {
      this.entered = false;
    }
  }
  decodeArrayStream(stream) {
    return this.decodeMultiAsync(stream, true);
  }
  decodeStream(stream) {
    return this.decodeMultiAsync(stream, false);
  }
  async *decodeMultiAsync(stream, isArray) {
    if (this.entered) {
      const instance = this.clone();
      yield* instance.decodeMultiAsync(stream, isArray);
      return;
    }
    try {
      this.entered = true;
      let isArrayHeaderRequired = isArray;
      let arrayItemsLeft = -1;
      for await (const buffer of stream) {
        if (isArray && arrayItemsLeft === 0) {
          throw this.createExtraByteError(this.totalPos);
        }
        this.appendBuffer(buffer);
        if (isArrayHeaderRequired) {
          arrayItemsLeft = this.readArraySize();
          isArrayHeaderRequired = false;
          this.complete();
        }
        try {
          while (true) {
            yield this.doDecodeSync();
            if (--arrayItemsLeft === 0) {
              break;
            }
          }
        } catch (e) {
          if (!(e instanceof RangeError)) {
            throw e;
          }
        }
        this.totalPos += this.pos;
      }
    } finally {
      this.entered = false;
    }
  }
  doDecodeSync() {
    DECODE: while (true) {
      const headByte = this.readHeadByte();
      let object;
      if (headByte >= 224) {
        object = headByte - 256;
      } else if (headByte < 192) {
        if (headByte < 128) {
          object = headByte;
        } else if (headByte < 144) {
          const size = headByte - 128;
          if (size !== 0) {
            this.pushMapState(size);
            this.complete();
            continue DECODE;
          } else {
            object = {};
          }
        } else if (headByte < 160) {
          const size = headByte - 144;
          if (size !== 0) {
            this.pushArrayState(size);
            this.complete();
            continue DECODE;
          } else {
            object = [];
          }
        } else {
          const byteLength = headByte - 160;
          object = this.decodeString(byteLength, 0);
        }
      } else if (headByte === 192) {
        object = null;
      } else if (headByte === 194) {
        object = false;
      } else if (headByte === 195) {
        object = true;
      } else if (headByte === 202) {
        object = this.readF32();
      } else if (headByte === 203) {
        object = this.readF64();
      } else if (headByte === 204) {
        object = this.readU8();
      } else if (headByte === 205) {
        object = this.readU16();
      } else if (headByte === 206) {
        object = this.readU32();
      } else if (headByte === 207) {
        if (this.useBigInt64) {
          object = this.readU64AsBigInt();
        } else {
          object = this.readU64();
        }
      } else if (headByte === 208) {
        object = this.readI8();
      } else if (headByte === 209) {
        object = this.readI16();
      } else if (headByte === 210) {
        object = this.readI32();
      } else if (headByte === 211) {
        if (this.useBigInt64) {
          object = this.readI64AsBigInt();
        } else {
          object = this.readI64();
        }
      } else if (headByte === 217) {
        const byteLength = this.lookU8();
        object = this.decodeString(byteLength, 1);
      } else if (headByte === 218) {
        const byteLength = this.lookU16();
        object = this.decodeString(byteLength, 2);
      } else if (headByte === 219) {
        const byteLength = this.lookU32();
        object = this.decodeString(byteLength, 4);
      } else if (headByte === 220) {
        const size = this.readU16();
        if (size !== 0) {
          this.pushArrayState(size);
          this.complete();
          continue DECODE;
        } else {
          object = [];
        }
      } else if (headByte === 221) {
        const size = this.readU32();
        if (size !== 0) {
          this.pushArrayState(size);
          this.complete();
          continue DECODE;
        } else {
          object = [];
        }
      } else if (headByte === 222) {
        const size = this.readU16();
        if (size !== 0) {
          this.pushMapState(size);
          this.complete();
          continue DECODE;
        } else {
          object = {};
        }
      } else if (headByte === 223) {
        const size = this.readU32();
        if (size !== 0) {
          this.pushMapState(size);
          this.complete();
          continue DECODE;
        } else {
          object = {};
        }
      } else if (headByte === 196) {
        const size = this.lookU8();
        object = this.decodeBinary(size, 1);
      } else if (headByte === 197) {
        const size = this.lookU16();
        object = this.decodeBinary(size, 2);
      } else if (headByte === 198) {
        const size = this.lookU32();
        object = this.decodeBinary(size, 4);
      } else if (headByte === 212) {
        object = this.decodeExtension(1, 0);
      } else if (headByte === 213) {
        object = this.decodeExtension(2, 0);
      } else if (headByte === 214) {
        object = this.decodeExtension(4, 0);
      } else if (headByte === 215) {
        object = this.decodeExtension(8, 0);
      } else if (headByte === 216) {
        object = this.decodeExtension(16, 0);
      } else if (headByte === 199) {
        const size = this.lookU8();
        object = this.decodeExtension(size, 1);
      } else if (headByte === 200) {
        const size = this.lookU16();
        object = this.decodeExtension(size, 2);
      } else if (headByte === 201) {
        const size = this.lookU32();
        object = this.decodeExtension(size, 4);
      } else {
        throw new DecodeError(`Unrecognized type byte: ${prettyByte(headByte)}`);
      }
      this.complete();
      const stack = this.stack;
      while (stack.length > 0) {
        const state = stack.top();
        if (state.type === STATE_ARRAY) {
          state.array[state.position] = object;
          state.position++;
          if (state.position === state.size) {
            object = state.array;
            stack.release(state);
          } else {
            continue DECODE;
          }
        } else if (state.type === STATE_MAP_KEY) {
          if (object === "__proto__") {
            throw new DecodeError("The key __proto__ is not allowed");
          }
          state.key = this.mapKeyConverter(object);
          state.type = STATE_MAP_VALUE;
          continue DECODE;
        } else {
          state.map[state.key] = object;
          state.readCount++;
          if (state.readCount === state.size) {
            object = state.map;
            stack.release(state);
          } else {
            state.key = null;
            state.type = STATE_MAP_KEY;
            continue DECODE;
          }
        }
      }
      return object;
    }
  }
  readHeadByte() {
    if (this.headByte === HEAD_BYTE_REQUIRED) {
      this.headByte = this.readU8();
    }
    return this.headByte;
  }
  complete() {
    this.headByte = HEAD_BYTE_REQUIRED;
  }
  readArraySize() {
    const headByte = this.readHeadByte();
    switch (headByte) {
      case 220:
        return this.readU16();
      case 221:
        return this.readU32();
      default: {
        if (headByte < 160) {
          return headByte - 144;
        } else {
          throw new DecodeError(`Unrecognized array type byte: ${prettyByte(headByte)}`);
        }
      }
    }
  }
  pushMapState(size) {
    if (size > this.maxMapLength) {
      throw new DecodeError(`Max length exceeded: map length (${size}) > maxMapLengthLength (${this.maxMapLength})`);
    }
    this.stack.pushMapState(size);
  }
  pushArrayState(size) {
    if (size > this.maxArrayLength) {
      throw new DecodeError(`Max length exceeded: array length (${size}) > maxArrayLength (${this.maxArrayLength})`);
    }
    this.stack.pushArrayState(size);
  }
  decodeString(byteLength, headerOffset) {
    if (!this.rawStrings || this.stateIsMapKey()) {
      return this.decodeUtf8String(byteLength, headerOffset);
    }
    return this.decodeBinary(byteLength, headerOffset);
  }
  /**
   * @throws {@link RangeError}
   */
  decodeUtf8String(byteLength, headerOffset) {
    if (byteLength > this.maxStrLength) {
      throw new DecodeError(`Max length exceeded: UTF-8 byte length (${byteLength}) > maxStrLength (${this.maxStrLength})`);
    }
    if (this.bytes.byteLength < this.pos + headerOffset + byteLength) {
      throw MORE_DATA;
    }
    const offset = this.pos + headerOffset;
    let object;
    if (this.stateIsMapKey() && this.keyDecoder?.canBeCached(byteLength)) {
      object = this.keyDecoder.decode(this.bytes, offset, byteLength);
    } else {
      object = utf8Decode2(this.bytes, offset, byteLength);
    }
    this.pos += headerOffset + byteLength;
    return object;
  }
  stateIsMapKey() {
    if (this.stack.length > 0) {
      const state = this.stack.top();
      return state.type === STATE_MAP_KEY;
    }
    return false;
  }
  /**
   * @throws {@link RangeError}
   */
  decodeBinary(byteLength, headOffset) {
    if (byteLength > this.maxBinLength) {
      throw new DecodeError(`Max length exceeded: bin length (${byteLength}) > maxBinLength (${this.maxBinLength})`);
    }
    if (!this.hasRemaining(byteLength + headOffset)) {
      throw MORE_DATA;
    }
    const offset = this.pos + headOffset;
    const object = this.bytes.subarray(offset, offset + byteLength);
    this.pos += headOffset + byteLength;
    return object;
  }
  decodeExtension(size, headOffset) {
    if (size > this.maxExtLength) {
      throw new DecodeError(`Max length exceeded: ext length (${size}) > maxExtLength (${this.maxExtLength})`);
    }
    const extType = this.view.getInt8(this.pos + headOffset);
    const data = this.decodeBinary(
      size,
      headOffset + 1
      /* extType */
    );
    return this.extensionCodec.decode(data, extType, this.context);
  }
  lookU8() {
    return this.view.getUint8(this.pos);
  }
  lookU16() {
    return this.view.getUint16(this.pos);
  }
  lookU32() {
    return this.view.getUint32(this.pos);
  }
  readU8() {
    const value = this.view.getUint8(this.pos);
    this.pos++;
    return value;
  }
  readI8() {
    const value = this.view.getInt8(this.pos);
    this.pos++;
    return value;
  }
  readU16() {
    const value = this.view.getUint16(this.pos);
    this.pos += 2;
    return value;
  }
  readI16() {
    const value = this.view.getInt16(this.pos);
    this.pos += 2;
    return value;
  }
  readU32() {
    const value = this.view.getUint32(this.pos);
    this.pos += 4;
    return value;
  }
  readI32() {
    const value = this.view.getInt32(this.pos);
    this.pos += 4;
    return value;
  }
  readU64() {
    const value = getUint64(this.view, this.pos);
    this.pos += 8;
    return value;
  }
  readI64() {
    const value = getInt64(this.view, this.pos);
    this.pos += 8;
    return value;
  }
  readU64AsBigInt() {
    const value = this.view.getBigUint64(this.pos);
    this.pos += 8;
    return value;
  }
  readI64AsBigInt() {
    const value = this.view.getBigInt64(this.pos);
    this.pos += 8;
    return value;
  }
  readF32() {
    const value = this.view.getFloat32(this.pos);
    this.pos += 4;
    return value;
  }
  readF64() {
    const value = this.view.getFloat64(this.pos);
    this.pos += 8;
    return value;
  }
};

// node_modules/@msgpack/msgpack/dist.esm/decode.mjs
function decode(buffer, options) {
  const decoder2 = new Decoder(options);
  return decoder2.decode(buffer);
}

// src/msgpack.ts
var msgpackCodec = {
  subprotocol: SUBPROTOCOL_MSGPACK,
  binary: true,
  encode: (frame) => encode(frame),
  decode: (data) => {
    if (typeof data === "string") throw new TypeError("a text frame on enf.v1.msgpack");
    return decode(data);
  }
};
export {
  CloseCode,
  DURABLE_EVENTS,
  EPHEMERAL_EVENTS,
  EVENT_TOPICS,
  EnfClient,
  EnfClosedError,
  EnfConnectionLostError,
  EnfError,
  EnfRequestError,
  EnfTimeoutError,
  EnfTooLargeError,
  MAX_FRAME_BYTES,
  REQUEST_ROLES,
  REQUEST_TYPES,
  SUBPROTOCOL_JSON,
  SUBPROTOCOL_MSGPACK,
  TERMINAL_STATES,
  jsonCodec,
  msgpackCodec,
  tokenTimes
};
