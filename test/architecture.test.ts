/**
 * The import graph obeys the design's rules (docs/development.md): the parts are folders, and some
 * arrows between them must never exist. Each rule below names why. Imports are read from the source
 * text (static `import … from`, `export … from`, side-effect `import '…'` and dynamic `import('…')`).
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = join(dirname(new URL(import.meta.url).pathname), '..');

interface Rule {
  /** Files under this folder (or this file) … */
  from: string;
  /** … must not import anything under these (repo paths, or package names / node: modules) … */
  not: string[];
  /** … except these. */
  allow?: string[];
  why: string;
}

const IO = [
  'node:fs',
  'node:net',
  'node:http',
  'node:http2',
  'node:https',
  'node:dgram',
  'node:child_process',
];
const NETWORK_LIBS = ['iovalkey', '@grpc/grpc-js', '@grpc/proto-loader'];

const RULES: Rule[] = [
  {
    from: 'src/decision/',
    not: ['src/authz/', 'src/http.ts', 'src/app.ts'],
    why: 'decisions are protocol-free',
  },
  {
    from: 'src/settle/',
    not: ['src/authz/', 'src/http.ts', 'src/app.ts'],
    why: 'settlement is protocol-free',
  },
  {
    from: 'src/store/',
    not: ['src/authz/', 'src/dialects/', 'src/decision/', 'src/identity/', 'src/http.ts', 'src/app.ts'],
    why: 'the store encodes and runs what it is given; it knows no protocol or dialect',
  },
  {
    from: 'src/dialects/',
    not: [...IO, ...NETWORK_LIBS, 'src/store/', 'src/decision/', 'src/authz/'],
    why: 'dialects are pure parsing: no I/O',
  },
  {
    from: 'src/policy/',
    not: [...IO, ...NETWORK_LIBS, 'src/decision/', 'src/authz/', 'src/dialects/', 'src/store/'],
    why: 'policy computes (the plan, calendar windows, fallbacks): no I/O, no protocol, no store',
  },
  {
    from: 'src/tokens/',
    not: [
      'node:net',
      'node:http',
      'node:http2',
      ...NETWORK_LIBS,
      'src/store/',
      'src/decision/',
      'src/authz/',
    ],
    why: 'token counting does no network I/O (it reads rank files at start-up only)',
  },
  {
    from: 'src/config/',
    not: ['src/authz/', 'src/decision/', 'src/store/', 'src/http.ts', 'src/app.ts'],
    why: 'config is data and its validation',
  },
  {
    from: 'src/resilience/',
    not: ['src/authz/', 'src/decision/', 'src/http.ts', 'src/app.ts'],
    why: 'resilience wraps a store; it decides nothing',
  },
  {
    from: 'src/admin/',
    not: ['src/authz/', 'src/decision/', 'src/app.ts', ...NETWORK_LIBS],
    why: 'the admin API reads and adjusts the store through policy; it is not on the Envoy path',
  },
  {
    from: 'src/cache/',
    not: ['src/authz/', 'src/decision/', 'src/http.ts', 'src/app.ts'],
    why: 'the answer cache keys, stores and replays answers; the decision and settle phases call it',
  },
  {
    from: 'src/authz/',
    not: ['src/config/schema.ts'],
    why: 'Envoy-facing code reads validated config, not the validator',
  },
];

/**
 * Each folder's public modules: what code outside the folder may import. Everything else in a folder
 * is its own business (e.g. store/resp.ts, tokens/bpe.ts, dialects/json.ts, the decision's stages,
 * authz/grpc/wire.ts): change it freely; to share a module, add it here deliberately.
 */
const PUBLIC: Record<string, string[]> = {
  // the admin API's listener and its protocol-free core (the CLI calls usage.ts directly)
  admin: ['cli.ts', 'http.ts', 'usage.ts'],
  // the answer cache: its core, the Check's hit answer, its wiring, call keys (the purge CLI)
  cache: ['cache.ts', 'hit.ts', 'open.ts', 'key.ts', 'purge.ts'],
  authz: [
    'answer.ts',
    'http.ts',
    'grpc/server.ts',
    'grpc/direct.ts',
    'grpc/health.ts',
    'grpc/tls.ts',
    'grpc/translate.ts',
  ],
  config: ['load.ts', 'overload.ts', 'schema.ts', 'types.ts'],
  decision: ['decide.ts', 'types.ts', 'reservation.ts', 'metadata.ts'],
  dialects: ['body.ts', 'model-key.ts', 'route.ts', 'types.ts', 'gemini.ts', 'usage/index.ts'],
  identity: ['identity.ts', 'sources.ts'],
  offload: ['pool.ts', 'worker.ts'],
  ops: [
    'decider-events.ts',
    'drain.ts',
    'http.ts',
    'inflight.ts',
    'log.ts',
    'metrics.ts',
    'metrics-sources.ts',
    'observe.ts',
    'reload.ts',
    'replay.ts',
    'settle-observe.ts',
    'store-health.ts',
  ],
  policy: [
    'settle.ts',
    'calendar.ts',
    'fallback.ts',
    'model-name.ts',
    'models.ts',
    'plan.ts',
    'plan-types.ts',
  ],
  queue: ['consumer.ts'],
  resilience: ['breaker.ts', 'guarded-store.ts', 'timeout.ts'],
  settle: ['decode.ts', 'settler.ts', 'session.ts', 'ext-proc.ts', 'messages.ts'],
  store: [
    'connect.ts',
    'keys.ts',
    'memory.ts',
    'scripts.ts',
    'types.ts',
    'valkey.ts',
    'iovalkey.ts',
    'answers.ts',
    'answer-valkey.ts',
    // the cluster client's options (the queue consumer), key slots (reservation ids name their slot)
    'cluster.ts',
    'slot.ts',
  ],
  tokens: ['count.ts', 'encoders.ts'],
};

