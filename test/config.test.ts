/**
 * Config validation, key by key: one bad case per row, each naming the path, the field and what was
 * expected. And the URL forms VALKEY_URL accepts.
 */
import { describe, expect, it } from 'vitest';
import { parseConfigText } from '../src/config/load.js';
import { valkeyOptions } from '../src/store/valkey.js';

const LIMIT = 'limits:\n  - { name: l, per: tenant, requests: 10, every: 1m';
const bad: [string, string, RegExp][] = [
  ['unknown top-level field', 'limit: []', /^ {2}- limit: unknown field \(allowed: identity, models/m],
  ['limits not a list', 'limits: {a: 1}', /limits: expected a list of limits, got a mapping/],
  [
    'limit without a name',
    'limits:\n  - { requests: 1, every: 1m }',
    /limits\[0\]\.name: expected a name of 1-64 letters/,
  ],
  [
    'bad limit name',
    'limits:\n  - { name: "a b", requests: 1, every: 1m }',
    /limits\[0\]\.name: expected a name .*got "a b"/,
  ],
  [
    'duplicate limit name',
    `${LIMIT} }\n  - { name: l, requests: 1, every: 1m }`,
    /limits\[1\]\.name: duplicate limit name "l"/,
  ],
  [
    'no amount',
    'limits:\n  - { name: l, every: 1m }',
    /limits\[0\]: expected exactly one of requests, tokens, usd, concurrent \(found none\)/,
  ],
  [
    'concurrent with a window',
    'limits:\n  - { name: l, concurrent: 2, every: 1m }',
    /limits\[0\]: concurrent limits take no every or reset/,
  ],
  [
    'lease without concurrent',
    'limits:\n  - { name: l, requests: 2, every: 1m, lease: 1m }',
    /limits\[0\]\.lease: only valid with concurrent/,
  ],
  [
    'concurrent without settlement',
    'settle: { enabled: false }\nlimits:\n  - { name: l, concurrent: 2 }',
    /limits\[0\]\.concurrent: needs settle\.enabled/,
  ],
  [
    'bad upstream error policy',
    'settle: { on_upstream_error: charge }',
    /settle\.on_upstream_error: expected one of refund, keep_prompt, got "charge"/,
  ],
  [
    'usage stream dimension unknown',
    'identity: { tenant: [{ header: x-tenant-id }] }\nsettle: { usage_stream: { dimensions: [team] } }',
    /settle\.usage_stream\.dimensions\[0\]: expected an identity dimension \(tenant\), got "team"/,
  ],
  [
    'negative cached price',
    'models:\n  m: { price_usd_per_1m: { input: 1, output: 2, cached_input: -1 } }',
    /models\["m"\]\.price_usd_per_1m\.cached_input: expected a number ≥ 0, got -1/,
  ],
  ['two amounts', 'limits:\n  - { name: l, requests: 1, tokens: 2, every: 1m }', /found requests, tokens/],
  [
    'negative tokens',
    'limits:\n  - { name: l, tokens: -5, every: 1m }',
    /limits\[0\]\.tokens: expected an integer from 1 to \d+, got -5/,
  ],
  [
    'fractional requests',
    'limits:\n  - { name: l, requests: 1.5, every: 1m }',
    /limits\[0\]\.requests: expected an integer/,
  ],
  [
    'zero usd',
    'limits:\n  - { name: l, usd: 0, every: 1m }',
    /limits\[0\]\.usd: expected a number ≥ 0.000001, got 0/,
  ],
  [
    'bad duration',
    'limits:\n  - { name: l, requests: 1, every: 1q }',
    /limits\[0\]\.every: expected a duration like 30s, 1m, 1h, 1d, got "1q"/,
  ],
  [
    'both windows',
    'limits:\n  - { name: l, requests: 1, every: 1m, reset: daily }',
    /expected exactly one of every \(rolling window\) or reset/,
  ],
  [
    'no window',
    'limits:\n  - { name: l, requests: 1 }',
    /expected exactly one of every \(rolling window\) or reset/,
  ],
  [
    'bad reset',
    'limits:\n  - { name: l, requests: 1, reset: yearly }',
    /limits\[0\]\.reset: expected one of hourly, daily, weekly, monthly, got "yearly"/,
  ],
  [
    'bad timezone',
    'limits:\n  - { name: l, requests: 1, reset: daily, timezone: Mars/Olympus }',
    /limits\[0\]\.timezone: expected an IANA time zone/,
  ],
  ['timezone on rolling', `${LIMIT}, timezone: UTC }`, /limits\[0\]\.timezone: only valid with reset/],
  [
    'unknown per dimension',
    'limits:\n  - { name: l, per: org, requests: 1, every: 1m }',
    /limits\[0\]\.per\[0\]: expected an identity dimension \(tenant, model\), got "org"/,
  ],
  ['bad mode', `${LIMIT}, mode: loud }`, /limits\[0\]\.mode: expected one of enforce, shadow, got "loud"/],
  [
    'bad downgrade',
    `${LIMIT}, downgrade_below: 120% }`,
    /limits\[0\]\.downgrade_below: expected a share like 20%/,
  ],
  [
    'when on unknown dimension',
    `${LIMIT}, when: { plan: free } }`,
    /limits\[0\]\.when\.plan: expected an identity dimension/,
  ],
  [
    'weighted tokens',
    'limits:\n  - { name: l, tokens: 1, every: 1m, count: weighted }',
    /limits\[0\]\.count: weighted counting applies to requests limits only/,
  ],
  ['unknown limit field', `${LIMIT}, burst: 5 }`, /limits\[0\]\.burst: unknown field/],
  [
    'bad encoding',
    'models:\n  m: { encoding: gpt2 }',
    /models\["m"\]\.encoding: expected one of o200k_base, cl100k_base, p50k_base, r50k_base, got "gpt2"/,
  ],
  [
    'negative price',
    'models:\n  m: { price_usd_per_1m: { input: -1 } }',
    /models\["m"\]\.price_usd_per_1m\.input: expected a number ≥ 0, got -1/,
  ],
  ['unknown model field', 'models:\n  m: { context: 128000 }', /models\["m"\]\.context: unknown field/],
  ['self fallback', 'models:\n  m: { fallback: m }', /models\["m"\]\.fallback: cycle m → m/],
  [
    'fallback cycle',
    'models:\n  a: { fallback: b }\n  b: { fallback: a }',
    /models\["a"\]\.fallback: cycle a → b → a/,
  ],
  [
    'bad identity source',
    'identity:\n  tenant: [{ cookie: sid }]',
    /identity\.tenant\[0\]\.cookie: unknown identity source/,
  ],
  [
    'empty identity sources',
    'identity:\n  tenant: []',
    /identity\.tenant: expected a non-empty list of sources/,
  ],
  [
    'bad dimension name',
    'identity:\n  Tenant: [{ header: x-t }]',
    /identity\.Tenant: expected a dimension name/,
  ],
  [
    'bad header name',
    'identity:\n  tenant: [{ header: "x t" }]',
    /identity\.tenant\[0\]\.header: expected a header name, got "x t"/,
  ],
  [
    'default outside values',
    'identity:\n  plan: { sources: [{ header: x-plan }], values: [a], default: b }',
    /identity\.plan\.default: expected one of values \(a\), got "b"/,
  ],
  [
    'key_map source without file',
    'identity:\n  org: [{ key_map: org }]',
    /identity\.key_map: expected a file path/,
  ],
  [
    'queue without queues',
    `${LIMIT}, when_exhausted: queue }`,
    /limits\[0\]\.queue: expected the name of a queue under "queues" \(0 configured\)/,
  ],
  [
    'bad when_exhausted',
    `${LIMIT}, when_exhausted: drop }`,
    /limits\[0\]\.when_exhausted: expected one of deny, queue, got "drop"/,
  ],
  [
    'bad queue length',
    'queues:\n  q: { max_length: 0 }',
    /queues\.q\.max_length: expected an integer from 1/,
  ],
  ['bad global mode', 'mode: off', /mode: expected one of enforce, shadow, got "off"/],
  [
    'bad port',
    'server:\n  grpc_port: 70000',
    /server\.grpc_port: expected an integer from 0 to 65535, got 70000/,
  ],
  [
    'bad deadline',
    'server:\n  decision_deadline: soon',
    /server\.decision_deadline: expected a duration like 50ms, got "soon"/,
  ],
  [
    'bad max_concurrent_streams',
    'server:\n  max_concurrent_streams: 0',
    /server\.max_concurrent_streams: expected an integer from 1 to 100000, got 0/,
  ],
  [
    'negative checks_per_turn',
    'server:\n  checks_per_turn: -1',
    /server\.checks_per_turn: expected an integer from 0 to 100000, got -1/,
  ],
  [
    'grpc_direct_check not a boolean',
    'server:\n  grpc_direct_check: yes please',
    /server\.grpc_direct_check: expected true or false, got "yes please"/,
  ],
  [
    'grpc_direct_process not a boolean',
    'server:\n  grpc_direct_process: 1',
    /server\.grpc_direct_process: expected true or false, got 1/,
  ],
  [
    'http2 window below the protocol minimum',
    'server:\n  http2_stream_window: 1024',
    /server\.http2_stream_window: expected an integer from 65535 to 2147483647, got 1024/,
  ],
  [
    'bad non_llm_paths',
    'server:\n  non_llm_paths: maybe',
    /server\.non_llm_paths: expected one of allow, deny, got "maybe"/,
  ],
  [
    'timeout above deadline',
    'store:\n  timeout: 80ms',
    /store\.timeout: expected less than server\.decision_deadline \(50 ms\), got 80 ms/,
  ],
  [
    'bad failure policy',
    'store:\n  on_store_failure: panic',
    /store\.on_store_failure: expected one of allow, deny, local, got "panic"/,
  ],
  ['bad prefix', 'store:\n  prefix: "a:b"', /store\.prefix: expected a short prefix/],
  [
    'bad breaker',
    'store:\n  breaker: { failures: 0 }',
    /store\.breaker\.failures: expected an integer from 1 to 1000, got 0/,
  ],
  [
    'bad source_ip',
    'identity:\n  client: [{ source_ip: yes }]',
    /identity\.client\[0\]\.source_ip: expected envoy \(attributes\.source\.address\) or a mapping .*got "yes"/,
  ],
  [
    'bad xff_trusted_hops',
    'identity:\n  client: [{ source_ip: { xff_trusted_hops: x } }]',
    /identity\.client\[0\]\.source_ip\.xff_trusted_hops: expected an integer from 0 to 16, got "x"/,
  ],
  [
    'unknown source_ip field',
    'identity:\n  client: [{ source_ip: { hops: 1 } }]',
    /identity\.client\[0\]\.source_ip\.hops: expected xff_trusted_hops or ipv6_prefix, got "hops"/,
  ],
  [
    'bad unknown_keys',
    'identity:\n  key_map: keys.yaml\n  unknown_keys: maybe',
    /identity\.unknown_keys: expected one of own, shared, deny, got "maybe"/,
  ],
  [
    'bad max_bytes',
    'queues:\n  q: { max_bytes: 512 }',
    /queues\.q\.max_bytes: expected a size from 1KiB, like 67108864, "64MiB" or "1GiB", got 512/,
  ],
  [
    'bad tenant_share',
    'queues:\n  q: { tenant_share: 0% }',
    /queues\.q\.tenant_share: expected a share like 25% \(100% = no per-tenant bound\), got "0%"/,
  ],
  [
    'aliases on "*"',
    'models:\n  "*": { aliases: [any] }',
    /models\["\*"\]\.aliases: expected no aliases on "\*", got a list/,
  ],
  [
    'alias colliding while another model has a problem',
    'models:\n  a: { aliases: [x] }\n  b: { encoding: gpt2, aliases: [X] }',
    /models\["b"\]\.aliases\[0\]: expected a name no other model uses \(ignoring case\), got "X" \(also models\["a"\]\.aliases\[0\]\)/,
  ],
  [
    'bad bind address',
    'server:\n  http_host: "0.0.0.0/0"',
    /server\.http_host: expected an address to bind to \(e\.g\. 127\.0\.0\.1, 0\.0\.0\.0, ::\), got "0\.0\.0\.0\/0"/,
  ],
  [
    'http_authz without a port',
    'server:\n  http_authz: {}',
    /server\.http_authz\.port: expected a port from 0 to 65535 \(the HTTP authorization mode has its own port\)$/m,
  ],
  [
    'http_authz not a mapping',
    'server:\n  http_authz: true',
    /server\.http_authz: expected a mapping \{ port, host \} \(or false\), got true/,
  ],
  [
    'unknown http_authz field',
    'server:\n  http_authz: { port: 8182, tls: true }',
    /server\.http_authz\.tls: unknown field \(allowed: port, host\)/,
  ],
  [
    'metrics port on the gRPC port',
    'server:\n  http_port: 9191',
    /server\.http_port: expected a port other than server\.grpc_port, got 9191/,
  ],
  [
    'bad memory_max_keys',
    'store:\n  memory_max_keys: 10',
    /store\.memory_max_keys: expected an integer from 100 to 100000000, got 10/,
  ],
  [
    'overload_budget below the deadline',
    'server:\n  overload_budget: 10ms',
    /server\.overload_budget: expected at least server\.decision_deadline \(50 ms\), got 10 ms/,
  ],
  [
    'max_buffered_bytes below one message',
    'server:\n  max_buffered_bytes: 1000',
    /server\.max_buffered_bytes: expected an integer from 17825792 to 9007199254740991, got 1000/,
  ],
  [
    'bad max_inflight',
    'store:\n  max_inflight: 0',
    /store\.max_inflight: expected an integer from 1 to 100000, got 0/,
  ],
  ['yaml syntax', 'limits: [', /YAML syntax/],
];

describe('config validation: one bad case per row', () => {
  it.each(bad)('%s', (_name, yaml, message) => {
    let err: Error | undefined;
    try {
      parseConfigText(yaml, 'bad.yaml');
    } catch (e) {
      err = e as Error;
    }
    expect(err?.name).toBe('ConfigError');
    expect(err?.message).toMatch(/^invalid configuration in bad\.yaml:/);
    expect(err?.message).toMatch(message);
  });

  it('reports every problem at once', () => {
    expect(() => parseConfigText('mode: off\nstore:\n  on_store_failure: panic\n')).toThrow(
      /mode:.*\n.*store\.on_store_failure/s,
    );
  });

  it('an empty file is a valid config with defaults', () => {
    const c = parseConfigText('');
    expect(c.server.grpcPort).toBe(9191);
    expect(c.server.httpPort).toBe(8181);
    expect(c.store.onStoreFailure).toBe('allow');
    expect(Object.keys(c.identity)).toEqual(['tenant']);
  });
});

describe('VALKEY_URL forms', () => {
  it.each([
    ['valkey://127.0.0.1:6380', { host: '127.0.0.1', port: 6380, tls: false }],
    ['redis://cache:6379/2', { host: 'cache', port: 6379, db: 2, tls: false }],
    [
      'valkeys://user:p%40ss@vk.internal:6390',
      { host: 'vk.internal', port: 6390, username: 'user', password: 'p@ss', tls: true },
    ],
    ['rediss://:secret@vk', { host: 'vk', port: 6379, password: 'secret', tls: true }],
  ])('%s', (url, want) => {
    const o = valkeyOptions({ url, timeoutMs: 25 });
    const { tls, ...rest } = want as Record<string, unknown>;
    expect(o).toMatchObject(rest);
    expect(Boolean(o.tls)).toBe(tls);
  });
  it('rejects other schemes', () => {
    expect(() => valkeyOptions({ url: 'http://x', timeoutMs: 25 })).toThrow(/unsupported scheme "http:"/);
  });
});
