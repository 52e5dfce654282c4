/**
 * Tokens: what the SDK reads from a JWT (its `exp` and `iat`, unverified:
 * the server verifies), and the token provider's signature.
 */

import { base64Decode, utf8Decode } from "./text.js";

/** Why the SDK asks for a token. */
export type TokenReason =
  /** The first connection. */
  | "initial"
  /** The current token is near its `exp`: a new connection replaces the open one. */
  | "refresh"
  /** The server closed the connection with 4401 (token expired or refused). */
  | "expired"
  /** Reconnecting after a drop, and the cached token is near its `exp` or unreadable. */
  | "reconnect"
  /** `client.reconnect({ freshToken: true })`: e.g. after a pause that needs a token issued later. */
  | "forced";

/** Returns a JWT (PROTOCOL §2). Called for every new token the SDK needs. */
export type TokenProvider = (context: { reason: TokenReason }) => string | Promise<string>;

export interface TokenTimes {
  /** `exp`, in milliseconds since the epoch. */
  expMs?: number;
  /** `iat`, in milliseconds since the epoch. */
  iatMs?: number;
}

function base64UrlDecode(part: string): string {
  return utf8Decode(base64Decode(part.replace(/-/g, "+").replace(/_/g, "/")));
}

/** The token's `exp` and `iat`, if it is a JWT that carries them. */
export function tokenTimes(token: string): TokenTimes {
  const payload = token.split(".")[1];
  if (payload === undefined) return {};
  try {
    const claims: unknown = JSON.parse(base64UrlDecode(payload));
    if (typeof claims !== "object" || claims === null) return {};
    const { exp, iat } = claims as { exp?: unknown; iat?: unknown };
    const times: TokenTimes = {};
    if (typeof exp === "number" && Number.isFinite(exp)) times.expMs = exp * 1000;
    if (typeof iat === "number" && Number.isFinite(iat)) times.iatMs = iat * 1000;
    return times;
  } catch {
    return {};
  }
}
