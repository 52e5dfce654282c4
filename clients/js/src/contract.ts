/**
 * The typed vocabulary of the contract: request types with their data and
 * reply data, event names with their data. The maps come from the server's
 * AsyncAPI document (`scripts/generate.mjs` → `generated/contract.ts`).
 */

import type { Events, Requests } from "./generated/contract.js";
import type { EventFrameOf } from "./protocol.js";

export type { Events, Requests };

export type RequestType = keyof Requests & string;
export type EventName = keyof Events & string;

/** What the server takes as `data` of a request type. */
export type RequestData<T extends RequestType> = Requests[T]["data"];
/** What a request type's reply carries as `data`. */
export type ReplyData<T extends RequestType> = Requests[T]["reply"];
/** What an event carries as `data`. */
export type EventData<N extends EventName> = Events[N];

/**
 * What `client.request` takes: the request's data, where the SDK fills in
 * what it can (`idempotency_key` of `session.request`).
 */
export type RequestInput<T extends RequestType> = T extends "session.request"
  ? Omit<RequestData<T>, "idempotency_key"> & { idempotency_key?: string }
  : RequestData<T>;

/** An event as delivered: its frame, typed by name. */
export type EnfEvent<N extends EventName = EventName> = {
  [K in N]: EventFrameOf<K, EventData<K>>;
}[N];
