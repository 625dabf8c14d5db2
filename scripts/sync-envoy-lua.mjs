#!/usr/bin/env node
// Copies deploy/lua/model-rewrite.lua into every Envoy config that carries it (the inline_string of
// the envoy.filters.http.lua filter), and the top-level envoy.yaml's body (from `admin:` on) into
// deploy/kubernetes/base/envoy.yaml (kustomize cannot read files outside its directory).
//   node scripts/sync-envoy-lua.mjs          rewrite the copies
//   node scripts/sync-envoy-lua.mjs --check  exit 1 if a copy differs (test/envoy-lua.test.ts does the same)
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = join(dirname(fileURLToPath(import.meta.url)), '..');
const LUA = 'deploy/lua/model-rewrite.lua';
export const LUA_TARGETS = ['envoy.yaml', 'deploy/istio/envoyfilter-tollgate.yaml'];
const K8S_COPY = 'deploy/kubernetes/base/envoy.yaml';

/** `text` with the block scalar after its (single) `inline_string: |` replaced by `lua`. */
export function withLua(text, lua) {
  const lines = text.split('\n');
  const at = lines.findIndex((l) => /^\s*inline_string: \|\s*$/.test(l));
  if (at < 0 || lines.findIndex((l, i) => i > at && /^\s*inline_string: \|\s*$/.test(l)) >= 0)
    throw new Error('expected exactly one "inline_string: |"');
  const indent = lines[at].match(/^\s*/)[0].length + 2;
  let end = at + 1;
  while (end < lines.length && (lines[end].trim() === '' || lines[end].match(/^\s*/)[0].length >= indent))
    end++;
  // keep the blank lines that separate the block from what follows
  while (end > at + 1 && lines[end - 1].trim() === '') end--;
  const body = lua
    .replace(/\n$/, '')
    .split('\n')
    .map((l) => (l === '' ? '' : ' '.repeat(indent) + l));
  return [...lines.slice(0, at + 1), ...body, ...lines.slice(end)].join('\n');
}

/** The Kubernetes copy: its own header comment, then the top-level file from `admin:` on. */
export function withBody(copy, top) {
  const head = copy.slice(0, copy.search(/^admin:/m));
  return head + top.slice(top.search(/^admin:/m));
}

function main() {
  const check = process.argv.includes('--check');
  const lua = readFileSync(join(REPO, LUA), 'utf8');
  const out = new Map();
  for (const f of LUA_TARGETS) out.set(f, withLua(readFileSync(join(REPO, f), 'utf8'), lua));
  out.set(K8S_COPY, withBody(readFileSync(join(REPO, K8S_COPY), 'utf8'), out.get('envoy.yaml')));
  let stale = 0;
  for (const [f, text] of out) {
    if (readFileSync(join(REPO, f), 'utf8') === text) continue;
    stale++;
    if (check) console.error(`${f} is out of date: run node scripts/sync-envoy-lua.mjs`);
    else writeFileSync(join(REPO, f), text);
  }
  if (check && stale) process.exit(1);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) main();
