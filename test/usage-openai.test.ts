/**
 * OpenAI (and Azure OpenAI) response usage: chat/completions/embeddings JSON, chat SSE with and
 * without the final usage chunk, Responses API JSON and SSE. Fixture shapes follow the OpenAI API
 * reference (chat.completion, chat.completion.chunk, embedding list, response object and streaming
 * events) and openai-node's types (CompletionUsage, ResponseUsage).
 */
import { describe, expect, it } from 'vitest';
import { resolveUsage, scanUsage } from '../src/dialects/usage/index.js';
import { countText, getCounter } from '../src/tokens/encoders.js';
import { countChars, expectChunkingInvariant, scanChunks, sse } from './helpers/usage-harness.js';

const CONTENT = ['Hé', 'llo ', '😀', ' 日本', '語 — ', 'naïve'];
const TEXT = CONTENT.join('');

const chatJson = {
  id: 'chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG',
  object: 'chat.completion',
  created: 1741570283,
  model: 'gpt-4o-2024-08-06',
  choices: [
    {
      index: 0,
      message: { role: 'assistant', content: TEXT, refusal: null, annotations: [] },
      logprobs: null,
      finish_reason: 'stop',
    },
  ],
  usage: {
    prompt_tokens: 1117,
    completion_tokens: 46,
    total_tokens: 1163,
    prompt_tokens_details: { cached_tokens: 1024, audio_tokens: 0 },
    completion_tokens_details: {
      reasoning_tokens: 12,
      audio_tokens: 0,
      accepted_prediction_tokens: 0,
      rejected_prediction_tokens: 0,
    },
  },
  service_tier: 'default',
  system_fingerprint: 'fp_fc9f1d7035',
};

function chunk(delta: object, finish: string | null = null, usage: object | null = null, choices = true) {
  return {
    id: 'chatcmpl-123',
    object: 'chat.completion.chunk',
    created: 1694268190,
    model: 'gpt-4o-mini',
    system_fingerprint: 'fp_44709d6fcb',
    choices: choices ? [{ index: 0, delta, logprobs: null, finish_reason: finish }] : [],
    usage,
  };
}

const chatUsage = {
  prompt_tokens: 19,
  completion_tokens: 10,
  total_tokens: 29,
  prompt_tokens_details: { cached_tokens: 0, audio_tokens: 0 },
  completion_tokens_details: {
    reasoning_tokens: 0,
    audio_tokens: 0,
    accepted_prediction_tokens: 0,
    rejected_prediction_tokens: 0,
  },
};

const chatStreamEvents = (withUsage: boolean): Array<[string | undefined, unknown]> => [
  [undefined, chunk({ role: 'assistant', content: '', refusal: null })],
  ...CONTENT.map((c): [undefined, unknown] => [undefined, chunk({ content: c })]),
  [undefined, chunk({}, 'stop')],
  ...(withUsage ? [[undefined, chunk({}, null, chatUsage, false)] as [undefined, unknown]] : []),
  [undefined, '[DONE]'],
];

