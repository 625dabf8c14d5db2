/**
 * The official SDKs (openai, @anthropic-ai/sdk) through an Envoy-like proxy: tollgate's Check before
 * each call, its ext_proc fed with the provider's answer as it streams back (observability mode). The
 * budget ends at capacity minus what the provider reported, not minus what was reserved.
 */
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { countText, getCounter } from '../src/tokens/encoders.js';
import {
  type Listening,
  PROVIDER_PIECES,
  PROVIDER_USAGE,
  startEnvoyLikeProxy,
  startFakeProvider,
} from './helpers/proxy.js';
import { type SettleApp, startSettleApp, waitFor } from './helpers/settle.js';
import { startValkey, type TestValkey } from './helpers/valkey.js';

const CONFIG = `
identity:
  tenant:
    - header: x-tenant-id
models:
  "*":
    encoding: o200k_base
    default_max_output_tokens: 1000
    price_usd_per_1m: { input: 1, output: 4 }
limits:
  - { name: tok, per: tenant, tokens: 100000, reset: daily }
`;
const CAP = 100_000;

let vk: TestValkey;
let s: SettleApp;
let provider: Listening;
let proxy: Listening;
let n = 0;
const tenant = () => `sdk${Date.now()}-${++n}`;

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

/** Wait for `count` settlements after `from`, and the tokens limit's remaining after the last. */
async function settledAfter(from: number, count: number) {
  const evs = await waitFor(() => (s.events.length >= from + count ? s.events.slice(from) : undefined));
  expect(evs?.length).toBe(count);
  return evs!;
}

describe('official SDKs through an Envoy-like proxy', () => {
  it('openai: JSON and streaming calls settle to the reported usage', async () => {
    const t = tenant();
    const client = new OpenAI({
      baseURL: `http://127.0.0.1:${proxy.port}/v1`,
      apiKey: 'sk-test',
      maxRetries: 0,
      defaultHeaders: { 'x-tenant-id': t },
    });
    const from = s.events.length;
    const r = await client.chat.completions.create({
      model: 'gpt-4o',
      messages: [{ role: 'user', content: 'hello' }],
      max_tokens: 4096,
    });
    expect(r.usage?.completion_tokens).toBe(PROVIDER_USAGE.openai.output);
    const stream = await client.chat.completions.create({
      model: 'gpt-4o',
      messages: [{ role: 'user', content: 'hello' }],
      max_tokens: 4096,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = '';
    for await (const c of stream) text += c.choices[0]?.delta?.content ?? '';
    expect(text).toBe(PROVIDER_PIECES.join(''));
    // streaming without include_usage: output counted from the deltas
    const bare = await client.chat.completions.create({
      model: 'gpt-4o',
      messages: [{ role: 'user', content: 'hello' }],
      max_tokens: 4096,
      stream: true,
    });
    for await (const _ of bare) {
    }
    const evs = await settledAfter(from, 3);
    expect(evs.map((e) => e.outcome)).toEqual(['settled', 'settled', 'estimated']);
    const u = PROVIDER_USAGE.openai;
    expect(evs[0].settlement?.tokens).toMatchObject({ prompt: u.prompt, output: u.output });
    expect(evs[1].settlement?.tokens).toMatchObject({ prompt: u.prompt, output: u.output });
    const counted = countText(getCounter('o200k_base'), PROVIDER_PIECES.join(''));
    expect(evs[2].settlement?.tokens.output).toBe(counted);
    const reservedPrompt = evs[2].settlement!.tokens.prompt; // no usage: the reserved prompt
    expect(evs[2].remaining).toEqual([CAP - 2 * (u.prompt + u.output) - (reservedPrompt + counted)]);
  });

  it('anthropic: JSON and streaming calls settle to the reported usage', async () => {
    const t = tenant();
    const client = new Anthropic({
      baseURL: `http://127.0.0.1:${proxy.port}`,
      apiKey: 'sk-ant-test',
      maxRetries: 0,
      defaultHeaders: { 'x-tenant-id': t },
    });
    const from = s.events.length;
    const m = await client.messages.create({
      model: 'claude-sonnet-4',
      max_tokens: 4096,
      messages: [{ role: 'user', content: 'hello' }],
    });
    expect(m.usage.output_tokens).toBe(PROVIDER_USAGE.anthropic.output);
    const stream = await client.messages.create({
      model: 'claude-sonnet-4',
      max_tokens: 4096,
      stream: true,
      messages: [{ role: 'user', content: 'hello' }],
    });
    let text = '';
    for await (const e of stream)
      if (e.type === 'content_block_delta' && e.delta.type === 'text_delta') text += e.delta.text;
    expect(text).toBe(PROVIDER_PIECES.join(''));
    const evs = await settledAfter(from, 2);
    expect(evs.map((e) => e.outcome)).toEqual(['settled', 'settled']);
    const u = PROVIDER_USAGE.anthropic;
    for (const e of evs) expect(e.settlement?.tokens).toMatchObject({ prompt: u.input, output: u.output });
    expect(evs[1].remaining).toEqual([CAP - 2 * (u.input + u.output)]);
  });

  it('a denied call is answered by the proxy with the SDK-readable 429', async () => {
    const t = tenant();
    const client = new OpenAI({
      baseURL: `http://127.0.0.1:${proxy.port}/v1`,
      apiKey: 'sk-test',
      maxRetries: 0,
      defaultHeaders: { 'x-tenant-id': t },
    });
    const err = await client.chat.completions
      .create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }], max_tokens: 200_000 })
      .catch((e) => e);
    expect(err).toBeInstanceOf(OpenAI.APIError);
    expect(err.status).toBe(429);
  });
});
