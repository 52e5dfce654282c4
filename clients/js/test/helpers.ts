/**
 * What the tests share: the server under test (ENF_URL, ENF_JWT_SECRET from
 * the environment: tests/functional/test_js_sdk.py starts one), tokens
 * minted with its key, clients whose sockets a test can cut, and an inbox of
 * events to wait on (no test sleeps for a fixed time).
 */

import { createHash, createHmac } from "node:crypto";

import { WebSocket as WsWebSocket } from "ws";

import {
  EnfClient,
  type EnfClientOptions,
  type EnfEvent,
  type EventName,
  type TokenProvider,
  type WebSocketLike,
} from "../src/index.js";

function required(name: string): string {
  const value = process.env[name];
  if (!value)
    throw new Error(`${name} is not set: run these tests through tests/functional/test_js_sdk.py`);
  return value;
}

export const BASE_URL = required("ENF_URL").replace(/\/$/, "");
const SECRET = required("ENF_JWT_SECRET");

const b64url = (data: string | Buffer): string => Buffer.from(data).toString("base64url");

/** An HS256 token with the claims of PROTOCOL §2 (what gateway/auth.py verifies). */
export function mintToken(
  sub: string,
  type: "customer" | "enp" | "admin",
  options: { kyc?: boolean; ttlS?: number; iat?: number; claims?: Record<string, unknown> } = {},
): string {
  const iat = options.iat ?? Math.floor(Date.now() / 1000);
  const payload = {
    sub,
    type,
    kyc_verified: options.kyc ?? true,
    iat,
    exp: iat + (options.ttlS ?? 3600),
    ...options.claims,
  };
  const head = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const body = b64url(JSON.stringify(payload));
  const sig = createHmac("sha256", SECRET).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

/** A test-unique id (users, keys): tests share one server and database. */
export function unique(prefix: string): string {
  return `${prefix}-${Math.random().toString(36).slice(2, 10)}`;
}

export async function http(
  method: string,
  path: string,
  token?: string,
  body?: unknown,
): Promise<{ status: number; json: unknown }> {
  const response = await fetch(BASE_URL + path, {
    method,
    headers: {
      ...(token ? { Authorization: `Bearer ${token}` } : {}),
      ...(body !== undefined ? { "Content-Type": "application/json" } : {}),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let json: unknown = text;
  try {
    json = JSON.parse(text);
  } catch {
    // not JSON
  }
  return { status: response.status, json };
}

/** A notary profile, as an admin (PROTOCOL §6), so that the notary can be matched. */
export async function putNotary(
  notaryId: string,
  profile: Record<string, unknown> = {},
): Promise<void> {
  const expires = new Date(Date.now() + 5 * 365 * 86_400_000).toISOString().slice(0, 10);
  const { status, json } = await http(
    "PUT",
    `/v1/notaries/${notaryId}`,
    mintToken("admin-js", "admin"),
    {
      name: `Atty. ${notaryId}`,
      license_number: `LIC-${notaryId}`,
      commission_expires: expires,
      rating: 4.5,
      tariff: 500,
      specializations: ["affidavit"],
      avg_response_time_s: 30,
      ...profile,
    },
  );
  if (status !== 200) throw new Error(`PUT notary ${notaryId}: ${status} ${JSON.stringify(json)}`);
}

export function documentOf(n: number) {
  return {
    id: `doc-${n}`,
    sha256: createHash("sha256").update(`document ${n}`).digest("hex"),
    type: "affidavit",
    title: `Affidavit of loss #${n}`,
  };
}

export const PH = { lat: 14.5995, lng: 120.9842, country: "PH" };

/** Hooks on a socket's frames: return false from `incoming` to swallow a frame. */
export interface SocketHooks {
  incoming?(data: unknown, socket: TestSocket): boolean | void;
  outgoing?(data: string | Uint8Array, socket: TestSocket): void;
}

/** A `ws` socket as the SDK sees it, with hooks a test can set. */
export class TestSocket implements WebSocketLike {
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: ((event: unknown) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;

  constructor(
    readonly ws: WsWebSocket,
    private readonly hooks: SocketHooks,
  ) {
    ws.onopen = (e) => this.onopen?.(e);
    ws.onmessage = (e) => {
      if (this.hooks.incoming?.(e.data, this) === false) return;
      this.onmessage?.(e);
    };
    ws.onclose = (e) => this.onclose?.(e);
    ws.onerror = (e) => this.onerror?.(e);
  }

  get readyState(): number {
    return this.ws.readyState;
  }
  get protocol(): string {
    return this.ws.protocol;
  }
  get binaryType(): string {
    return this.ws.binaryType;
  }
  set binaryType(value: string) {
    this.ws.binaryType = value as "arraybuffer";
  }
  send(data: string | Uint8Array): void {
    this.hooks.outgoing?.(data, this);
    this.ws.send(data);
  }
  close(code?: number, reason?: string): void {
    this.ws.close(code, reason);
  }
  /** Drop the TCP connection with no close frame, as a lost network does. */
  cut(): void {
    this.ws.terminate();
  }
}

/** The sockets a client made, for a test to cut ("the network dropped") or to watch. */
export class Sockets {
  readonly all: TestSocket[] = [];
  hooks: SocketHooks = {};
  /** Called with each new socket. */
  onCreate: ((socket: TestSocket) => void) | undefined;
  readonly factory = (url: string, protocols: string[]): WebSocketLike => {
    const socket = new TestSocket(new WsWebSocket(url, protocols), {
      incoming: (d, s) => this.hooks.incoming?.(d, s),
      outgoing: (d, s) => this.hooks.outgoing?.(d, s),
    });
    this.all.push(socket);
    this.onCreate?.(socket);
    return socket;
  };

  get current(): TestSocket {
    const open = this.all.filter((s) => s.readyState === WsWebSocket.OPEN);
    const last = open[open.length - 1];
    if (last === undefined) throw new Error("no open socket");
    return last;
  }

  /** Whether the newest socket is open (a cut one may still deliver what it had received). */
  newestOpen(): boolean {
    return this.all[this.all.length - 1]?.readyState === WsWebSocket.OPEN;
  }

  /**
   * Drop the newest socket's TCP connection, with no close frame: an open
   * one, or one still connecting (a reconnect cut short). False if it had ended.
   */
  cut(): boolean {
    const last = this.all[this.all.length - 1];
    if (last === undefined || last.readyState >= WsWebSocket.CLOSING) return false;
    last.cut();
    return true;
  }
}

/**
 * Every event a client delivers, from its creation on, and a way to wait for
 * the next one not yet taken that matches (like gateway/client.py's expect).
 */
export class Inbox {
  readonly seen: EnfEvent[] = [];
  private readonly untaken: EnfEvent[] = [];
  private waiters: (() => void)[] = [];

  constructor(client: EnfClient) {
    client.on("*", (event) => {
      this.seen.push(event);
      this.untaken.push(event);
      const waiters = this.waiters;
      this.waiters = [];
      for (const w of waiters) w();
    });
  }

  async expect<N extends EventName>(
    name: N,
    match: (event: EnfEvent<N>) => boolean = () => true,
    timeoutMs = 15_000,
  ): Promise<EnfEvent<N>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.untaken.findIndex((e) => e.name === name && match(e as EnfEvent<N>));
      if (i >= 0) return this.untaken.splice(i, 1)[0] as EnfEvent<N>;
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(
          `no ${name} within ${timeoutMs} ms; got ${this.untaken.map((e) => e.name).join(", ")}`,
        );
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Wait until `predicate` holds over what was seen. */
  async until(
    predicate: (seen: readonly EnfEvent[]) => boolean,
    what: string,
    timeoutMs = 15_000,
  ): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!predicate(this.seen)) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`not true within ${timeoutMs} ms: ${what}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** (topic, seq) of the durable events seen on a topic, in order. */
  seqs(topic: string): number[] {
    return this.seen.filter((e) => e.topic === topic && e.seq !== undefined).map((e) => e.seq!);
  }
}

/**
 * The offer of session `sid` to this notary (offers of other sessions, left
 * by another test, are declined).
 */
export async function offerFor(notary: TestClient, sid: string): Promise<EnfEvent<"offer">> {
  for (;;) {
    const offer = await notary.inbox.expect("offer");
    if (offer.data.session_id === sid) return offer;
    await notary.client
      .request("offer.decline", { offer_id: offer.data.offer_id })
      .catch(() => undefined);
  }
}

export interface TestClient {
  client: EnfClient;
  inbox: Inbox;
  sockets: Sockets;
  /** How many times the token provider was called, and why. */
  tokenCalls: string[];
}

const opened: { client: EnfClient; role: string }[] = [];

/** What the SDK reported through `onError` (handlers that threw, unreadable frames): none expected. */
export const sdkErrors: string[] = [];

/** A connected client of `sub`, closed by `closeAll()`. */
export async function connect(
  sub: string,
  role: "customer" | "enp" | "admin",
  options: Partial<EnfClientOptions> & { ttlS?: number } = {},
): Promise<TestClient> {
  const sockets = new Sockets();
  const tokenCalls: string[] = [];
  const provider: TokenProvider = ({ reason }) => {
    tokenCalls.push(reason);
    return mintToken(sub, role, { ttlS: options.ttlS ?? 3600 });
  };
  const client = new EnfClient({
    url: BASE_URL,
    token: provider,
    createWebSocket: sockets.factory,
    backoff: { initialMs: 50, maxMs: 1_000 },
    requestTimeoutMs: 20_000,
    onError: (error, context) => {
      sdkErrors.push(`${sub}: ${context}: ${String(error)}`);
    },
    ...options,
  });
  const inbox = new Inbox(client);
  opened.push({ client, role });
  await client.connect();
  return { client, inbox, sockets, tokenCalls };
}

/**
 * Close every client of the test. Tests share a server: a customer's sessions
 * still open are cancelled and notaries go offline first (else a later test's
 * notary would be offered a session of this one, or a request of a later
 * test offered to a notary kept online for the reconnect grace).
 */
export async function closeAll(): Promise<void> {
  const clients = opened.splice(0);
  for (const { client, role } of clients) {
    if (role === "customer" && client.status === "open") {
      for (const sid of client.followedSessions()) {
        await client
          .request("session.cancel", { session_id: sid, reason: "test over" })
          .catch(() => undefined);
      }
    }
  }
  for (const { client, role } of clients) {
    if (role === "enp" && client.status === "open") {
      await client.request("presence.offline").catch(() => undefined);
    }
    await client.close();
  }
  const errors = sdkErrors.splice(0);
  if (errors.length > 0) throw new Error(`the SDK reported errors:\n${errors.join("\n")}`);
}

/** (topic, seq) pairs must count 1, 2, 3… from `first`, once each. */
export function assertGapless(seqs: readonly number[], first: number, what: string): void {
  const expected = Array.from({ length: seqs.length }, (_, i) => first + i);
  if (JSON.stringify(seqs) !== JSON.stringify(expected)) {
    throw new Error(
      `${what}: seqs ${JSON.stringify(seqs)} are not ${first}..${first + seqs.length - 1} once each`,
    );
  }
}
