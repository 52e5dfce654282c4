/**
 * The client's API against the real server: typed errors, frames too large
 * refused before they are sent, the async iterator, close(), presence
 * followed again after a drop, the Node entry; and its small parts (backoff,
 * token times, URLs) on their own.
 */

import assert from "node:assert/strict";
import { afterEach, test } from "node:test";

import { Backoff } from "../src/backoff.js";
import {
  EnfClosedError,
  EnfRequestError,
  EnfTooLargeError,
  MAX_FRAME_BYTES,
  tokenTimes,
  type Resync,
} from "../src/index.js";
import type { EnfClient } from "../src/index.js";
import { EnfClient as NodeEnfClient } from "../src/node.js";
import { wsUrl } from "../src/socket.js";
import { base64DecodeSlow, utf8DecodeSlow, utf8LengthSlow, uuidOf } from "../src/text.js";
import {
  BASE_URL,
  PH,
  closeAll,
  connect,
  documentOf,
  mintToken,
  offerFor,
  putNotary,
  unique,
} from "./helpers.js";

afterEach(closeAll);

test("a refused request rejects with the contract's error code", async () => {
  const { client } = await connect(unique("c-errors"), "customer");
  const missing = "00000000-0000-4000-8000-000000000000";
  const error = await client
    .request("session.join", { session_id: missing })
    .catch((e: unknown) => e);
  assert.ok(error instanceof EnfRequestError);
  assert.equal(error.code, "not_found");
  assert.equal(error.type, "session.join");
  // The role is checked before anything else of the session (PROTOCOL §8 "Which error").
  await assert.rejects(client.request("video.start", { session_id: missing }), {
    code: "forbidden",
  });
  // The socket is still there.
  assert.match((await client.request("ping")).server_time, /Z$/);
});

test("a frame over 64 KiB is refused before it is sent; the socket stays open", async () => {
  const { client, sockets } = await connect(unique("c-large"), "customer");
  const signature = "x".repeat(MAX_FRAME_BYTES);
  await assert.rejects(
    client.request("act.sign", { session_id: unique("s"), signature }),
    EnfTooLargeError,
  );
  assert.equal(sockets.all.length, 1);
  await client.request("ping");
  assert.equal(client.stats.reconnects, 0);
});

test("events as an async iterator; close() ends it and rejects what waits", async () => {
  const notaryId = unique("n-iter");
  await putNotary(notaryId);
  const notaryClient = await connect(notaryId, "enp");
  const notary = notaryClient.client;
  const { client } = await connect(unique("c-iter"), "customer");
  await notary.request("presence.online");
  const states = client.events({ names: ["session.state"] });
  const { session_id: sid } = await client.request("session.request", {
    document: documentOf(7),
    preferred_notary_id: notaryId,
  });
  const first = await states.next();
  assert.equal(first.done, false);
  assert.equal(first.value?.data.state, "REQUESTED");
  assert.equal(first.value?.topic, `session:${sid}`);
  const offer = await offerFor(notaryClient, sid);
  await notary.request("offer.accept", { offer_id: offer.data.offer_id });
  for await (const event of states) {
    assert.equal(event.data.state, "ENP_ASSIGNED");
    break; // leaving the loop ends the iterator
  }
  await client.request("session.join", {
    session_id: sid,
    consent: { recording: true, privacy: true },
    location: PH,
  });

  const waiting = client.waitFor("session.notarized");
  const later = client.events();
  await client.close();
  await client.close(); // twice is fine
  await assert.rejects(waiting, EnfClosedError);
  assert.deepEqual(await later.next(), { value: undefined, done: true });
  await assert.rejects(client.request("ping"), EnfClosedError);
  assert.equal(client.status, "closed");
});

