/**
 * The browser bundle's entry (`npm run bundle` → gateway/static/enf-sdk.js):
 * the client and both codecs, in one ES module with nothing to fetch.
 *
 *     <script type="module">
 *       import { EnfClient } from "/console/enf-sdk.js";
 *     </script>
 */

export * from "./index.js";
export { msgpackCodec } from "./msgpack.js";
