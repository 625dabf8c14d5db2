/**
 * Issue 19 items 1, 2 and 4, issue 26 item 1 (tollgate's side): model names cannot escape their model
 * (case, snapshots, provider prefixes, aliases), a body tollgate cannot read in full is charged as the
 * costliest model it could be (or refused), a body whose model key is not provable is never rerouted,
 * and the API key is read from the header the dialect's provider authenticates. Real gRPC with Envoy's
 * CheckRequest, on the memory store and on a real valkey-server.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfigText } from '../src/config/load.js';
import { logTag } from '../src/identity/identity.js';
import { parseAndCount } from '../src/offload/worker.js';
import { ModelResolver, resolveKey } from '../src/policy/models.js';
import { runCli, scrape } from './fixtures/ops/ops.js';
import { startTestApp, type TestApp } from './helpers/app.js';
import { chat, EnvoyClient } from './helpers/envoy.js';
import { spawnTollgate, type TollgateProc } from './helpers/proc.js';
import { startValkey, type TestValkey } from './helpers/valkey.js';

let vk: TestValkey;
const opened: { app: TestApp; client: EnvoyClient }[] = [];
beforeAll(async () => {
  vk = await startValkey();
});
afterAll(async () => {
  for (const { app, client } of opened) {
    client.close();
    await app.close(500);
  }
  await vk?.close();
});

type Backend = 'memory' | 'valkey';
async function serve(yaml: string, backend: Backend) {
  const app = await startTestApp(yaml, backend === 'valkey' ? { valkeyUrl: vk.url } : {});
  const client = new EnvoyClient(app.grpcPort);
  opened.push({ app, client });
  return { app, client };
}
let n = 0;
const uid = (p: string) => `${p}-${Date.now()}-${++n}`;

/** The decision log line of a tenant's latest call (debug level logs every decision). */
function lastDecision(app: TestApp, tenant: string): any {
  const tag = logTag(tenant);
  const lines = app.logs.flatMap((l) => l.split('\n')).filter((l) => l.includes(`"tenant":"${tag}"`));
  return JSON.parse(lines[lines.length - 1]);
}

const NAMES = `
identity:
  tenant: [{ header: x-tenant-id }]
models:
  gpt-4o:
    encoding: o200k_base
    price_usd_per_1m: { input: 2.50, output: 10.00 }
    aliases: [my-gpt4o, "azure-prod-4o"]
  claude-3-5-sonnet:
    price_usd_per_1m: { input: 3, output: 15 }
  "*":
    price_usd_per_1m: { input: 1, output: 1 }
limits:
  - { name: gpt-4o-calls, per: tenant, models: [gpt-4o], requests: 1, every: 1h }
  - { name: sonnet-calls, per: tenant, models: [claude-3-5-sonnet], requests: 1, every: 1h }
  - { name: spend, per: tenant, usd: 100, every: 1h }
`;