/** The folder of a src file (`src/<folder>/…`), or undefined for the composition root (src/*.ts). */
const folderOf = (f: string) => (/^src\/([^/]+)\//.exec(f) ?? [])[1];

/** Files allowed to speak gRPC / HTTP/2: the Envoy-facing folder and the composition root. */
const GRPC_ALLOWED = ['src/authz/', 'src/app.ts'];

function walk(dir: string): string[] {
  return readdirSync(join(ROOT, dir)).flatMap((f) => {
    const p = `${dir}/${f}`;
    return statSync(join(ROOT, p)).isDirectory() ? walk(p) : p.endsWith('.ts') ? [p] : [];
  });
}

const SPEC = /(?:\bfrom\s*|\bimport\s*\(\s*|^\s*import\s+)['"]([^'"]+)['"]/gm;

/** Repo paths (for relative imports) or bare specifiers a file imports. */
function importsOf(file: string, text: string): string[] {
  return [...text.matchAll(SPEC)].map((m) => {
    const s = m[1];
    if (!s.startsWith('.')) return s;
    return relative(ROOT, normalize(join(ROOT, dirname(file), s))).replace(/\.js$/, '.ts');
  });
}

function violations(files: Record<string, string>): string[] {
  const out: string[] = [];
  for (const [file, text] of Object.entries(files)) {
    const imports = importsOf(file, text);
    for (const r of RULES) {
      if (!file.startsWith(r.from)) continue;
      for (const i of imports)
        if (r.not.some((n) => i === n || i.startsWith(n)) && !r.allow?.includes(i))
          out.push(`${file} imports ${i}: ${r.why}`);
    }
    for (const i of imports) {
      const to = folderOf(i);
      if (!to || to === folderOf(file)) continue;
      const mod = i.slice(`src/${to}/`.length);
      if (!PUBLIC[to]?.includes(mod)) out.push(`${file} imports ${i}: not one of ${to}/'s public modules`);
    }
    if (!GRPC_ALLOWED.some((a) => file.startsWith(a)))
      for (const i of imports)
        if (i.startsWith('@grpc/') || i === 'node:http2')
          out.push(`${file} imports ${i}: only src/authz/ (and the composition root) speaks gRPC`);
  }
  return out;
}

describe('architecture', () => {
  it('no source file imports across a forbidden arrow', () => {
    const files = Object.fromEntries(walk('src').map((f) => [f, readFileSync(join(ROOT, f), 'utf8')]));
    expect(Object.keys(files).length).toBeGreaterThan(30);
    expect(violations(files)).toEqual([]);
  });

  it('only src/settings.ts reads the environment', () => {
    const readers = walk('src').filter(
      (f) => f !== 'src/settings.ts' && /process\.env\b/.test(readFileSync(join(ROOT, f), 'utf8')),
    );
    expect(readers).toEqual([]);
  });

  it('the checker catches each kind of forbidden import', () => {
    const found = violations({
      'src/decision/x.ts': "import { a } from '../authz/grpc/wire.js';",
      'src/store/y.ts': "export { b } from '../dialects/parse.js';",
      'src/policy/z.ts': "const fs = await import('node:fs');",
      'src/ops/w.ts': "import * as grpc from '@grpc/grpc-js';",
      'src/decision/v.ts': "import { RespConnection } from '../store/resp.js';",
      'src/decision/u.ts': "import type { Store } from '../store/types.js';",
    });
    for (const f of ['x', 'y', 'z', 'w', 'v']) expect(found.some((m) => m.includes(`/${f}.ts `))).toBe(true);
    expect(found.filter((m) => m.includes('/v.ts '))).toEqual([
      "src/decision/v.ts imports src/store/resp.ts: not one of store/'s public modules",
    ]);
    expect(found.some((m) => m.includes('/u.ts '))).toBe(false); // a public module
  });
});
