/**
 * The model-rewrite Lua filter (issue 26 item 1): the code shipped INSIDE envoy.yaml, its Kubernetes
 * copy and the Istio EnvoyFilter is cut out of the YAML and run under real Lua 5.1 interpreters
 * (Debian's lua5.1 and luajit, Envoy's own engine is LuaJIT) with a stand-in for Envoy's Lua API
 * (test/fixtures/lua/envoy-harness.lua), on every way a reroute's body rewrite used to be dodged:
 * no content-length (HTTP/2), chunked, > 1 MiB, an escaped key, duplicate keys, whitespace, nested
 * "model" keys; and bodies it cannot rewrite must get a local 4xx/5xx reply (fail closed).
 *
 * Tools: `apt-get install -y lua5.1 luajit` (.ci/run does). Missing interpreters FAIL the tests.
 * LUA_INTERPRETERS="lua5.1 luajit" may name others.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { loadAll as loadAllYaml, load as loadYaml } from 'js-yaml';
import { afterAll, describe, expect, it } from 'vitest';

const REPO = join(dirname(fileURLToPath(import.meta.url)), '..');
const HARNESS = join(REPO, 'test/fixtures/lua/envoy-harness.lua');
const SOURCE = join(REPO, 'deploy/lua/model-rewrite.lua');
const INTERPRETERS = (process.env.LUA_INTERPRETERS ?? 'lua5.1 luajit').split(/\s+/).filter(Boolean);
const LUA_HELP =
  'a Lua 5.1 interpreter is required for this test: `apt-get install -y lua5.1 luajit` (Debian) or set LUA_INTERPRETERS';

function httpFilters(config: any): any[] {
  const l = config.static_resources.listeners.find((x: any) => x.name === 'llm_ingress');
  return l.filter_chains[0].filters.find(
    (f: any) => f.name === 'envoy.filters.network.http_connection_manager',
  ).typed_config.http_filters;
}

/** The inline Lua of each shipped config. */
function shippedLua(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const f of ['envoy.yaml', 'deploy/kubernetes/base/envoy.yaml']) {
    const lua = httpFilters(loadYaml(readFileSync(join(REPO, f), 'utf8'))).find(
      (x) => x.name === 'envoy.filters.http.lua',
    );
    out[f] = lua.typed_config.default_source_code.inline_string;
  }
  const ef = (
    loadAllYaml(readFileSync(join(REPO, 'deploy/istio/envoyfilter-tollgate.yaml'), 'utf8')) as any[]
  ).find((d) => d?.kind === 'EnvoyFilter');
  const patch = ef.spec.configPatches.find(
    (p: any) =>
      p.patch.value?.typed_config?.['@type'] ===
      'type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua',
  );
  out['deploy/istio/envoyfilter-tollgate.yaml'] =
    patch.patch.value.typed_config.default_source_code.inline_string;
  return out;
}

