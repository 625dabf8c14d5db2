/** The Anthropic Messages dialect. */
import {
  type Ctx,
  checkArray,
  fail,
  isObj,
  MAX_OUTPUT_TOKENS,
  type Obj,
  optBool,
  optPosInt,
  optString,
  own,
  stringifyOrFail,
} from './json.js';
import { parseTools } from './tools.js';
import type { CallShape, PromptMessage } from './types.js';

/** Anthropic content: string | array of blocks. `depth` 0 = message content, 1 = inside tool_result. */
function anthropicContent(ctx: Ctx, content: unknown, parts: string[], where: string, depth: number): void {
  if (content === undefined || content === null) return;
  if (typeof content === 'string') {
    parts.push(content);
    return;
  }
  const arr = checkArray(content, where);
  for (let j = 0; j < arr.length; j++) {
    const b = arr[j];
    const w = `${where}[${j}]`;
    if (!isObj(b)) fail(`${w} must be an object`);
    switch (own(b, 'type')) {
      case 'text': {
        const t = own(b, 'text');
        if (typeof t !== 'string') fail(`${w}.text must be a string`);
        parts.push(t);
        break;
      }
      case 'image':
        ctx.images++;
        break;
      case 'tool_use':
      case 'server_tool_use': {
        const name = own(b, 'name');
        if (typeof name === 'string') parts.push(name);
        ctx.addTool(name);
        const input = own(b, 'input');
        if (input !== undefined) parts.push(stringifyOrFail(input, `${w}.input`));
        break;
      }
      case 'tool_result': {
        // tool_result content holds text/image blocks; a tool_result inside a tool_result is not
        // valid, so only one extra level is ever walked (bounded, non-recursive in practice).
        if (depth >= 1) fail(`${w}: tool_result cannot be nested`);
        anthropicContent(ctx, own(b, 'content'), parts, `${w}.content`, depth + 1);
        break;
      }
      default: {
        // thinking / redacted_thinking (previous-turn thinking is not billed as input), document,
        // search_result, unknown: only plain `text` is kept.
        const t = own(b, 'text');
        if (typeof t === 'string') parts.push(t);
      }
    }
  }
}

export function parseAnthropic(ctx: Ctx, body: Obj): void {
  const system = own(body, 'system');
  if (system !== undefined && system !== null) {
    if (typeof system !== 'string' && !Array.isArray(system)) fail('system must be a string or an array');
    const msg: PromptMessage = { role: 'system', parts: [] };
    anthropicContent(ctx, system, msg.parts, 'system', 0);
    ctx.messages.push(msg);
  }
  const msgs = checkArray(own(body, 'messages'), 'messages');
  for (let i = 0; i < msgs.length; i++) {
    const m = msgs[i];
    const w = `messages[${i}]`;
    if (!isObj(m)) fail(`${w} must be an object`);
    const msg: PromptMessage = { role: optString(m, 'role', `${w}.`) ?? '', parts: [] };
    anthropicContent(ctx, own(m, 'content'), msg.parts, `${w}.content`, 0);
    ctx.messages.push(msg);
  }
}

/** Anthropic Messages: system + messages, max_tokens. */
export function readAnthropic(ctx: Ctx, body: Obj): CallShape {
  const requestedOutput = optPosInt(body, 'max_tokens', MAX_OUTPUT_TOKENS);
  const stream = optBool(body, 'stream');
  parseAnthropic(ctx, body);
  parseTools(ctx, body, 'anthropic.messages');
  return { n: 1, requestedOutput, stream, kind: 'chat' };
}
