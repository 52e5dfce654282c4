/**
 * Dropped sockets: the SDK reconnects, follows again with `since_seq`, and
 * the application sees every durable event once, in order; a request whose
 * reply was lost is sent again with the same id and answered once.
 */

import assert from "node:assert/strict";
import { afterEach, test } from "node:test";

import { jsonCodec } from "../src/index.js";
import {
  PH,
  assertGapless,
  closeAll,
  connect,
  documentOf,
  offerFor,
  putNotary,
  unique,
  type TestClient,
} from "./helpers.js";

afterEach(closeAll);

/** Notary online, customer requests, notary accepts, both join: (customer, notary, session id). */
async function assigned(
  backoff = { initialMs: 50, maxMs: 1_000 },
): Promise<{ customer: TestClient; notary: TestClient; sid: string; notaryId: string }> {
  const notaryId = unique("n-resume");
  await putNotary(notaryId);
  const notary = await connect(notaryId, "enp");
  // (A slower customer: events pile up while it is away.)
  const customer = await connect(unique("c-resume"), "customer", { backoff });
  await notary.client.request("presence.online");
  const { session_id: sid } = await customer.client.request("session.request", {
    document: documentOf(2),
    preferred_notary_id: notaryId,
  });
  const offer = await offerFor(notary, sid);
  await notary.client.request("offer.accept", { offer_id: offer.data.offer_id });
  await customer.inbox.expect("session.state", (e) => e.data.state === "ENP_ASSIGNED");
  await customer.client.request("session.join", {
    session_id: sid,
    consent: { recording: true, privacy: true },
    location: PH,
  });
  await notary.client.request("session.join", { session_id: sid, location: PH });
  return { customer, notary, sid, notaryId };
}

test("sockets cut while events are produced: nothing lost, nothing doubled", async () => {
  const { customer, notary, sid } = await assigned({ initialMs: 300, maxMs: 600 });
  const topic = `session:${sid}`;

  // Per customer socket: the seq its re-join's snapshot stood at, and the events it brought.
  const joins = new Map<unknown, string>();
  const replayed: number[] = [];
  const heads = new Map<unknown, number>();
  customer.sockets.hooks = {
    outgoing: (data, socket) => {
      const frame = JSON.parse(String(data)) as { id?: string; type?: string };
      if (frame.type === "session.join" && frame.id) joins.set(socket, frame.id);
    },
    incoming: (data, socket) => {
      const frame = JSON.parse(String(data)) as {
        re?: string;
        data?: { session?: { seq?: number } };
        topic?: string;
        seq?: number;
      };
      if (frame.re !== undefined && frame.re === joins.get(socket))
        heads.set(socket, frame.data?.session?.seq ?? 0);
      const head = heads.get(socket);
      if (
        frame.topic === topic &&
        frame.seq !== undefined &&
        head !== undefined &&
        frame.seq <= head
      ) {
        replayed.push(frame.seq); // missed while away, replayed after since_seq
      }
    },
  };

  // Three connections of the notary produce (each connection may send 50 requests/s).
  const producers = [notary];
  for (let i = 0; i < 2; i++) {
    const extra = await connect(notary.client.welcome!.user_id, "enp");
    await extra.client.request("session.join", { session_id: sid });
    producers.push(extra);
  }
  let moves = 0;
  const move = (): Promise<unknown> =>
    // Each join from a new place is a durable participant.joined event on the session.
    producers[moves % producers.length]!.client.request("session.join", {
      session_id: sid,
      location: { ...PH, lat: PH.lat + (moves += 1) / 1000 },
    });
  let dropped = 0;
  let wake = (): void => undefined;
  customer.client.onStatus((change) => {
    if (change.status === "reconnecting") dropped += 1;
    wake();
  });
  /** Until the customer is connected again after its `n`-th drop (woken by its status changes). */
  const backAfter = async (n: number): Promise<void> => {
    const back = (): boolean =>
      dropped >= n && customer.client.status === "open" && customer.sockets.newestOpen();
    while (!back()) await new Promise<void>((resolve) => (wake = resolve));
  };

  const cuts = 4;
  for (let round = 1; round <= cuts; round++) {
    const before = dropped;
    assert.ok(customer.sockets.cut(), `round ${round}: the customer's socket was open`); // its network drops
    if (round === 2) {
      // And once more as it reconnects: its next socket is cut as soon as it opens.
      customer.sockets.onCreate = (socket) => {
        customer.sockets.onCreate = undefined;
        socket.ws.once("open", () => socket.cut());
      };
    }
    // Events go on at once (the cut socket can no longer get them), then it comes back.
    for (let i = 0; i < 5; i++) {
      if (round === 3 && i === 0) {
        const inFlight = move();
        notary.sockets.cut(); // the notary's too, with its join in flight
        await inFlight;
      } else await move();
    }
    await backAfter(before + 1);
    for (let i = 0; i < 3; i++) await move(); // and while it is connected
  }
  assert.ok(customer.sockets.all.length >= cuts + 2, "a reconnecting socket was cut too");
  // The head: a join that changes nothing commits nothing and tells the seq.
  const head = (await notary.client.request("session.join", { session_id: sid })).session.seq!;
  await customer.inbox.until(
    (seen) => seen.some((e) => e.topic === topic && e.seq === head),
    `seq ${head}`,
  );

  assertGapless(customer.inbox.seqs(topic), 1, "customer");
  assert.equal(customer.inbox.seqs(topic).at(-1), head);
  const notarySeqs = notary.inbox.seqs(topic);
  assertGapless(notarySeqs, notarySeqs[0]!, "notary");
  assert.equal(notarySeqs.at(-1), head);
  const moved = customer.inbox.seen.filter(
    (e) =>
      e.topic === topic && e.name === "participant.joined" && (e.data.location?.lat ?? 0) > PH.lat,
  );
  assert.equal(moved.length, moves);
  assert.ok(
    customer.client.stats.reconnects >= cuts,
    `reconnects: ${customer.client.stats.reconnects}`,
  );
  assert.ok(replayed.length > 0, "some events were missed while away and replayed after a re-join");
  assert.ok(notary.client.stats.reconnects >= 1);
  assert.deepEqual(customer.client.followedSessions(), [sid]);
  assert.equal(customer.client.stats.gaps, 0);
});