describe.each<Backend>(['memory', 'valkey'])('model names that escaped their model (%s)', (backend) => {
  const variants: [string, string, string][] = [
    ['case', 'GPT-4o', 'gpt-4o'],
    ['dated snapshot', 'gpt-4o-2024-08-06', 'gpt-4o'],
    ['provider prefix', 'openai/gpt-4o', 'gpt-4o'],
    ['prefix + case + snapshot', 'OpenRouter/OpenAI/GPT-4O-2024-11-20', 'gpt-4o'],
    ['alias', 'my-gpt4o', 'gpt-4o'],
    ['alias, other case', 'AZURE-PROD-4O', 'gpt-4o'],
    ['versioned snapshot', 'claude-3-5-sonnet-20241022', 'claude-3-5-sonnet'],
    ['Vertex-style snapshot', 'claude-3-5-sonnet@20240620', 'claude-3-5-sonnet'],
    ['provider prefix (anthropic)', 'anthropic/claude-3-5-sonnet', 'claude-3-5-sonnet'],
  ];
  it.each(variants)('%s: "%s" is priced and limited as %s', async (_w, name, model) => {
    const { app, client } = await serve(NAMES, backend);
    const t = uid('name');
    const h = { 'x-tenant-id': t };
    const path = model === 'gpt-4o' ? '/v1/chat/completions' : '/v1/messages';
    const body = chat(name, 'hello', { max_tokens: 100 });
    const a = await client.check({ path, headers: h, body });
    expect(a.allowed).toBe(true);
    const line = lastDecision(app, t);
    expect(line.model).toBe(model);
    // priced at the model's price: 100 output tokens at $10 or $15 per 1M
    expect(line.micros).toBeGreaterThanOrEqual(model === 'gpt-4o' ? 1000 : 1500);
    // the model-scoped limit applies to the variant: the second call is denied by it
    const d = await client.check({ path, headers: h, body });
    expect(d.httpStatus).toBe(429);
    expect(d.json.limit).toBe(model === 'gpt-4o' ? 'gpt-4o-calls' : 'sonnet-calls');
  });

  it('names that are not snapshots of a configured model fall through to "*" and are counted', async () => {
    const { app, client } = await serve(NAMES, backend);
    const before = (await scrape(app.httpPort)).value('tollgate_unknown_model_total');
    const t = uid('unknown');
    for (const name of ['gpt-4o-mini', 'gpt-4o-12', 'claude-3-5-sonnet-v2', 'gpt-4']) {
      const a = await client.check({ headers: { 'x-tenant-id': t }, body: chat(name, 'x') });
      expect(a.allowed, name).toBe(true);
      expect(lastDecision(app, t).model, name).toBe(name); // charged as "*", not as gpt-4o
    }
    // a known name is not counted
    await client.check({ headers: { 'x-tenant-id': uid('k') }, body: chat('GPT-4o', 'x') });
    const after = (await scrape(app.httpPort)).value('tollgate_unknown_model_total');
    expect(after - before).toBe(4);
  });
});

describe.each<Backend>(['memory', 'valkey'])('per-model limits and made-up names (%s)', (backend) => {
  it('unknown names share the "*" bucket of a per: [tenant, model] limit; known names keep their own', async () => {
    const { client } = await serve(
      `${NAMES}  - { name: per-model, per: [tenant, model], requests: 2, every: 1h }\n`,
      backend,
    );
    const h = { 'x-tenant-id': uid('rotate') };
    expect((await client.check({ headers: h, body: chat('made-up-1', 'x') })).allowed).toBe(true);
    expect((await client.check({ headers: h, body: chat('made-up-2', 'x') })).allowed).toBe(true);
    const d = await client.check({ headers: h, body: chat('made-up-3', 'x') });
    expect(d.httpStatus).toBe(429);
    expect(d.json.limit).toBe('per-model');
    expect((await client.check({ headers: h, body: chat('GPT-4o', 'x') })).allowed).toBe(true);
  });
});

describe('matching rules (unit)', () => {
  let r: ModelResolver;
  beforeAll(() => {
    r = new ModelResolver(parseConfigText(NAMES));
  });
  it.each([
    ['gpt-4o', 'gpt-4o'],
    ['gpt-4o-2024-08-06', 'gpt-4o'],
    ['gpt-4o-0613', 'gpt-4o'],
    ['Gpt-4O', 'gpt-4o'],
    ['a/b/c/gpt-4o', 'gpt-4o'],
    ['a/b/c/d/gpt-4o', undefined], // at most three provider prefixes
    ['gpt-4o-mini', undefined],
    ['gpt-4o-12', undefined], // two digits are a version, not a snapshot
    ['gpt-4o-2024-08-06-extra', undefined],
    ['*', undefined],
    ['', undefined],
  ])('%s → %s', (name, want) => {
    expect(r.resolve(name)).toBe(want);
    expect(r.resolve(name)).toBe(want); // cached
  });
  it('the longest configured name a snapshot extends wins', () => {
    const keys = new Set(['o1', 'o1-2024-12-17', 'o1-pro']);
    expect(resolveKey('o1-2024-12-17', (k) => keys.has(k))).toBe('o1-2024-12-17');
    expect(resolveKey('o1-pro-2025-03-19', (k) => keys.has(k))).toBe('o1-pro');
    expect(resolveKey('o1-2025-01-01', (k) => keys.has(k))).toBe('o1');
  });
  it('a token worker counts a snapshot or alias with its model’s encoding', () => {
    const body = JSON.stringify(chat('My-GPT4o', 'hello world'));
    const plan = {
      byModel: { 'gpt-4o': ['o200k_base'], 'my-gpt4o': ['o200k_base'] },
      other: ['cl100k_base'],
    };
    const r2 = parseAndCount({
      kind: 'parse',
      dialect: 'openai.chat',
      body,
      encodings: plan,
      opts: {} as any,
    });
    expect(Object.keys((r2 as any).tokens)).toEqual(['o200k_base']);
  });
});

