/**
 * The wire contract's envelope (PROTOCOL.md §3, §8): frames, error codes,
 * close codes and limits, named once.
 */

import type { ReplyErrorBody, WelcomeData } from "./generated/contract.js";

/** Subprotocol names (PROTOCOL §3). */
export const SUBPROTOCOL_JSON = "enf.v1.json";
export const SUBPROTOCOL_MSGPACK = "enf.v1.msgpack";

/** Frames larger than this close the socket with 1009 (PROTOCOL §8). */
export const MAX_FRAME_BYTES = 65_536;

/** Close codes the server uses (PROTOCOL §8). */
export const CloseCode = {
  /** Normal closure (the client's own close). */
  NORMAL: 1000,
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
  FLOOD: 4429,
} as const;

/** Error codes of replies (PROTOCOL §3). */
export type ErrorCode = ReplyErrorBody["code"];

/** `welcome`'s data: who the server says we are. */
export type Welcome = WelcomeData;

export type Role = Welcome["role"];

export interface RequestFrame {
  id: string;
  type: string;
  data: unknown;
}

export interface ReplyError {
  code: ErrorCode | string;
  message: string;
}

export type ReplyFrame =
  | { re: string | number | null; ok: true; data: unknown }
  | { re: string | number | null; ok: false; error: ReplyError };

/** An event frame as it is on the wire. Ephemeral events have no `seq`. */
export interface EventFrameOf<N extends string = string, D = unknown> {
  type: "event";
  topic: string;
  seq?: number;
  name: N;
  data: D;
  at: string;
}

export interface WelcomeFrame {
  type: "welcome";
  data: Welcome;
}

/** Session states that end a session: nothing follows them. */
export const TERMINAL_STATES: readonly string[] = ["COMPLETED", "CANCELLED", "FAILED"];

export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
