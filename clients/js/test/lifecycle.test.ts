/**
 * A whole notarization through the SDK against the real server (with
 * ENF_RECORDING=off): the notary's profile by HTTP, presence.online,
 * session.request, the offer accepted, both joins, video.start,
 * checks.record, act.sign, act.seal, video.end, session.notarize,
 * NOTARIZED, distribution to COMPLETED; in JSON and in msgpack.
 */

import assert from "node:assert/strict";
import { afterEach, test } from "node:test";

import type { Codec } from "../src/index.js";
import { jsonCodec } from "../src/index.js";
import { msgpackCodec } from "../src/msgpack.js";
import {
  PH,
  assertGapless,
  closeAll,
  connect,
  documentOf,
  offerFor,
  putNotary,
  unique,
} from "./helpers.js";

afterEach(closeAll);

const HAPPY = [
  "REQUESTED",
  "ENP_ASSIGNED",
  "VIDEO_IN_PROGRESS",
  "VIDEO_COMPLETED",
  "NOTARIZING",
  "NOTARIZED",
  "DISTRIBUTING",
  "COMPLETED",
];

for (const codec of [jsonCodec, msgpackCodec] as Codec[]) {
  test(`a whole lifecycle (${codec.subprotocol})`, async () => {
    const notaryId = unique("n-life");
    await putNotary(notaryId);
    const notary = await connect(notaryId, "enp", { codec });
    const customer = await connect(unique("c-life"), "customer", { codec });
    assert.equal(notary.client.welcome?.role, "enp");
    assert.equal(notary.sockets.current.protocol, codec.subprotocol);

    const online = await notary.client.request("presence.online");
    assert.equal(online.status, "available");

    // No idempotency key given: the SDK makes one.
    const requested = await customer.client.request("session.request", {
      document: documentOf(1),
      preferred_notary_id: notaryId,
    });
    assert.equal(requested.state, "REQUESTED");
    const sid = requested.session_id;
    const first = await customer.inbox.expect("session.state", (e) => e.data.state === "REQUESTED");
    assert.equal(first.seq, 1);
    assert.equal(first.data.prev, null);

    const offer = await offerFor(notary, sid);
    assert.equal(offer.topic, `notary:${notaryId}`);
    const accepted = await notary.client.request("offer.accept", { offer_id: offer.data.offer_id });
    assert.deepEqual(accepted, { session_id: sid });
    const assigned = await notary.inbox.expect(
      "session.state",
      (e) => e.data.state === "ENP_ASSIGNED",
    );
    assert.equal(assigned.data.enp_id, notaryId);
    await customer.inbox.expect("session.state", (e) => e.data.state === "ENP_ASSIGNED");

    const joined = await customer.client.request("session.join", {
      session_id: sid,
      consent: { recording: true, privacy: true },
      location: PH,
    });
    assert.equal(joined.session.state, "ENP_ASSIGNED");
    await notary.client.request("session.join", { session_id: sid, location: PH });

    const video = await notary.client.request("video.start", { session_id: sid });
    assert.equal(video.provider, "webrtc");
    await customer.inbox.expect("session.state", (e) => e.data.state === "VIDEO_IN_PROGRESS");
    await customer.inbox.expect("video.config"); // ephemeral: how the customer takes part

    await notary.client.request("checks.record", {
      session_id: sid,
      comprehension_confirmed: true,
      duress_check_passed: true,
    });
    await customer.client.request("act.sign", { session_id: sid, signature: "c2lnbmF0dXJl" });
    await notary.client.request("act.seal", {
      session_id: sid,
      signature: "ZW5wLXNpZw==",
      seal: "c2VhbA==",
    });
    await notary.client.request("video.end", { session_id: sid });
    await notary.client.request("session.notarize", { session_id: sid });
    const notarized = await customer.inbox.expect("session.notarized");
    assert.equal(notarized.data.envelope_id, `ENF-${sid}`);
    await customer.inbox.expect("session.state", (e) => e.data.state === "NOTARIZED");

    await customer.client.request("session.distribute", { session_id: sid, recipients: [] });
    await customer.inbox.expect("session.state", (e) => e.data.state === "COMPLETED");
    await notary.inbox.expect("session.state", (e) => e.data.state === "COMPLETED");

    // Every durable event once, in order: the customer from seq 1, the notary from its acceptance.
    const topic = `session:${sid}`;
    assertGapless(customer.inbox.seqs(topic), 1, "customer");
    assertGapless(notary.inbox.seqs(topic), assigned.seq!, "notary");
    const states = customer.inbox.seen
      .filter((e) => e.topic === topic && e.name === "session.state")
      .map((e) => (e.data as { state: string }).state);
    assert.deepEqual(states, HAPPY);
    // A completed session is not re-joined after a reconnect.
    assert.deepEqual(customer.client.followedSessions(), []);
    assert.equal(customer.client.stats.duplicatesDropped, 0);
  });
}