describe('configuration: names, aliases and prices', () => {
  it('refuses a usd limit that can meet a model without a price (an unpriced "*")', () => {
    expect(() =>
      parseConfigText(`
models:
  gpt-4o: { price_usd_per_1m: { input: 2.5, output: 10 } }
limits:
  - { name: spend, per: tenant, usd: 10, reset: daily }
`),
    ).toThrow(
      /limits\[0\]\.usd: every model it applies to needs price_usd_per_1m, but models\["\*"\] has none/,
    );
    // scoped to priced models, or "*" priced: fine
    parseConfigText(`
models:
  gpt-4o: { price_usd_per_1m: { input: 2.5, output: 10 } }
limits:
  - { name: spend, per: tenant, models: [gpt-4o], usd: 10, reset: daily }
`);
    expect(() =>
      parseConfigText(`
models:
  gpt-4o: { price_usd_per_1m: { input: 2.5, output: 10 } }
  free-model: { price_usd_per_1m: { input: 0, output: 0 } }
  "*": { price_usd_per_1m: { input: 5, output: 20 } }
limits:
  - { name: spend, per: tenant, usd: 10, reset: daily }
`),
    ).toThrow(/models\["free-model"\] has none/);
  });

  it('`tollgate validate` exits 1 for an unpriced "*" under a usd limit', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'tollgate-unpriced-')), 'unpriced.yaml');
    writeFileSync(file, 'limits:\n  - { name: spend, per: tenant, usd: 10, reset: daily }\n');
    const r = await runCli(['validate', file]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/limits\[0\]\.usd: .*models\["\*"\] has none/);
  });

  it('refuses names and aliases that collide ignoring case', () => {
    expect(() =>
      parseConfigText(`
models:
  gpt-4o: { aliases: [four] }
  GPT-4O: {}
  other: { aliases: [FOUR] }
`),
    ).toThrow(
      /models\["GPT-4O"\]: expected a name no other model uses[\s\S]*models\["other"\]\.aliases\[0\]/,
    );
  });

  it('server.partial_body is costliest (default) or deny', () => {
    expect(parseConfigText('').server.partialBody).toBe('costliest');
    expect(parseConfigText('server: { partial_body: deny }').server.partialBody).toBe('deny');
    expect(() => parseConfigText('server: { partial_body: cheapest }')).toThrow(
      /server\.partial_body: expected one of costliest, deny/,
    );
  });
});

const PARTIAL = `
identity:
  tenant: [{ header: x-tenant-id }]
models:
  gpt-4o:
    encoding: o200k_base
    price_usd_per_1m: { input: 2.50, output: 10.00 }
    fallback: gpt-4o-mini
  gpt-4o-mini:
    encoding: o200k_base
    price_usd_per_1m: { input: 0.15, output: 0.60 }
  "*":
    encoding: cl100k_base
    price_usd_per_1m: { input: 0.1, output: 0.1 }
    default_max_output_tokens: 256
limits:
  - { name: gpt-4o-calls, per: tenant, models: [gpt-4o], requests: 1, every: 1h }
  - { name: spend, per: tenant, usd: 100, every: 1h }
`;

/** What Envoy sends with allow_partial_message: the first 64 KiB of a large body, and its real size. */
function partialOf(body: string) {
  return {
    body: Buffer.from(body).subarray(0, 65536),
    partial: true,
    headers: { 'content-length': String(Buffer.byteLength(body)) },
  };
}
const padding = 'x'.repeat(1_070_000);

