/**
 * Hostile input: thousands of generated CheckRequests (fast-check, fixed seed) against a real tollgate
 * process backed by Valkey — random bytes, invalid UTF-8, truncated JSON, wrong types, absurd numbers,
 * duplicate keys, unknown models and paths, wrong or missing headers, hostile ids — plus the
 * pathological ones: nesting 100,000 deep, arrays of 1,000,000 elements, 8–10 MB bodies. Each gets a
 * clear decision in bounded time and memory, the process stays up, and accounting stays exact.
 */
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toAnswer } from './helpers/answer.js';
import {
  buildCheckRequest,
  type CheckAnswer,
  type CheckOptions,
  chat,
  EnvoyClient,
} from './helpers/envoy.js';
import { logLines, spawnTollgate, type TollgateProc } from './helpers/proc.js';
import { startValkey, type TestValkey } from './helpers/valkey.js';

const SEED = 4242;
const CASES = 2000;
const CONTROL_QUOTA = 1_000_000;
const CONFIG = `
identity:
  tenant: [{ header: x-tenant-id }, { api_key: true }]
  team: [{ header: x-team-id }]
models:
  gpt-4o: { encoding: o200k_base, price_usd_per_1m: { input: 2.5, output: 10 }, fallback: gpt-4o-mini }
  gpt-4o-mini: { encoding: o200k_base, price_usd_per_1m: { input: 0.15, output: 0.6 } }
  "*": { encoding: cl100k_base, default_max_output_tokens: 256, price_usd_per_1m: { input: 1, output: 1 } }
limits:
  - { name: req, per: tenant, requests: 100000000, every: 1m }
  - { name: tok, per: tenant, tokens: 1000000, every: 1m }
  - { name: spend, per: team, usd: 1000, reset: daily }
  - { name: control, per: tenant, requests: ${CONTROL_QUOTA}, reset: monthly }
# This file tests input handling, not latency (trust-faults does): generous store timeouts, so that a
# busy 2-core CI machine never turns a check into a fail-open.
server: { decision_deadline: 3s }
store: { timeout: 2s }
`;
const KEY_SHAPE =
  /^tollgate:(r:(req|tok)|c:(spend|control):(hourly|daily|weekly|monthly))(:([A-Za-z0-9_.@-]{1,64}|~[A-Za-z0-9_-]{27}))$/;

let vk: TestValkey;
let p: TollgateProc;
let client: EnvoyClient;
beforeAll(async () => {
  vk = await startValkey();
  p = await spawnTollgate({ yaml: CONFIG, env: { VALKEY_URL: vk.url }, authzHttp: true });
  client = new EnvoyClient(p.grpcPort);
}, 30_000);
afterAll(async () => {
  client?.close();
  await p?.stop('SIGKILL');
  await vk?.close();
});

