/**
 * The answer cache's parts: the stores' bounds (bytes in total and per scope, TTL, LRU on memory,
 * atomic accounting in lua/cache-put.lua on a real Valkey, binary values), the exact key's
 * normalization, and reassembling answers (tool calls, Anthropic tool_use) that replay as SSE and
 * reassemble to the same message.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { callKey } from '../src/cache/key.js';
import { reassemble } from '../src/cache/reassemble.js';
import { servedBody } from '../src/cache/serve.js';
import { ValkeyAnswerStore } from '../src/store/answer-valkey.js';
import {
  type AnswerPut,
  type AnswerStore,
  MEMORY_ENTRY_OVERHEAD,
  MemoryAnswerStore,
  VALKEY_ENTRY_OVERHEAD,
} from '../src/store/answers.js';
import { startValkey, type TestValkey } from './helpers/valkey.js';

const hash = (n: number) => n.toString(16).padStart(64, '0');
const put = (scope: string, n: number, bytes: number, o: Partial<AnswerPut> = {}): AnswerPut => ({
  scope,
  kind: 'tenant',
  hash: hash(n),
  value: Buffer.alloc(bytes, n),
  ttlMs: 60_000,
  scopeMaxBytes: 1 << 30,
  maxBytes: 1 << 30,
  ...o,
});

describe('memory answer store', () => {
  it('is bounded in total bytes, least recently used first, and per scope', async () => {
    let now = 1000;
    const s = new MemoryAnswerStore(() => now);
    const entry = 1000 + MEMORY_ENTRY_OVERHEAD;
    const max = { maxBytes: entry * 3 };
    for (const n of [1, 2, 3]) expect(await s.put(put('a', n, 1000, max))).toBe('stored');
    await s.get('a', hash(1)); // 1 is now the most recently used: 2 goes first
    expect(await s.put(put('b', 4, 1000, max))).toBe('stored');
    expect(await s.get('a', hash(2))).toBeUndefined();
    expect(await s.get('a', hash(1))).toBeDefined();
    expect(s.total).toBe(entry * 3);
    // a scope's share: its own oldest go, not others'
    expect(await s.put(put('b', 5, 1000, { ...max, scopeMaxBytes: entry }))).toBe('stored');
    expect(await s.get('b', hash(4))).toBeUndefined();
    expect(await s.get('a', hash(3))).toBeDefined();
    expect(await s.put(put('a', 6, 5000, max))).toBe('full');
    expect(await s.put(put('a', 1, 1000, max))).toBe('exists');
    now += 60_001;
    expect(await s.get('a', hash(1))).toBeUndefined();
    expect(await s.bytesByKind()).toEqual({ tenant: entry * 2 });
  });
});

describe('Valkey answer store', () => {
  let vk: TestValkey;
  const stores: AnswerStore[] = [];
  beforeAll(async () => {
    vk = await startValkey();
  }, 30_000);
  afterAll(async () => {
    for (const s of stores) await s.close();
    await vk.close();
  });
  const open = async (prefix: string) => {
    const s = new ValkeyAnswerStore({ url: vk.url, timeoutMs: 2000 }, prefix);
    stores.push(s);
    await s.ready;
    return s;
  };

  it('keeps binary values, bounds bytes per scope and in total atomically, and purges to zero', async () => {
    const s = await open('vb1');
    const entry = 1000 + VALKEY_ENTRY_OVERHEAD;
    const bin = Buffer.from([0, 255, 13, 10, 0xc3, 0x28, 0]);
    expect(await s.put(put('a', 9, 0, { value: bin }))).toBe('stored');
    expect(Buffer.compare((await s.get('a', hash(9)))!, bin)).toBe(0);
    await s.purge('a');
    const lim = { maxBytes: entry * 3, scopeMaxBytes: entry * 2 };
    for (const n of [1, 2]) expect(await s.put(put('a', n, 1000, lim))).toBe('stored');
    expect(await s.put(put('a', 3, 1000, lim))).toBe('stored'); // evicts a's oldest (1)
    expect(await s.get('a', hash(1))).toBeUndefined();
    expect(await s.put(put('b', 4, 1000, lim))).toBe('stored'); // total: 3 entries fit
    expect(await s.put(put('b', 5, 1000, lim))).toBe('stored'); // total full: the oldest of all (2) goes
    expect(await s.get('a', hash(2))).toBeUndefined();
    expect(await s.get('a', hash(3))).toBeDefined();
    expect(await s.put(put('b', 6, 10_000, lim))).toBe('full');
    expect(await s.put(put('b', 5, 1000, lim))).toBe('exists');
    expect(await s.bytesByKind(['tenant'])).toEqual({ tenant: entry * 3 });
    expect((await s.purge('a')).entries).toBe(1);
    expect((await s.purge('b')).entries).toBe(2);
    expect(await s.bytesByKind(['tenant'])).toEqual({ tenant: 0 });
  });

  it('concurrent fills never exceed max_bytes (the script is atomic)', async () => {
    const s = await open('vb2');
    const entry = 500 + VALKEY_ENTRY_OVERHEAD;
    const lim = { maxBytes: entry * 10 };
    await Promise.all(Array.from({ length: 200 }, (_, i) => s.put(put(`s${i % 7}`, i, 500, lim))));
    const acct = await vk.client.hgetall('vb2:a:acct');
    expect(Number(acct.total)).toBeLessThanOrEqual(entry * 10);
    expect(await vk.client.zcard('vb2:a:idx')).toBe(Number(acct.total) / entry);
  });

  it('sweeps expired answers out of the byte count on the next fill', async () => {
    const s = await open('vb3');
    await s.put(put('a', 1, 1000, { ttlMs: 50 }));
    await new Promise((r) => setTimeout(r, 80));
    await s.put(put('a', 2, 1000));
    expect(await s.bytesByKind(['tenant'])).toEqual({ tenant: 1000 + VALKEY_ENTRY_OVERHEAD });
  });
});

describe('exact key', () => {
  const body = (o: Record<string, unknown>) =>
    JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }], ...o });
  it('ignores stream, user and ids, not what changes the answer; key order does not matter', () => {
    const k = (o: Record<string, unknown>) => callKey('openai.chat', 'gpt-4o', body(o))!.exact;
    const base = k({ temperature: 0 });
    expect(
      k({
        temperature: 0,
        stream: true,
        stream_options: { include_usage: true },
        user: 'u',
        metadata: { a: 1 },
      }),
    ).toBe(base);
    expect(
      callKey(
        'openai.chat',
        'gpt-4o',
        JSON.stringify({ temperature: 0, messages: [{ content: 'hi', role: 'user' }], model: 'x' }),
      )!.exact,
    ).toBe(base);
    expect(k({ temperature: 1 })).not.toBe(base);
    expect(k({ temperature: 0, tools: [{ type: 'function', function: { name: 'f' } }] })).not.toBe(base);
    expect(callKey('openai.chat', 'gpt-4o-mini', body({ temperature: 0 }))!.exact).not.toBe(base);
    expect(callKey('openai.responses', 'gpt-4o', body({}))).toBeUndefined();
  });
});

describe('reassembling answers', () => {
  const sse = (events: unknown[]) =>
    `${events.map((e) => `data: ${JSON.stringify(e)}\n\n`).join('')}data: [DONE]\n\n`;
  const chunk = (delta: unknown, finish: string | null = null) => ({
    id: 'c1',
    object: 'chat.completion.chunk',
    created: 7,
    model: 'gpt-4o',
    choices: [{ index: 0, delta, finish_reason: finish }],
  });

  it('OpenAI tool calls: joined, replayed as SSE, reassembled to the same message', () => {
    const body = sse([
      chunk({
        role: 'assistant',
        content: null,
        tool_calls: [
          { index: 0, id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '' } },
        ],
      }),
      chunk({ tool_calls: [{ index: 0, function: { arguments: '{"city":' } }] }),
      chunk({ tool_calls: [{ index: 0, function: { arguments: '"Paris"}' } }] }),
      chunk({}, 'tool_calls'),
    ]);
    const json = reassemble('openai.chat', 'text/event-stream', Buffer.from(body))!;
    const m = JSON.parse(json);
    expect(m.choices[0].message.tool_calls[0]).toEqual({
      id: 'call_1',
      type: 'function',
      function: { name: 'get_weather', arguments: '{"city":"Paris"}' },
    });
    expect(m.choices[0].finish_reason).toBe('tool_calls');
    const replayed = servedBody('openai.chat', true, json).body;
    expect(JSON.parse(reassemble('openai.chat', 'text/event-stream', Buffer.from(replayed))!)).toEqual(m);
  });

  it('an unfinished stream, an error body or an error event is not an answer', () => {
    expect(
      reassemble(
        'openai.chat',
        'text/event-stream',
        Buffer.from(`data: ${JSON.stringify(chunk({ content: 'x' }))}\n\n`),
      ),
    ).toBeUndefined();
    expect(
      reassemble('openai.chat', 'application/json', Buffer.from('{"error":{"message":"x"}}')),
    ).toBeUndefined();
    expect(
      reassemble(
        'anthropic.messages',
        'text/event-stream',
        Buffer.from('event: error\ndata: {"type":"error"}\n\n'),
      ),
    ).toBeUndefined();
  });

  it('Anthropic tool_use: input joined from partial JSON, replayed and reassembled alike', () => {
    const ev = (name: string, d: Record<string, unknown>) =>
      `event: ${name}\ndata: ${JSON.stringify({ type: name, ...d })}\n\n`;
    const body = [
      ev('message_start', {
        message: {
          id: 'm',
          type: 'message',
          role: 'assistant',
          model: 'claude',
          content: [],
          stop_reason: null,
          usage: { input_tokens: 3, output_tokens: 1 },
        },
      }),
      ev('content_block_start', { index: 0, content_block: { type: 'text', text: '' } }),
      ev('content_block_delta', { index: 0, delta: { type: 'text_delta', text: 'Checking.' } }),
      ev('content_block_stop', { index: 0 }),
      ev('content_block_start', {
        index: 1,
        content_block: { type: 'tool_use', id: 't1', name: 'get_weather', input: {} },
      }),
      ev('content_block_delta', { index: 1, delta: { type: 'input_json_delta', partial_json: '{"city"' } }),
      ev('content_block_delta', { index: 1, delta: { type: 'input_json_delta', partial_json: ':"Paris"}' } }),
      ev('content_block_stop', { index: 1 }),
      ev('message_delta', {
        delta: { stop_reason: 'tool_use', stop_sequence: null },
        usage: { output_tokens: 9 },
      }),
      ev('message_stop', {}),
    ].join('');
    const json = reassemble('anthropic.messages', 'text/event-stream', Buffer.from(body))!;
    const m = JSON.parse(json);
    expect(m.content).toEqual([
      { type: 'text', text: 'Checking.' },
      { type: 'tool_use', id: 't1', name: 'get_weather', input: { city: 'Paris' } },
    ]);
    expect(m.stop_reason).toBe('tool_use');
    const replayed = servedBody('anthropic.messages', true, json).body;
    expect(JSON.parse(reassemble('anthropic.messages', 'text/event-stream', Buffer.from(replayed))!)).toEqual(
      m,
    );
  });
});