describe.each<Backend>(['memory', 'valkey'])('partial bodies (%s)', (backend) => {
  it('the model after the padding: priced and limited as the costliest configured model, not "*"', async () => {
    const { app, client } = await serve(PARTIAL, backend);
    const t = uid('partial');
    const h = { 'x-tenant-id': t };
    const full = JSON.stringify({ messages: [{ role: 'user', content: padding }], model: 'gpt-4o' });
    const req = partialOf(full);
    const a = await client.check({ ...req, headers: { ...req.headers, ...h } });
    expect(a.allowed).toBe(true);
    expect(a.headers['x-tollgate-estimated']).toBe('true');
    const line = lastDecision(app, t);
    expect(line.model).toBe('gpt-4o');
    // ceil(content-length / 4) prompt tokens at $2.50 + 256 output at $10 per 1M
    expect(line.micros).toBe(Math.ceil(Math.ceil(full.length / 4) * 2.5 + 256 * 10));
    // gpt-4o's own limit applies, and the partial call is not rerouted to gpt-4o-mini
    const d = await client.check({ ...req, headers: { ...req.headers, ...h } });
    expect(d.httpStatus).toBe(429);
    expect(d.json.limit).toBe('gpt-4o-calls');
    expect(d.headers['x-tollgate-reroute']).toBe('refused;reason=partial-body');
  });

  it('a decoy model first (metadata.model: gpt-4o-mini) does not buy the cheap price', async () => {
    const { app, client } = await serve(PARTIAL, backend);
    const t = uid('decoy');
    const body = JSON.stringify({
      metadata: { model: 'gpt-4o-mini' },
      messages: [{ role: 'user', content: padding }],
      model: 'gpt-4o',
    });
    const req = partialOf(body);
    const a = await client.check({ ...req, headers: { ...req.headers, 'x-tenant-id': t } });
    expect(a.allowed).toBe(true);
    expect(lastDecision(app, t).model).toBe('gpt-4o');
  });

  it('server.partial_body: deny answers 413 with a JSON error', async () => {
    const { client } = await serve(`${PARTIAL}\nserver: { partial_body: deny }\n`, backend);
    const req = partialOf(
      JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: padding }] }),
    );
    const d = await client.check({ ...req, headers: { ...req.headers, 'x-tenant-id': uid('deny') } });
    expect(d.allowed).toBe(false);
    expect(d.httpStatus).toBe(413);
    expect(d.json.error.code).toBe('request_too_large');
    // a whole body is unaffected
    const ok = await client.check({ headers: { 'x-tenant-id': uid('ok') }, body: chat('gpt-4o-mini', 'hi') });
    expect(ok.allowed).toBe(true);
  });
});

describe.each<Backend>(['memory', 'valkey'])('reroutes only for provable bodies (%s)', (backend) => {
  const msgs = '"messages":[{"role":"user","content":"hello"}]';
  const cases: [string, string, string][] = [
    ['duplicate model keys', `{"model":"gpt-4o-mini",${msgs},"model":"gpt-4o"}`, 'duplicate-model-key'],
    ['an escaped model key', `{"\\u006dodel":"gpt-4o",${msgs}}`, 'escaped-model-key'],
    ['escaped and literal', `{"model":"gpt-4o-mini","mod\\u0065l":"gpt-4o",${msgs}}`, 'duplicate-model-key'],
  ];
  it.each(cases)('%s: denied instead of rerouted, with the reason', async (_w, body, why) => {
    const { client } = await serve(PARTIAL, backend);
    const h = { 'x-tenant-id': uid('dodge') };
    expect((await client.check({ headers: h, body: chat('gpt-4o', 'first') })).allowed).toBe(true);
    const d = await client.check({ headers: h, body });
    expect(d.allowed).toBe(false);
    expect(d.httpStatus).toBe(429);
    expect(d.json.limit).toBe('gpt-4o-calls');
    expect(d.headers['x-tollgate-reroute']).toBe(`refused;reason=${why}`);
    expect(d.json.reroute).toEqual({ refused: why });
    expect(d.json.error.message).toMatch(/fallback models were not tried/);
  });

  it('an Azure deployment path (the model is in the path): denied instead of rerouted', async () => {
    const { client } = await serve(PARTIAL, backend);
    const h = { 'x-tenant-id': uid('azure'), 'api-key': 'k' };
    const path = '/openai/deployments/gpt-4o/chat/completions?api-version=2024-06-01';
    const body = { messages: [{ role: 'user', content: 'hello' }], max_tokens: 5 };
    expect((await client.check({ path, headers: h, body })).allowed).toBe(true);
    const d = await client.check({ path, headers: h, body });
    expect(d.allowed).toBe(false);
    expect(d.httpStatus).toBe(429);
    expect(d.json.limit).toBe('gpt-4o-calls');
    expect(d.headers['x-tollgate-reroute']).toBe('refused;reason=path-model');
    expect(d.upstream['x-tollgate-model']).toBeUndefined();
  });

  it('a plain body is still rerouted; a nested "model" or the word as a value does not block it', async () => {
    const { client } = await serve(PARTIAL, backend);
    const h = { 'x-tenant-id': uid('plain') };
    expect((await client.check({ headers: h, body: chat('gpt-4o', 'first') })).allowed).toBe(true);
    const body = `{"model":"gpt-4o","metadata":{"model":"x"},"messages":[{"role":"model","content":"\\u00e9 \\"model\\""}]}`;
    const a = await client.check({ headers: h, body });
    expect(a.allowed).toBe(true);
    expect(a.upstream['x-tollgate-model']).toBe('gpt-4o-mini');
  });
});

