/**
 * Tokens that expire (PROTOCOL §8: the server closes a connection with 4401
 * when its token reaches `exp`): the SDK moves to a new connection with a
 * fresh token before that; when it cannot (the provider has nothing newer),
 * it reconnects with a fresh token after the 4401. Either way requests keep
 * succeeding past the first token's `exp`, and no event is lost or doubled.
 */

import assert from "node:assert/strict";
import { afterEach, test } from "node:test";

import { EnfClosedError, EnfClient, tokenTimes, type TokenReason } from "../src/index.js";
import {
  BASE_URL,
  Sockets,
  assertGapless,
  closeAll,
  connect,
  documentOf,
  mintToken,
  unique,
} from "./helpers.js";

afterEach(closeAll);

const TTL_S = 4;

/** A token provider whose calls a test can wait for. */
function provider(sub: string, answer: (reason: TokenReason, calls: number) => string) {
  const calls: TokenReason[] = [];
  const issued: string[] = [];
  let wake = (): void => undefined;
  return {
    calls,
    issued,
    token: ({ reason }: { reason: TokenReason }) => {
      calls.push(reason);
      const token = answer(reason, calls.length);
      issued.push(token);
      wake();
      return token;
    },
    /** Until the provider has been called `n` times. */
    async called(n: number): Promise<void> {
      while (calls.length < n) await new Promise<void>((resolve) => (wake = resolve));
    },
    sub,
  };
}

test("a short-lived token is refreshed before its exp, with no reconnect and nothing lost", async () => {
  const sub = unique("c-refresh");
  const tokens = provider(sub, () => mintToken(sub, "customer", { ttlS: TTL_S }));
  const { client, inbox } = await connect(sub, "customer", { token: tokens.token });
  const firstExpMs = tokenTimes(tokens.issued[0]!).expMs!;

  const { session_id: sid } = await client.request("session.request", { document: documentOf(5) });
  await inbox.expect("session.state", (e) => e.data.state === "REQUESTED");

  // Two refreshes: the first before the first token's exp, the second after it.
  await tokens.called(3);
  assert.deepEqual(tokens.calls, ["initial", "refresh", "refresh"]);
  assert.ok(Date.now() > firstExpMs, "past the first token's exp");

  // Requests still succeed, on the newest connection, and the session is still followed.
  const pong = await client.request("ping");
  assert.match(pong.server_time, /^\d{4}-/);
  const joined = await client.request("session.join", { session_id: sid });
  assert.equal(joined.session.state, "REQUESTED");
  await client.request("session.cancel", { session_id: sid, reason: "done testing" });
  await inbox.expect("session.state", (e) => e.data.state === "CANCELLED");

  assert.equal(client.stats.reconnects, 0, "never dropped");
  assert.ok(client.stats.refreshes >= 1, `refreshes: ${client.stats.refreshes}`);
  assert.equal(client.status, "open");
  assertGapless(inbox.seqs(`session:${sid}`), 1, "customer");
});

test("when the provider has nothing newer, the 4401 at exp brings a reconnect with a fresh token", async () => {
  const sub = unique("c-expired");
  let current = "";
  const tokens = provider(sub, (reason) => {
    // A provider that refreshes only once the server refused: "refresh" gets the same token.
    if (reason !== "refresh" || current === "")
      current = mintToken(sub, "customer", { ttlS: TTL_S });
    return current;
  });
  const closes: number[] = [];
  const { client, inbox } = await connect(sub, "customer", { token: tokens.token });
  client.onStatus((change) => {
    if (change.code !== undefined) closes.push(change.code);
  });
  const firstExpMs = tokenTimes(tokens.issued[0]!).expMs!;
  const { session_id: sid } = await client.request("session.request", { document: documentOf(6) });
  await inbox.expect("session.state", (e) => e.data.state === "REQUESTED");

  await tokens.called(3); // initial, refresh (same token), expired (after the 4401)
  assert.deepEqual(tokens.calls, ["initial", "refresh", "expired"]);
  assert.ok(Date.now() >= firstExpMs - 1_000);
  assert.deepEqual(closes, [4401]);

  await client.request("session.cancel", { session_id: sid, reason: "done testing" });
  await inbox.expect("session.state", (e) => e.data.state === "CANCELLED");
  assert.ok(Date.now() > firstExpMs, "past the first token's exp");
  assert.ok(client.stats.reconnects >= 1); // (a slow run may reach the second token's exp too)
  assertGapless(inbox.seqs(`session:${sid}`), 1, "customer");
});

test("a token the server refuses ends the client after a few tries, with the close code", async () => {
  const sockets = new Sockets();
  let calls = 0;
  const client = new EnfClient({
    url: BASE_URL,
    token: () => {
      calls += 1;
      return mintToken(unique("c-refused"), "customer", { ttlS: 200_000 }); // over ENF_MAX_TOKEN_TTL_S
    },
    createWebSocket: sockets.factory,
    backoff: { initialMs: 10, maxMs: 50 },
  });
  const error = await client.connect().then(
    () => assert.fail("connected"),
    (e: unknown) => e,
  );
  assert.ok(error instanceof EnfClosedError);
  assert.equal(error.closeCode, 4401);
  assert.equal(calls, 3);
  assert.equal(client.status, "closed");
  await assert.rejects(client.request("ping"), EnfClosedError);
});

test("reconnect({freshToken}) resolves on a connection made with a token asked for after the call", async () => {
  const sub = unique("c-forced");
  const tokens = provider(sub, () => mintToken(sub, "customer", { ttlS: 600 }));
  const { client } = await connect(sub, "customer", { token: tokens.token });
  // A reconnect is under way when a fresh token is asked for: that one may carry an
  // older token, so the promise waits for the forced connection after it.
  const first = client.reconnect();
  const forced = client.reconnect({ freshToken: true });
  await first;
  await forced;
  assert.equal(tokens.calls.at(-1), "forced");
  assert.equal(client.stats.connections, 3, "initial, the reconnect, the forced one");
  assert.ok(await client.request("ping"));
});
