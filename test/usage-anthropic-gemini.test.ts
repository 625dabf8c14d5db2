/**
 * Anthropic Messages and Gemini response usage, JSON and SSE. Fixture shapes follow Anthropic's
 * Messages API reference and streaming guide (message_start / content_block_* / message_delta /
 * message_stop, ping) and Google's Gemini API reference (GenerateContentResponse, UsageMetadata;
 * streamGenerateContent?alt=sse sends CRLF-terminated `data:` lines; without alt=sse a JSON array).
 */
import { describe, expect, it } from 'vitest';
import { resolveUsage, scanUsage } from '../src/dialects/usage/index.js';
import { countChars, expectChunkingInvariant, sse } from './helpers/usage-harness.js';

const CONTENT = ['Bonjour ', 'à ', 'tous 👋🏽', ', 你好', '！'];
const TEXT = CONTENT.join('');

describe('Anthropic Messages', () => {
  const message = {
    id: 'msg_013Zva2CMHLNnXjNJJKqJ2EF',
    type: 'message',
    role: 'assistant',
    model: 'claude-sonnet-4-20250514',
    content: [
      {
        type: 'thinking',
        thinking: 'Let me think.',
        signature: 'EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds',
      },
      { type: 'text', text: TEXT },
      {
        type: 'tool_use',
        id: 'toolu_01A09q90qw90lq917835lq9',
        name: 'get_weather',
        input: { location: 'Paris' },
      },
    ],
    stop_reason: 'tool_use',
    stop_sequence: null,
    usage: {
      input_tokens: 2095,
      output_tokens: 503,
      cache_creation_input_tokens: 2051,
      cache_read_input_tokens: 4102,
      service_tier: 'standard',
    },
  };

  it('JSON usage: prompt includes cache reads and writes', async () => {
    const scan = await expectChunkingInvariant('anthropic.messages', JSON.stringify(message));
    expect(resolveUsage(scan, countChars)).toEqual({
      prompt: 2095 + 2051 + 4102,
      cachedPrompt: 4102,
      cacheWrite: 2051,
      output: 503,
      reasoning: 0,
      source: 'reported',
      promptReported: true,
    });
  });

  it('JSON without usage: text, thinking and tool_use input are counted', () => {
    const { usage: _u, ...rest } = message;
    const scan = scanUsage('anthropic.messages', JSON.stringify(rest));
    expect(scan.text.text).toBe(`Let me think.${TEXT}get_weather{"location":"Paris"}`);
    expect(resolveUsage(scan, countChars).source).toBe('counted');
  });

  const start = {
    type: 'message_start',
    message: {
      id: 'msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY',
      type: 'message',
      role: 'assistant',
      content: [],
      model: 'claude-sonnet-4-20250514',
      stop_reason: null,
      stop_sequence: null,
      usage: {
        input_tokens: 25,
        cache_creation_input_tokens: 10,
        cache_read_input_tokens: 300,
        output_tokens: 1,
      },
    },
  };
  const events = (final: boolean): Array<[string | undefined, unknown]> => [
    ['message_start', start],
    [
      'content_block_start',
      { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } },
    ],
    ['ping', { type: 'ping' }],
    ...CONTENT.map((text): [string, unknown] => [
      'content_block_delta',
      { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text } },
    ]),
    ['content_block_stop', { type: 'content_block_stop', index: 0 }],
    [
      'content_block_start',
      {
        type: 'content_block_start',
        index: 1,
        content_block: { type: 'tool_use', id: 'toolu_1', name: 'get_weather', input: {} },
      },
    ],
    [
      'content_block_delta',
      {
        type: 'content_block_delta',
        index: 1,
        delta: { type: 'input_json_delta', partial_json: '{"location": "Par' },
      },
    ],
    [
      'content_block_delta',
      { type: 'content_block_delta', index: 1, delta: { type: 'input_json_delta', partial_json: 'is"}' } },
    ],
    ['content_block_stop', { type: 'content_block_stop', index: 1 }],
    ...(final
      ? ([
          [
            'message_delta',
            {
              type: 'message_delta',
              delta: { stop_reason: 'tool_use', stop_sequence: null },
              usage: { output_tokens: 89 },
            },
          ],
          ['message_stop', { type: 'message_stop' }],
        ] as Array<[string, unknown]>)
      : []),
  ];

  it('SSE: message_start input/cache counts + message_delta output', async () => {
    const scan = await expectChunkingInvariant('anthropic.messages', sse(events(true)), 'text/event-stream');
    expect(scan.text.text).toBe(`${TEXT}get_weather{"location": "Paris"}`);
    expect(resolveUsage(scan, countChars)).toEqual({
      prompt: 335,
      cachedPrompt: 300,
      cacheWrite: 10,
      output: 89,
      reasoning: 0,
      source: 'reported',
      promptReported: true,
    });
  });

  it('SSE with thinking deltas; message_delta repeating input counts (newer API versions)', () => {
    const body = sse([
      ['message_start', start],
      [
        'content_block_start',
        { type: 'content_block_start', index: 0, content_block: { type: 'thinking', thinking: '' } },
      ],
      [
        'content_block_delta',
        { type: 'content_block_delta', index: 0, delta: { type: 'thinking_delta', thinking: 'Hmm' } },
      ],
      [
        'content_block_delta',
        { type: 'content_block_delta', index: 0, delta: { type: 'signature_delta', signature: 'EqQB' } },
      ],
      [
        'message_delta',
        {
          type: 'message_delta',
          delta: { stop_reason: 'end_turn', stop_sequence: null },
          usage: {
            input_tokens: 25,
            cache_creation_input_tokens: 10,
            cache_read_input_tokens: 300,
            output_tokens: 40,
          },
        },
      ],
    ]);
    const scan = scanUsage('anthropic.messages', body);
    expect(scan.text.text).toBe('Hmm');
    expect(resolveUsage(scan, countChars)).toMatchObject({ prompt: 335, output: 40, source: 'reported' });
  });

  it('SSE cut before message_delta: prompt reported, output counted', async () => {
    const scan = await expectChunkingInvariant('anthropic.messages', sse(events(false)));
    const u = resolveUsage(scan, countChars);
    expect(u).toMatchObject({
      prompt: 335,
      cachedPrompt: 300,
      cacheWrite: 10,
      source: 'counted',
      promptReported: true,
    });
    expect(u.output).toBe(scan.text.text.length);
  });

  it('SSE cut right after message_start: the partial output count is the floor', () => {
    const u = resolveUsage(scanUsage('anthropic.messages', sse([['message_start', start]])), countChars);
    expect(u).toMatchObject({ prompt: 335, output: 1, source: 'counted' });
  });

  it('an error event mid-stream is ignored', () => {
    const body = sse([
      ['message_start', start],
      ['error', { type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' } }],
    ]);
    expect(resolveUsage(scanUsage('anthropic.messages', body), countChars).output).toBe(1);
  });
});

