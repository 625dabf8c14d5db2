import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MAX_DEPTH, parseCall, safeStringify } from '../src/dialects/parse.js';
import { classifyPath, keyHeaderOf } from '../src/dialects/route.js';
import { type Dialect, isParseError, type ParsedCall } from '../src/dialects/types.js';

function ok(dialect: Dialect, body: unknown, azure?: string): ParsedCall {
  const r = parseCall(dialect, body, azure);
  if (isParseError(r)) throw new Error(`unexpected ParseError: ${r.error}`);
  return r;
}

function err(dialect: Dialect, body: unknown): string {
  const r = parseCall(dialect, body);
  if (!isParseError(r)) throw new Error(`expected ParseError, got ${JSON.stringify(r).slice(0, 200)}`);
  return r.error;
}

const DIALECTS: Dialect[] = [
  'openai.chat',
  'openai.completions',
  'openai.embeddings',
  'openai.responses',
  'anthropic.messages',
];

describe('classifyPath', () => {
  it.each([
    ['/v1/chat/completions', 'openai.chat'],
    ['/v1/chat/completions?foo=bar', 'openai.chat'],
    ['/v1/chat/completions/', 'openai.chat'],
    ['/openai/v1/chat/completions', 'openai.chat'],
    ['/v1/completions', 'openai.completions'],
    ['/v1/embeddings', 'openai.embeddings'],
    ['/v1/responses', 'openai.responses'],
    ['/v1/responses?stream=true', 'openai.responses'],
    ['/v1/messages', 'anthropic.messages'],
    ['/anthropic/v1/messages?beta=true', 'anthropic.messages'],
  ])('%s -> %s', (path, dialect) => {
    expect(classifyPath(path)).toEqual({ dialect });
  });

  it('Azure deployments (name URL-decoded)', () => {
    expect(classifyPath('/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21')).toEqual({
      dialect: 'openai.chat',
      pathModel: 'gpt4o-prod',
      azureDeployment: 'gpt4o-prod',
    });
    expect(classifyPath('/openai/deployments/my%20dep/completions')).toEqual({
      dialect: 'openai.completions',
      pathModel: 'my dep',
      azureDeployment: 'my dep',
    });
    expect(classifyPath('/openai/deployments/emb/embeddings')).toEqual({
      dialect: 'openai.embeddings',
      pathModel: 'emb',
      azureDeployment: 'emb',
    });
  });

  it('Gemini generateContent / streamGenerateContent (model and streaming from the path)', () => {
    const g = 'gemini.generateContent';
    expect(classifyPath('/v1beta/models/gemini-2.5-flash:generateContent')).toEqual({
      dialect: g,
      pathModel: 'gemini-2.5-flash',
      stream: false,
    });
    expect(classifyPath('/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse&key=k')).toEqual({
      dialect: g,
      pathModel: 'gemini-2.5-pro',
      stream: true,
    });
    expect(classifyPath('/v1/models/gemini-2.0-flash:generateContent/')?.pathModel).toBe('gemini-2.0-flash');
    expect(classifyPath('/v1beta/models/gemini-2.5-flash:countTokens')).toBeUndefined();
    // Gemini is keyed by x-goog-api-key, never taken for Azure (api-key)
    expect(keyHeaderOf(classifyPath('/v1beta/models/m:generateContent')!)).toBe('x-goog-api-key');
    expect(keyHeaderOf(classifyPath('/openai/deployments/d/chat/completions')!)).toBe('api-key');
    expect(keyHeaderOf(classifyPath('/v1/messages')!)).toBe('x-api-key');
    expect(keyHeaderOf(classifyPath('/v1/chat/completions')!)).toBe('authorization');
  });

  it.each([
    '/v1/messages/count_tokens',
    '/v1/models',
    '/v1/responses/resp_123',
    '/chat/completions',
    '/completions',
    '/healthz',
    '',
    '/openai/deployments/%E0%A4%A/chat/completions', // malformed escape
    '/openai/deployments//chat/completions',
    '/openai/deployments/x/images/generations',
  ])('%s -> undefined', (path) => {
    expect(classifyPath(path)).toBeUndefined();
  });
});

