#!/usr/bin/env node
// Builds a plugin module into a WebAssembly component of the WIT world
// `projecting-plugin` (etl:transform@0.1.0):
//
//   node etl-plugin/build.js src/plugin.js -o dist/NAME.wasm [--wit wit]
//
// 1. esbuild bundles an entry that wires the plugin's default export to the
//    world's exports (componentize-js resolves relative imports but not bare
//    ones such as "etl-plugin", so everything becomes one file);
// 2. componentize-js (StarlingMonkey, SpiderMonkey in WebAssembly) makes the
//    component, without the `http` and `fetch-event` features: the host has
//    no wasi:http. What remains imports wasi:cli, io, clocks, random and
//    filesystem, which the host links (clocks read zero unless granted, no
//    file is ever preopened).

import { copyFile, mkdtemp, mkdir, rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const SDK = dirname(fileURLToPath(import.meta.url));

function usage(why) {
  console.error(`${why}\nusage: node build.js PLUGIN.js -o OUT.wasm [--wit DIR] [--aot]`);
  process.exit(2);
}

const args = process.argv.slice(2);
let source, out, wit = "wit", aot = false;
for (let i = 0; i < args.length; i++) {
  if (args[i] === "-o" || args[i] === "--out") out = args[++i];
  else if (args[i] === "--wit") wit = args[++i];
  else if (args[i] === "--aot") aot = true;
  else if (!source && !args[i].startsWith("-")) source = args[i];
  else usage(`unknown argument ${args[i]}`);
}
if (!source || !out) usage("a plugin module and -o are needed");

const { build } = await import("esbuild");
const { componentize } = await import("@bytecodealliance/componentize-js");

const started = Date.now();
const work = await mkdtemp(join(tmpdir(), "etl-plugin-"));
try {
  const entry = [
    `import def from ${JSON.stringify(resolve(source))};`,
    `import { hexDigests } from "etl:transform/host@0.1.0";`,
    `import { component } from "etl-plugin";`,
    `const c = component(def, hexDigests);`,
    `export function describe() { return c.describe(); }`,
    `export function configure(params) { return c.configure(params); }`,
    `export function fields() { return c.fields(); }`,
    `export function transform(batch) { return c.transform(batch); }`,
  ].join("\n");
  // Named after the output and kept beside it: a reject reason's place
  // ("TypeError in transform (NAME.bundle.js:737:28)") is in this file.
  const bundleName = `${basename(out).replace(/\.wasm$/, "")}.bundle.js`;
  const bundle = join(work, bundleName);
  await build({
    stdin: { contents: entry, resolveDir: process.cwd(), sourcefile: "component.js" },
    bundle: true,
    format: "esm",
    platform: "neutral",
    target: "es2022",
    outfile: bundle,
    external: ["etl:transform/*"],
    logLevel: "warning",
    plugins: [
      {
        // Always the SDK beside this script, one copy in the bundle.
        name: "etl-plugin",
        setup(b) {
          b.onResolve({ filter: /^etl-plugin$/ }, () => ({ path: join(SDK, "index.js") }));
        },
      },
    ],
  });
  // componentize-js reads the WIT through a sandboxed wasm-tools that sees
  // paths relative to the working directory.
  const { component } = await componentize({
    sourcePath: bundle,
    witPath: relative(process.cwd(), resolve(wit)) || ".",
    worldName: "projecting-plugin",
    disableFeatures: ["http", "fetch-event"],
    enableAot: aot,
  });
  await mkdir(dirname(resolve(out)), { recursive: true });
  await writeFile(`${out}.tmp`, component);
  await rename(`${out}.tmp`, out);
  await copyFile(bundle, join(dirname(resolve(out)), bundleName));
  const secs = ((Date.now() - started) / 1000).toFixed(1);
  console.error(`built ${out}: ${(component.length / 1048576).toFixed(1)} MiB in ${secs} s`);
} finally {
  await rm(work, { recursive: true, force: true });
}
