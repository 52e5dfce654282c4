/**
 * The committed files that are built from something else are what their
 * builders make now: src/generated/contract.ts from the running server's
 * AsyncAPI document (so the types cannot go stale), and the browser bundle
 * gateway/static/enf-sdk.js from src/ (and the server serves it).
 */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { BASE_URL, http } from "./helpers.js";

// From dist-test/test/ back to the package.
const PACKAGE = new URL("../../", import.meta.url);

interface Generator {
  generate(doc: unknown): Promise<string>;
  OUTPUT: string;
}
interface Bundler {
  bundle(): Promise<string>;
  BUNDLE: string;
}

test("src/generated/contract.ts is what the server's /asyncapi.json generates", async () => {
  const { status, json } = await http("GET", "/asyncapi.json");
  assert.equal(status, 200);
  const { generate, OUTPUT } = (await import(
    new URL("scripts/generate.mjs", PACKAGE).href
  )) as Generator;
  const fresh = await generate(json);
  const committed = readFileSync(OUTPUT, "utf8");
  assert.ok(
    committed === fresh,
    `${OUTPUT} is stale against ${BASE_URL}/asyncapi.json: run \`npm run generate\` in clients/js and commit it`,
  );
});

test("the generated maps name every request type and event of the document", async () => {
  const { json } = await http("GET", "/asyncapi.json");
  const doc = json as { components: { messages: Record<string, unknown> } };
  const names = Object.keys(doc.components.messages);
  const generated = await import(new URL("dist/generated/contract.js", PACKAGE).href);
  assert.deepEqual(
    [...generated.REQUEST_TYPES].sort(),
    names
      .filter((n) => n.startsWith("request."))
      .map((n) => n.slice("request.".length))
      .sort(),
  );
  assert.deepEqual(
    [...generated.DURABLE_EVENTS, ...generated.EPHEMERAL_EVENTS].sort(),
    names
      .filter((n) => n.startsWith("event."))
      .map((n) => n.slice("event.".length))
      .sort(),
  );
});

test("gateway/static/enf-sdk.js is the bundle of src/, and the server serves it", async () => {
  const { bundle, BUNDLE } = (await import(new URL("scripts/bundle.mjs", PACKAGE).href)) as Bundler;
  const fresh = await bundle();
  const committed = readFileSync(BUNDLE, "utf8");
  assert.ok(
    committed === fresh,
    `${BUNDLE} is stale: run \`npm run bundle\` in clients/js and commit it`,
  );
  assert.doesNotMatch(committed, /^\s*import\s/m, "the bundle imports nothing");
  const served = await fetch(`${BASE_URL}/console/enf-sdk.js`);
  assert.equal(served.status, 200);
  assert.equal(await served.text(), committed);
});
