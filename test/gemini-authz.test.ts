/**
 * Issue 21, Gemini (request side): `…/models/{model}:generateContent` and
 * `:streamGenerateContent?alt=sse` are real calls. Real gRPC Checks encoded from Envoy's official
 * protos (test/helpers/official.ts), on the memory store and a real valkey-server: rate-limit headers,
 * the caller identified by x-goog-api-key or `?key=` (one key, one budget; the raw key never logged),
 * the model from the path (never rerouted: path-model), generationConfig.maxOutputTokens ×
 * candidateCount reserved, prompt counts marked as estimates, the unknown-key gate reading the same
 * key, and the token worker's parse job giving the same answer as the event loop.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/load.js';
import { parseBody } from '../src/dialects/body.js';
import { isParseError, type ParsedCall } from '../src/dialects/types.js';
import { parseAndCount } from '../src/offload/worker.js';
import { countPromptTokens } from '../src/tokens/count.js';
import { startTestApp, type TestApp } from './helpers/app.js';
import { officialCheck } from './helpers/official.js';
import { startValkey, type TestValkey } from './helpers/valkey.js';

let vk: TestValkey;
const apps: TestApp[] = [];
beforeAll(async () => {
  vk = await startValkey();
});
afterAll(async () => {
  for (const app of apps) await app.close(500);
  await vk?.close();
});

type Backend = 'memory' | 'valkey';
async function serve(yaml: string, backend: Backend): Promise<TestApp> {
  const app = await startTestApp(yaml, backend === 'valkey' ? { valkeyUrl: vk.url } : {});
  apps.push(app);
  return app;
}
let n = 0;
const uid = (p: string) => `${p}-${Date.now()}-${++n}`;

const CONFIG = `
identity:
  tenant: [{ api_key: true }, { header: x-tenant-id }]
models:
  gemini-2.5-pro:
    encoding: o200k_base
    price_usd_per_1m: { input: 1.25, output: 10.00 }
    default_max_output_tokens: 300
    fallback: gemini-2.5-flash
  gemini-2.5-flash:
    encoding: o200k_base
    price_usd_per_1m: { input: 0.30, output: 2.50 }
    default_max_output_tokens: 200
limits:
  - { name: key-tokens, per: tenant, tokens: 5000, every: 1h }
  - { name: key-calls, per: tenant, requests: 3, every: 1h }
  - { name: pro-calls, per: tenant, models: [gemini-2.5-pro], requests: 1, every: 1h }
`;

const gen = (model: string) => `/v1beta/models/${model}:generateContent`;
const sse = (model: string) => `/v1beta/models/${model}:streamGenerateContent?alt=sse`;
const contents = (text: string) => [{ role: 'user', parts: [{ text }] }];
const body = (text: string, generationConfig?: Record<string, number>) => ({
  systemInstruction: { parts: [{ text: 'Answer briefly.' }] },
  contents: contents(text),
  ...(generationConfig ? { generationConfig } : {}),
});

/** The prompt tokens tollgate counts for a Gemini body (o200k_base stands in for Google's tokenizer). */
function promptOf(b: unknown, model: string): number {
  const call = parseBody('gemini.generateContent', JSON.stringify(b), { pathModel: model });
  if (isParseError(call)) throw new Error(call.error);
  return countPromptTokens(call, 'o200k_base', { imageTokens: 765 });
}

/** The latest decision log line (debug logs every decision). */
function lastDecision(app: TestApp): any {
  const lines = app.logs.flatMap((l) => l.split('\n')).filter((l) => l.includes('"decision":'));
  return JSON.parse(lines[lines.length - 1]);
}

