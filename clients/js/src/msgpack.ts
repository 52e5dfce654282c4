/**
 * The `enf.v1.msgpack` codec (binary frames, the same structure as JSON).
 * Import it from `@enf/client/msgpack`; it needs the `@msgpack/msgpack` package.
 *
 *     import { msgpackCodec } from "@enf/client/msgpack";
 *     new EnfClient({ url, token, codec: msgpackCodec });
 */

import { decode, encode } from "@msgpack/msgpack";

import type { Codec } from "./codec.js";
import { SUBPROTOCOL_MSGPACK } from "./protocol.js";

export const msgpackCodec: Codec = {
  subprotocol: SUBPROTOCOL_MSGPACK,
  binary: true,
  encode: (frame) => encode(frame),
  decode: (data) => {
    if (typeof data === "string") throw new TypeError("a text frame on enf.v1.msgpack");
    return decode(data);
  },
};
