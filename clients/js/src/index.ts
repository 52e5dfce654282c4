/** @enf/client: the ENF session server's TypeScript client (PROTOCOL.md). */

export { EnfClient } from "./client.js";
export type {
  ClientStats,
  ClientStatus,
  EnfClientOptions,
  RequestOptions,
  Resync,
  StatusChange,
} from "./client.js";
export type { WaitOptions } from "./events.js";
export type {
  EnfEvent,
  EventData,
  EventName,
  Events,
  ReplyData,
  RequestData,
  RequestInput,
  RequestType,
  Requests,
} from "./contract.js";
export { jsonCodec, type Codec } from "./codec.js";
export {
  EnfClosedError,
  EnfConnectionLostError,
  EnfError,
  EnfRequestError,
  EnfTimeoutError,
  EnfTooLargeError,
} from "./errors.js";
export {
  CloseCode,
  MAX_FRAME_BYTES,
  SUBPROTOCOL_JSON,
  SUBPROTOCOL_MSGPACK,
  TERMINAL_STATES,
  type ErrorCode,
  type EventFrameOf,
  type Role,
  type Welcome,
} from "./protocol.js";
export type { WebSocketConstructor, WebSocketFactory, WebSocketLike } from "./socket.js";
export { tokenTimes, type TokenProvider, type TokenReason } from "./token.js";
export type { BackoffOptions } from "./backoff.js";
export {
  DURABLE_EVENTS,
  EPHEMERAL_EVENTS,
  EVENT_TOPICS,
  REQUEST_ROLES,
  REQUEST_TYPES,
} from "./generated/contract.js";
/** Every type of the contract, as generated from the AsyncAPI document (`Snapshot`, `VideoConfig`, …). */
export type * as Contract from "./generated/contract.js";