describe.each<Backend>(['memory', 'valkey'])('Gemini calls through ext_authz (%s)', (backend) => {
  it('generateContent: allowed with rate-limit headers, the path’s model, maxOutputTokens reserved, estimated', async () => {
    const app = await serve(CONFIG, backend);
    const b = body('Why is the sky blue?', { maxOutputTokens: 100 });
    const r = await officialCheck(app.grpcPort, {
      path: gen('gemini-2.5-flash'),
      headers: { 'x-goog-api-key': uid('AIza-gen') },
      body: b,
    });
    expect(r.allowed).toBe(true);
    const prompt = promptOf(b, 'gemini-2.5-flash');
    expect(prompt).toBeGreaterThan(5);
    expect(r.headers['x-ratelimit-limit-tokens']).toBe('5000');
    expect(r.headers['x-ratelimit-remaining-tokens']).toBe(String(5000 - prompt - 100));
    expect(r.headers['x-ratelimit-limit-requests']).toBe('3');
    expect(r.headers['x-ratelimit-remaining-requests']).toBe('2');
    expect(r.headers['x-tollgate-estimated']).toBe('true');
    const line = lastDecision(app);
    expect(line).toMatchObject({ model: 'gemini-2.5-flash', prompt_tokens: prompt, reserved_tokens: 100 });
    expect(line.micros).toBe(Math.ceil(prompt * 0.3 + 100 * 2.5));
  });

  it('streamGenerateContent?alt=sse: the same call, keyed by ?key=; candidateCount multiplies the reservation', async () => {
    const app = await serve(CONFIG, backend);
    const key = uid('AIza-sse');
    const b = body('Tell me a story.', { maxOutputTokens: 150, candidateCount: 2 });
    const r = await officialCheck(app.grpcPort, {
      path: `${sse('gemini-2.5-flash')}&key=${key}`,
      body: b,
    });
    expect(r.allowed).toBe(true);
    expect(r.headers['x-tollgate-estimated']).toBe('true');
    const prompt = promptOf(b, 'gemini-2.5-flash');
    expect(r.headers['x-ratelimit-remaining-tokens']).toBe(String(5000 - prompt - 300));
    expect(lastDecision(app)).toMatchObject({ model: 'gemini-2.5-flash', reserved_tokens: 300 });
    // without maxOutputTokens: the model's default_max_output_tokens
    const d = await officialCheck(app.grpcPort, {
      path: `${sse('gemini-2.5-pro')}&key=${key}`,
      body: { contents: contents('hi') },
    });
    expect(d.allowed).toBe(true);
    expect(lastDecision(app)).toMatchObject({ model: 'gemini-2.5-pro', reserved_tokens: 300 });
    expect(app.logs.join('')).not.toContain(key); // the raw key is never logged
  });

  it('x-goog-api-key and ?key= are one caller; another key has its own budget; other headers cannot move the charge', async () => {
    const app = await serve(CONFIG, backend);
    const k1 = uid('AIza-one');
    const k2 = uid('AIza-two');
    const b = body('hello', { maxOutputTokens: 10 });
    const check = (path: string, headers: Record<string, string> = {}) =>
      officialCheck(app.grpcPort, { path, headers, body: b });
    const remaining = (r: { headers: Record<string, string> }) => r.headers['x-ratelimit-remaining-requests'];
    expect(remaining(await check(gen('gemini-2.5-flash'), { 'x-goog-api-key': k1 }))).toBe('2');
    expect(remaining(await check(`${gen('gemini-2.5-flash')}?key=${k1}`))).toBe('1');
    // a rotating Bearer token or x-api-key beside the Gemini key does not land on a fresh budget
    const third = await check(`${sse('gemini-2.5-flash')}&key=${encodeURIComponent(k1)}`, {
      authorization: `Bearer ${uid('rotating')}`,
      'x-api-key': uid('rotating'),
    });
    expect(remaining(third)).toBe('0');
    const fourth = await check(gen('gemini-2.5-flash'), { 'x-goog-api-key': k1 });
    expect(fourth.allowed).toBe(false);
    expect(fourth.status).toBe(429);
    expect(fourth.json.limit).toBe('key-calls');
    expect(fourth.headers['x-tollgate-estimated']).toBe('true');
    // k2 (by query, then by header): a budget of its own
    expect(remaining(await check(`${gen('gemini-2.5-flash')}?alt=json&key=${k2}`))).toBe('2');
    expect(remaining(await check(gen('gemini-2.5-flash'), { 'x-goog-api-key': k2 }))).toBe('1');
    const logs = app.logs.join('');
    expect(logs).not.toContain(k1);
    expect(logs).not.toContain(k2);
  });

  it('a maxOutputTokens that does not fit the token limit is denied (never fits)', async () => {
    const app = await serve(CONFIG, backend);
    const r = await officialCheck(app.grpcPort, {
      path: gen('gemini-2.5-flash'),
      headers: { 'x-goog-api-key': uid('AIza-big') },
      body: body('hello', { maxOutputTokens: 6000 }),
    });
    expect(r.allowed).toBe(false);
    expect(r.status).toBe(429);
    expect(r.json.limit).toBe('key-tokens');
    // 2 × 2600 = 5200 > 5000 as well: candidateCount counts
    const twice = await officialCheck(app.grpcPort, {
      path: gen('gemini-2.5-flash'),
      headers: { 'x-goog-api-key': uid('AIza-big') },
      body: body('hello', { maxOutputTokens: 2600, candidateCount: 2 }),
    });
    expect(twice.allowed).toBe(false);
    expect(twice.json.limit).toBe('key-tokens');
    const once = await officialCheck(app.grpcPort, {
      path: gen('gemini-2.5-flash'),
      headers: { 'x-goog-api-key': uid('AIza-big') },
      body: body('hello', { maxOutputTokens: 2600 }),
    });
    expect(once.allowed).toBe(true);
  });

  it('the model is the path’s: a reroute to its fallback is refused (path-model), the body’s "model" is ignored', async () => {
    const app = await serve(CONFIG, backend);
    const h = { 'x-goog-api-key': uid('AIza-pro') };
    const b = { model: 'gemini-2.5-flash', contents: contents('hello') };
    const first = await officialCheck(app.grpcPort, { path: gen('gemini-2.5-pro'), headers: h, body: b });
    expect(first.allowed).toBe(true);
    expect(lastDecision(app).model).toBe('gemini-2.5-pro');
    const d = await officialCheck(app.grpcPort, { path: sse('gemini-2.5-pro'), headers: h, body: b });
    expect(d.allowed).toBe(false);
    expect(d.status).toBe(429);
    expect(d.json.limit).toBe('pro-calls');
    expect(d.headers['x-tollgate-reroute']).toBe('refused;reason=path-model');
    expect(d.json.reroute).toEqual({ refused: 'path-model' });
    expect(d.json.error.message).toMatch(/Gemini models\/\{model\}/);
    expect(d.raw.ok_response).toBeFalsy();
    // the fallback itself is still callable by its own path
    const flash = await officialCheck(app.grpcPort, { path: gen('gemini-2.5-flash'), headers: h, body: b });
    expect(flash.allowed).toBe(true);
  });

  it('a partial body is charged as the path’s model, not refused (partial_body: deny), like an Azure path', async () => {
    const yaml = `${CONFIG.replace('tokens: 5000', 'tokens: 500000')}\nserver: { partial_body: deny }\n`;
    const app = await serve(yaml, backend);
    const full = JSON.stringify(body('x '.repeat(50_000)));
    const r = await officialCheck(app.grpcPort, {
      path: gen('gemini-2.5-flash'),
      headers: {
        'x-goog-api-key': uid('AIza-partial'),
        'content-length': String(full.length),
        'x-envoy-auth-partial-body': 'true',
      },
      body: full.slice(0, 65536),
    });
    expect(r.json).toBeUndefined();
    expect(r.allowed).toBe(true);
    expect(r.headers['x-tollgate-estimated']).toBe('true');
    const line = lastDecision(app);
    expect(line).toMatchObject({ model: 'gemini-2.5-flash', reserved_tokens: 200 });
    expect(line.prompt_tokens).toBe(Math.ceil(full.length / 4)); // size ÷ bytes_per_token
  });

  it('a bad Gemini body is a 400; countTokens is not an LLM call', async () => {
    const app = await serve(CONFIG, backend);
    const h = { 'x-goog-api-key': uid('AIza-bad') };
    const bad = await officialCheck(app.grpcPort, { path: gen('gemini-2.5-flash'), headers: h, body: {} });
    expect(bad.status).toBe(400);
    expect(bad.json.error.message).toMatch(/contents is required/);
    const ct = await officialCheck(app.grpcPort, {
      path: '/v1beta/models/gemini-2.5-flash:countTokens',
      headers: h,
      body: { contents: contents('hi') },
    });
    expect(ct.allowed).toBe(true);
    expect(ct.headers['x-ratelimit-limit-requests']).toBeUndefined();
  });
});

