/**
 * A straightforward reference of the SSE usage scan, for equivalence tests of the streaming extractor:
 * the whole body at once, cut into lines, every line decoded, every event's data JSON-parsed and handed
 * to its format in order (usage and text together). The same bounds as the extractor: a line longer
 * than maxLineBytes keeps its last tailBytes (scanned for a usage object, else estimated), collected
 * text up to maxTextChars.
 */
import { DEFAULT_MAX_TEXT_CHARS, TextCollector } from '../../src/dialects/usage/collect.js';
import { formatFor, UsageAcc, type UsageDialect } from '../../src/dialects/usage/formats.js';
import { lastObjectForKey } from '../../src/dialects/usage/json.js';
import { DEFAULT_MAX_LINE_BYTES, DEFAULT_TAIL_BYTES } from '../../src/dialects/usage/sse.js';
import type { UsageExtractorOptions, UsageScan } from '../../src/dialects/usage/types.js';

interface RefEvent {
  event?: string;
  lines: string[];
  overLong: boolean;
  dropped: number;
}

/** The events of an SSE body (whole), as the spec and the extractor's bounds say. */
function events(body: Buffer, maxLine: number, tail: number): RefEvent[] {
  const out: RefEvent[] = [];
  let cur: RefEvent = { lines: [], overLong: false, dropped: 0 };
  const dispatch = () => {
    if (cur.lines.length > 0) out.push(cur);
    cur = { lines: [], overLong: false, dropped: 0 };
  };
  let start = 0;
  while (start < body.length) {
    let nl = body.indexOf(0x0a, start);
    if (nl < 0) nl = body.length;
    let line = body.subarray(start, nl);
    start = nl + 1;
    let dropped = 0;
    if (line.length > maxLine) {
      const keep = Math.min(tail, line.length);
      dropped = line.length - keep;
      line = line.subarray(line.length - keep);
    }
    if (line.at(-1) === 0x0d) line = line.subarray(0, -1);
    if (dropped > 0) {
      cur.lines.push(line.toString('utf8'));
      cur.overLong = true;
      cur.dropped += dropped;
      continue;
    }
    const text = line.toString('utf8');
    if (text === '') dispatch();
    else if (!text.startsWith(':')) {
      const colon = text.indexOf(':');
      const field = colon < 0 ? text : text.slice(0, colon);
      const value = colon < 0 ? '' : text.slice(colon + 1).replace(/^ /, '');
      if (field === 'data') cur.lines.push(value);
      else if (field === 'event') cur.event = value;
    }
  }
  dispatch();
  return out;
}

/** The scan of an SSE body (after any leading blank bytes, which the extractor's sniffing drops). */
export function referenceSseScan(
  dialect: UsageDialect,
  body: Buffer,
  opts: UsageExtractorOptions = {},
  sniffed = true,
): UsageScan {
  const format = formatFor(dialect);
  const acc = new UsageAcc(new TextCollector(opts.maxTextChars ?? DEFAULT_MAX_TEXT_CHARS));
  let understood = false;
  let from = 0;
  while (sniffed && from < body.length && ' \t\r\n'.includes(String.fromCharCode(body[from]))) from++;
  const tail = opts.tailBytes ?? DEFAULT_TAIL_BYTES;
  for (const e of events(body.subarray(from), opts.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES, tail)) {
    const data = e.lines.join('\n');
    if (e.overLong) {
      const found = lastObjectForKey(data, format.usageKeys);
      if (found) {
        understood = true;
        format.usage(found.value, acc, format.overLongEventFinal);
      } else acc.text.addOpaqueBytes(Buffer.byteLength(data) + e.dropped);
      continue;
    }
    if (data.trim() === '[DONE]') {
      understood = true;
      continue;
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(data.trim());
    } catch {
      continue;
    }
    understood = true;
    format.event(e.event, parsed, acc);
  }
  const scan: UsageScan = {
    outputFloor: acc.outputFloor,
    text: acc.text.result(),
    bytes: body.length,
    understood,
    jsonOverflow: false,
  };
  if (acc.prompt) scan.prompt = acc.prompt;
  if (acc.output) scan.output = acc.output;
  return scan;
}