/** Peak resident memory of the tollgate process (kB). */
const peakRssKb = () => Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${p.pid}/status`, 'utf8'))?.[1]);

interface Outcome {
  ms: number;
  answer?: CheckAnswer;
  rpcError?: string;
}

async function send(o: CheckOptions | { raw: any }): Promise<Outcome> {
  const t0 = performance.now();
  try {
    const answer = 'raw' in o ? await checkRaw(o.raw) : await client.check(o);
    return { ms: performance.now() - t0, answer };
  } catch (err) {
    return { ms: performance.now() - t0, rpcError: (err as Error).message };
  }
}

/** Send a hand-built CheckRequest (headers exactly as given, nothing added). */
async function checkRaw(req: any): Promise<CheckAnswer> {
  return toAnswer(await client.checkRaw(req, 30_000));
}

/** What every answer must look like: a decision, never an RPC error or a fail-open on an internal error. */
function expectClearDecision(o: Outcome, what: string): void {
  if (o.rpcError) throw new Error(`${what}: RPC error instead of a decision: ${o.rpcError}`);
  const a = o.answer!;
  if (a.allowed) {
    if (a.headers['x-tollgate-degraded'] || a.upstream['x-tollgate-degraded'])
      throw new Error(`${what}: allowed degraded (${a.upstream['x-tollgate-degraded']})`);
    return;
  }
  if (![400, 403, 429].includes(a.httpStatus!)) throw new Error(`${what}: HTTP ${a.httpStatus}`);
  if (typeof a.json?.error?.message !== 'string') throw new Error(`${what}: no JSON error body: ${a.body}`);
  if (a.headers['content-type'] !== 'application/json') throw new Error(`${what}: content-type`);
  if (a.httpStatus === 400 && a.json.error.type !== 'invalid_request_error')
    throw new Error(`${what}: 400 type`);
}

// ---- generators --------------------------------------------------------------------------------------
const LLM_PATHS = [
  '/v1/chat/completions',
  '/v1/completions',
  '/v1/embeddings',
  '/v1/responses',
  '/v1/messages',
  '/openai/deployments/gpt-4o/chat/completions?api-version=2024-06-01',
  '/openai/deployments/%ZZ/embeddings',
];
const weird = fc.oneof(
  fc.constantFrom(-1, 0, 1.5, 2 ** 53 + 2, 1e308, -1e308, Number.MAX_SAFE_INTEGER, 10_000_001, 129),
  fc.string(),
  fc.boolean(),
  fc.constant(null),
  fc.array(fc.integer(), { maxLength: 3 }),
  fc.object({ maxDepth: 2 }),
);
const model = fc.oneof(
  fc.constantFrom('gpt-4o', 'gpt-4o-mini', 'claude-3-5-sonnet', 'unknown-model', '', '*', 'gpt-4o\u0000'),
  fc.string({ maxLength: 300 }),
  weird,
);
const message = fc.oneof(
  fc.record({
    role: fc.constantFrom('user', 'system', 'assistant', 'tool', 'developer'),
    content: fc.string({ maxLength: 200 }),
  }),
  fc.record({ role: weird, content: weird }),
  fc.record(
    {
      role: fc.constant('user'),
      content: fc.array(
        fc.record({ type: fc.constantFrom('text', 'image_url', 'x'), text: fc.oneof(fc.string(), weird) }),
        { maxLength: 5 },
      ),
    },
    { requiredKeys: ['role'] },
  ),
  weird,
);
const body = fc.record(
  {
    model,
    messages: fc.oneof(fc.array(message, { maxLength: 6 }), weird),
    input: fc.oneof(fc.string({ maxLength: 100 }), weird),
    prompt: fc.oneof(fc.string({ maxLength: 100 }), weird),
    max_tokens: fc.oneof(fc.integer({ min: 1, max: 100 }), weird),
    max_completion_tokens: weird,
    n: fc.oneof(fc.integer({ min: 1, max: 4 }), weird),
    tools: weird,
    system: weird,
  },
  { requiredKeys: [] },
);
const utf8Breakers = fc
  .uint8Array({ maxLength: 64 })
  .map((b) => Buffer.concat([Buffer.from([0xff, 0xc3, 0x28, 0xed, 0xa0, 0x80]), Buffer.from(b)]));
const rawBody = fc.oneof(
  { weight: 4, arbitrary: body.map((b) => Buffer.from(JSON.stringify(b))) },
  { weight: 2, arbitrary: fc.uint8Array({ maxLength: 3000 }).map((b) => Buffer.from(b)) },
  {
    weight: 2,
    arbitrary: fc.tuple(body, fc.nat()).map(([b, cut]) => {
      const s = JSON.stringify(b);
      return Buffer.from(s.slice(0, cut % (s.length + 1)));
    }),
  },
  {
    weight: 2,
    arbitrary: utf8Breakers.map((bad) =>
      Buffer.concat([
        Buffer.from('{"model":"gpt-4o-mini","messages":[{"role":"user","content":"'),
        bad,
        Buffer.from('"}]}'),
      ]),
    ),
  },
  {
    weight: 1,
    arbitrary: fc
      .constantFrom(
        '{"model":"gpt-4o-mini","model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"max_tokens":1,"max_tokens":-1}',
        '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":1e400}',
        '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"n":1e400,"max_tokens":5}',
        '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":9007199254740993}',
        '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":"100"}',
        '{"model":123,"messages":[]}',
        '{"__proto__":{"model":"gpt-4o"},"messages":[{"role":"user","content":"hi"}]}',
        '{"constructor":{"prototype":{"polluted":1}},"model":"gpt-4o-mini","messages":[]}',
        '\uFEFF{"model":"gpt-4o-mini","messages":[]}',
        '',
        'null',
        '[]',
        '"\\ud800"',
      )
      .map((s) => Buffer.from(s)),
  },
  { weight: 1, arbitrary: fc.json({ maxDepth: 4 }).map((s) => Buffer.from(s)) },
);
const hostileId = fc.oneof(
  fc.constantFrom(
    'fuzz-a',
    'fuzz-b',
    'a:b',
    '{x}',
    '*',
    'x\ny',
    'nul\u0000id',
    '~abc',
    '../..',
    'tollgate:r:req:victim',
  ),
  fc.string({ maxLength: 80 }),
);
const request = fc.record({
  path: fc.oneof(
    { weight: 5, arbitrary: fc.constantFrom(...LLM_PATHS) },
    { weight: 1, arbitrary: fc.string({ maxLength: 40 }) },
  ),
  method: fc.constantFrom('POST', 'GET', 'PUT', ''),
  body: fc.option(rawBody, { freq: 12 }),
  asString: fc.boolean({ probability: 0.2 } as any),
  partial: fc.boolean({ probability: 0.1 } as any),
  contentType: fc.constantFrom(
    'application/json',
    'text/plain',
    'multipart/form-data; boundary=x',
    '',
    undefined,
  ),
  contentLength: fc.oneof(
    fc.constant(undefined),
    fc.constantFrom('-1', 'abc', '1e9', '0', '99999999999999999999'),
  ),
  tenant: fc.option(hostileId, { freq: 4 }),
  team: fc.option(hostileId, { freq: 2 }),
  apiKey: fc.option(fc.string({ minLength: 1, maxLength: 60 }), { freq: 3 }),
  spoof: fc.boolean(),
});

describe('fuzzing the Check handler', () => {
  it(`${CASES} generated requests: each a clear decision in bounded time; the process stays up; accounting exact`, async () => {
    const cases = fc.sample(request, { seed: SEED, numRuns: CASES });
    const control = `control-${Date.now()}`;
    let controlCalls = 0;
    const controlCheck = async () => {
      const a = await client.check({
        headers: { 'x-tenant-id': control },
        body: chat('gpt-4o-mini', 'hi', { max_tokens: 1 }),
      });
      controlCalls++;
      expect(a.allowed).toBe(true);
      // the calendar quota has no refill: its remaining count is exact
      expect(a.headers['x-ratelimit-remaining-requests']).toBeDefined();
      return a;
    };
    await controlCheck();
    const failures: string[] = [];
    let worst = 0;
    const kinds = new Map<string, number>();
    const batch = 16;
    for (let i = 0; i < cases.length; i += batch) {
      const chunk = cases.slice(i, i + batch);
      const outs = await Promise.all(
        chunk.map((c) => {
          const req = buildCheckRequest({
            path: c.path,
            method: c.method,
            body: c.body ?? undefined,
            asString: c.asString,
            partial: c.partial,
          });
          const h = req.attributes.request.http.headers as Record<string, string>;
          h[':path'] = c.path;
          if (c.contentType === undefined) delete h['content-type'];
          else h['content-type'] = c.contentType;
          if (c.contentLength !== undefined) h['content-length'] = c.contentLength;
          if (c.tenant !== null) h['x-tenant-id'] = c.tenant;
          if (c.team !== null) h['x-team-id'] = c.team;
          if (c.apiKey !== null) h.authorization = `Bearer ${c.apiKey}`;
          if (c.spoof) h['x-tollgate-model'] = 'gpt-4o';
          if (c.asString && c.body) req.attributes.request.http.body = c.body.toString('utf8');
          return send({ raw: req });
        }),
      );
      outs.forEach((o, j) => {
        worst = Math.max(worst, o.ms);
        const k = o.rpcError ? 'rpc-error' : o.answer!.allowed ? 'allow' : String(o.answer!.httpStatus);
        kinds.set(k, (kinds.get(k) ?? 0) + 1);
        try {
          expectClearDecision(o, `case ${i + j}`);
          if (chunk[j].spoof && o.answer!.allowed)
            expect(
              o.answer!.removed.includes('x-tollgate-model') ||
                o.answer!.upstream['x-tollgate-model'] !== undefined,
            ).toBe(true);
        } catch (err) {
          failures.push(
            `${(err as Error).message} — ${JSON.stringify({ ...chunk[j], body: chunk[j].body?.toString('latin1').slice(0, 200) })}`,
          );
        }
      });
      if (i % 400 === 0) await controlCheck();
    }
    const last = await controlCheck();
    expect(failures.slice(0, 5)).toEqual([]);
    expect(worst).toBeLessThan(5000);
    // Accounting: the control tenant was debited exactly once per control call, nothing else.
    expect(last.headers['x-ratelimit-remaining-requests']).toBeDefined();
    expect(Number(await vk.client.hget(`tollgate:c:control:monthly:${control}`, 'u'))).toBe(controlCalls);
    // Every key in Valkey has our shape (prefix, kind, limit, one safe id) and sane numbers.
    const keys = await vk.client.keys('*');
    for (const k of keys) {
      if (k.startsWith('tollgate:v:')) {
        // a reservation record (until settled): its id is ours and every key it names has our shape
        expect(k).toMatch(/^tollgate:v:[0-9a-z]{6,11}\.[A-Za-z0-9_-]{22}$/);
        const h = await vk.client.hgetall(k);
        expect(Object.keys(h).sort()).toEqual(['e', 'id', 'r']);
        expect(`tollgate:v:${h.id}`).toBe(k);
        for (const e of JSON.parse(h.e) as unknown[][]) expect(String(e[1])).toMatch(KEY_SHAPE);
        continue;
      }
      expect(k).toMatch(KEY_SHAPE);
      const h = await vk.client.hgetall(k);
      const fields = k.startsWith('tollgate:r:') ? ['v', 't', 'x'] : ['u', 'e'];
      expect(Object.keys(h).sort()).toEqual(fields.sort());
      for (const f of fields) expect(Number.isFinite(Number(h[f]))).toBe(true);
      if (k.startsWith('tollgate:r:')) expect(Number(h.v)).toBeGreaterThanOrEqual(0);
      else expect(Number(h.u)).toBeGreaterThanOrEqual(0);
    }
    expect(p.proc.exitCode).toBeNull();
    expect(logLines(p.output()).filter((l) => l.msg === 'decision failed unexpectedly')).toEqual([]);
    console.log(
      `[trust] fuzz: ${CASES} generated requests (seed ${SEED}), answers ${JSON.stringify(Object.fromEntries(kinds))}, worst ${worst.toFixed(0)} ms, ${keys.length} Valkey keys well-formed, peak RSS ${(peakRssKb() / 1024).toFixed(0)} MB`,
    );
  }, 120_000);

  const big = (n: number, unit: string) => unit.repeat(n);
  const specials: [string, () => Buffer | string, number[]][] = [
    [
      'arrays nested 100,000 deep',
      () => `{"model":"gpt-4o-mini","messages":${big(100_000, '[')}${big(100_000, ']')}}`,
      [400],
    ],
    [
      'objects nested 100,000 deep',
      () =>
        `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}],"metadata":${big(100_000, '{"a":')}1${big(100_000, '}')}}`,
      [400, 200],
    ],
    [
      'tool parameters nested 100,000 deep',
      () =>
        `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f","parameters":${big(100_000, '{"a":')}1${big(100_000, '}')}}}]}`,
      [400, 200, 429],
    ],
    [
      'messages: 1,000,000 elements',
      () => `{"model":"gpt-4o-mini","messages":[${big(999_999, '0,')}0]}`,
      [400],
    ],
    [
      'content parts: 1,000,000 elements',
      () => `{"model":"gpt-4o-mini","messages":[{"role":"user","content":[${big(999_999, '"a",')}"a"]}]}`,
      [400, 429],
    ],
    [
      'stop: 1,000,000 elements',
      () =>
        `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}],"stop":[${big(999_999, '"a",')}"a"]}`,
      [400, 200],
    ],
    [
      '8 MB prompt (at max_body_bytes)',
      () => JSON.stringify(chat('gpt-4o-mini', big(4_150_000, 'a '))),
      [429],
    ],
  ];
  it.each(specials)(
    '%s: a clear decision in bounded time',
    async (_name, make, statuses) => {
      const rssBefore = peakRssKb();
      const o = await send({ headers: { 'x-tenant-id': 'special' }, body: make() });
      expectClearDecision(o, _name);
      const a = o.answer!;
      expect(statuses).toContain(a.allowed ? 200 : a.httpStatus);
      expect(o.ms).toBeLessThan(15_000);
      expect(peakRssKb()).toBeLessThan(Math.max(rssBefore, 300 * 1024) + 1024 * 1024);
      expect(p.proc.exitCode).toBeNull();
      console.log(
        `[trust] ${_name}: ${a.allowed ? 'allow' : a.httpStatus} in ${o.ms.toFixed(0)} ms${a.json ? ` (${String(a.json.error.message).slice(0, 80)})` : ''}`,
      );
    },
    30_000,
  );

  // A body above max_body_bytes (but within the gRPC receive limit, 2 × max_body_bytes + 1 MiB) gets an
  // estimate from its size, not an RPC error that Envoy's failure_mode_allow would let through unmetered.
  it('10 MB body over gRPC: a clear decision', async () => {
    const o = await send({
      headers: { 'x-tenant-id': 'special' },
      body: JSON.stringify(chat('gpt-4o-mini', big(5_000_000, 'a '))),
    });
    expectClearDecision(o, '10 MB');
  });

  it('10 MB bodies in HTTP mode are estimated from content-length and decided', async () => {
    for (let i = 0; i < 3; i++) {
      const payload = JSON.stringify(chat('gpt-4o-mini', big(5_000_000, 'b '), { max_tokens: 1 }));
      const t0 = performance.now();
      const r = await fetch(`http://127.0.0.1:${p.authzHttpPort}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-tenant-id': `ten-mb-${i}` },
        body: payload,
      });
      const ms = performance.now() - t0;
      // ~2.5M estimated tokens can never fit 1M tokens/min: a clear 429, not a crash or a 500
      expect(r.status).toBe(429);
      expect(r.headers.get('x-should-retry')).toBe('false');
      expect(r.headers.get('x-tollgate-estimated')).toBe('true');
      expect(ms).toBeLessThan(10_000);
    }
    expect(p.proc.exitCode).toBeNull();
  });
});