test("a request whose reply was lost is sent again with the same id and answered once", async () => {
  const { customer, notary, sid } = await assigned();
  await notary.client.request("video.start", { session_id: sid });
  await customer.inbox.expect("session.state", (e) => e.data.state === "VIDEO_IN_PROGRESS");
  await notary.client.request("checks.record", {
    session_id: sid,
    comprehension_confirmed: true,
    duress_check_passed: true,
  });

  // The server applies act.sign, and its reply is lost with the socket.
  const sent: { id: string; type: string }[] = [];
  let signId: string | undefined;
  customer.sockets.hooks = {
    outgoing: (data) => {
      const frame = JSON.parse(String(data)) as { id?: string; type?: string };
      if (frame.id !== undefined && frame.type !== undefined)
        sent.push({ id: frame.id, type: frame.type });
      if (frame.type === "act.sign") signId = frame.id;
    },
    incoming: (data, socket) => {
      const frame = JSON.parse(String(data)) as { re?: string };
      if (
        signId !== undefined &&
        frame.re === signId &&
        sent.filter((s) => s.id === signId).length === 1
      ) {
        socket.cut();
        return false;
      }
      return true;
    },
  };
  const reply = await customer.client.request("act.sign", {
    session_id: sid,
    signature: "c2lnbmF0dXJl",
  });
  assert.deepEqual(reply, {}); // the first reply, not `conflict: the act is already signed`
  const signs = sent.filter((s) => s.type === "act.sign");
  assert.equal(signs.length, 2, "sent twice");
  assert.equal(signs[0]!.id, signs[1]!.id, "with the same id");
  // The re-join came before the retry (so its events are replayed first).
  const rejoin = sent.findIndex((s, i) => i > 0 && s.type === "session.join");
  assert.ok(rejoin >= 0 && rejoin < sent.lastIndexOf(signs[1]!));
  const signed = customer.inbox.seen.filter(
    (e) => e.topic === `session:${sid}` && e.name === "act.signed",
  );
  assert.equal(signed.length, 1);

  // The act goes on: the customer is connected and joined again.
  await notary.client.request("act.seal", {
    session_id: sid,
    signature: "ZW5wLXNpZw==",
    seal: "c2VhbA==",
  });
  await customer.inbox.expect("act.sealed");
  assertGapless(customer.inbox.seqs(`session:${sid}`), 1, "customer");
});