describe('OpenAI chat completions', () => {
  it('JSON usage with cached and reasoning tokens, any chunking, compressed', async () => {
    const scan = await expectChunkingInvariant('openai.chat', JSON.stringify(chatJson, null, 2));
    expect(resolveUsage(scan, countChars)).toEqual({
      prompt: 1117,
      cachedPrompt: 1024,
      cacheWrite: 0,
      output: 46,
      reasoning: 12,
      source: 'reported',
      promptReported: true,
    });
  });

  it('JSON without usage: the message content is counted', async () => {
    const { usage: _u, ...noUsage } = chatJson;
    const withTools = {
      ...noUsage,
      choices: [
        {
          ...noUsage.choices[0],
          message: {
            role: 'assistant',
            content: TEXT,
            tool_calls: [
              {
                id: 'call_1',
                type: 'function',
                function: { name: 'get_weather', arguments: '{"city":"Zürich"}' },
              },
            ],
          },
        },
      ],
    };
    const scan = await expectChunkingInvariant('openai.chat', JSON.stringify(withTools));
    expect(scan.text.text).toBe(`${TEXT}get_weather{"city":"Zürich"}`);
    const u = resolveUsage(scan, countChars);
    expect(u.source).toBe('counted');
    expect(u.promptReported).toBe(false);
    expect(u.output).toBe(scan.text.text.length);
  });

  it('SSE with the final usage chunk (stream_options.include_usage)', async () => {
    const scan = await expectChunkingInvariant(
      'openai.chat',
      sse(chatStreamEvents(true)),
      'text/event-stream',
    );
    expect(scan.text.text).toBe(TEXT);
    expect(resolveUsage(scan, () => 999)).toMatchObject({ prompt: 19, output: 10, source: 'reported' });
  });

  it('SSE without usage: the streamed deltas are collected and counted with the model tokenizer', async () => {
    const scan = await expectChunkingInvariant('openai.chat', sse(chatStreamEvents(false)));
    expect(scan.text.text).toBe(TEXT);
    const enc = getCounter('o200k_base');
    const u = resolveUsage(scan, (t) => countText(enc, t));
    expect(u).toEqual({
      prompt: 0,
      cachedPrompt: 0,
      cacheWrite: 0,
      output: countText(enc, TEXT),
      reasoning: 0,
      source: 'counted',
      promptReported: false,
    });
    expect(u.output).toBeGreaterThan(5);
  });

  it('SSE with CRLF line endings and comment lines', () => {
    const body = `: keep-alive\r\n\r\n${sse(chatStreamEvents(true), '\r\n')}`;
    const scan = scanUsage('openai.chat', body);
    expect(scan.text.text).toBe(TEXT);
    expect(scan.output).toEqual({ output: 10, reasoning: 0 });
  });

  it('tool call deltas are collected', () => {
    const body = sse([
      [
        undefined,
        chunk({
          role: 'assistant',
          content: null,
          tool_calls: [
            { index: 0, id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '' } },
          ],
        }),
      ],
      [undefined, chunk({ tool_calls: [{ index: 0, function: { arguments: '{"loc' } }] })],
      [undefined, chunk({ tool_calls: [{ index: 0, function: { arguments: 'ation":"Paris"}' } }] })],
      [undefined, chunk({}, 'tool_calls')],
      [undefined, '[DONE]'],
    ]);
    expect(scanUsage('openai.chat', body).text.text).toBe('get_weather{"location":"Paris"}');
  });

  it('Azure OpenAI: prompt_filter_results chunks (empty choices) and content_filter_results are ignored', async () => {
    const filter = {
      hate: { filtered: false, severity: 'safe' },
      self_harm: { filtered: false, severity: 'safe' },
    };
    const events: Array<[string | undefined, unknown]> = [
      [
        undefined,
        {
          choices: [],
          created: 0,
          id: '',
          model: '',
          object: '',
          prompt_filter_results: [{ prompt_index: 0, content_filter_results: filter }],
        },
      ],
      ...CONTENT.map((c): [undefined, unknown] => [
        undefined,
        {
          ...chunk({ content: c }),
          choices: [{ index: 0, delta: { content: c }, finish_reason: null, content_filter_results: filter }],
        },
      ]),
      [undefined, chunk({}, null, chatUsage, false)],
      [undefined, '[DONE]'],
    ];
    const scan = await expectChunkingInvariant('openai.chat', sse(events));
    expect(scan.text.text).toBe(TEXT);
    expect(resolveUsage(scan, countChars)).toMatchObject({ prompt: 19, output: 10, source: 'reported' });
  });

  it('a stream cut mid-event: what was streamed is counted', () => {
    const full = sse(chatStreamEvents(true));
    const cut = full.slice(0, full.indexOf(CONTENT[3]) + 2);
    const scan = scanUsage('openai.chat', cut);
    expect(scan.text.text).toBe(CONTENT.slice(0, 3).join(''));
    expect(resolveUsage(scan, countChars)).toMatchObject({
      source: 'counted',
      output: scan.text.text.length,
    });
  });
});

describe('OpenAI completions and embeddings', () => {
  it('completions JSON and SSE', async () => {
    const json = {
      id: 'cmpl-uqkvlQyYK7bGYrRHQ0eXlWi7',
      object: 'text_completion',
      created: 1589478378,
      model: 'gpt-3.5-turbo-instruct',
      system_fingerprint: 'fp_44709d6fcb',
      choices: [{ text: `\n\n${TEXT}`, index: 0, logprobs: null, finish_reason: 'length' }],
      usage: { prompt_tokens: 5, completion_tokens: 7, total_tokens: 12 },
    };
    const scan = await expectChunkingInvariant('openai.completions', JSON.stringify(json));
    expect(resolveUsage(scan, countChars)).toMatchObject({
      prompt: 5,
      output: 7,
      reasoning: 0,
      source: 'reported',
    });
    const stream = sse([
      ...CONTENT.map((c): [undefined, unknown] => [
        undefined,
        {
          id: 'cmpl-1',
          object: 'text_completion',
          created: 1,
          choices: [{ text: c, index: 0, logprobs: null, finish_reason: null }],
          model: 'gpt-3.5-turbo-instruct',
        },
      ]),
      [undefined, '[DONE]'],
    ]);
    const s2 = await expectChunkingInvariant('openai.completions', stream);
    expect(s2.text.text).toBe(TEXT);
  });

  it('embeddings JSON: prompt only, output 0 reported', async () => {
    const json = {
      object: 'list',
      data: [{ object: 'embedding', embedding: [0.0023064255, -0.009327292, -0.0028842222], index: 0 }],
      model: 'text-embedding-3-small',
      usage: { prompt_tokens: 8, total_tokens: 8 },
    };
    const scan = await expectChunkingInvariant('openai.embeddings', JSON.stringify(json));
    expect(resolveUsage(scan, countChars)).toEqual({
      prompt: 8,
      cachedPrompt: 0,
      cacheWrite: 0,
      output: 0,
      reasoning: 0,
      source: 'reported',
      promptReported: true,
    });
  });
});