describe('openai.chat', () => {
  it('model, n, max_tokens × n, stream, string content, name', () => {
    const c = ok('openai.chat', {
      model: 'gpt-4o',
      n: 3,
      max_tokens: 100,
      stream: true,
      messages: [
        { role: 'system', content: 'be nice' },
        { role: 'user', name: 'bob', content: 'hi' },
      ],
      temperature: 0.2,
      unknown_field: { anything: [1, 2, 3] },
    });
    expect(c).toMatchObject({
      dialect: 'openai.chat',
      model: 'gpt-4o',
      n: 3,
      requestedOutput: 300,
      stream: true,
      tools: [],
    });
    expect(c.prompt.kind).toBe('chat');
    expect(c.prompt.messages).toEqual([
      { role: 'system', parts: ['be nice'] },
      { role: 'user', name: 'bob', parts: ['hi'] },
    ]);
  });

  it('max_completion_tokens; requestedOutput undefined when absent; n defaults to 1', () => {
    expect(ok('openai.chat', { messages: [], max_completion_tokens: 50, n: 2 }).requestedOutput).toBe(100);
    const c = ok('openai.chat', { messages: [] });
    expect(c.requestedOutput).toBeUndefined();
    expect(c.n).toBe(1);
    expect(c.stream).toBe(false);
    expect(c.model).toBeUndefined();
    expect(ok('openai.chat', { messages: [], max_tokens: null }).requestedOutput).toBeUndefined();
  });

  it('Azure deployment name wins over body.model', () => {
    expect(ok('openai.chat', { model: 'gpt-4o', messages: [] }, 'prod-deploy').model).toBe('prod-deploy');
  });

  it('content-part arrays: text, refusal, images counted, audio/file ignored', () => {
    const c = ok('openai.chat', {
      messages: [
        {
          role: 'user',
          content: [
            { type: 'text', text: 'look at' },
            { type: 'image_url', image_url: { url: 'https://x/y.png', detail: 'high' } },
            { type: 'text', text: 'and' },
            { type: 'image_url', image_url: { url: 'data:image/png;base64,AAAA' } },
            { type: 'input_audio', input_audio: { data: 'AAAA', format: 'wav' } },
            { type: 'file', file: { file_data: 'AAAA' } },
          ],
        },
        { role: 'assistant', content: [{ type: 'refusal', refusal: 'no' }] },
      ],
    });
    expect(c.prompt.images).toBe(2);
    expect(c.prompt.messages[0].parts).toEqual(['look at', 'and']);
    expect(c.prompt.messages[1].parts).toEqual(['no']);
  });

  it('tools, tool_calls, tool messages, legacy functions and function_call', () => {
    const c = ok('openai.chat', {
      messages: [
        { role: 'user', content: 'weather?' },
        {
          role: 'assistant',
          content: null,
          tool_calls: [
            {
              id: 'call_1',
              type: 'function',
              function: { name: 'get_weather', arguments: '{"city":"Paris"}' },
            },
            { id: 'call_2', type: 'function', function: { name: 'lookup', arguments: '{}' } },
          ],
        },
        { role: 'tool', tool_call_id: 'call_1', content: '22C' },
        { role: 'assistant', function_call: { name: 'legacy_fn', arguments: '{"a":1}' } },
      ],
      tools: [
        {
          type: 'function',
          function: {
            name: 'get_weather',
            description: 'Get weather.',
            parameters: {
              type: 'object',
              properties: {
                city: { type: 'string', description: 'City' },
                unit: { type: 'string', enum: ['c', 'f'] },
                opts: { type: 'object', properties: { deep: { type: 'string' } } },
              },
              required: ['city'],
              additionalProperties: false,
            },
          },
        },
      ],
      functions: [{ name: 'legacy_fn', description: 'old', parameters: { type: 'object', properties: {} } }],
    });
    expect(c.tools).toEqual(['get_weather', 'lookup', 'legacy_fn']);
    expect(c.prompt.messages[1].parts).toEqual(['get_weather', '{"city":"Paris"}', 'lookup', '{}']);
    expect(c.prompt.messages[2]).toEqual({ role: 'tool', parts: ['22C', 'call_1'] });
    expect(c.prompt.messages[3].parts).toEqual(['legacy_fn', '{"a":1}']);
    expect(c.prompt.toolDefs).toHaveLength(2);
    const def = c.prompt.toolDefs[0];
    expect(def.name).toBe('get_weather');
    expect(def.description).toBe('Get weather.');
    expect(def.extra).toBeUndefined();
    expect(def.properties).toEqual([
      { name: 'city', type: 'string', description: 'City' },
      { name: 'unit', type: 'string', description: '', enum: ['c', 'f'] },
      { name: 'opts', type: 'object', description: '', extra: '{"properties":{"deep":{"type":"string"}}}' },
    ]);
  });

  it('non-string tool-call arguments are JSON-encoded', () => {
    const c = ok('openai.chat', {
      messages: [{ role: 'assistant', tool_calls: [{ function: { name: 'f', arguments: { a: [1, 2] } } }] }],
    });
    expect(c.prompt.messages[0].parts).toEqual(['f', '{"a":[1,2]}']);
  });
});

