#!/usr/bin/env node
/**
 * Build the browser bundle: one ES module, no imports, for the web console
 * (gateway/static/, plain JS served by the server, nothing fetched at run time).
 *
 *   node scripts/bundle.mjs           # writes ../../gateway/static/enf-sdk.js
 *   node scripts/bundle.mjs --check   # exit 1 if the committed bundle differs
 */

import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { build } from "esbuild";

const PACKAGE = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const BUNDLE = resolve(PACKAGE, "../../gateway/static/enf-sdk.js");

/** The bundle's text (deterministic for a given source and esbuild version). */
export async function bundle() {
  const { version } = JSON.parse(readFileSync(join(PACKAGE, "package.json"), "utf8"));
  const result = await build({
    entryPoints: [join(PACKAGE, "src/browser.ts")],
    bundle: true,
    format: "esm",
    platform: "browser",
    target: ["es2022"],
    minify: false,
    sourcemap: false,
    legalComments: "inline",
    charset: "utf8",
    write: false,
    absWorkingDir: PACKAGE,
    banner: {
      js:
        `// @enf/client ${version}: the ENF session server's client SDK, built from clients/js\n` +
        "// by `npm run bundle` (esbuild). Do not edit: change clients/js/src and rebuild.",
    },
  });
  return result.outputFiles[0].text;
}

async function main(argv) {
  const text = await bundle();
  if (argv.includes("--check")) {
    const committed = existsSync(BUNDLE) ? readFileSync(BUNDLE, "utf8") : "";
    if (committed !== text) {
      console.error(`${BUNDLE} is stale: run \`npm run bundle\` and commit it`);
      process.exit(1);
    }
    console.log(`${BUNDLE} is up to date`);
    return;
  }
  writeFileSync(BUNDLE, text);
  console.log(`wrote ${BUNDLE} (${text.length} bytes)`);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).catch((error) => {
    console.error(error);
    process.exit(1);
  });
}