const work = mkdtempSync(join(tmpdir(), 'tollgate-lua-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));
// The code under test is the one inside envoy.yaml (identical to the others, checked below).
const FILTER = join(work, 'filter.lua');
writeFileSync(FILTER, shippedLua()['envoy.yaml']);

interface Outcome {
  kind: 'respond' | 'continue';
  /** respond: the local reply's :status; continue: how many times body() was called */
  detail: string;
  headers: Record<string, string>;
  body: Buffer;
}

let runs = 0;
function run(lua: string, headers: Record<string, string>, body?: string | Buffer): Outcome {
  const dir = join(work, `r${++runs}`);
  mkdirSync(dir);
  writeFileSync(
    join(dir, 'headers'),
    Object.entries(headers)
      .map(([k, v]) => `${k}: ${v}\n`)
      .join(''),
  );
  if (body !== undefined) writeFileSync(join(dir, 'body'), body);
  const r = spawnSync(lua, [HARNESS, FILTER, dir], { encoding: 'utf8', timeout: 60_000 });
  if (r.error) throw new Error(`${LUA_HELP}\n${r.error.message}`);
  if (r.status !== 0) throw new Error(`${lua} failed:\n${r.stderr}`);
  const out = readFileSync(join(dir, 'out'));
  rmSync(dir, { recursive: true, force: true });
  const sep = out.indexOf('\n\n');
  const head = out.subarray(0, sep).toString('utf8').split('\n');
  const [kind, detail] = head[0].split(' ') as [Outcome['kind'], string];
  const hs: Record<string, string> = {};
  for (const line of head.slice(1)) {
    const i = line.indexOf(': ');
    hs[line.slice(0, i)] = line.slice(i + 2);
  }
  return { kind, detail, headers: hs, body: out.subarray(sep + 2) };
}

const REROUTE = { 'x-tollgate-model': 'gpt-4o-mini' };
const chatBody = (extra = '') =>
  `{"model":"gpt-4o","messages":[{"role":"user","content":"Say \\"model\\": \\"x\\" {[ please"}]${extra}}`;

describe('the shipped model-rewrite Lua', () => {
  it('is one source: envoy.yaml, the Kubernetes copy and the Istio EnvoyFilter carry deploy/lua/model-rewrite.lua', () => {
    const src = readFileSync(SOURCE, 'utf8');
    for (const [file, code] of Object.entries(shippedLua())) expect(code, file).toBe(src);
    const check = spawnSync(process.execPath, [join(REPO, 'scripts/sync-envoy-lua.mjs'), '--check'], {
      encoding: 'utf8',
    });
    expect(check.stderr).toBe('');
    expect(check.status).toBe(0);
  });

  it('sits right after ext_authz (Envoy) and is inserted after it (Istio)', () => {
    for (const f of ['envoy.yaml', 'deploy/kubernetes/base/envoy.yaml']) {
      const names = httpFilters(loadYaml(readFileSync(join(REPO, f), 'utf8'))).map((x) => x.name);
      expect(names.indexOf('envoy.filters.http.lua'), f).toBe(
        names.indexOf('envoy.filters.http.ext_authz') + 1,
      );
    }
    const ef = (
      loadAllYaml(readFileSync(join(REPO, 'deploy/istio/envoyfilter-tollgate.yaml'), 'utf8')) as any[]
    ).find((d) => d?.kind === 'EnvoyFilter');
    const lua = ef.spec.configPatches.find((p: any) => p.patch.value?.name === 'tollgate.model-rewrite');
    expect(lua.patch.operation).toBe('INSERT_AFTER');
    expect(lua.match.listener.filterChain.filter.subFilter.name).toBe('envoy.filters.http.ext_authz');
  });

  it('the interpreters are installed (required, not skipped)', () => {
    expect(INTERPRETERS.length).toBeGreaterThan(0);
    for (const lua of INTERPRETERS) {
      const r = spawnSync(lua, ['-e', 'io.write(_VERSION)'], { encoding: 'utf8' });
      expect(r.error, LUA_HELP).toBeUndefined();
      expect(r.stdout).toBe('Lua 5.1');
    }
  });

  for (const lua of INTERPRETERS) {
    describe(`under ${lua}`, () => {
      const rewritten = (o: Outcome) => {
        expect(o.kind, o.body.toString()).toBe('continue');
        return o.body.toString('utf8');
      };

      it('without x-tollgate-model: the body is not even read', () => {
        const o = run(lua, { 'content-length': '17' }, '{"model":"gpt-4o"}');
        expect(o).toMatchObject({ kind: 'continue', detail: '0' });
        expect(o.body.toString()).toBe('{"model":"gpt-4o"}');
      });

      it('content-length: the model is replaced byte for byte and content-length updated', () => {
        const body = chatBody();
        const o = run(lua, { ...REROUTE, 'content-length': String(body.length) }, body);
        const out = rewritten(o);
        expect(out).toBe(body.replace('"model":"gpt-4o"', '"model":"gpt-4o-mini"'));
        expect(o.headers['content-length']).toBe(String(Buffer.byteLength(out)));
      });

      it('dodge: no content-length (HTTP/2) is rewritten (setBytes then gives it one, as Envoy does)', () => {
        const o = run(lua, REROUTE, chatBody());
        const out = rewritten(o);
        expect(JSON.parse(out).model).toBe('gpt-4o-mini');
        expect(o.headers['content-length']).toBe(String(Buffer.byteLength(out)));
      });

      it('dodge: chunked HTTP/1.1 is rewritten', () => {
        const o = run(lua, { ...REROUTE, 'transfer-encoding': 'chunked' }, chatBody());
        expect(JSON.parse(rewritten(o)).model).toBe('gpt-4o-mini');
      });

      it('dodge: a body over 1 MiB (multi-byte text) is rewritten and content-length counts bytes', () => {
        const body = JSON.stringify({
          messages: [{ role: 'user', content: 'é✓ "quoted" \\ '.repeat(100_000) }],
          model: 'gpt-4o',
        });
        expect(Buffer.byteLength(body)).toBeGreaterThan(1_048_576);
        const o = run(lua, { ...REROUTE, 'content-length': String(Buffer.byteLength(body)) }, body);
        const out = rewritten(o);
        expect(JSON.parse(out)).toEqual({ ...JSON.parse(body), model: 'gpt-4o-mini' });
        expect(o.headers['content-length']).toBe(String(Buffer.byteLength(out)));
      });

      it('dodge: an escaped key ("\\u006dodel", "mod\\u0065l") is the model key', () => {
        for (const key of ['\\u006dodel', 'mod\\u0065l', '\\u006D\\u006F\\u0064\\u0065\\u006C']) {
          const body = `{"messages":[],"${key}":"gpt-4o"}`;
          expect(JSON.parse(body).model).toBe('gpt-4o');
          expect(JSON.parse(rewritten(run(lua, REROUTE, body))).model).toBe('gpt-4o-mini');
        }
      });

      it('dodge: duplicate keys are all rewritten (what a last-key or first-key parser reads is the reroute)', () => {
        const body = '{"model":"gpt-4o-mini","messages":[],"model":"gpt-4o","\\u006dodel":"o1"}';
        const out = rewritten(run(lua, REROUTE, body));
        expect(JSON.parse(out).model).toBe('gpt-4o-mini'); // last key wins
        expect([...out.matchAll(/"(?:model|\\u006dodel)":"([^"]*)"/g)].map((m) => m[1])).toEqual([
          'gpt-4o-mini',
          'gpt-4o-mini',
          'gpt-4o-mini',
        ]);
      });

      it('dodge: JSON whitespace anywhere around the key', () => {
        for (const body of [
          ' \r\n\t{ "model" \n:\t "gpt-4o" ,"stream" : true }\n',
          '{\r\n  "messages": [ ],\r\n  "model"\r\n  :\r\n  "gpt-4o"\r\n}',
        ]) {
          const out = rewritten(run(lua, REROUTE, body));
          expect(JSON.parse(out).model).toBe('gpt-4o-mini');
          expect(out.replace('gpt-4o-mini', 'gpt-4o')).toBe(body);
        }
      });

      it('dodge: nested "model" keys (metadata.model, tools[].model, strings) are not the model', () => {
        const body = JSON.stringify({
          metadata: { model: 'nested' },
          tools: [{ model: 'in-array', x: ['{"model":"s"}'] }],
          model: 'gpt-4o',
          stream: true,
        });
        const out = JSON.parse(rewritten(run(lua, REROUTE, body)));
        expect(out).toEqual({ ...JSON.parse(body), model: 'gpt-4o-mini' });
        // ...and only nested ones: nothing to reroute, so the request is refused
        const only = run(lua, REROUTE, JSON.stringify({ metadata: { model: 'gpt-4o' }, messages: [] }));
        expect(only.kind).toBe('respond');
        expect(only.detail).toBe('400');
      });

      it('a model name that needs JSON escapes is escaped', () => {
        const model = 'evil"name\\\tx';
        const out = rewritten(run(lua, { 'x-tollgate-model': model }, '{"model":"gpt-4o"}'));
        expect(JSON.parse(out).model).toBe(model);
      });

      it('fails closed: a local JSON 4xx/5xx whenever the rewrite cannot be made', () => {
        const cases: Array<[string | undefined, string]> = [
          ['not json', '400'],
          ['{"model":"gpt-4o"', '400'], // truncated (a partial body)
          ['{"model":"gpt-4o"} {}', '400'], // trailing data
          ['[{"model":"gpt-4o"}]', '400'], // not an object
          ['{"model":5}', '400'],
          ['{"model":"a","model":{"x":1}}', '400'], // a duplicate that is not a string
          ['{"model":"gpt\u0001-4o"}', '400'], // raw control character: not JSON
          ['{"model":"gpt-4o","x":01}', '400'],
          ['{"model":"gpt-4o",}', '400'],
          ['{"model":"\\x"}', '400'], // bad escape
          ['{"messages":[]}', '400'], // no model at all
          ['', '400'],
          [undefined, '400'], // no body
        ];
        for (const [body, status] of cases) {
          const o = run(lua, REROUTE, body);
          expect(o.kind, String(body)).toBe('respond');
          expect(o.detail, String(body)).toBe(status);
          expect(o.headers['content-type']).toBe('application/json');
          expect(JSON.parse(o.body.toString()).error.code).toBe('reroute_not_applied');
        }
        const empty = run(lua, { 'x-tollgate-model': '' }, '{"model":"gpt-4o"}');
        expect([empty.kind, empty.detail]).toEqual(['respond', '500']);
      });

      it('property: any JSON object with a top-level model, any layout, becomes the same object with the new model', () => {
        const key = fc.stringMatching(/^[a-z_]{1,8}$/).filter((k) => k !== 'model');
        fc.assert(
          fc.property(
            fc.dictionary(key, fc.jsonValue({ maxDepth: 3 }), { maxKeys: 6 }),
            fc.nat(6),
            fc.constantFrom(0, 2, '\t'),
            fc.string({ maxLength: 12 }),
            (obj, at, indent, oldModel) => {
              const entries = Object.entries(obj);
              entries.splice(Math.min(at, entries.length), 0, ['model', oldModel]);
              const src = Object.fromEntries(entries);
              const body = JSON.stringify(src, null, indent as any);
              const out = rewritten(run(lua, REROUTE, body));
              expect(JSON.parse(out)).toEqual({ ...JSON.parse(body), model: 'gpt-4o-mini' });
            },
          ),
          { numRuns: 25, seed: 26 },
        );
      });
    });
  }
});