describe('openai.completions / embeddings', () => {
  it('completions prompt forms, suffix, best_of', () => {
    expect(ok('openai.completions', { prompt: 'hello', max_tokens: 5, n: 2 })).toMatchObject({
      requestedOutput: 10,
      prompt: { kind: 'text', texts: ['hello'], preTokenized: 0 },
    });
    expect(ok('openai.completions', { prompt: ['a', 'b'], suffix: 'z' }).prompt.texts).toEqual([
      'a',
      'b',
      'z',
    ]);
    expect(ok('openai.completions', { prompt: [1, 2, 3, 4] }).prompt.preTokenized).toBe(4);
    expect(ok('openai.completions', { prompt: [[1, 2], [3]] }).prompt.preTokenized).toBe(3);
    expect(ok('openai.completions', { prompt: 'x', max_tokens: 10, n: 2, best_of: 5 }).requestedOutput).toBe(
      50,
    );
  });

  it('embeddings input forms; no requested output', () => {
    const c = ok('openai.embeddings', { model: 'text-embedding-3-small', input: ['a', 'bb', 'ccc'] });
    expect(c).toMatchObject({
      dialect: 'openai.embeddings',
      n: 1,
      stream: false,
      prompt: { texts: ['a', 'bb', 'ccc'] },
    });
    expect(c.requestedOutput).toBeUndefined();
    expect(ok('openai.embeddings', { input: 'one' }).prompt.texts).toEqual(['one']);
    expect(ok('openai.embeddings', { input: [[1, 2, 3], [4]] }).prompt.preTokenized).toBe(4);
    expect(ok('openai.embeddings', { input: 'x' }, 'emb-deploy').model).toBe('emb-deploy');
  });

  it('bad text inputs', () => {
    expect(err('openai.embeddings', {})).toMatch(/input is required/);
    expect(err('openai.embeddings', { input: 42 })).toMatch(/^input must be/);
    expect(err('openai.embeddings', { input: ['a', 1] })).toMatch(/^input must be/);
    expect(err('openai.embeddings', { input: [1, 'a'] })).toMatch(/^input must be/);
    expect(err('openai.completions', { prompt: { a: 1 } })).toMatch(/^prompt must be/);
  });
});