describe('Gemini', () => {
  const final = {
    candidates: [
      {
        content: { parts: [{ text: CONTENT[CONTENT.length - 1] }], role: 'model' },
        finishReason: 'STOP',
        index: 0,
      },
    ],
    usageMetadata: {
      promptTokenCount: 120,
      candidatesTokenCount: 33,
      totalTokenCount: 673,
      cachedContentTokenCount: 64,
      toolUsePromptTokenCount: 6,
      promptTokensDetails: [{ modality: 'TEXT', tokenCount: 120 }],
      cacheTokensDetails: [{ modality: 'TEXT', tokenCount: 64 }],
      thoughtsTokenCount: 514,
    },
    modelVersion: 'gemini-2.5-flash',
    responseId: 'mAitaLmkHPPlz7IPvtfUqQ4',
  };
  const chunks = CONTENT.slice(0, -1).map((text, i) => ({
    candidates: [{ content: { parts: [{ text }], role: 'model' }, index: 0 }],
    usageMetadata: {
      promptTokenCount: 120,
      totalTokenCount: 120 + i,
      promptTokensDetails: [{ modality: 'TEXT', tokenCount: 120 }],
      ...(i > 0 ? { candidatesTokenCount: i * 3 } : {}),
    },
    modelVersion: 'gemini-2.5-flash',
    responseId: 'mAitaLmkHPPlz7IPvtfUqQ4',
  }));
  const expected = {
    prompt: 126,
    cachedPrompt: 64,
    cacheWrite: 0,
    output: 33 + 514,
    reasoning: 514,
    source: 'reported',
    promptReported: true,
  };

  it('generateContent JSON: candidates + thoughts are output, tool-use prompt is input', async () => {
    const whole = {
      ...final,
      candidates: [{ ...final.candidates[0], content: { parts: [{ text: TEXT }], role: 'model' } }],
    };
    const scan = await expectChunkingInvariant('gemini.generateContent', JSON.stringify(whole, null, 2));
    expect(resolveUsage(scan, countChars)).toEqual(expected);
  });

  it('streamGenerateContent?alt=sse (CRLF): the final chunk usage', async () => {
    const body = sse(
      [...chunks, final].map((c): [undefined, unknown] => [undefined, c]),
      '\r\n',
    );
    const scan = await expectChunkingInvariant('gemini.generateContent', body, 'text/event-stream');
    expect(scan.text.text).toBe(TEXT);
    expect(resolveUsage(scan, countChars)).toEqual(expected);
  });

  it('streamGenerateContent without alt=sse: a JSON array of chunks', async () => {
    const scan = await expectChunkingInvariant(
      'gemini.generateContent',
      JSON.stringify([...chunks, final], null, 1),
    );
    expect(resolveUsage(scan, countChars)).toEqual(expected);
  });

  it('SSE cut before the final chunk: prompt reported, output counted (at least the partial count)', async () => {
    const body = sse(
      chunks.map((c): [undefined, unknown] => [undefined, c]),
      '\r\n',
    );
    const scan = await expectChunkingInvariant('gemini.generateContent', body);
    expect(scan.outputFloor).toBe(9);
    const u = resolveUsage(scan, () => 2);
    expect(u).toMatchObject({ prompt: 120, source: 'counted', output: 9 });
    expect(resolveUsage(scan, countChars).output).toBe(CONTENT.slice(0, -1).join('').length);
  });

  it('function calls in candidates are collected', () => {
    const body = JSON.stringify({
      candidates: [
        {
          content: {
            role: 'model',
            parts: [{ functionCall: { name: 'find_movies', args: { location: 'Mountain View, CA' } } }],
          },
          finishReason: 'STOP',
        },
      ],
    });
    const scan = scanUsage('gemini.generateContent', body);
    expect(scan.text.text).toBe('find_movies{"location":"Mountain View, CA"}');
    expect(resolveUsage(scan, countChars).source).toBe('counted');
  });
});
