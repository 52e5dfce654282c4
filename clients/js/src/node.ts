/**
 * `@enf/client/node`: the same client, with Node's WebSocket: the global one
 * (Node ≥ 22), else the `ws` package (Node 20; install it).
 */

import { WebSocket as WsWebSocket } from "ws";

import { EnfClient as BaseClient, type EnfClientOptions } from "./client.js";
import type { WebSocketConstructor } from "./socket.js";

export * from "./index.js";

/** The global WebSocket when Node has one, else `ws`'s. */
export const NodeWebSocket: WebSocketConstructor =
  (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket ??
  (WsWebSocket as unknown as WebSocketConstructor);

export class EnfClient extends BaseClient {
  constructor(options: EnfClientOptions) {
    super(
      options.WebSocket || options.createWebSocket
        ? options
        : { ...options, WebSocket: NodeWebSocket },
    );
  }
}
