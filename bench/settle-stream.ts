/**
 * The `settle` workload's response phase: the ext_proc ProcessingRequests Envoy sends tollgate for one
 * streamed chat answer, with the shipped envoy.yaml (processing_mode response_header_mode SEND,
 * response_body_mode STREAMED, observability_mode true, ext_authz metadata forwarded):
 *   1. response_headers (:status 200, content-type text/event-stream and the usual provider headers),
 *      with metadata_context.filter_metadata['envoy.filters.http.ext_authz'].tollgate_reservation,
 *   2. SETTLE_CHUNKS response_body messages, each one OpenAI chat SSE event (`data: {...delta...}`),
 *   3. the usage chunk (`choices: []`, stream_options.include_usage) and `data: [DONE]`, end_of_stream.
 * Everything is serialized once (tollgate's vendored protos); per call only the metadata naming the
 * reservation is encoded (a few bytes by hand) and prepended to the headers message: two serialized
 * messages of one type, concatenated, are their merge.
 */
import { loadExtProcPackages } from '../src/authz/grpc/ext-proc-protos.js';

export const SETTLE_CHUNKS = 20;
export const PROCESS_PATH = '/envoy.service.ext_proc.v3.ExternalProcessor/Process';

const EXT_AUTHZ = 'envoy.filters.http.ext_authz';
const KEY = 'tollgate_reservation';
const KEY_BYTES = Buffer.from(KEY);

const serialize = (m: Record<string, unknown>): Buffer => {
  const svc = loadExtProcPackages().externalProcessor as any;
  return svc.Process.requestSerialize(m) as Buffer;
};

const PROVIDER_HEADERS: Record<string, string> = {
  ':status': '200',
  'content-type': 'text/event-stream; charset=utf-8',
  date: 'Mon, 01 Jan 2026 00:00:00 GMT',
  'cache-control': 'no-cache, must-revalidate',
  'x-request-id': 'req_0b0e9c1e1d2f4a3b9c8d7e6f5a4b3c2d',
  'openai-organization': 'bench-org',
  'openai-processing-ms': '112',
  'openai-version': '2020-10-01',
  'x-ratelimit-remaining-tokens': '149999000',
  'access-control-expose-headers': 'X-Request-ID',
};

const event = (e: unknown) => `data: ${JSON.stringify(e)}\n\n`;
const chunk = (delta: Record<string, unknown>, finish: string | null) =>
  event({
    id: 'chatcmpl-bench0000000000000000000000',
    object: 'chat.completion.chunk',
    created: 1767225600,
    model: 'gpt-4o-mini-2024-07-18',
    system_fingerprint: 'fp_0ba0d124f1',
    choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
  });

const WORDS = 'The answer depends on the rate limit window and the tenant budget you configured for'.split(
  ' ',
);

/** The raw SSE bytes of each response_body message (the same for every call). */
export function settleSseBodies(): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < SETTLE_CHUNKS; i++) {
    const content = ` ${WORDS[i % WORDS.length]} ${WORDS[(i * 7 + 3) % WORDS.length]}`;
    const sse =
      i === 0
        ? chunk({ role: 'assistant', content, refusal: null }, null)
        : i === SETTLE_CHUNKS - 1
          ? chunk({}, 'stop')
          : chunk({ content }, null);
    out.push(Buffer.from(sse));
  }
  const usage = event({
    id: 'chatcmpl-bench0000000000000000000000',
    object: 'chat.completion.chunk',
    created: 1767225600,
    model: 'gpt-4o-mini-2024-07-18',
    system_fingerprint: 'fp_0ba0d124f1',
    choices: [],
    usage: {
      prompt_tokens: 230,
      completion_tokens: 2 * (SETTLE_CHUNKS - 1),
      total_tokens: 230 + 2 * (SETTLE_CHUNKS - 1),
      prompt_tokens_details: { cached_tokens: 0, audio_tokens: 0 },
      completion_tokens_details: { reasoning_tokens: 0, audio_tokens: 0 },
    },
  });
  out.push(Buffer.from(`${usage}data: [DONE]\n\n`));
  return out;
}

/** The provider's response headers as the bench sends them. */
export const SETTLE_RESPONSE_HEADERS: Readonly<Record<string, string>> = PROVIDER_HEADERS;

/** The body messages after the headers (pre-serialized; the same for every call). */
function bodyMessages(): Buffer[] {
  const bodies = settleSseBodies();
  return bodies.map((body, i) =>
    serialize({
      response_body: { body, end_of_stream: i === bodies.length - 1 },
      observability_mode: true,
    }),
  );
}

function varint(n: number): number[] {
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return out;
}

/** A length-delimited field (`tag` = field << 3 | 2) holding `body`. */
const field = (tag: number, body: Buffer) =>
  Buffer.concat([Buffer.from([tag, ...varint(body.length)]), body]);

/**
 * ProcessingRequest { metadata_context (8): Metadata { filter_metadata (1): { key: EXT_AUTHZ, value:
 * Struct { fields (1): { key: KEY, value: Value { string_value (3): id } } } } } }.
 */
export function metadataMessage(id: string): Buffer {
  const value = field(0x1a, Buffer.from(id));
  const entry = Buffer.concat([field(0x0a, KEY_BYTES), field(0x12, value)]);
  const struct = field(0x0a, entry);
  const nsEntry = Buffer.concat([field(0x0a, Buffer.from(EXT_AUTHZ)), field(0x12, struct)]);
  return field(0x42, field(0x0a, nsEntry));
}

export interface SettleMessages {
  /** The response_headers message (with observability_mode), without the metadata. */
  headers: Buffer;
  body: Buffer[];
}

let cached: SettleMessages | undefined;
export function settleMessages(): SettleMessages {
  cached ??= {
    headers: serialize({
      response_headers: {
        headers: {
          headers: Object.entries(PROVIDER_HEADERS).map(([key, v]) => ({ key, raw_value: Buffer.from(v) })),
        },
        end_of_stream: false,
      },
      observability_mode: true,
    }),
    body: bodyMessages(),
  };
  return cached;
}

/** The first message of a call's stream: the response headers plus the reservation id as metadata. */
export function headersMessage(id: string): Buffer {
  return Buffer.concat([metadataMessage(id), settleMessages().headers]);
}

/**
 * The reservation id in a serialized CheckResponse's dynamic_metadata (the Struct field `KEY`: key,
 * then its Value's string_value), without decoding the response; undefined when absent.
 */
export function reservationId(res: Buffer): string | undefined {
  let at = res.indexOf(KEY_BYTES);
  while (at > 0 && res[at - 1] !== KEY_BYTES.length) at = res.indexOf(KEY_BYTES, at + 1);
  if (at < 0) return undefined;
  let i = at + KEY_BYTES.length;
  if (res[i++] !== 0x12) return undefined;
  i = skipVarint(res, i);
  if (res[i++] !== 0x1a) return undefined;
  let len = 0;
  for (let shift = 0; ; shift += 7) {
    const b = res[i++];
    len |= (b & 0x7f) << shift;
    if (b < 0x80) break;
  }
  return res.toString('utf8', i, i + len);
}

function skipVarint(b: Buffer, i: number): number {
  while (b[i] >= 0x80) i++;
  return i + 1;
}