test("after a drop, presence.subscribe is sent again and its fresh list reported", async () => {
  const { client, sockets } = await connect(unique("a-presence"), "admin");
  const first = await client.request("presence.subscribe");
  assert.ok(Array.isArray(first.notaries));
  const resynced = new Promise<Resync>((resolve) => client.onResync(resolve));
  sockets.cut();
  const resync = await resynced;
  assert.equal(resync.kind, "presence.subscribe");
  if (resync.kind === "presence.subscribe") assert.ok(Array.isArray(resync.data.notaries));
  assert.equal(client.stats.reconnects, 1);
});

test("@enf/client/node finds a WebSocket by itself", async () => {
  const sub = unique("c-node");
  const client = new NodeEnfClient({ url: BASE_URL, token: () => mintToken(sub, "customer") });
  try {
    const welcome = await client.connect();
    assert.equal(welcome.user_id, sub);
    assert.equal(welcome.role, "customer");
  } finally {
    await client.close();
  }
});

test("backoff: full jitter under a doubling ceiling, with a floor", () => {
  const b = new Backoff({ initialMs: 100, maxMs: 1_000 }, () => 1);
  assert.deepEqual([b.next(), b.next(), b.next(), b.next(), b.next()], [100, 200, 400, 800, 1_000]);
  assert.equal(b.next(5_000), 5_000);
  b.reset();
  assert.equal(new Backoff({}, () => 0).next(), 0);
  assert.equal(b.next(), 100);
});

test("token times and URLs", () => {
  const token = mintToken("someone", "customer", { iat: 1_000, ttlS: 60 });
  assert.deepEqual(tokenTimes(token), { iatMs: 1_000_000, expMs: 1_060_000 });
  assert.deepEqual(tokenTimes("not a jwt"), {});
  assert.equal(wsUrl("http://127.0.0.1:8080"), "ws://127.0.0.1:8080/v1/ws");
  assert.equal(wsUrl("https://enf.example/"), "wss://enf.example/v1/ws");
  assert.equal(wsUrl("ws://h:1/v1/ws"), "ws://h:1/v1/ws");
});

test("UTF-8, base64 and UUIDs without the platform's helpers (React Native's Hermes)", () => {
  for (const text of ["", "plain", "Señora Dela Cruz", "₱500", "𝓔𝓝𝓕 👩‍⚖️"]) {
    assert.equal(utf8LengthSlow(text), Buffer.byteLength(text), text);
    assert.equal(utf8DecodeSlow(Buffer.from(text)), text, text);
  }
  for (const bytes of [[], [0], [1, 2], [255, 254, 253], [...Array(100).keys()]]) {
    const b64 = Buffer.from(bytes).toString("base64");
    assert.deepEqual([...base64DecodeSlow(b64)], bytes);
    assert.deepEqual([...base64DecodeSlow(b64.replace(/=+$/, ""))], bytes);
  }
  const uuid = uuidOf(new Uint8Array(16).fill(0xff));
  assert.match(uuid, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
});

/** Compile-time checks, never run: `tsc` fails the test build if the typing drifts. */
export function typeChecks(client: EnfClient): void {
  // @ts-expect-error: an unknown request type
  void client.request("session.teleport", {});
  // @ts-expect-error: a required field missing
  void client.request("act.sign", { session_id: "s" });
  void client.request("checks.record", {
    session_id: "s",
    // @ts-expect-error: a field of the wrong type
    comprehension_confirmed: "yes",
    duress_check_passed: true,
  });
  void client.request("ping"); // data may be left out where nothing is required
  void client.request("session.request", { document: documentOf(1) }); // the key is optional here
  void client.request("video.start", { session_id: "s" }).then((video) => {
    const provider: "webrtc" | "twilio" = video.provider;
    void provider;
  });
  client.on("offer", (e) => {
    const id: string = e.data.offer_id;
    void id;
  });
  // @ts-expect-error: not a field of offer
  client.on("offer", (e) => e.data.nonsense);
  // @ts-expect-error: not an event
  client.on("offer.nonsense", () => undefined);
}
