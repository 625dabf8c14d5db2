/**
 * A provider's complete answer → the JSON body a non-streaming call would have received (what the
 * cache stores). JSON bodies are checked and kept as they are; SSE streams are reassembled into the
 * final message (OpenAI chat chunks up to `[DONE]`; Anthropic message_start … message_stop). An
 * answer that did not finish (no `[DONE]`/finish_reason, no message_stop, an error event) is not an
 * answer: undefined.
 */

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The cacheable JSON text of `body`, or undefined. */
export function reassemble(
  dialect: string,
  contentType: string | undefined,
  body: Buffer,
): string | undefined {
  const text = body.toString('utf8');
  const sse =
    (contentType ?? '').toLowerCase().includes('text/event-stream') || /^\s*(data|event):/.test(text);
  try {
    if (!sse) return json(dialect, text);
    const events = parseSse(text);
    return dialect === 'anthropic.messages' ? anthropic(events) : openaiChat(events);
  } catch {
    return undefined;
  }
}

function json(dialect: string, text: string): string | undefined {
  const o = JSON.parse(text) as unknown;
  if (!isObj(o) || 'error' in o) return undefined;
  if (dialect === 'anthropic.messages')
    return o.type === 'message' && Array.isArray(o.content) ? text : undefined;
  return Array.isArray(o.choices) && o.choices.length > 0 ? text : undefined;
}

export interface SseEvent {
  event?: string;
  data: string;
}

/** Server-sent events: blocks separated by a blank line, `event:` and `data:` fields. */
export function parseSse(text: string): SseEvent[] {
  const out: SseEvent[] = [];
  for (const block of text.split(/\r?\n\r?\n/)) {
    let event: string | undefined;
    const data: string[] = [];
    for (const line of block.split(/\r?\n/)) {
      if (line.startsWith('event:')) event = line.slice(6).trim();
      else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
    }
    if (data.length > 0) out.push({ event, data: data.join('\n') });
  }
  return out;
}

interface ChoiceAcc {
  role: string;
  content: string[];
  refusal: string[];
  tools: Map<number, { id?: string; type: string; name: string; args: string[] }>;
  finish: unknown;
}

function openaiChat(events: SseEvent[]): string | undefined {
  let head: Obj | undefined;
  let usage: unknown;
  let done = false;
  const choices = new Map<number, ChoiceAcc>();
  for (const e of events) {
    if (e.data === '[DONE]') {
      done = true;
      continue;
    }
    const c = JSON.parse(e.data) as unknown;
    if (!isObj(c) || 'error' in c) return undefined;
    head ??= c;
    if (c.usage) usage = c.usage;
    for (const ch of Array.isArray(c.choices) ? c.choices : []) {
      if (!isObj(ch)) continue;
      const i = typeof ch.index === 'number' ? ch.index : 0;
      let acc = choices.get(i);
      if (!acc) {
        acc = { role: 'assistant', content: [], refusal: [], tools: new Map(), finish: null };
        choices.set(i, acc);
      }
      const d = isObj(ch.delta) ? ch.delta : {};
      if (typeof d.role === 'string') acc.role = d.role;
      if (typeof d.content === 'string') acc.content.push(d.content);
      if (typeof d.refusal === 'string') acc.refusal.push(d.refusal);
      for (const t of Array.isArray(d.tool_calls) ? d.tool_calls : []) addToolDelta(acc, t);
      if (ch.finish_reason) acc.finish = ch.finish_reason;
    }
  }
  if (!head || choices.size === 0) return undefined;
  const all = [...choices.entries()].sort((a, b) => a[0] - b[0]);
  if (!done && all.some(([, a]) => !a.finish)) return undefined;
  if (all.some(([, a]) => !a.finish)) return undefined;
  const out = {
    id: head.id,
    object: 'chat.completion',
    created: head.created,
    model: head.model,
    ...(head.system_fingerprint !== undefined && { system_fingerprint: head.system_fingerprint }),
    choices: all.map(([index, a]) => ({
      index,
      message: {
        role: a.role,
        // a tool call's message has content null (unless text came with it)
        content: a.content.join('') !== '' || a.tools.size === 0 ? a.content.join('') : null,
        ...(a.refusal.length > 0 && { refusal: a.refusal.join('') }),
        ...(a.tools.size > 0 && {
          tool_calls: [...a.tools.entries()]
            .sort((x, y) => x[0] - y[0])
            .map(([, t]) => ({
              id: t.id,
              type: t.type,
              function: { name: t.name, arguments: t.args.join('') },
            })),
        }),
      },
      finish_reason: a.finish,
    })),
    ...(usage !== undefined && { usage }),
  };
  return JSON.stringify(out);
}

function addToolDelta(acc: ChoiceAcc, t: unknown): void {
  if (!isObj(t)) return;
  const i = typeof t.index === 'number' ? t.index : 0;
  let tc = acc.tools.get(i);
  if (!tc) {
    tc = { type: 'function', name: '', args: [] };
    acc.tools.set(i, tc);
  }
  if (typeof t.id === 'string') tc.id = t.id;
  if (typeof t.type === 'string') tc.type = t.type;
  const f = isObj(t.function) ? t.function : {};
  if (typeof f.name === 'string') tc.name += f.name;
  if (typeof f.arguments === 'string') tc.args.push(f.arguments);
}

function anthropic(events: SseEvent[]): string | undefined {
  let msg: Obj | undefined;
  const blocks: Obj[] = [];
  const partial = new Map<number, string[]>();
  let stopped = false;
  for (const e of events) {
    const d = JSON.parse(e.data) as unknown;
    if (!isObj(d)) continue;
    const type = d.type ?? e.event;
    if (type === 'error') return undefined;
    if (type === 'message_start' && isObj(d.message)) msg = { ...d.message, content: [] };
    else if (type === 'content_block_start' && isObj(d.content_block))
      blocks[Number(d.index) || 0] = { ...d.content_block };
    else if (type === 'content_block_delta' && isObj(d.delta)) {
      const b = blocks[Number(d.index) || 0];
      if (!b) return undefined;
      const delta = d.delta;
      if (delta.type === 'text_delta') b.text = `${b.text ?? ''}${delta.text}`;
      else if (delta.type === 'thinking_delta') b.thinking = `${b.thinking ?? ''}${delta.thinking}`;
      else if (delta.type === 'signature_delta') b.signature = delta.signature;
      else if (delta.type === 'input_json_delta') {
        const i = Number(d.index) || 0;
        partial.set(i, [...(partial.get(i) ?? []), String(delta.partial_json ?? '')]);
      }
    } else if (type === 'message_delta' && msg) {
      if (isObj(d.delta)) Object.assign(msg, d.delta);
      if (isObj(d.usage)) msg.usage = { ...(isObj(msg.usage) ? msg.usage : {}), ...d.usage };
    } else if (type === 'message_stop') stopped = true;
  }
  if (!msg || !stopped) return undefined;
  for (const [i, parts] of partial) {
    const b = blocks[i];
    if (b) b.input = parts.join('') === '' ? {} : JSON.parse(parts.join(''));
  }
  msg.content = blocks.filter((b) => b !== undefined);
  return JSON.stringify(msg);
}
