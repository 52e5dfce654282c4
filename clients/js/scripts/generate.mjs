#!/usr/bin/env node
/**
 * Generate src/generated/contract.ts from the server's AsyncAPI 3 document
 * (`GET /asyncapi.json`, built by gateway/http/asyncapi.py).
 *
 *   node scripts/generate.mjs                          # the document from this repository's Python (no server)
 *   node scripts/generate.mjs --input http://127.0.0.1:8080/asyncapi.json
 *   node scripts/generate.mjs --input asyncapi.json    # a file
 *   node scripts/generate.mjs --check [--input …]      # exit 1 if the committed file differs
 *
 * What it reads: the operations the server `receive`s (each request message,
 * `{id, type: <const>, data}`, and its ok reply `{re, ok: true, data}`) and
 * those it `send`s whose message is an event (`{type: "event", name:
 * <const>, data, seq?}`); `components.schemas` for what they refer to. What
 * it writes: `Requests` (request type → { data, reply }), `Events` (event
 * name → data), `Welcome`, the error codes, and the lists of request types,
 * durable and ephemeral events, with json-schema-to-typescript emitting the
 * types.
 */

import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { compile } from "json-schema-to-typescript";

const HERE = dirname(fileURLToPath(import.meta.url));
const PACKAGE = resolve(HERE, "..");
const REPO = resolve(PACKAGE, "../..");
export const OUTPUT = join(PACKAGE, "src/generated/contract.ts");

const PYTHON_DUMP =
  "import json, sys\n" +
  "from gateway.http.asyncapi import asyncapi_document\n" +
  "json.dump(asyncapi_document(), sys.stdout)\n";

/** The document: from a URL, a file, or (default) this repository's Python builder. */
export async function loadDocument(input) {
  if (input === undefined || input === "python") {
    const venv = join(REPO, ".venv/bin/python");
    const python = process.env.ENF_PYTHON ?? (existsSync(venv) ? venv : "python3");
    return JSON.parse(execFileSync(python, ["-c", PYTHON_DUMP], { cwd: REPO, encoding: "utf8" }));
  }
  if (/^https?:\/\//.test(input)) {
    const response = await fetch(input);
    if (!response.ok) throw new Error(`GET ${input}: HTTP ${response.status}`);
    return response.json();
  }
  return JSON.parse(readFileSync(input, "utf8"));
}

function pointer(doc, ref) {
  if (!ref.startsWith("#/")) throw new Error(`only local $refs are supported: ${ref}`);
  let node = doc;
  for (const raw of ref.slice(2).split("/")) {
    const key = raw.replace(/~1/g, "/").replace(/~0/g, "~");
    node = node?.[key];
    if (node === undefined) throw new Error(`unresolved $ref ${ref}`);
  }
  return node;
}

/** Follow a chain of $refs (channel message → component message). */
function deref(doc, node) {
  const seen = new Set();
  while (node && typeof node.$ref === "string" && !node.$ref.startsWith("#/components/schemas/")) {
    if (seen.has(node.$ref)) throw new Error(`a $ref cycle at ${node.$ref}`);
    seen.add(node.$ref);
    node = pointer(doc, node.$ref);
  }
  return node;
}

function payloadOf(doc, messageRef) {
  const message = deref(doc, messageRef);
  const payload = message?.payload;
  if (!payload) throw new Error(`a message without a payload: ${JSON.stringify(messageRef)}`);
  // AsyncAPI 3: a Multi Format Schema Object ({schemaFormat, schema}) or a schema.
  return deref(
    doc,
    payload.schema !== undefined && payload.schemaFormat !== undefined ? payload.schema : payload,
  );
}

const constOf = (schema, key) => schema?.properties?.[key]?.const;

/** A copy of a schema without `title`s (pydantic titles every field: they would each become a type). */
function untitled(schema) {
  if (Array.isArray(schema)) return schema.map(untitled);
  if (schema === null || typeof schema !== "object") return schema;
  const out = {};
  for (const [key, value] of Object.entries(schema)) {
    if (key === "title" && typeof value === "string") continue;
    if (key === "$ref" && typeof value === "string") {
      out.$ref = value.replace("#/components/schemas/", "#/definitions/");
      continue;
    }
    // `properties` maps names to schemas: a property may be called "title".
    out[key] =
      key === "properties" && value && typeof value === "object"
        ? Object.fromEntries(Object.entries(value).map(([k, v]) => [k, untitled(v)]))
        : untitled(value);
  }
  // An object with no declared keys is open (the document's objects are): a record, not `{}`.
  const isObject =
    out.type === "object" || (Array.isArray(out.type) && out.type.includes("object"));
  if (isObject && out.properties === undefined && out.additionalProperties === undefined) {
    out.additionalProperties = true;
  }
  return out;
}

