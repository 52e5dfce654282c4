/** Errors the SDK rejects with. Every one is an `EnfError`. */

import type { ErrorCode } from "./protocol.js";

export class EnfError extends Error {
  override name = "EnfError";
}

/** The server answered a request with `ok: false` (PROTOCOL §3). */
export class EnfRequestError extends EnfError {
  override name = "EnfRequestError";
  constructor(
    /** The contract's error code (`conflict`, `forbidden`, …). */
    readonly code: ErrorCode | string,
    message: string,
    /** The request type that was refused. */
    readonly type: string,
    /** The request id on the wire. */
    readonly id: string,
  ) {
    super(`${type}: ${code}: ${message}`);
  }
}

/** A request got no reply in time (`timeoutMs`, reconnects included). */
export class EnfTimeoutError extends EnfError {
  override name = "EnfTimeoutError";
  constructor(
    readonly type: string,
    readonly id: string,
    timeoutMs: number,
  ) {
    super(`${type}: no reply within ${timeoutMs} ms`);
  }
}

/**
 * The client was closed (by `close()` or a fatal close code) before the
 * request was answered. `maybeApplied` is true when the request had been
 * sent: the server may have applied it.
 */
export class EnfClosedError extends EnfError {
  override name = "EnfClosedError";
  constructor(
    message: string,
    readonly maybeApplied = false,
    /** The close code that ended the client, if a server's close did. */
    readonly closeCode?: number,
  ) {
    super(message);
  }
}

/**
 * A request sent with `retry: false` was in flight when its connection
 * dropped: it was not sent again, and the server may have applied it.
 */
export class EnfConnectionLostError extends EnfError {
  override name = "EnfConnectionLostError";
  readonly maybeApplied = true;
  constructor(
    readonly type: string,
    readonly id: string,
  ) {
    super(
      `${type}: the connection dropped before the reply (not retried; it may have been applied)`,
    );
  }
}

/** A request refused by the SDK itself before it was sent (a frame over 64 KiB). */
export class EnfTooLargeError extends EnfError {
  override name = "EnfTooLargeError";
  readonly code = "too_large";
  constructor(
    readonly type: string,
    bytes: number,
  ) {
    super(`${type}: the frame is ${bytes} bytes, over the 65,536 the server accepts`);
  }
}
