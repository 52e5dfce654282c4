/**
 * One WebSocket connection: opened, authenticated by `hello`, welcomed; its
 * frames handed to the client; the requests sent on it and not answered yet.
 * The client (`client.ts`) decides what a link is for and what to do when it
 * closes; a link only reports.
 */

import type { Codec } from "./codec.js";
import { jsonCodec } from "./codec.js";
import {
  CloseCode,
  isObject,
  type EventFrameOf,
  type ReplyFrame,
  type Welcome,
} from "./protocol.js";
import type { WebSocketFactory, WebSocketLike } from "./socket.js";
import { OPEN } from "./socket.js";
import type { TokenTimes } from "./token.js";

/** A request the client has made, sent or not, not answered yet. */
export interface Pending {
  readonly id: string;
  readonly type: string;
  readonly data: unknown;
  /** Sent again after a reconnect when unanswered (same id). */
  readonly retry: boolean;
  /** Made by the SDK itself (a re-join): never moved to another link. */
  readonly internal: boolean;
  /** Ever written on a socket. */
  sent: boolean;
  /** Written again after the socket it was sent on dropped before the reply. */
  resent: boolean;
  /** Times it was answered `unavailable` and sent again. */
  unavailable: number;
  settled: boolean;
  resolve(data: unknown): void;
  reject(error: unknown): void;
}

/** Why a link ended before it was welcomed. */
export class LinkClosed extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
  ) {
    super(`closed with ${code}${reason ? `: ${reason}` : ""}`);
  }
}

export interface LinkHandlers {
  onEvent(link: Link, frame: EventFrameOf): void;
  onReply(link: Link, frame: ReplyFrame): void;
  onClose(link: Link, code: number, reason: string): void;
  onBadFrame(link: Link, error: unknown): void;
}

let linkNumbers = 0;

export class Link {
  /** A number for logs: the n-th link of this process. */
  readonly n = ++linkNumbers;
  readonly socket: WebSocketLike;
  codec: Codec = jsonCodec;
  welcome: Welcome | undefined;
  state: "opening" | "ready" | "closed" = "opening";
  /** Replaced by a newer link: it takes no new requests, and closes once its own are answered. */
  draining = false;
  readonly inFlight = new Map<string, Pending>();
  /** When a frame last arrived (ms, `Date.now()`). */
  lastHeard = Date.now();
  closeCode: number | undefined;
  /** Resolves with `welcome`; rejects with `LinkClosed` if the socket ends first. */
  readonly ready: Promise<Welcome>;
  private settleReady!: { resolve(w: Welcome): void; reject(e: unknown): void };

  constructor(
    url: string,
    private readonly token: string,
    readonly tokenTimes: TokenTimes,
    preferred: Codec,
    codecs: readonly Codec[],
    factory: WebSocketFactory,
    private readonly handlers: LinkHandlers,
  ) {
    this.ready = new Promise<Welcome>((resolve, reject) => {
      this.settleReady = { resolve, reject };
    });
    this.ready.catch(() => undefined); // observed by whoever awaits it
    this.socket = factory(url, [preferred.subprotocol]);
    this.socket.binaryType = "arraybuffer";
    this.socket.onopen = () => {
      // The server echoes the subprotocol it chose; none or an unknown one means JSON (§8).
      const chosen = codecs.find((c) => c.subprotocol === this.socket.protocol);
      this.codec = chosen ?? jsonCodec;
      this.write({ type: "hello", data: { token: this.token } });
    };
    this.socket.onmessage = (event: { data: unknown }) => this.received(event.data);
    this.socket.onclose = (event: { code?: number; reason?: string }) =>
      this.ended(event.code ?? CloseCode.ABNORMAL, event.reason ?? "");
    this.socket.onerror = () => undefined; // a close event follows
  }

  /** Write a frame; false when the socket is not open (its close is on the way). */
  write(frame: unknown): boolean {
    if (this.state === "closed" || this.socket.readyState !== OPEN) return false;
    try {
      this.socket.send(this.codec.encode(frame));
      return true;
    } catch {
      return false;
    }
  }

  send(pending: Pending): boolean {
    this.inFlight.set(pending.id, pending);
    pending.sent = true;
    return this.write({ id: pending.id, type: pending.type, data: pending.data });
  }

  /** Close it ourselves, and report it closed now (not when the peer answers). */
  close(code: number = CloseCode.NORMAL, reason = ""): void {
    if (this.state === "closed") return;
    try {
      this.socket.close(code, reason);
    } catch {
      // already closing
    }
    this.ended(code, reason);
  }

  private received(raw: unknown): void {
    if (this.state === "closed") return;
    this.lastHeard = Date.now();
    let frame: unknown;
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
      this.handlers.onEvent(this, frame as unknown as EventFrameOf);
    } else if ("re" in frame) {
      this.handlers.onReply(this, frame as unknown as ReplyFrame);
    } else if (frame.type === "welcome" && isObject(frame.data)) {
      this.welcome = frame.data as unknown as Welcome;
      this.state = "ready";
      this.settleReady.resolve(this.welcome);
    } else {
      this.handlers.onBadFrame(this, new Error(`an unknown frame: ${String(frame.type)}`));
    }
  }

  private ended(code: number, reason: string): void {
    if (this.state === "closed") return;
    this.state = "closed";
    this.closeCode = code;
    this.socket.onopen = this.socket.onmessage = this.socket.onclose = null;
    this.socket.onerror = () => undefined;
    this.settleReady.reject(new LinkClosed(code, reason));
    this.handlers.onClose(this, code, reason);
  }
}

function toFrameData(raw: unknown): string | Uint8Array {
  if (typeof raw === "string") return raw;
  if (raw instanceof ArrayBuffer) return new Uint8Array(raw);
  if (ArrayBuffer.isView(raw)) return new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength);
  if (Array.isArray(raw)) {
    // `ws` with binaryType "fragments"
    const parts = raw.filter((p): p is Uint8Array => ArrayBuffer.isView(p));
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
