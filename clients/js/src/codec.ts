/**
 * Codecs: how frames are written on a subprotocol (PROTOCOL §3). JSON is
 * built in; msgpack is `@enf/client/msgpack` (it needs `@msgpack/msgpack`).
 */

import { SUBPROTOCOL_JSON } from "./protocol.js";
import { utf8Decode, utf8Length } from "./text.js";

export interface Codec {
  /** The subprotocol it speaks (`enf.v1.json`, `enf.v1.msgpack`). */
  readonly subprotocol: string;
  /** Binary frames (msgpack) or text frames (JSON). */
  readonly binary: boolean;
  encode(frame: unknown): string | Uint8Array;
  /** Decode one received frame's data (a string, or bytes for binary codecs). */
  decode(data: string | Uint8Array): unknown;
}

/** Bytes a frame takes on the wire (what the server's 64 KiB limit counts). */
export function frameBytes(encoded: string | Uint8Array): number {
  if (typeof encoded !== "string") return encoded.byteLength;
  // Each UTF-16 unit is at most 3 bytes of UTF-8: short frames need no encoding.
  return encoded.length * 3 <= 65_536 ? encoded.length : utf8Length(encoded);
}

export const jsonCodec: Codec = {
  subprotocol: SUBPROTOCOL_JSON,
  binary: false,
  encode: (frame) => JSON.stringify(frame),
  decode: (data) => JSON.parse(typeof data === "string" ? data : utf8Decode(data)),
};