const responsesUsage = {
  input_tokens: 36,
  input_tokens_details: { cached_tokens: 20 },
  output_tokens: 87,
  output_tokens_details: { reasoning_tokens: 64 },
  total_tokens: 123,
};

function responseObject(status: string, usage: object | null, text = TEXT) {
  return {
    id: 'resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b',
    object: 'response',
    created_at: 1741476542,
    status,
    error: null,
    incomplete_details: null,
    instructions: null,
    max_output_tokens: null,
    model: 'o4-mini-2025-04-16',
    output:
      status === 'in_progress'
        ? []
        : [
            { id: 'rs_1', type: 'reasoning', summary: [{ type: 'summary_text', text: 'Thinking.' }] },
            {
              type: 'message',
              id: 'msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b',
              status: 'completed',
              role: 'assistant',
              content: [{ type: 'output_text', text, annotations: [] }],
            },
          ],
    parallel_tool_calls: true,
    previous_response_id: null,
    reasoning: { effort: 'medium', summary: 'auto' },
    store: true,
    temperature: 1.0,
    text: { format: { type: 'text' } },
    tool_choice: 'auto',
    tools: [],
    top_p: 1.0,
    truncation: 'disabled',
    usage,
    user: null,
    metadata: {},
  };
}

describe('OpenAI Responses API', () => {
  it('JSON usage (input/output naming, cached and reasoning details)', async () => {
    const scan = await expectChunkingInvariant(
      'openai.responses',
      JSON.stringify(responseObject('completed', responsesUsage)),
    );
    expect(resolveUsage(scan, countChars)).toEqual({
      prompt: 36,
      cachedPrompt: 20,
      cacheWrite: 0,
      output: 87,
      reasoning: 64,
      source: 'reported',
      promptReported: true,
    });
  });

  it('JSON without usage: output items are counted', () => {
    const scan = scanUsage('openai.responses', JSON.stringify(responseObject('completed', null)));
    expect(scan.text.text).toBe(`Thinking.${TEXT}`);
    expect(resolveUsage(scan, countChars).source).toBe('counted');
  });

  const events = (final: boolean): Array<[string | undefined, unknown]> => {
    let seq = 0;
    const ev = (type: string, rest: object): [string, unknown] => [
      type,
      { type, sequence_number: seq++, ...rest },
    ];
    const item = { id: 'msg_1', type: 'message', status: 'in_progress', role: 'assistant', content: [] };
    return [
      ev('response.created', { response: responseObject('in_progress', null) }),
      ev('response.in_progress', { response: responseObject('in_progress', null) }),
      ev('response.output_item.added', { output_index: 0, item }),
      ev('response.content_part.added', {
        item_id: 'msg_1',
        output_index: 0,
        content_index: 0,
        part: { type: 'output_text', text: '', annotations: [] },
      }),
      ...CONTENT.map((delta) =>
        ev('response.output_text.delta', {
          item_id: 'msg_1',
          output_index: 0,
          content_index: 0,
          delta,
          logprobs: [],
        }),
      ),
      ev('response.output_text.done', {
        item_id: 'msg_1',
        output_index: 0,
        content_index: 0,
        text: TEXT,
        logprobs: [],
      }),
      ...(final ? [ev('response.completed', { response: responseObject('completed', responsesUsage) })] : []),
    ];
  };

  it('SSE: response.completed carries the usage', async () => {
    const scan = await expectChunkingInvariant('openai.responses', sse(events(true)), 'text/event-stream');
    expect(scan.text.text).toBe(TEXT);
    expect(resolveUsage(scan, countChars)).toMatchObject({
      prompt: 36,
      cachedPrompt: 20,
      output: 87,
      reasoning: 64,
      source: 'reported',
    });
  });

  it('SSE response.incomplete also carries usage', () => {
    const body = sse([
      [
        'response.incomplete',
        {
          type: 'response.incomplete',
          sequence_number: 1,
          response: responseObject('incomplete', responsesUsage),
        },
      ],
    ]);
    expect(resolveUsage(scanUsage('openai.responses', body), countChars).source).toBe('reported');
  });

  it('SSE cut before response.completed: deltas counted', async () => {
    const scan = await expectChunkingInvariant('openai.responses', sse(events(false)));
    expect(scan.text.text).toBe(TEXT);
    expect(resolveUsage(scan, countChars)).toMatchObject({ source: 'counted', output: TEXT.length });
  });

  it('scanChunks and scanUsage agree', () => {
    const body = sse(events(true));
    expect(scanChunks('openai.responses', [Buffer.from(body)])).toEqual(scanUsage('openai.responses', body));
  });
});
