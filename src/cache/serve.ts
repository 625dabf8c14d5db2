/**
 * A cached answer as the client asked for it: the stored JSON body, or — for `stream: true` — the
 * SSE events the provider would have sent (OpenAI chat chunks ending `data: [DONE]`; Anthropic
 * message_start, content_block_start/delta/stop, message_delta, message_stop).
 */

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

export const SSE_CT = 'text/event-stream';

/** The body and content-type to serve. */
export function servedBody(
  dialect: string,
  stream: boolean,
  json: string,
): { body: string; contentType: string } {
  if (!stream) return { body: json, contentType: 'application/json' };
  const o = JSON.parse(json) as Obj;
  const body = dialect === 'anthropic.messages' ? anthropicSse(o) : openaiSse(o);
  return { body, contentType: SSE_CT };
}

const data = (o: unknown) => `data: ${JSON.stringify(o)}\n\n`;

function openaiSse(o: Obj): string {
  const base = {
    id: o.id,
    object: 'chat.completion.chunk',
    created: o.created,
    model: o.model,
    ...(o.system_fingerprint !== undefined && { system_fingerprint: o.system_fingerprint }),
  };
  const out: string[] = [];
  const choices = Array.isArray(o.choices) ? (o.choices as Obj[]) : [];
  for (const c of choices) {
    const m = isObj(c.message) ? c.message : {};
    const index = c.index ?? 0;
    const chunk = (delta: Obj, finish: unknown = null) =>
      out.push(data({ ...base, choices: [{ index, delta, logprobs: null, finish_reason: finish }] }));
    chunk({ role: m.role ?? 'assistant', content: '' });
    if (typeof m.content === 'string' && m.content !== '') chunk({ content: m.content });
    if (typeof m.refusal === 'string') chunk({ refusal: m.refusal });
    const tools = Array.isArray(m.tool_calls) ? (m.tool_calls as Obj[]) : [];
    tools.forEach((t, i) => {
      const f = isObj(t.function) ? t.function : {};
      chunk({
        tool_calls: [
          { index: i, id: t.id, type: t.type ?? 'function', function: { name: f.name, arguments: '' } },
        ],
      });
      chunk({ tool_calls: [{ index: i, function: { arguments: f.arguments ?? '' } }] });
    });
    chunk({}, c.finish_reason ?? 'stop');
  }
  if (o.usage !== undefined) out.push(data({ ...base, choices: [], usage: o.usage }));
  out.push('data: [DONE]\n\n');
  return out.join('');
}

const event = (name: string, o: Obj) => `event: ${name}\ndata: ${JSON.stringify({ type: name, ...o })}\n\n`;

function anthropicSse(o: Obj): string {
  const usage = isObj(o.usage) ? o.usage : {};
  const { content, stop_reason, stop_sequence, ...rest } = o;
  const out = [
    event('message_start', {
      message: {
        ...rest,
        content: [],
        stop_reason: null,
        stop_sequence: null,
        usage: { ...usage, output_tokens: 1 },
      },
    }),
  ];
  const blocks = Array.isArray(content) ? (content as Obj[]) : [];
  blocks.forEach((b, index) => {
    if (b.type === 'text') {
      out.push(event('content_block_start', { index, content_block: { type: 'text', text: '' } }));
      out.push(event('content_block_delta', { index, delta: { type: 'text_delta', text: b.text ?? '' } }));
    } else if (b.type === 'tool_use') {
      out.push(event('content_block_start', { index, content_block: { ...b, input: {} } }));
      const json = JSON.stringify(b.input ?? {});
      out.push(
        event('content_block_delta', { index, delta: { type: 'input_json_delta', partial_json: json } }),
      );
    } else if (b.type === 'thinking') {
      out.push(event('content_block_start', { index, content_block: { type: 'thinking', thinking: '' } }));
      out.push(
        event('content_block_delta', {
          index,
          delta: { type: 'thinking_delta', thinking: b.thinking ?? '' },
        }),
      );
      if (b.signature)
        out.push(
          event('content_block_delta', { index, delta: { type: 'signature_delta', signature: b.signature } }),
        );
    } else out.push(event('content_block_start', { index, content_block: b }));
    out.push(event('content_block_stop', { index }));
  });
  out.push(
    event('message_delta', {
      delta: { stop_reason: stop_reason ?? 'end_turn', stop_sequence: stop_sequence ?? null },
      usage: { output_tokens: usage.output_tokens ?? 0 },
    }),
  );
  out.push(event('message_stop', {}));
  return out.join('');
}