test("a notary's socket drops while online: online again with since_seq, the next offer arrives once", async () => {
  const notaryId = unique("n-online");
  await putNotary(notaryId);
  const notary = await connect(notaryId, "enp");
  const customer = await connect(unique("c-online"), "customer");
  await notary.client.request("presence.online");
  const topic = `notary:${notaryId}`;

  // An offer and its withdrawal: the notary's topic has a cursor.
  const first = await customer.client.request("session.request", {
    document: documentOf(3),
    preferred_notary_id: notaryId,
  });
  await offerFor(notary, first.session_id);
  await customer.client.request("session.cancel", {
    session_id: first.session_id,
    reason: "changed my mind",
  });
  await notary.inbox.expect("offer.withdrawn", (e) => e.data.session_id === first.session_id);

  const sent: { type: string; data: unknown }[] = [];
  notary.sockets.hooks = {
    outgoing: (data) => {
      const frame = JSON.parse(String(data)) as { type: string; data: unknown };
      sent.push(frame);
    },
  };
  const cursor = notary.client.lastSeq(topic);
  assert.ok(cursor > 0);
  notary.sockets.cut();
  const second = await customer.client.request("session.request", {
    document: documentOf(4),
    preferred_notary_id: notaryId,
  });
  const offer = await offerFor(notary, second.session_id);
  await notary.client.request("offer.accept", { offer_id: offer.data.offer_id });
  await customer.inbox.expect("session.state", (e) => e.data.state === "ENP_ASSIGNED");

  const online = sent.find((f) => f.type === "presence.online");
  assert.ok(online, "presence.online sent again");
  assert.deepEqual(online.data, { since_seq: cursor });
  const offers = notary.inbox.seen.filter(
    (e) =>
      e.name === "offer" && (e.data as { session_id: string }).session_id === second.session_id,
  );
  assert.equal(offers.length, 1);
  const seqs = notary.inbox.seqs(topic);
  assertGapless(seqs, seqs[0]!, "notary topic");
  assert.equal(jsonCodec.subprotocol, notary.sockets.current.protocol);
});

test("a lost offer.decline reply: the retry by id gets the first reply again", async () => {
  const notaryId = unique("n-decline");
  await putNotary(notaryId);
  const notary = await connect(notaryId, "enp");
  const customer = await connect(unique("c-decline"), "customer");
  await notary.client.request("presence.online");
  const { session_id: sid } = await customer.client.request("session.request", {
    document: documentOf(8),
    preferred_notary_id: notaryId,
  });
  const offer = await offerFor(notary, sid);

  // The decline is applied; its reply is lost with the socket.
  let declineId: string | undefined;
  const replies: { ok: boolean; code?: string }[] = [];
  notary.sockets.hooks = {
    outgoing: (data) => {
      const frame = JSON.parse(String(data)) as { id?: string; type?: string };
      if (frame.type === "offer.decline") declineId = frame.id;
    },
    incoming: (data, socket) => {
      const frame = JSON.parse(String(data)) as {
        re?: string;
        ok?: boolean;
        error?: { code: string };
      };
      if (declineId === undefined || frame.re !== declineId) return true;
      replies.push({ ok: frame.ok === true, code: frame.error?.code });
      if (replies.length > 1) return true;
      socket.cut();
      return false;
    },
  };
  const reply = await notary.client.request("offer.decline", { offer_id: offer.data.offer_id });
  assert.deepEqual(reply, {});
  // The server applied the first and journaled its reply: the same id gets it again.
  assert.deepEqual(replies, [
    { ok: true, code: undefined },
    { ok: true, code: undefined },
  ]);
  const withdrawn = notary.inbox.seen.filter(
    (e) => e.name === "offer.withdrawn" && e.data.offer_id === offer.data.offer_id,
  );
  assert.equal(withdrawn.length, 1);
  assert.equal(notary.client.stats.reconnects, 1);
});
