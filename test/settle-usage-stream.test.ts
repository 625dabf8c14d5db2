/**
 * settle.usage_stream on real Valkey, driven the way the response phase drives it: a real Decider
 * admits a call (its check script records the reservation), the Settler opens that reservation by id
 * and finishes it with the provider's usage; the settle script appends the export entry (XADD MAXLEN ~)
 * in the same atomic step. One settled call → exactly one entry with the documented fields; a
 * duplicate appends nothing; the stream stays near max_length. The observer sees the same events.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfigText } from '../src/config/load.js';
import type { Config } from '../src/config/types.js';
import { Decider } from '../src/decision/decide.js';
import type { Usage } from '../src/dialects/usage/index.js';
import { Metrics } from '../src/ops/metrics.js';
import { settleObserver } from '../src/ops/settle-observe.js';
import { actualMicros } from '../src/policy/settle.js';
import { type SettledEvent, Settler } from '../src/settle/settler.js';
import { ValkeyStore } from '../src/store/valkey.js';
import { captureLogger, parseMetrics } from './fixtures/ops/ops.js';
import { startValkey, type TestValkey } from './helpers/valkey.js';

const run = `u${process.pid}x${Date.now().toString(36)}`;
const PREFIX = `tg-${run}`.slice(0, 32);
const MAX_LENGTH = 1000;

const cfg: Config = parseConfigText(`
server: { decision_deadline: 5s }
store: { prefix: ${PREFIX}, timeout: 4s }
settle:
  usage_stream: { name: usage, max_length: ${MAX_LENGTH}, dimensions: [tenant] }
models:
  gpt-4o-mini:
    encoding: o200k_base
    price_usd_per_1m: { input: 0.15, output: 0.60, cached_input: 0.075 }
  "*": { encoding: cl100k_base, default_max_output_tokens: 50 }
limits:
  - { name: tokens, per: tenant, tokens: 100000000, reset: daily }
  - { name: dollars, per: tenant, usd: 1000, every: 1h, models: [gpt-4o-mini] }
`);

let vk: TestValkey;
let store: ValkeyStore;
let decider: Decider;
let settler: Settler;
const events: SettledEvent[] = [];
const forgotten: string[][] = [];
const metrics = new Metrics();
const STREAM = `${PREFIX}:u:usage`;

beforeAll(async () => {
  vk = await startValkey();
  store = new ValkeyStore({ url: vk.url, timeoutMs: 4000 });
  await store.connect();
  decider = new Decider(cfg, { store });
  metrics.configLoaded(cfg);
  const observe = settleObserver(metrics, captureLogger('info').logger);
  settler = new Settler({
    store: () => store,
    config: () => cfg,
    forget: (keys) => forgotten.push([...keys]),
    onSettled: (e) => {
      events.push(e);
      observe(e);
    },
  });
});
afterAll(async () => {
  await decider?.close();
  await store?.close();
  await vk?.close();
});

/** An allowed chat call of `tenant` through the real decision; its reservation id. */
async function admit(tenant: string, maxTokens = 400): Promise<string> {
  const d = await decider.decide({
    method: 'POST',
    path: '/v1/chat/completions',
    headers: { 'x-tenant-id': tenant, 'content-type': 'application/json' },
    body: JSON.stringify({
      model: 'gpt-4o-mini',
      max_tokens: maxTokens,
      messages: [{ role: 'user', content: 'Say something short about rate limits.' }],
    }),
  });
  expect(d.kind).toBe('allow');
  expect(d.reservation).toBeTruthy();
  return d.reservation!;
}

const reported = (u: Partial<Usage>): Usage => ({
  prompt: 20,
  cachedPrompt: 0,
  cacheWrite: 0,
  output: 10,
  reasoning: 0,
  source: 'reported',
  promptReported: true,
  ...u,
});

async function entries(): Promise<Record<string, string>[]> {
  const raw = (await vk.client.xrange(STREAM, '-', '+')) as [string, string[]][];
  return raw.map(([, f]) =>
    Object.fromEntries(Array.from({ length: f.length / 2 }, (_, i) => [f[2 * i], f[2 * i + 1]])),
  );
}