describe('Gemini keys and the unknown-key gate', () => {
  const KNOWN = 'AIza-known-gemini-key';
  const sha = (s: string) => createHash('sha256').update(s).digest('hex');

  it('unknown_keys: deny reads x-goog-api-key, else ?key= (the header wins)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-gemini-keys-'));
    writeFileSync(join(dir, 'keys.yaml'), `keys:\n  ${sha(KNOWN)}: { org: acme }\n`);
    const file = join(dir, 'tollgate.yaml');
    writeFileSync(
      file,
      `identity:
  key_map: keys.yaml
  unknown_keys: deny
  tenant: [{ api_key: true }]
limits:
  - { name: per-key, per: tenant, requests: 10, every: 1h }
`,
    );
    const config = loadConfig(file);
    Object.assign(config.server, { grpcHost: '127.0.0.1', grpcPort: 0, httpPort: 0 });
    const app = await startTestApp('', { config });
    apps.push(app);
    const b = { contents: contents('hi'), generationConfig: { maxOutputTokens: 5 } };
    const check = (path: string, headers: Record<string, string> = {}) =>
      officialCheck(app.grpcPort, { path, headers, body: b });
    const path = gen('gemini-2.5-flash');
    expect((await check(path, { 'x-goog-api-key': KNOWN })).allowed).toBe(true);
    expect((await check(`${path}?key=${KNOWN}`)).allowed).toBe(true);
    const unknown = await check(`${path}?key=AIza-made-up`);
    expect(unknown.status).toBe(401);
    expect(unknown.json.error.code).toBe('invalid_api_key');
    expect(JSON.stringify(unknown.raw)).not.toContain('AIza-made-up');
    // the header is what Google reads first: a known key in the query does not cover an unknown header
    expect((await check(`${path}?key=${KNOWN}`, { 'x-goog-api-key': 'AIza-made-up' })).status).toBe(401);
    // nor does a known Bearer token beside an unknown Gemini key
    expect((await check(path, { 'x-goog-api-key': 'AIza-x', authorization: `Bearer ${KNOWN}` })).status).toBe(
      401,
    );
    // a key sent twice in the query is none of them
    expect((await check(`${path}?key=${KNOWN}&key=AIza-other`)).status).toBe(401);
    expect(app.logs.join('')).not.toContain('AIza-made-up');
  });
});

