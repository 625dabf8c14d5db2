/**
 * The official SDKs (openai, @anthropic-ai/sdk) as clients see tollgate, through the Envoy-like proxy
 * (test/helpers/proxy.ts: gRPC Check as Envoy asks it, the model rewrite of envoy.yaml's Lua filter,
 * ext_proc) in front of a fake provider, on a real Valkey:
 *  - a 429 is retried by the SDK after `retry-after-ms` and then succeeds (a 1-per-2s budget refills);
 *  - `x-should-retry: false` (a call that can never fit) is not retried: one attempt at the proxy;
 *  - a rerouted call reaches the provider with the fallback model in its body;
 *  - the SDK's error carries our message, code and `retry_after_seconds`.
 */
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type Listening,
  type ProviderRequest,
  startEnvoyLikeProxy,
  startFakeProvider,
} from './helpers/proxy.js';
import { type SettleApp, startSettleApp } from './helpers/settle.js';
import { startValkey, type TestValkey } from './helpers/valkey.js';

const CONFIG = `
identity:
  tenant:
    - header: x-tenant-id
  plan:
    - header: x-plan
models:
  gpt-4o:
    encoding: o200k_base
    fallback: gpt-4o-mini
  gpt-4o-mini:
    encoding: o200k_base
  claude-sonnet-4:
    encoding: o200k_base
    fallback: claude-haiku-4
  claude-haiku-4:
    encoding: o200k_base
  "*":
    encoding: o200k_base
    default_max_output_tokens: 100
limits:
  - { name: one-per-2s, per: tenant, requests: 1, every: 2s, when: { plan: burst } }
  - { name: big-models, per: tenant, tokens: 2000, every: 1h, models: [gpt-4o, claude-sonnet-4] }
  - { name: tenant-tokens, per: tenant, tokens: 20000, every: 1h }
`;

let vk: TestValkey;
let s: SettleApp;
let provider: Listening & { requests: ProviderRequest[] };
let proxy: Listening & { attempts: () => number; denials: Denial[] };
let n = 0;
const tenant = () => `sdkc${Date.now()}-${++n}`;

beforeAll(async () => {
  vk = await startValkey();
  s = await startSettleApp(CONFIG, { valkeyUrl: vk.url });
  provider = await startFakeProvider();
  proxy = await startEnvoyLikeProxy(s.app.grpcPort, provider.port);
});
afterAll(async () => {
  await proxy?.close();
  await provider?.close();
  await s?.close();
  await vk?.close();
});

const openai = (headers: Record<string, string>, maxRetries = 2) =>
  new OpenAI({
    baseURL: `http://127.0.0.1:${proxy.port}/v1`,
    apiKey: 'sk-test',
    maxRetries,
    defaultHeaders: headers,
  });
const anthropic = (headers: Record<string, string>, maxRetries = 2) =>
  new Anthropic({
    baseURL: `http://127.0.0.1:${proxy.port}`,
    apiKey: 'sk-ant-test',
    maxRetries,
    defaultHeaders: headers,
  });
const hi = [{ role: 'user' as const, content: 'hello' }];

/** The proxy attempts and provider requests `f` caused. */
async function counting<T>(f: () => Promise<T>) {
  const a0 = proxy.attempts();
  const p0 = provider.requests.length;
  const d0 = proxy.denials.length;
  const result = await f().catch((e: unknown) => e);
  return {
    result,
    attempts: proxy.attempts() - a0,
    upstream: provider.requests.slice(p0),
    denials: proxy.denials.slice(d0),
    end: Date.now(),
  };
}

/** The call was denied (429 with retry-after-ms), retried no sooner than that, and then served. */
function retriedAfterRetryAfterMs(r: Awaited<ReturnType<typeof counting>>): void {
  expect(r.denials.length).toBeGreaterThanOrEqual(1);
  const first = r.denials[0];
  expect(first.status).toBe(429);
  const wait = Number(first.headers['retry-after-ms']);
  expect(wait).toBeGreaterThan(0);
  expect(r.attempts).toBe(r.denials.length + 1); // each denial retried, the last attempt served
  expect(r.upstream).toHaveLength(1); // only the served attempt reached the provider
  expect(r.end - first.at).toBeGreaterThanOrEqual(wait - 5); // it waited (timer granularity)
}

describe('429s: retried after retry-after-ms, until the budget refills', () => {
  it('openai retries the rate-limited call and it succeeds', async () => {
    const client = openai({ 'x-tenant-id': tenant(), 'x-plan': 'burst' });
    await client.chat.completions.create({ model: 'gpt-4o-mini', messages: hi, max_tokens: 50 });
    const r = await counting(() =>
      client.chat.completions.create({ model: 'gpt-4o-mini', messages: hi, max_tokens: 50 }),
    );
    expect((r.result as any).choices?.[0]?.message?.content).toBeTruthy();
    retriedAfterRetryAfterMs(r);
  });

  it('anthropic retries the rate-limited call and it succeeds', async () => {
    const client = anthropic({ 'x-tenant-id': tenant(), 'x-plan': 'burst' });
    await client.messages.create({ model: 'claude-haiku-4', max_tokens: 50, messages: hi });
    const r = await counting(() =>
      client.messages.create({ model: 'claude-haiku-4', max_tokens: 50, messages: hi }),
    );
    expect((r.result as any).usage?.output_tokens).toBeGreaterThan(0);
    retriedAfterRetryAfterMs(r);
  });
});

