/**
 * The WebSocket the SDK needs: the WHATWG API (browsers, React Native,
 * Node ≥ 22's global) or the `ws` package (Node 20), which has the same shape.
 */

/* eslint-disable @typescript-eslint/no-explicit-any -- events differ per implementation */
export interface WebSocketLike {
  readonly readyState: number;
  /** The subprotocol the server chose ("" when none). */
  readonly protocol: string;
  binaryType: string;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: any) => void) | null;
  onmessage: ((event: any) => void) | null;
  onclose: ((event: any) => void) | null;
  onerror: ((event: any) => void) | null;
}
/* eslint-enable @typescript-eslint/no-explicit-any */

export type WebSocketConstructor = new (
  url: string,
  protocols?: string | string[],
) => WebSocketLike;

/** Makes the socket of each connection (tests wrap it; Node 20 passes `ws`'s). */
export type WebSocketFactory = (url: string, protocols: string[]) => WebSocketLike;

export const OPEN = 1;

export function socketFactory(
  factory: WebSocketFactory | undefined,
  ctor: WebSocketConstructor | undefined,
): WebSocketFactory {
  if (factory) return factory;
  const found = ctor ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket ?? undefined;
  if (found === undefined) {
    throw new TypeError(
      'no WebSocket here: pass the WebSocket option (on Node 20: `import { WebSocket } from "ws"`), ' +
        'or import EnfClient from "@enf/client/node"',
    );
  }
  return (url, protocols) => new found(url, protocols);
}

/** `ws(s)://…/v1/ws` from a WebSocket URL, or from the server's `http(s)://` base URL. */
export function wsUrl(url: string): string {
  const u = new URL(url);
  if (u.protocol === "http:") u.protocol = "ws:";
  else if (u.protocol === "https:") u.protocol = "wss:";
  if (u.pathname === "" || u.pathname === "/") u.pathname = "/v1/ws";
  return u.toString();
}
