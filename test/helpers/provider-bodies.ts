/**
 * Canned provider responses with known usage, per format (what OpenAI, Anthropic and Gemini send), for
 * the settlement tests and the fake provider behind the Envoy-like proxy.
 */
export interface Canned {
  contentType: string;
  body: string;
}

const sse = (events: unknown[], done = false) =>
  `${events.map((e) => `data: ${JSON.stringify(e)}\n\n`).join('')}${done ? 'data: [DONE]\n\n' : ''}`;
const named = (events: [string, unknown][]) =>
  events.map(([ev, d]) => `event: ${ev}\ndata: ${JSON.stringify(d)}\n\n`).join('');

export function chatJson(prompt: number, output: number, cached = 0, text = 'hello'): string {
  return JSON.stringify({
    id: 'chatcmpl-1',
    object: 'chat.completion',
    created: 1,
    model: 'gpt-4o',
    choices: [
      { index: 0, message: { role: 'assistant', content: text }, finish_reason: 'stop', logprobs: null },
    ],
    usage: {
      prompt_tokens: prompt,
      completion_tokens: output,
      total_tokens: prompt + output,
      prompt_tokens_details: { cached_tokens: cached },
      completion_tokens_details: { reasoning_tokens: 0 },
    },
  });
}

const chunk = (delta: Record<string, unknown>, finish: string | null = null) => ({
  id: 'chatcmpl-1',
  object: 'chat.completion.chunk',
  created: 1,
  model: 'gpt-4o',
  choices: [{ index: 0, delta, finish_reason: finish, logprobs: null }],
});

/** Chat SSE; with `usage` the final usage chunk (stream_options.include_usage), else none. */
export function chatSse(
  pieces: string[],
  usage?: { prompt: number; output: number; cached?: number },
): string {
  const events: unknown[] = [chunk({ role: 'assistant', content: '' })];
  for (const p of pieces) events.push(chunk({ content: p }));
  events.push(chunk({}, 'stop'));
  if (usage)
    events.push({
      id: 'chatcmpl-1',
      object: 'chat.completion.chunk',
      created: 1,
      model: 'gpt-4o',
      choices: [],
      usage: {
        prompt_tokens: usage.prompt,
        completion_tokens: usage.output,
        total_tokens: usage.prompt + usage.output,
        prompt_tokens_details: { cached_tokens: usage.cached ?? 0 },
      },
    });
  return sse(events, true);
}

function responseObject(prompt: number, output: number, cached: number, reasoning: number, text: string) {
  return {
    id: 'resp_1',
    object: 'response',
    created_at: 1,
    status: 'completed',
    model: 'gpt-4o',
    output: [
      {
        type: 'message',
        id: 'msg_1',
        status: 'completed',
        role: 'assistant',
        content: [{ type: 'output_text', text, annotations: [] }],
      },
    ],
    usage: {
      input_tokens: prompt,
      input_tokens_details: { cached_tokens: cached },
      output_tokens: output,
      output_tokens_details: { reasoning_tokens: reasoning },
      total_tokens: prompt + output,
    },
  };
}

export function responsesJson(prompt: number, output: number, cached = 0, reasoning = 0): string {
  return JSON.stringify(responseObject(prompt, output, cached, reasoning, 'hello'));
}

export function responsesSse(pieces: string[], prompt: number, output: number, cached = 0): string {
  const text = pieces.join('');
  const events: [string, unknown][] = [
    ['response.created', { type: 'response.created', sequence_number: 0, response: { id: 'resp_1' } }],
  ];
  for (const [i, delta] of pieces.entries())
    events.push([
      'response.output_text.delta',
      { type: 'response.output_text.delta', sequence_number: i + 1, item_id: 'msg_1', delta },
    ]);
  events.push([
    'response.completed',
    {
      type: 'response.completed',
      sequence_number: pieces.length + 1,
      response: responseObject(prompt, output, cached, 0, text),
    },
  ]);
  return named(events);
}

export function anthropicJson(input: number, output: number, cacheRead = 0, cacheWrite = 0): string {
  return JSON.stringify({
    id: 'msg_1',
    type: 'message',
    role: 'assistant',
    model: 'claude-sonnet-4',
    content: [{ type: 'text', text: 'hello' }],
    stop_reason: 'end_turn',
    stop_sequence: null,
    usage: {
      input_tokens: input,
      output_tokens: output,
      cache_read_input_tokens: cacheRead,
      cache_creation_input_tokens: cacheWrite,
    },
  });
}

export function anthropicSse(pieces: string[], input: number, output: number, cacheRead = 0): string {
  const events: [string, unknown][] = [
    [
      'message_start',
      {
        type: 'message_start',
        message: {
          id: 'msg_1',
          type: 'message',
          role: 'assistant',
          model: 'claude-sonnet-4',
          content: [],
          stop_reason: null,
          stop_sequence: null,
          usage: { input_tokens: input, output_tokens: 1, cache_read_input_tokens: cacheRead },
        },
      },
    ],
    [
      'content_block_start',
      { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } },
    ],
  ];
  for (const text of pieces)
    events.push([
      'content_block_delta',
      { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text } },
    ]);
  events.push(
    ['content_block_stop', { type: 'content_block_stop', index: 0 }],
    [
      'message_delta',
      {
        type: 'message_delta',
        delta: { stop_reason: 'end_turn', stop_sequence: null },
        usage: { output_tokens: output },
      },
    ],
    ['message_stop', { type: 'message_stop' }],
  );
  return named(events);
}

const geminiChunk = (
  text: string,
  usage?: { prompt: number; output: number; cached?: number },
  finished = true,
) => ({
  candidates: [
    { content: { role: 'model', parts: [{ text }] }, index: 0, ...(finished && { finishReason: 'STOP' }) },
  ],
  ...(usage && {
    usageMetadata: {
      promptTokenCount: usage.prompt,
      candidatesTokenCount: usage.output,
      cachedContentTokenCount: usage.cached ?? 0,
      totalTokenCount: usage.prompt + usage.output,
    },
  }),
  modelVersion: 'gemini-2.5-flash',
});

export function geminiJson(prompt: number, output: number, cached = 0): string {
  return JSON.stringify(geminiChunk('hello', { prompt, output, cached }));
}

export function geminiSse(pieces: string[], prompt: number, output: number): string {
  return sse(
    pieces.map((p, i) =>
      i === pieces.length - 1
        ? geminiChunk(p, { prompt, output })
        : geminiChunk(p, { prompt, output: 0 }, false),
    ),
  );
}