describe('x-should-retry: false is not retried', () => {
  it('openai: a call that can never fit is tried once and surfaces our error', async () => {
    const client = openai({ 'x-tenant-id': tenant() }, 3);
    const r = await counting(() =>
      client.chat.completions.create({ model: 'gpt-4o-mini', messages: hi, max_tokens: 50_000 }),
    );
    expect(r.attempts).toBe(1);
    expect(r.upstream).toHaveLength(0);
    const err = r.result as InstanceType<typeof OpenAI.APIError>;
    expect(err).toBeInstanceOf(OpenAI.RateLimitError);
    expect(err.headers?.get('x-should-retry')).toBe('false');
    expect(err.code).toBe('rate_limit_exceeded');
    expect(err.message).toMatch(
      /limit "tenant-tokens" \(per tenant\) allows at most 20000; it can never fit/,
    );
  });

  it('anthropic: tried once; the whole body (limit, retry_after_seconds: null) is on .error', async () => {
    const client = anthropic({ 'x-tenant-id': tenant() }, 3);
    const r = await counting(() =>
      // streaming: the SDK refuses a non-streaming call this large before sending it
      client.messages.create({ model: 'claude-haiku-4', max_tokens: 50_000, stream: true, messages: hi }),
    );
    expect(r.attempts).toBe(1);
    const err = r.result as InstanceType<typeof Anthropic.APIError>;
    expect(err).toBeInstanceOf(Anthropic.RateLimitError);
    expect(err.error).toMatchObject({ limit: 'tenant-tokens', retry_after_seconds: null });
    expect((err.error as any).error.message).toContain('it can never fit');
  });
});

describe('the SDK surfaces our message and retry_after_seconds', () => {
  it('openai: message and code on the error, the seconds in it and in retry-after', async () => {
    const client = openai({ 'x-tenant-id': tenant(), 'x-plan': 'burst' }, 0);
    await client.chat.completions.create({ model: 'gpt-4o-mini', messages: hi, max_tokens: 50 });
    const err = (await client.chat.completions
      .create({ model: 'gpt-4o-mini', messages: hi, max_tokens: 50 })
      .catch((e) => e)) as InstanceType<typeof OpenAI.APIError>;
    expect(err).toBeInstanceOf(OpenAI.RateLimitError);
    // the openai SDK keeps the body's `error` object: message, type, code (top-level fields are dropped)
    expect(err.error).toMatchObject({ type: 'requests', code: 'rate_limit_exceeded' });
    expect(err.message).toMatch(/^429 Rate limit reached for requests on limit "one-per-2s"/);
    const seconds = Number(err.headers?.get('retry-after'));
    expect([1, 2]).toContain(seconds); // a 2 s window, rounded up
    expect(err.message).toContain(`Please try again in ${seconds}s.`);
    expect(Number(err.headers?.get('retry-after-ms'))).toBeGreaterThan(0);
  });

  it('anthropic: the whole body on .error, retry_after_seconds included', async () => {
    const client = anthropic({ 'x-tenant-id': tenant(), 'x-plan': 'burst' }, 0);
    await client.messages.create({ model: 'claude-haiku-4', max_tokens: 50, messages: hi });
    const err = (await client.messages
      .create({ model: 'claude-haiku-4', max_tokens: 50, messages: hi })
      .catch((e) => e)) as InstanceType<typeof Anthropic.APIError>;
    expect(err).toBeInstanceOf(Anthropic.RateLimitError);
    const seconds = Number(err.headers?.get('retry-after'));
    expect([1, 2]).toContain(seconds);
    expect(err.error).toMatchObject({
      retry_after_seconds: seconds,
      limit: 'one-per-2s',
      error: { code: 'rate_limit_exceeded', type: 'requests' },
    });
    // anthropic's message is the status and the whole body as JSON
    expect(err.message).toMatch(/^429 \{"error":\{"message":"Rate limit reached for requests on limit/);
    expect((err.error as any).error.message).toContain(`Please try again in ${seconds}s.`);
  });
});

describe('a rerouted call reaches the provider with the fallback model in its body', () => {
  it('openai: gpt-4o over its budget goes to gpt-4o-mini', async () => {
    const client = openai({ 'x-tenant-id': tenant() });
    const r = await counting(() =>
      client.chat.completions.create({ model: 'gpt-4o', messages: hi, max_tokens: 3000 }).withResponse(),
    );
    const { response } = r.result as { response: Response };
    expect(response.headers.get('x-tollgate-model')).toBe('gpt-4o-mini');
    expect(response.headers.get('x-tollgate-rerouted-from')).toBe('gpt-4o');
    expect(r.upstream).toHaveLength(1);
    expect(r.upstream[0].body).toMatchObject({ model: 'gpt-4o-mini', max_tokens: 3000, messages: hi });
    expect(Number(r.upstream[0].headers['content-length'])).toBe(
      Buffer.byteLength(JSON.stringify(r.upstream[0].body)),
    );
  });

  it('anthropic: claude-sonnet-4 over its budget goes to claude-haiku-4, streaming', async () => {
    const client = anthropic({ 'x-tenant-id': tenant() });
    const r = await counting(async () => {
      const stream = await client.messages.create({
        model: 'claude-sonnet-4',
        max_tokens: 3000,
        stream: true,
        messages: hi,
      });
      let text = '';
      for await (const e of stream)
        if (e.type === 'content_block_delta' && e.delta.type === 'text_delta') text += e.delta.text;
      return text;
    });
    expect(r.result).toContain('fake provider');
    expect(r.upstream.map((u) => u.body.model)).toEqual(['claude-haiku-4']);
  });

  it('within budget nothing is rewritten', async () => {
    const client = openai({ 'x-tenant-id': tenant() });
    const r = await counting(() =>
      client.chat.completions.create({ model: 'gpt-4o', messages: hi, max_tokens: 100 }),
    );
    expect(r.upstream.map((u) => u.body.model)).toEqual(['gpt-4o']);
  });
});