describe('settle.usage_stream (real Valkey, through Decider and Settler)', () => {
  it('one settled call appends exactly one entry with the documented fields', async () => {
    const tenant = `acme-${run}`;
    const id = await admit(tenant);
    expect(await vk.client.xlen(STREAM)).toBe(0); // nothing at check time
    const open = await settler.open(id);
    if (typeof open === 'string') throw new Error(`not open: ${open}`);
    expect(open.record.m).toBe('gpt-4o-mini');
    const usage = reported({ prompt: 1200, cachedPrompt: 1000, output: 300, reasoning: 120 });
    const before = Date.now();
    expect(await settler.finish(open, { status: 200, usage })).toBe('settled');
    const list = await entries();
    expect(list).toHaveLength(1);
    const e = list[0];
    expect(Object.keys(e).sort()).toEqual(
      [
        'ts',
        'id',
        'model',
        'outcome',
        'prompt',
        'cached',
        'cache_write',
        'output',
        'reasoning',
        'micros',
        'dim.tenant',
      ].sort(),
    );
    const micros = actualMicros(open.record.$, {
      prompt: 1200,
      cachedPrompt: 1000,
      cacheWrite: 0,
      output: 300,
      reasoning: 120,
    });
    // 200 × 0.15 + 1000 × 0.075 + 300 × 0.60 = 285 micro-dollars
    expect(micros).toBe(285);
    expect(e).toMatchObject({
      id,
      model: 'gpt-4o-mini',
      outcome: 'settled',
      prompt: '1200',
      cached: '1000',
      cache_write: '0',
      output: '300',
      reasoning: '120',
      micros: '285',
      'dim.tenant': tenant,
    });
    expect(Number(e.ts)).toBeGreaterThanOrEqual(before);
    expect(Number(e.ts)).toBeLessThanOrEqual(Date.now());
    // the settled limits' keys were handed to the deny cache to forget
    expect(forgotten.at(-1)?.some((k) => k.startsWith(`${PREFIX}:`))).toBe(true);
    expect(events.at(-1)).toMatchObject({ outcome: 'settled', model: 'gpt-4o-mini' });

    // a duplicate (the same open reservation finished again, or opened again) appends nothing
    expect(await settler.finish(open, { status: 200, usage })).toBe('duplicate');
    expect(await settler.open(id)).toBe('duplicate');
    expect(await vk.client.xlen(STREAM)).toBe(1);

    // an upstream error is exported as such; a call with nothing usable (kept) is not exported
    const failed = await settler.open(await admit(tenant));
    if (typeof failed === 'string') throw new Error(failed);
    expect(await settler.finish(failed, { status: 503 })).toBe('upstream_error');
    const kept = await settler.open(await admit(tenant));
    if (typeof kept === 'string') throw new Error(kept);
    expect(await settler.finish(kept, { status: 200, usage: { ...reported({}), source: 'none' } })).toBe(
      'kept',
    );
    const after = await entries();
    expect(after.map((x) => x.outcome)).toEqual(['settled', 'upstream_error']);
    expect(after[1]).toMatchObject({ prompt: '0', output: '0', micros: '0' });

    const { samples } = parseMetrics(await metrics.registry.metrics());
    const get = (name: string, l: Record<string, string>) =>
      samples.find((s) => s.name === name && Object.entries(l).every(([k, v]) => s.labels[k] === v))?.value;
    expect(get('tollgate_settlements_total', { outcome: 'settled' })).toBe(1);
    expect(get('tollgate_settlements_total', { outcome: 'duplicate' })).toBe(2);
    expect(get('tollgate_actual_tokens_total', { model: 'gpt-4o-mini', kind: 'cached' })).toBe(1000);
  });

  it('the stream stays bounded near max_length', async () => {
    await vk.client.del(STREAM);
    const N = MAX_LENGTH * 2 + 500;
    const settleOne = async (i: number) => {
      const open = await settler.open(await admit(`bulk-${i % 7}-${run}`, 20));
      if (typeof open === 'string') throw new Error(open);
      return settler.finish(open, { status: 200, usage: reported({ output: 5 }) });
    };
    for (let i = 0; i < N; i += 250) {
      const batch = Array.from({ length: Math.min(250, N - i) }, (_, j) => settleOne(i + j));
      for (const r of await Promise.all(batch)) expect(r).toBe('settled');
    }
    const len = await vk.client.xlen(STREAM);
    // MAXLEN ~ trims whole stream nodes (100 entries each by default): never below, a node at most above
    expect(len).toBeGreaterThanOrEqual(MAX_LENGTH);
    expect(len).toBeLessThanOrEqual(MAX_LENGTH + 100);
  }, 60_000);
});