/** What the generator needs from the document: requests, events, welcome, errors. */
export function extract(doc) {
  const requests = [];
  const events = [];
  let welcome;
  let error;
  for (const [opName, op] of Object.entries(doc.operations ?? {})) {
    for (const ref of op.messages ?? []) {
      const payload = payloadOf(doc, ref);
      const type = constOf(payload, "type");
      if (op.action === "receive" && typeof type === "string" && type !== "hello") {
        const replies = (op.reply?.messages ?? []).map((r) => payloadOf(doc, r));
        const ok = replies.find((r) => constOf(r, "ok") === true);
        const failed = replies.find((r) => constOf(r, "ok") === false);
        if (!ok) throw new Error(`request ${type} (operation ${opName}) has no ok reply`);
        if (failed && !error) error = failed.properties.error;
        requests.push({
          type,
          summary: op.summary ?? "",
          roles: op["x-roles"] ?? [],
          dataRequired: (payload.required ?? []).includes("data"),
          data: payload.properties?.data ?? { type: "object" },
          reply: ok.properties?.data ?? { type: "object" },
        });
      } else if (op.action === "send" && type === "event") {
        const name = constOf(payload, "name");
        if (typeof name !== "string")
          throw new Error(`event operation ${opName} has no name const`);
        events.push({
          name,
          summary: op.summary ?? "",
          durable: (payload.required ?? []).includes("seq"),
          topic: payload.properties?.topic?.pattern ?? "",
          data: payload.properties?.data ?? { type: "object" },
        });
      } else if (op.action === "send" && type === "welcome") {
        welcome = payload.properties?.data;
      }
    }
  }
  if (requests.length === 0) throw new Error("no request types in the document");
  if (events.length === 0) throw new Error("no events in the document");
  requests.sort((a, b) => a.type.localeCompare(b.type));
  events.sort((a, b) => a.name.localeCompare(b.name));
  return { requests, events, welcome, error };
}

function closedObject(properties, description) {
  return {
    type: "object",
    ...(description ? { description } : {}),
    additionalProperties: false,
    required: Object.keys(properties),
    properties,
  };
}

/** The TypeScript source of src/generated/contract.ts for a document. */
export async function generate(doc) {
  const { requests, events, welcome, error } = extract(doc);
  const definitions = {};
  for (const [name, schema] of Object.entries(doc.components?.schemas ?? {})) {
    definitions[name] = { ...untitled(schema), title: name };
  }
  const root = {
    title: "Contract",
    description: `${doc.info?.title ?? "The contract"} (AsyncAPI ${doc.asyncapi}, version ${doc.info?.version ?? "?"}).`,
    ...closedObject({
      requests: closedObject(
        Object.fromEntries(
          requests.map((r) => [
            r.type,
            closedObject(
              { data: untitled(r.data), reply: untitled(r.reply) },
              `${r.summary}${r.roles.length ? ` Who: ${r.roles.join(", ")}.` : ""}`,
            ),
          ]),
        ),
        "Request type → its `data` and its ok reply's `data`.",
      ),
      events: closedObject(
        Object.fromEntries(
          // (A description beside a $ref would make json-schema-to-typescript copy the type.)
          events.map((e) => [e.name, untitled(e.data)]),
        ),
        "Event name → its `data`.",
      ),
      welcome: welcome ? untitled(welcome) : { type: "object" },
      error: error ? untitled(error) : { type: "object" },
    }),
    definitions,
  };
  const body = await compile(root, "Contract", {
    bannerComment: "",
    additionalProperties: false,
    unreachableDefinitions: false,
    strictIndexSignatures: false,
    format: true,
    style: { printWidth: 100, singleQuote: false, trailingComma: "all" },
  });
  const list = (items) =>
    `[\n${items.map((i) => `  ${JSON.stringify(i)},`).join("\n")}\n] as const`;
  const roles = requests.map((r) => `  ${JSON.stringify(r.type)}: ${JSON.stringify(r.roles)},`);
  const topics = events.map((e) => `  ${JSON.stringify(e.name)}: ${JSON.stringify(e.topic)},`);
  return [
    "/* eslint-disable */",
    "/**",
    " * GENERATED by scripts/generate.mjs from the server's AsyncAPI document",
    " * (GET /asyncapi.json, gateway/http/asyncapi.py). Do not edit: run `npm run generate`.",
    " */",
    "",
    body.trim(),
    "",
    "/** Request type → { data, reply } (the reply's `data`). */",
    'export type Requests = Contract["requests"];',
    "/** Event name → its `data`. */",
    'export type Events = Contract["events"];',
    "/** `welcome`'s data. */",
    'export type WelcomeData = Contract["welcome"];',
    "/** An error reply's `error`. */",
    'export type ReplyErrorBody = Contract["error"];',
    "",
    `export const REQUEST_TYPES = ${list(requests.map((r) => r.type))};`,
    "",
    "/** Events with a `seq`: journaled, replayed after `since_seq`. */",
    `export const DURABLE_EVENTS = ${list(events.filter((e) => e.durable).map((e) => e.name))};`,
    "",
    "/** Events without a `seq`: never stored, never replayed. */",
    `export const EPHEMERAL_EVENTS = ${list(events.filter((e) => !e.durable).map((e) => e.name))};`,
    "",
    "/** Who may send each request type. */",
    `export const REQUEST_ROLES: { readonly [T in keyof Requests]: readonly string[] } = {\n${roles.join("\n")}\n};`,
    "",
    "/** The topic each event comes on (a regular expression). */",
    `export const EVENT_TOPICS: { readonly [N in keyof Events]: string } = {\n${topics.join("\n")}\n};`,
    "",
  ].join("\n");
}

async function main(argv) {
  const args = { check: false, input: undefined, output: OUTPUT };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--check") args.check = true;
    else if (a === "--input") args.input = argv[++i];
    else if (a === "--output") args.output = resolve(argv[++i]);
    else throw new Error(`unknown argument ${a}`);
  }
  const source = await generate(await loadDocument(args.input));
  if (args.check) {
    const committed = existsSync(args.output) ? readFileSync(args.output, "utf8") : "";
    if (committed !== source) {
      console.error(`${args.output} is stale: run \`npm run generate\` and commit it`);
      process.exit(1);
    }
    console.log(`${args.output} is up to date`);
    return;
  }
  mkdirSync(dirname(args.output), { recursive: true });
  writeFileSync(args.output, source);
  console.log(`wrote ${args.output}`);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).catch((error) => {
    console.error(error instanceof Error ? error.message : error);
    process.exit(1);
  });
}