describe('Gemini bodies in a token worker', () => {
  it('the parse job reads the model and streaming from the path and counts what the event loop counts', () => {
    const b = JSON.stringify({
      model: 'not-this',
      model_: 1,
      ...body('a long question '.repeat(200), { maxOutputTokens: 64, candidateCount: 3 }),
    });
    const plan = { byModel: { 'gemini-2.5-pro': ['o200k_base', 'cl100k_base'] }, other: ['cl100k_base'] };
    const r = parseAndCount({
      kind: 'parse',
      dialect: 'gemini.generateContent',
      body: Buffer.from(b),
      path: { pathModel: 'gemini-2.5-pro', stream: true },
      encodings: plan,
      opts: { imageTokens: 765 },
    });
    if ('error' in r) throw new Error(r.error);
    const local = parseBody('gemini.generateContent', b, { pathModel: 'gemini-2.5-pro', stream: true });
    if (isParseError(local)) throw new Error(local.error);
    expect(r.call).toMatchObject({
      dialect: 'gemini.generateContent',
      model: 'gemini-2.5-pro',
      stream: true,
      n: 3,
      requestedOutput: 192,
    } satisfies Partial<ParsedCall>);
    expect(r.call.modelKey).toBeUndefined(); // the path names the model: the body's keys do not matter
    expect(r.tokens).toEqual({
      o200k_base: countPromptTokens(local, 'o200k_base', { imageTokens: 765 }),
      cl100k_base: countPromptTokens(local, 'cl100k_base', { imageTokens: 765 }),
    });
    const bad = parseAndCount({
      kind: 'parse',
      dialect: 'gemini.generateContent',
      body: '{"contents": 5}',
      path: { pathModel: 'gemini-2.5-pro' },
      encodings: plan,
      opts: { imageTokens: 765 },
    });
    expect(bad).toEqual({ error: expect.stringMatching(/contents/) });
  });
});