describe('openai.responses', () => {
  it('string input + instructions + max_output_tokens', () => {
    const c = ok('openai.responses', {
      model: 'gpt-4.1',
      instructions: 'be brief',
      input: 'hello',
      max_output_tokens: 256,
      stream: true,
    });
    expect(c).toMatchObject({ model: 'gpt-4.1', requestedOutput: 256, n: 1, stream: true });
    expect(c.prompt.messages).toEqual([
      { role: 'system', parts: ['be brief'] },
      { role: 'user', parts: ['hello'] },
    ]);
  });

  it('item array: messages with parts, function_call, function_call_output, images, tools', () => {
    const c = ok('openai.responses', {
      input: [
        { role: 'user', content: 'plain' },
        {
          type: 'message',
          role: 'user',
          content: [
            { type: 'input_text', text: 'see' },
            { type: 'input_image', image_url: 'https://x/y.png' },
            { type: 'input_file', file_id: 'f' },
          ],
        },
        { type: 'message', role: 'assistant', content: [{ type: 'output_text', text: 'ok' }] },
        { type: 'function_call', call_id: 'c1', name: 'search', arguments: '{"q":"x"}' },
        { type: 'function_call_output', call_id: 'c1', output: 'result' },
        { type: 'reasoning', summary: [] },
        { type: 'item_reference', id: 'msg_1' },
      ],
      tools: [
        {
          type: 'function',
          name: 'search',
          description: 'Search.',
          parameters: { type: 'object', properties: {} },
        },
        { type: 'web_search' },
      ],
    });
    expect(c.prompt.images).toBe(1);
    expect(c.prompt.messages).toEqual([
      { role: 'user', parts: ['plain'] },
      { role: 'user', parts: ['see'] },
      { role: 'assistant', parts: ['ok'] },
      { role: 'assistant', parts: ['search', '{"q":"x"}'] },
      { role: 'tool', parts: ['c1', 'result'] },
    ]);
    expect(c.tools).toEqual(['search', 'web_search']);
    expect(c.prompt.toolDefs.map((d) => d.name)).toEqual(['search']);
  });

  it('bad responses input', () => {
    expect(err('openai.responses', { input: 5 })).toMatch(/input must be a string or an array/);
    expect(err('openai.responses', { input: ['x'] })).toMatch(/input\[0\] must be an object/);
    expect(err('openai.responses', { input: 'x', max_output_tokens: -1 })).toMatch(
      /max_output_tokens must be a positive integer/,
    );
  });
});

describe('anthropic.messages', () => {
  it('system string, blocks, tool_use / tool_result, images, tools', () => {
    const c = ok('anthropic.messages', {
      model: 'claude-sonnet-4-5',
      max_tokens: 1024,
      system: [
        { type: 'text', text: 'You are Claude.', cache_control: { type: 'ephemeral' } },
        { type: 'text', text: 'Be terse.' },
      ],
      messages: [
        {
          role: 'user',
          content: [
            { type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'AAAA' } },
            { type: 'text', text: 'what is this?' },
          ],
        },
        {
          role: 'assistant',
          content: [
            { type: 'thinking', thinking: 'hmm', signature: 'x' },
            { type: 'tool_use', id: 'tu_1', name: 'get_weather', input: { city: 'Paris', days: [1, 2] } },
          ],
        },
        {
          role: 'user',
          content: [
            {
              type: 'tool_result',
              tool_use_id: 'tu_1',
              content: [
                { type: 'text', text: 'sunny' },
                { type: 'image', source: {} },
              ],
            },
            { type: 'tool_result', tool_use_id: 'tu_2', content: 'plain result' },
          ],
        },
      ],
      tools: [
        {
          name: 'get_weather',
          description: 'Weather.',
          input_schema: { type: 'object', properties: { city: { type: 'string' } } },
        },
        { type: 'web_search_20250305', name: 'web_search', max_uses: 3 },
      ],
    });
    expect(c).toMatchObject({ model: 'claude-sonnet-4-5', requestedOutput: 1024, n: 1, stream: false });
    expect(c.prompt.images).toBe(2);
    expect(c.prompt.messages).toEqual([
      { role: 'system', parts: ['You are Claude.', 'Be terse.'] },
      { role: 'user', parts: ['what is this?'] },
      { role: 'assistant', parts: ['get_weather', '{"city":"Paris","days":[1,2]}'] },
      { role: 'user', parts: ['sunny', 'plain result'] },
    ]);
    expect(c.tools).toEqual(['get_weather', 'web_search']);
    expect(c.prompt.toolDefs).toEqual([
      {
        name: 'get_weather',
        description: 'Weather.',
        properties: [{ name: 'city', type: 'string', description: '' }],
      },
    ]);
  });

  it('system as string', () => {
    const c = ok('anthropic.messages', { system: 'sys', messages: [{ role: 'user', content: 'hi' }] });
    expect(c.prompt.messages[0]).toEqual({ role: 'system', parts: ['sys'] });
  });

  it('bad anthropic bodies', () => {
    expect(err('anthropic.messages', { system: 5, messages: [] })).toMatch(/system must be/);
    expect(
      err('anthropic.messages', { messages: [{ role: 'user', content: [{ type: 'text', text: 5 }] }] }),
    ).toMatch(/messages\[0\]\.content\[0\]\.text must be a string/);
  });
});