describe.each<Backend>(['memory', 'valkey'])('the API key header per dialect (%s)', (backend) => {
  const KEYS = `
identity:
  tenant: [{ api_key: true }]
limits:
  - { name: per-key, per: tenant, requests: 1, every: 1h }
`;
  it('Anthropic: x-api-key decides the tenant; a rotating fake Bearer does not', async () => {
    const { client } = await serve(KEYS, backend);
    const key = uid('sk-ant');
    const call = (bearer: string) =>
      client.check({
        path: '/v1/messages',
        headers: { 'x-api-key': key, authorization: `Bearer ${bearer}` },
        body: { model: 'claude-3-5-sonnet', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] },
      });
    expect((await call('fake-1')).allowed).toBe(true);
    const d = await call('fake-2');
    expect(d.httpStatus).toBe(429);
    expect(d.json.limit).toBe('per-key');
  });

  it('Azure: api-key decides; OpenAI: Authorization decides', async () => {
    const { client } = await serve(KEYS, backend);
    const azure = uid('azure');
    const az = (bearer: string) =>
      client.check({
        path: '/openai/deployments/gpt-4o/chat/completions',
        headers: { 'api-key': azure, authorization: `Bearer ${bearer}` },
        body: { messages: [{ role: 'user', content: 'hi' }] },
      });
    expect((await az('f1')).allowed).toBe(true);
    expect((await az('f2')).httpStatus).toBe(429);
    const openai = uid('sk');
    const oa = (fake: string) =>
      client.check({
        headers: { authorization: `Bearer ${openai}`, 'x-api-key': fake, 'api-key': fake },
        body: chat('gpt-4o', 'hi'),
      });
    expect((await oa('f1')).allowed).toBe(true);
    expect((await oa('f2')).httpStatus).toBe(429);
  });
});

describe('large bodies, parsed in a token worker (real process)', () => {
  let proc: TollgateProc;
  let client: EnvoyClient;
  beforeAll(async () => {
    proc = await spawnTollgate({ yaml: `${PARTIAL}\nserver: { decision_deadline: 10s }\n` });
    client = new EnvoyClient(proc.grpcPort);
  }, 30_000);
  afterAll(async () => {
    client?.close();
    await proc?.stop();
  });
  const big = 'word '.repeat(20_000); // 100 KB: moved to the worker

  it('a snapshot name is counted with its model’s encoding and limited as that model', async () => {
    const h = { 'x-tenant-id': uid('w-name') };
    const a = await client.check({ headers: h, body: chat('GPT-4o-2024-08-06', big) });
    expect(a.allowed).toBe(true);
    const d = await client.check({ headers: h, body: chat('gpt-4o-2024-08-06', big) });
    // gpt-4o-calls is spent: rerouted to the fallback like a plain "gpt-4o"
    expect(d.allowed).toBe(true);
    expect(d.upstream['x-tollgate-model']).toBe('gpt-4o-mini');
  });

  it('duplicate model keys in a moved body: denied, not rerouted', async () => {
    const h = { 'x-tenant-id': uid('w-dup') };
    expect((await client.check({ headers: h, body: chat('gpt-4o', 'first') })).allowed).toBe(true);
    const body = `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"${big}"}],"model":"gpt-4o"}`;
    const d = await client.check({ headers: h, body });
    expect(d.httpStatus).toBe(429);
    expect(d.headers['x-tollgate-reroute']).toBe('refused;reason=duplicate-model-key');
  });
});