describe('bad / hostile input', () => {
  it.each([null, 42, 'str', [], [{ messages: [] }], true])('non-object body %j', (body) => {
    for (const d of DIALECTS) expect(err(d, body)).toMatch(/request body must be a JSON object/);
  });

  it('messages not an array names the field', () => {
    expect(err('openai.chat', { messages: 'hi' })).toBe('messages must be an array');
    expect(err('openai.chat', {})).toBe('messages must be an array');
    expect(err('anthropic.messages', { messages: { 0: 'x' } })).toBe('messages must be an array');
    expect(err('openai.chat', { messages: ['x'] })).toBe('messages[0] must be an object');
    expect(err('openai.chat', { messages: [{ role: 1 }] })).toBe('messages[0].role must be a string');
    expect(err('openai.chat', { messages: [{ role: 'user', content: 5 }] })).toMatch(
      /messages\[0\]\.content must be an array/,
    );
    expect(err('openai.chat', { messages: [], tools: {} })).toBe('tools must be an array');
    expect(err('openai.chat', { messages: [], model: 5 })).toBe('model must be a string');
    expect(err('openai.chat', { messages: [], stream: 'yes' })).toBe('stream must be a boolean');
  });

  it.each([
    [{ max_tokens: -1 }, 'max_tokens must be a positive integer ≤ 10000000'],
    [{ max_tokens: 0 }, 'max_tokens must be a positive integer ≤ 10000000'],
    [{ max_tokens: 1.5 }, 'max_tokens must be a positive integer ≤ 10000000'],
    [{ max_tokens: 1e300 }, 'max_tokens must be a positive integer ≤ 10000000'],
    [{ max_tokens: '100' }, 'max_tokens must be a positive integer ≤ 10000000'],
    [{ max_completion_tokens: 10_000_001 }, 'max_completion_tokens must be a positive integer ≤ 10000000'],
    [{ n: 0 }, 'n must be a positive integer ≤ 128'],
    [{ n: -3 }, 'n must be a positive integer ≤ 128'],
    [{ n: 1e9 }, 'n must be a positive integer ≤ 128'],
    [{ n: 129 }, 'n must be a positive integer ≤ 128'],
  ])('%j -> %s', (fields, msg) => {
    expect(err('openai.chat', { messages: [], ...fields })).toBe(msg);
  });

  it('n = 128 and max_tokens = 1e7 are accepted (requestedOutput stays a safe integer)', () => {
    const c = ok('openai.chat', { messages: [], n: 128, max_tokens: 10_000_000 });
    expect(c.requestedOutput).toBe(1_280_000_000);
  });

  function deep(depth: number, wrap: (v: unknown) => unknown): unknown {
    let v: unknown = 'leaf';
    for (let i = 0; i < depth; i++) v = wrap(v);
    return v;
  }

  it('100000-deep nesting in tool_use input, tool arguments and schemas -> ParseError, no throw', () => {
    const d = deep(100_000, (v) => ({ a: v }));
    const da = deep(100_000, (v) => [v]);
    expect(
      err('anthropic.messages', {
        messages: [{ role: 'assistant', content: [{ type: 'tool_use', name: 't', input: d }] }],
      }),
    ).toMatch(/messages\[0\]\.content\[0\]\.input is nested deeper than 64/);
    expect(
      err('openai.chat', {
        messages: [{ role: 'assistant', tool_calls: [{ function: { name: 'f', arguments: da } }] }],
      }),
    ).toMatch(/nested deeper/);
    expect(
      err('openai.chat', {
        messages: [],
        tools: [
          { type: 'function', function: { name: 'f', parameters: { type: 'object', properties: { p: d } } } },
        ],
      }),
    ).toMatch(/nested deeper/);
  });

  it('100000-deep nesting in content / ignored fields is bounded', () => {
    const da = deep(100_000, (v) => [v]);
    const d = deep(100_000, (v) => ({ content: [v] }));
    expect(err('openai.chat', { messages: [{ role: 'user', content: da }] })).toBe(
      'messages[0].content[0] must be an object',
    );
    // untyped blocks inside a tool_result are ignored, not walked
    expect(
      ok('anthropic.messages', {
        messages: [{ role: 'user', content: [{ type: 'tool_result', content: [d] }] }],
      }).prompt.messages[0].parts,
    ).toEqual([]);
    const nested = deep(100_000, (v) => ({ type: 'tool_result', content: [v] }));
    expect(err('anthropic.messages', { messages: [{ role: 'user', content: [nested] }] })).toMatch(
      /cannot be nested/,
    );
    // unknown fields are never walked
    expect(
      ok('openai.chat', { messages: [{ role: 'user', content: 'x', metadata: d }], extra: da }).prompt
        .messages,
    ).toHaveLength(1);
  });

  it('depth exactly at the cap is fine', () => {
    let v: unknown = 1;
    for (let i = 0; i < MAX_DEPTH; i++) v = [v];
    expect(safeStringify(v)).toBe(JSON.stringify(v));
    expect(safeStringify([v])).toBeUndefined();
  });

  it('1e6-element arrays: ParseError for per-item arrays, bounded result for token arrays, fast', () => {
    const big = new Array(1_000_000).fill({ role: 'user', content: 'x' });
    const t0 = performance.now();
    expect(err('openai.chat', { messages: big })).toBe('messages has 1000000 items (max 100000)');
    expect(err('anthropic.messages', { messages: big })).toMatch(/messages has 1000000 items/);
    expect(
      err('openai.chat', {
        messages: [{ role: 'user', content: new Array(1_000_000).fill({ type: 'text', text: 'x' }) }],
      }),
    ).toMatch(/messages\[0\]\.content has 1000000 items/);
    expect(err('openai.responses', { input: big })).toMatch(/input has 1000000 items/);
    expect(err('openai.embeddings', { input: new Array(1_000_000).fill('x') })).toMatch(
      /input has 1000000 items/,
    );
    expect(err('openai.chat', { messages: [], tools: new Array(1_000_000).fill({}) })).toMatch(
      /tools has 1000000 items/,
    );
    const tokens = new Array(1_000_000).fill(42);
    expect(ok('openai.completions', { prompt: tokens }).prompt.preTokenized).toBe(1_000_000);
    expect(ok('openai.embeddings', { input: [tokens, tokens] }).prompt.preTokenized).toBe(2_000_000);
    expect(
      ok('openai.chat', { messages: [], ignored: new Array(1_000_000).fill(0) }).prompt.messages,
    ).toEqual([]);
    expect(performance.now() - t0).toBeLessThan(5000);
  });

  it('100000 messages (at the cap) parse', () => {
    const c = ok('openai.chat', { messages: new Array(100_000).fill({ role: 'user', content: 'x' }) });
    expect(c.prompt.messages).toHaveLength(100_000);
  });

  it('prototype-looking keys are plain data', () => {
    const body = JSON.parse(
      '{"messages":[{"role":"user","content":"x","__proto__":{"content":"evil"}}],"__proto__":{"n":50},"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"__proto__":{"type":"string"},"constructor":{"type":"string"}}}}}]}',
    );
    const c = ok('openai.chat', body);
    expect(c.n).toBe(1);
    expect(c.prompt.messages[0].parts).toEqual(['x']);
    expect(c.prompt.toolDefs[0].properties.map((p) => p.name)).toEqual(['__proto__', 'constructor']);
  });

  it('safeStringify matches JSON.stringify on arbitrary JSON', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (v) => {
        expect(safeStringify(v)).toBe(JSON.stringify(v));
      }),
      { numRuns: 300 },
    );
  });

  it('parseCall never throws on arbitrary JSON, for every dialect (property)', () => {
    const part = fc.oneof(
      fc.record(
        {
          type: fc.constantFrom(
            'text',
            'input_text',
            'image_url',
            'tool_use',
            'tool_result',
            'refusal',
            'image',
          ),
          text: fc.jsonValue(),
        },
        { requiredKeys: [] },
      ),
      fc.jsonValue(),
    );
    const message = fc.record(
      {
        role: fc.oneof(fc.constantFrom('user', 'assistant', 'system', 'tool'), fc.jsonValue()),
        content: fc.oneof(fc.string(), fc.array(part), fc.jsonValue()),
        name: fc.jsonValue(),
        tool_calls: fc.jsonValue(),
      },
      { requiredKeys: [] },
    );
    const body = fc.oneof(
      fc.jsonValue(),
      fc.record(
        {
          model: fc.jsonValue(),
          messages: fc.oneof(fc.array(message), fc.jsonValue()),
          input: fc.oneof(fc.array(fc.oneof(message, part)), fc.jsonValue()),
          prompt: fc.jsonValue(),
          system: fc.oneof(fc.array(part), fc.jsonValue()),
          tools: fc.oneof(fc.array(fc.jsonValue()), fc.jsonValue()),
          max_tokens: fc.oneof(fc.integer(), fc.double(), fc.jsonValue()),
          n: fc.oneof(fc.integer(), fc.jsonValue()),
          stream: fc.jsonValue(),
        },
        { requiredKeys: [] },
      ),
    );
    fc.assert(
      fc.property(fc.constantFrom(...DIALECTS), body, (dialect, b) => {
        const r = parseCall(dialect, b);
        if (isParseError(r)) {
          expect(r.error.length).toBeGreaterThan(0);
        } else {
          expect(r.n).toBeGreaterThanOrEqual(1);
          expect(r.n).toBeLessThanOrEqual(128);
          if (r.requestedOutput !== undefined) expect(Number.isSafeInteger(r.requestedOutput)).toBe(true);
          expect(() => structuredClone(r)).not.toThrow();
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('does not throw on non-JSON values (cycles, getters that throw)', () => {
    const cyc: any = { role: 'assistant', content: [] };
    cyc.content.push({ type: 'tool_use', name: 't', input: cyc });
    expect(err('anthropic.messages', { messages: [cyc] })).toMatch(/nested deeper/);
    const evil = {
      get messages(): unknown {
        throw new Error('gotcha');
      },
    };
    expect(err('openai.chat', evil)).toMatch(/gotcha/);
  });
});
