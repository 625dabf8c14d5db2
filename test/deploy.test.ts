/**
 * deploy/: every YAML parses, the Kubernetes/Istio objects have the structure tollgate relies on,
 * the kustomizations render with kubectl, the Valkey ACL admits exactly what tollgate sends (live
 * check against valkey-server) and the Dockerfile follows the package layout.
 *
 * Tools: kubectl (Debian: `apt-get install -y kubernetes-client`) and valkey-server
 * (scripts/install-valkey.sh). Missing tools FAIL the tests, with the install command; they are
 * never skipped silently. KUBECTL / VALKEY_SERVER may point at a specific binary.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Valkey } from 'iovalkey';
import { loadAll as loadAllYaml, load as loadYaml } from 'js-yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/load.js';
import { validateConfig } from '../src/config/schema.js';
import type { IdentitySource } from '../src/config/types.js';
import * as luaScripts from '../src/store/lua.generated.js';

const REPO = join(dirname(fileURLToPath(import.meta.url)), '..');
const DEPLOY = join(REPO, 'deploy');
const K8S = join(DEPLOY, 'kubernetes');
const KUSTOMIZATIONS = ['deploy/kubernetes', 'deploy/kubernetes/overlays/with-valkey'];
const KUBECTL = process.env.KUBECTL || 'kubectl';
const VALKEY_SERVER = process.env.VALKEY_SERVER || 'valkey-server';
const KUBECTL_HELP =
  'kubectl is required for this test: install it (Debian bookworm: `apt-get install -y kubernetes-client`, ' +
  'which provides kubectl 1.20 with kustomize v2.0.3) or set KUBECTL=/path/to/kubectl';
const VALKEY_HELP =
  'valkey-server is required for this test: run `bash scripts/install-valkey.sh` or set VALKEY_SERVER';

type K8sObject = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; [k: string]: any };
  [k: string]: any;
};

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? walk(p) : [p];
  });
}

const yamlFiles = walk(DEPLOY).filter((f) => /\.ya?ml$/.test(f));
/** Parsed documents of every YAML file under deploy/, keyed by repo-relative path. */
const docsByFile = new Map<string, any[]>();
const parseErrors: string[] = [];
for (const f of yamlFiles) {
  try {
    docsByFile.set(
      relative(REPO, f),
      loadAllYaml(readFileSync(f, 'utf8')).filter((d) => d != null),
    );
  } catch (err) {
    parseErrors.push(`${relative(REPO, f)}: ${(err as Error).message}`);
  }
}
/** Kubernetes-style objects (have apiVersion + kind); envoy.yaml and tollgate.yaml are not. */
const objects: (K8sObject & { file: string })[] = [...docsByFile].flatMap(([file, docs]) =>
  docs.filter((d) => d?.apiVersion && d?.kind).map((d) => ({ ...d, file })),
);
const find = (kind: string, name?: string) =>
  objects.find((o) => o.kind === kind && (name === undefined || o.metadata?.name === name));

describe('deploy/ YAML files', () => {
  it('all parse (multi-document aware)', () => {
    expect(yamlFiles.length).toBeGreaterThanOrEqual(12);
    expect(parseErrors).toEqual([]);
  });

  it('contain the expected kinds', () => {
    const kinds = new Set(objects.map((o) => o.kind));
    for (const k of [
      'Kustomization',
      'Deployment',
      'Service',
      'PodMonitor',
      'PrometheusRule',
      'StatefulSet',
      'IstioOperator',
      'AuthorizationPolicy',
      'EnvoyFilter',
      'NetworkPolicy',
    ]) {
      expect(kinds, k).toContain(k);
    }
  });
});

describe('Kubernetes base: Deployment llm-gateway', () => {
  const dep = () => find('Deployment', 'llm-gateway')!;
  const allContainers = () => [
    ...(dep().spec.template.spec.initContainers ?? []),
    ...dep().spec.template.spec.containers,
  ];
  const container = (name: string) => allContainers().find((c: any) => c.name === name);
  const portNumber = (c: any, port: number | string) =>
    typeof port === 'number' ? port : c.ports.find((p: any) => p.name === port)?.containerPort;

  it('has the envoy and tollgate containers', () => {
    expect(dep()).toBeDefined();
    expect(
      allContainers()
        .map((c: any) => c.name)
        .sort(),
    ).toEqual(['envoy', 'tollgate']);
    expect(portNumber(container('envoy'), 'http')).toBe(10000);
    // gRPC :9191 is bound to the Pod's loopback (issue 19): not a container port any more
    expect(container('tollgate').ports.map((p: any) => p.containerPort)).toEqual([8181]);
    expect(portNumber(container('tollgate'), 'http-metrics')).toBe(8181);
  });

  it('probes: tollgate readiness GET /readyz :8181 (gRPC is loopback-only), liveness GET /healthz :8181; envoy probed too', () => {
    const t = container('tollgate');
    expect(t.readinessProbe.httpGet.path).toBe('/readyz');
    expect(portNumber(t, t.readinessProbe.httpGet.port)).toBe(8181);
    expect(t.livenessProbe.httpGet.path).toBe('/healthz');
    expect(portNumber(t, t.livenessProbe.httpGet.port)).toBe(8181);
    const e = container('envoy');
    expect(e.readinessProbe).toBeDefined();
    expect(e.livenessProbe).toBeDefined();
  });

  it('runs non-root with a read-only root filesystem and resource limits', () => {
    const spec = dep().spec.template.spec;
    expect(spec.securityContext.runAsNonRoot).toBe(true);
    for (const c of allContainers()) {
      expect(c.securityContext.readOnlyRootFilesystem, c.name).toBe(true);
      expect(c.securityContext.allowPrivilegeEscalation, c.name).toBe(false);
      expect(c.securityContext.runAsUser, c.name).toBeGreaterThan(0);
      expect(c.securityContext.capabilities.drop, c.name).toContain('ALL');
      expect(c.resources.requests.cpu, c.name).toBeDefined();
      expect(c.resources.limits.memory, c.name).toBeDefined();
    }
  });

  it('tollgate gets its config from a ConfigMap at /etc/tollgate/tollgate.yaml and VALKEY_URL from a Secret', () => {
    const t = container('tollgate');
    const env = Object.fromEntries(t.env.map((e: any) => [e.name, e]));
    expect(env.TOLLGATE_CONFIG.value).toBe('/etc/tollgate/tollgate.yaml');
    expect(env.VALKEY_URL.valueFrom.secretKeyRef).toEqual({ name: 'tollgate-valkey', key: 'url' });
    const mount = t.volumeMounts.find((m: any) => m.mountPath === '/etc/tollgate');
    const vol = dep().spec.template.spec.volumes.find((v: any) => v.name === mount.name);
    expect(vol.configMap.name).toBe('llm-gateway-tollgate');
    const envoyMount = container('envoy').volumeMounts.find((m: any) => m.mountPath === '/etc/envoy');
    const envoyVol = dep().spec.template.spec.volumes.find((v: any) => v.name === envoyMount.name);
    expect(envoyVol.configMap.name).toBe('llm-gateway-envoy');
    expect(container('envoy').args).toEqual(expect.arrayContaining(['-c', '/etc/envoy/envoy.yaml']));
  });

  it('Service maps 80 -> envoy :10000 and exposes 8181 for metrics; PodMonitor scrapes http-metrics /metrics', () => {
    const svc = find('Service', 'llm-gateway')!;
    const http = svc.spec.ports.find((p: any) => p.port === 80);
    expect(portNumber(container('envoy'), http.targetPort)).toBe(10000);
    const metrics = svc.spec.ports.find((p: any) => p.port === 8181);
    expect(portNumber(container('tollgate'), metrics.targetPort)).toBe(8181);
    expect(svc.spec.selector).toEqual(dep().spec.selector.matchLabels);
    const pm = find('PodMonitor')!;
    expect(pm.apiVersion).toBe('monitoring.coreos.com/v1');
    expect(pm.spec.podMetricsEndpoints[0]).toMatchObject({ port: 'http-metrics', path: '/metrics' });
    expect(pm.spec.selector.matchLabels).toEqual(dep().spec.selector.matchLabels);
  });

  it('tollgate.yaml in the ConfigMap is a valid tollgate config', () => {
    const raw = loadYaml(readFileSync(join(K8S, 'base/tollgate.yaml'), 'utf8'));
    const cfg = validateConfig(raw, 'deploy/kubernetes/base/tollgate.yaml');
    expect(Object.keys(cfg.identity).sort()).toEqual(['team', 'tenant']);
    expect(cfg.models.get('gpt-4o')?.fallback).toEqual(['gpt-4o-mini']);
    expect(cfg.models.get('gpt-4o-mini')?.encoding).toBe('o200k_base');
    expect(cfg.defaultModel.defaultMaxOutputTokens).toBe(1024);
    expect(cfg.limits.map((l) => l.name)).toEqual(['tenant-requests', 'tenant-tokens', 'team-spend']);
    expect(cfg.server).toMatchObject({
      grpcHost: '127.0.0.1',
      grpcPort: 9191,
      httpPort: 8181,
      decisionDeadlineMs: 50,
    });
    expect(cfg.server.httpAuthz).toBeUndefined(); // the HTTP authorization mode stays off
    // no client-settable header outranks the API key
    const tenant = cfg.identity.tenant.sources;
    const header = tenant.findIndex((x) => 'header' in x);
    if (header >= 0) expect(tenant.findIndex((x) => 'api_key' in x)).toBeLessThan(header);
    for (const dim of Object.values(cfg.identity))
      for (const src of dim.sources)
        if ('header' in src) expect(src.header).not.toMatch(/^x-(tenant|team)-id$/);
    expect(cfg.store.prefix).toBe('tollgate');
    expect(cfg.store.replicas).toBe(find('Deployment', 'llm-gateway')!.spec.replicas);
  });

  it('a NetworkPolicy admits remote peers only to Envoy :10000 and the metrics port :8181, never to the authorization ports', () => {
    const np = find('NetworkPolicy', 'llm-gateway')!;
    expect(np).toBeDefined();
    expect(np.spec.podSelector.matchLabels).toEqual(dep().spec.selector.matchLabels);
    expect(np.spec.policyTypes).toEqual(['Ingress']);
    const ports = np.spec.ingress.flatMap((r: any) => (r.ports ?? []).map((p: any) => p.port));
    expect(ports.sort()).toEqual([10000, 8181]);
    // every rule names its ports (a rule without ports would admit every port, 9191 included)
    for (const r of np.spec.ingress) expect(r.ports?.length).toBeGreaterThan(0);
    expect(readFileSync(join(K8S, 'base/kustomization.yaml'), 'utf8')).toMatch(/- networkpolicy\.yaml/);
  });

  it('the Valkey StatefulSet runs valkey/valkey:8 non-root with the valkey.conf ConfigMap', () => {
    const sts = find('StatefulSet', 'valkey')!;
    const c = sts.spec.template.spec.containers[0];
    expect(c.image).toBe('valkey/valkey:8');
    expect(sts.spec.template.spec.securityContext.runAsNonRoot).toBe(true);
    expect(c.command).toEqual(['valkey-server', '/etc/valkey/valkey.conf']);
    expect(find('Service', 'valkey')).toBeDefined();
  });
});

describe('kustomizations (static: referenced files exist and parse)', () => {
  const kustomizations = [...docsByFile].filter(([f]) => f.endsWith('kustomization.yaml'));

  it('every resources/bases entry and configMapGenerator file exists', () => {
    expect(kustomizations.length).toBeGreaterThanOrEqual(4);
    for (const [file, [k]] of kustomizations) {
      const dir = join(REPO, dirname(file));
      for (const r of [...(k.resources ?? []), ...(k.bases ?? [])]) {
        const p = join(dir, r);
        expect(existsSync(p), `${file}: ${r}`).toBe(true);
        if (statSync(p).isDirectory())
          expect(existsSync(join(p, 'kustomization.yaml')), `${file}: ${r}`).toBe(true);
        else expect(() => loadAllYaml(readFileSync(p, 'utf8')), `${file}: ${r}`).not.toThrow();
      }
      for (const g of k.configMapGenerator ?? []) {
        for (const f of g.files ?? []) {
          const p = join(dir, f);
          expect(existsSync(p), `${file}: ${f}`).toBe(true);
          // kustomize refuses files outside the kustomization root
          expect(relative(dir, p).startsWith('..'), `${file}: ${f} is outside the kustomization root`).toBe(
            false,
          );
        }
      }
    }
  });

  it('the copies (envoy.yaml, valkey.conf) match their originals', () => {
    const body = (f: string) => readFileSync(join(REPO, f), 'utf8').replace(/^[\s\S]*?^admin:/m, 'admin:');
    expect(body('deploy/kubernetes/base/envoy.yaml')).toBe(body('envoy.yaml'));
    expect(readFileSync(join(K8S, 'valkey/valkey.conf'), 'utf8')).toBe(
      readFileSync(join(DEPLOY, 'valkey/valkey.conf'), 'utf8'),
    );
  });
});

describe('kustomizations render with kubectl', () => {
  const haveKubectl = () => {
    const r = spawnSync(KUBECTL, ['version', '--client'], { encoding: 'utf8', timeout: 30_000 });
    return !r.error;
  };
  const render = (dir: string): K8sObject[] => {
    const r = spawnSync(KUBECTL, ['kustomize', join(REPO, dir)], { encoding: 'utf8', timeout: 60_000 });
    if (r.error) throw r.error;
    if (r.status !== 0) throw new Error(`kubectl kustomize ${dir} failed:\n${r.stderr}`);
    return loadAllYaml(r.stdout).filter(Boolean) as K8sObject[];
  };

  it('kubectl is installed (required, not skipped)', () => {
    expect(haveKubectl(), KUBECTL_HELP).toBe(true);
  });

  for (const dir of KUSTOMIZATIONS) {
    it(`kubectl kustomize ${dir}`, () => {
      if (!haveKubectl()) throw new Error(KUBECTL_HELP);
      const out = render(dir);
      const byKind = (k: string) => out.filter((o) => o.kind === k);
      const dep = byKind('Deployment').find((d) => d.metadata.name === 'llm-gateway')!;
      expect(dep).toBeDefined();
      // Generated (hash-suffixed) ConfigMaps exist and the Deployment refers to them.
      const cms = byKind('ConfigMap').map((c) => c.metadata.name);
      for (const v of dep.spec.template.spec.volumes.filter((x: any) => x.configMap)) {
        expect(cms, v.name).toContain(v.configMap.name);
      }
      const envoyCm = byKind('ConfigMap').find((c) => c.metadata.name.startsWith('llm-gateway-envoy'))!;
      expect(envoyCm.data['envoy.yaml']).toContain('envoy.filters.http.ext_authz');
      const tgCm = byKind('ConfigMap').find((c) => c.metadata.name.startsWith('llm-gateway-tollgate'))!;
      expect(() => validateConfig(loadYaml(tgCm.data['tollgate.yaml']))).not.toThrow();
      expect(byKind('Service').map((s) => s.metadata.name)).toContain('llm-gateway');
      expect(byKind('PodMonitor')).toHaveLength(1);
      expect(byKind('PrometheusRule')).toHaveLength(1);
      expect(tgCm.data['keys.yaml']).toContain('keys:');
      expect(byKind('NetworkPolicy').map((n) => n.metadata.name)).toEqual(['llm-gateway']);
      if (dir.endsWith('with-valkey')) {
        expect(byKind('StatefulSet').map((s) => s.metadata.name)).toEqual(['valkey']);
        const secret = byKind('Secret').find((s) => s.metadata.name.startsWith('tollgate-valkey'))!;
        expect(secret).toBeDefined();
        const tollgate = dep.spec.template.spec.initContainers.find((c: any) => c.name === 'tollgate');
        const ref = tollgate.env.find((e: any) => e.name === 'VALKEY_URL').valueFrom.secretKeyRef;
        expect(ref.name).toBe(secret.metadata.name);
        const url = Buffer.from(secret.data.url, 'base64').toString();
        expect(url).toMatch(/^valkey:\/\/tollgate:[^@]+@valkey:6379$/);
        const sts = byKind('StatefulSet')[0];
        expect(cms).toContain(sts.spec.template.spec.volumes[0].configMap.name);
      } else {
        expect(byKind('StatefulSet')).toHaveLength(0);
      }
    });
  }
});

// ------------------------------------------------------------------------------------------------
// Valkey: config choices + the ACL, live
// ------------------------------------------------------------------------------------------------

const VALKEY_CONF = readFileSync(join(DEPLOY, 'valkey/valkey.conf'), 'utf8');
const confValue = (key: string) =>
  VALKEY_CONF.split('\n')
    .find((l) => l.startsWith(`${key} `))
    ?.slice(key.length + 1)
    .trim();

/** Commands the check script calls through redis.call: the ACL applies to them too. */
function scriptCommands(): string[] {
  const cmds = new Set<string>();
  for (const script of Object.values(luaScripts)) {
    for (const m of script.source.matchAll(/redis\.p?call\(\s*['"]([A-Za-z]+)['"]/g)) {
      cmds.add(m[1].toLowerCase());
    }
  }
  return [...cmds];
}

describe('deploy/valkey/valkey.conf', () => {
  it('settings: noeviction, maxmemory 256mb, hz 100, keepalive, no idle timeout, default user off', () => {
    expect(confValue('maxmemory-policy')).toBe('noeviction');
    expect(confValue('maxmemory')).toBe('256mb');
    expect(confValue('hz')).toBe('100');
    expect(confValue('tcp-keepalive')).toBe('300');
    expect(confValue('timeout')).toBe('0');
    expect(VALKEY_CONF).toMatch(/^user default off$/m);
    expect(VALKEY_CONF).not.toMatch(/^maxmemory-policy allkeys/m);
  });

  it('the tollgate ACL user allows every command the Lua script calls', () => {
    const acl = VALKEY_CONF.split('\n').find((l) => l.startsWith('user tollgate '))!;
    const allowed = new Set(
      acl
        .split(/\s+/)
        .filter((t) => t.startsWith('+'))
        .map((t) => t.slice(1).toLowerCase()),
    );
    const cmds = scriptCommands();
    expect(cmds.length).toBeGreaterThan(0);
    for (const c of cmds) expect(allowed, `+${c} missing from the ACL (lua/ calls it)`).toContain(c);
  });
});

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

describe('valkey.conf ACL against a real valkey-server', () => {
  let server: ChildProcess | undefined;
  let port = 0;
  let dataDir = '';
  let startError: string | undefined;
  let serverLog = '';
  const clients: Valkey[] = [];
  const connect = async (username?: string, password?: string) => {
    const c = new Valkey({
      host: '127.0.0.1',
      port,
      username,
      password,
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      enableReadyCheck: false,
      retryStrategy: () => null,
    });
    c.on('error', () => {});
    clients.push(c);
    await c.connect();
    return c;
  };

  beforeAll(async () => {
    const probe = spawnSync(VALKEY_SERVER, ['--version'], { encoding: 'utf8' });
    if (probe.error) {
      startError = VALKEY_HELP;
      return;
    }
    port = await freePort();
    dataDir = mkdtempSync(join(tmpdir(), 'tollgate-valkey-conf-'));
    // The real file, with only the listener/persistence location overridden for the test.
    server = spawn(
      VALKEY_SERVER,
      [
        join(DEPLOY, 'valkey/valkey.conf'),
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
        '--dir',
        dataDir,
        '--save',
        '',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    server.stdout?.on('data', (d) => (serverLog += d));
    server.stderr?.on('data', (d) => (serverLog += d));
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      if (server.exitCode !== null) break;
      if (serverLog.includes('Ready to accept connections')) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    await new Promise((r) => setTimeout(r, 100)); // let the exit message arrive
    startError = `valkey-server did not start with deploy/valkey/valkey.conf (invalid directive or ACL rule?):\n${serverLog}`;
  }, 15_000);

  afterAll(async () => {
    for (const c of clients) c.disconnect();
    if (server && server.exitCode === null) {
      const exited = new Promise((r) => server!.once('exit', r));
      server.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 3000))]);
    }
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  it('valkey-server accepts the file (every ACL category/command name is valid)', () => {
    expect(startError).toBeUndefined();
  });

  it('user tollgate can do what tollgate does; other keys and admin commands are denied', async () => {
    if (startError) throw new Error(startError);
    const c = await connect('tollgate', 'CHANGE_ME');
    expect(await c.ping()).toBe('PONG');
    expect(await c.client('SETNAME', 'tollgate')).toBe('OK');
    expect(await c.info('server')).toMatch(/valkey_version|redis_version/);
    expect(await c.call('HELLO', '2')).toBeTruthy();
    expect(await c.time()).toHaveLength(2);
    // The real script loads, and every command it calls is allowed from inside a script.
    const source = luaScripts.checkLimits.source;
    const sha = (await c.script('LOAD', source)) as string;
    expect(await c.script('EXISTS', sha)).toEqual([1]);
    // every other script too (settle, queue release, the admin API's adjust-limit), by its own SHA
    for (const script of Object.values(luaScripts))
      expect(await c.script('LOAD', script.source), script.name).toBe(script.sha);
    const probe = `${scriptCommands()
      .map((cmd) => {
        switch (cmd) {
          case 'time':
            return "redis.call('TIME')";
          case 'hmget':
            return "redis.call('HMGET', KEYS[1], 'v')";
          case 'hset':
            return "redis.call('HSET', KEYS[1], 'v', 1)";
          case 'pexpire':
            return "redis.call('PEXPIRE', KEYS[1], 60000)";
          // the queue tier appends to a stream (KEYS[2] here)
          case 'xlen':
            return "redis.call('XLEN', KEYS[2])";
          case 'xadd':
            return "redis.call('XADD', KEYS[2], '*', 'id', 'x')";
          // the queue tier's byte accounting and the consumer's release (lua/queue-release.lua)
          case 'xrange':
            return "redis.call('XRANGE', KEYS[2], '-', '+')";
          case 'xdel':
            return "redis.call('XDEL', KEYS[2], '0-1')";
          case 'xack':
            return "redis.call('XACK', KEYS[2], 'g', '0-1')";
          case 'hincrby':
            return "redis.call('HINCRBY', KEYS[1], 'b', 1)";
          case 'hdel':
            return "redis.call('HDEL', KEYS[1], 'b')";
          case 'pttl':
            return "redis.call('PTTL', KEYS[1])";
          // concurrency limits' slots (a sorted set, KEYS[3] here)
          case 'zadd':
            return "redis.call('ZADD', KEYS[3], 1, 'm')";
          case 'zrem':
            return "redis.call('ZREM', KEYS[3], 'm')";
          case 'zrange':
            return "redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')";
          case 'zcard':
            return "redis.call('ZCARD', KEYS[3])";
          case 'zremrangebyscore':
            return "redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', 0)";
          default:
            throw new Error(`test: add a probe for ${cmd} (new command in lua/)`);
        }
      })
      .join('\n')}\nreturn 1`;
    const probeKeys = ['tollgate:acl-test:k', 'tollgate:acl-test:q', 'tollgate:acl-test:z'];
    expect(await c.eval(probe, 3, ...probeKeys)).toBe(1);
    expect(await c.evalsha((await c.script('LOAD', probe)) as string, 3, ...probeKeys)).toBe(1);
    // Streams.
    const id = await c.xadd('tollgate:acl-test:s', '*', 'f', 'v');
    expect(id).toBeTruthy();
    expect(await c.xlen('tollgate:acl-test:s')).toBe(1);
    expect(await c.xgroup('CREATE', 'tollgate:acl-test:s', 'g', '0')).toBe('OK');
    const read = (await c.xreadgroup(
      'GROUP',
      'g',
      'c1',
      'COUNT',
      1,
      'STREAMS',
      'tollgate:acl-test:s',
      '>',
    )) as any;
    expect(read[0][1][0][0]).toBe(id);
    expect(await c.xack('tollgate:acl-test:s', 'g', id as string)).toBe(1);
    // Denied: keys outside tollgate:*, plain data commands, admin commands.
    await expect(c.eval("return redis.call('HSET', KEYS[1], 'v', 1)", 1, 'other:k')).rejects.toThrow(
      /NOPERM/,
    );
    await expect(c.set('tollgate:x', '1')).rejects.toThrow(/NOPERM/);
    await expect(c.flushall()).rejects.toThrow(/NOPERM/);
    await expect(c.config('GET', 'maxmemory')).rejects.toThrow(/NOPERM/);
    await expect(c.keys('*')).rejects.toThrow(/NOPERM/);
  });

  it('the default user is off', async () => {
    if (startError) throw new Error(startError);
    const c = await connect();
    await expect(c.ping()).rejects.toThrow(/NOAUTH|NOPERM/);
  });
});

// ------------------------------------------------------------------------------------------------
// Istio
// ------------------------------------------------------------------------------------------------

describe('deploy/istio', () => {
  const provider = () =>
    find('IstioOperator')!.spec.meshConfig.extensionProviders.find(
      (p: any) => p.name === 'tollgate-ext-authz',
    );

  it('mesh-config: gRPC provider with a short timeout, fail-open, body packed as bytes', () => {
    const grpc = provider().envoyExtAuthzGrpc;
    expect(grpc.port).toBe(9191);
    expect(grpc.service).toMatch(/^tollgate\.[a-z0-9-]+\.svc\.cluster\.local$|^localhost$|\.local$/);
    const seconds = Number(/^(\d+(?:\.\d+)?)s$/.exec(grpc.timeout)![1]);
    expect(seconds).toBeGreaterThan(0.05);
    expect(seconds).toBeLessThan(1);
    expect(grpc.failOpen).toBe(true);
    // Same body settings as envoy.yaml's ext_authz filter.
    const envoy = loadYaml(readFileSync(join(REPO, 'envoy.yaml'), 'utf8')) as any;
    const ea = envoy.static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters.find(
      (f: any) => f.name === 'envoy.filters.http.ext_authz',
    ).typed_config;
    expect(grpc.includeRequestBodyInCheck).toEqual({
      maxRequestBytes: ea.with_request_body.max_request_bytes,
      allowPartialMessage: ea.with_request_body.allow_partial_message,
      packAsBytes: ea.with_request_body.pack_as_bytes,
    });
  });

  it('AuthorizationPolicy: CUSTOM via tollgate-ext-authz on /v1/*', () => {
    const ap = find('AuthorizationPolicy')!;
    expect(ap.spec.action).toBe('CUSTOM');
    expect(ap.spec.provider.name).toBe(provider().name);
    expect(ap.spec.rules.flatMap((r: any) => r.to.flatMap((t: any) => t.operation.paths))).toContain('/v1/*');
  });

  it('EnvoyFilter: same workload; all patches pinned to a proxyVersion; clear_route_cache, strip before, Lua and ext_proc after, route header removal', () => {
    const ef = find('EnvoyFilter')!;
    expect(ef.file).toBe('deploy/istio/envoyfilter-tollgate.yaml');
    expect(ef.spec.workloadSelector.labels).toEqual(find('AuthorizationPolicy')!.spec.selector.matchLabels);
    const patches = ef.spec.configPatches;
    expect(patches).toHaveLength(5);
    for (const p of patches) {
      // the filter patches all anchor on the generated ext_authz filter; the route-configuration patch
      // (request_headers_to_remove, checked in test/envoy-config.test.ts) has no filter to match
      if (p.applyTo === 'ROUTE_CONFIGURATION') expect(p.match.listener).toBeUndefined();
      else {
        expect(p.applyTo).toBe('HTTP_FILTER');
        expect(p.match.listener.filterChain.filter.subFilter.name).toBe('envoy.filters.http.ext_authz');
      }
      // item 4: pinned (Istio's EnvoyFilter guidance), to Istio releases whose proxy is Envoy >= 1.35
      const re = new RegExp(p.match.proxy.proxyVersion);
      for (const v of ['1.27.0', '1.28.3', '1.30.1']) expect(re.test(v), v).toBe(true);
      for (const v of ['1.26.4', '1.24.0', '1.31.0', '2.0.0']) expect(re.test(v), v).toBe(false);
    }
    const merge = patches.find((p: any) => p.patch.operation === 'MERGE');
    expect(merge.patch.value.typed_config.clear_route_cache).toBe(true);
    const insert = patches.find((p: any) => p.patch.operation === 'INSERT_BEFORE');
    expect(insert.patch.value.typed_config['@type']).toMatch(/header_mutation\.v3\.HeaderMutation$/);
    // item 4/11: the same strip list as envoy.yaml's (x-tollgate-*, identity headers, fail-open marker)
    const envoy = loadYaml(readFileSync(join(REPO, 'envoy.yaml'), 'utf8')) as any;
    const envoyStrip =
      envoy.static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters
        .find((f: any) => f.name === 'envoy.filters.http.header_mutation')
        .typed_config.mutations.request_mutations.map((m: any) => m.remove);
    const strip = insert.patch.value.typed_config.mutations.request_mutations.map((m: any) => m.remove);
    expect([...strip].sort()).toEqual([...envoyStrip].sort());
    for (const h of ['x-tollgate-model', 'x-tenant-id', 'x-team-id', 'x-envoy-auth-failure-mode-allowed'])
      expect(strip).toContain(h);
    const after = patches.filter((p: any) => p.patch.operation === 'INSERT_AFTER');
    expect(after.map((p: any) => p.patch.value.typed_config['@type']).sort()).toEqual([
      'type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor',
      'type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua',
    ]);
    // (the Lua code is checked against deploy/lua/model-rewrite.lua by test/envoy-lua.test.ts, the
    // ext_proc settings against envoy.yaml's by test/envoy-config.test.ts)
  });

  it('mesh-config and docs no longer call the EnvoyFilter redundant (istiod does not emit clearRouteCache)', () => {
    const meshText = readFileSync(join(DEPLOY, 'istio/mesh-config.yaml'), 'utf8');
    expect(meshText).toMatch(/61558/);
    expect(meshText).not.toMatch(/redundant/);
    for (const f of ['README.md', 'docs/envoy-and-istio.md'])
      expect(readFileSync(join(REPO, f), 'utf8')).not.toMatch(/redundant but\s+harmless/);
  });

  it('item 5: the provider Service ships: tollgate.<ns>.svc on the provider port, port named grpc', () => {
    const grpc = provider().envoyExtAuthzGrpc;
    const m = /^([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local$/.exec(grpc.service);
    expect(m).not.toBeNull();
    const svc = objects.find(
      (o) => o.kind === 'Service' && o.metadata.name === m![1] && o.metadata.namespace === m![2],
    );
    expect(svc?.file).toBe('deploy/istio/tollgate-service.yaml');
    const port = svc!.spec.ports.find((p: any) => p.port === grpc.port);
    expect(port.name).toBe('grpc');
    expect(port.appProtocol).toBe('grpc');
    expect(Object.keys(svc!.spec.selector).length).toBeGreaterThan(0);
  });
});

// ------------------------------------------------------------------------------------------------
// Issue 26: identity that arrives, lifecycle, fail-open that is seen
// ------------------------------------------------------------------------------------------------

const API_KEY_HEADERS = ['authorization', 'x-api-key', 'api-key'];

/**
 * Whether `src` can yield a value given what the Envoy config sends to ext_authz: client headers it
 * strips never arrive, and the ones it does not strip are the client's own (not identity) unless a
 * filter before ext_authz sets them; metadata arrives only for namespaces ext_authz forwards
 * (metadata_context_namespaces) AND that a filter before it produces; the API key headers carry the
 * key for api_key and key_map sources (key_map: only for fields the shipped key map has).
 */
function producible(src: IdentitySource, envoy: any, keyMapFields: Set<string>): boolean {
  const filters: any[] = envoy.static_resources.listeners.find((l: any) => l.name === 'llm_ingress')
    .filter_chains[0].filters[0].typed_config.http_filters;
  const ea = filters.findIndex((f) => f.name === 'envoy.filters.http.ext_authz');
  const before = filters.slice(0, ea);
  const mutations = before
    .filter((f) => f.name === 'envoy.filters.http.header_mutation')
    .flatMap((f) => f.typed_config.mutations.request_mutations);
  const stripped = new Set(mutations.filter((m: any) => m.remove).map((m: any) => m.remove.toLowerCase()));
  const setByEnvoy = new Set(
    mutations.filter((m: any) => m.append).map((m: any) => m.append.header.key.toLowerCase()),
  );
  const keyArrives = API_KEY_HEADERS.some((h) => !stripped.has(h));
  if ('header' in src) return setByEnvoy.has(src.header);
  if ('api_key' in src) return keyArrives;
  if ('key_map' in src) return keyArrives && keyMapFields.has(src.key_map);
  if ('metadata' in src)
    return (
      (filters[ea].typed_config.metadata_context_namespaces ?? []).includes(src.metadata.filter) &&
      before.some((f) => f.name === src.metadata.filter)
    );
  return true; // path_segment, default
}

describe('item 3: the shipped Kubernetes tollgate.yaml gets every identity it limits by from the shipped envoy.yaml', () => {
  const envoy = () => loadYaml(readFileSync(join(K8S, 'base/envoy.yaml'), 'utf8')) as any;
  const usedDims = (cfg: ReturnType<typeof loadConfig>) =>
    new Set(cfg.limits.flatMap((l) => [...l.per, ...Object.keys(l.when ?? {})]));

  it('every dimension a limit uses (per, when) has a source Envoy can produce', () => {
    const cfg = loadConfig(join(K8S, 'base/tollgate.yaml'));
    const fields = new Set([...(cfg.keyMap?.entries.values() ?? [])].flatMap((e) => Object.keys(e)));
    const dims = usedDims(cfg);
    expect([...dims].sort()).toEqual(['team', 'tenant']);
    for (const d of dims) {
      const sources = cfg.identity[d]?.sources ?? [];
      expect(
        sources.some((s) => producible(s, envoy(), fields)),
        `${d}: ${JSON.stringify(sources)}`,
      ).toBe(true);
    }
    // No identity source reads a header a client controls, nor one Envoy strips (dead config).
    for (const [d, dim] of Object.entries(cfg.identity))
      for (const s of dim.sources) if ('header' in s) expect(producible(s, envoy(), fields), d).toBe(true);
  });

  it('the check tells a dead source from a live one', () => {
    const e = envoy();
    const none = new Set<string>();
    expect(producible({ header: 'x-team-id' }, e, none)).toBe(false); // stripped before ext_authz
    expect(producible({ header: 'x-anything' }, e, none)).toBe(false); // client-controlled
    expect(producible({ metadata: { filter: 'envoy.filters.http.jwt_authn', path: ['sub'] } }, e, none)).toBe(
      false,
    ); // no jwt_authn filter, namespace not forwarded
    expect(producible({ api_key: true }, e, none)).toBe(true);
    expect(producible({ key_map: 'team' }, e, none)).toBe(false); // no such field in the key map
    expect(producible({ key_map: 'team' }, e, new Set(['team']))).toBe(true);
  });

  it('the key map ships in the same ConfigMap directory as tollgate.yaml', () => {
    const k = docsByFile.get('deploy/kubernetes/base/kustomization.yaml')![0];
    const gen = k.configMapGenerator.find((g: any) => g.name === 'llm-gateway-tollgate');
    expect(gen.files).toEqual(expect.arrayContaining(['tollgate.yaml', 'keys.yaml']));
  });
});

describe('item 10: Kubernetes lifecycle (drain, start/stop order, concurrency, pinned Envoy)', () => {
  const spec = () => find('Deployment', 'llm-gateway')!.spec.template.spec;
  const envoy = () => spec().containers.find((c: any) => c.name === 'envoy');

  it('tollgate is a native sidecar (init container, restartPolicy Always, startupProbe): up before Envoy, down after it', () => {
    const tg = spec().initContainers.find((c: any) => c.name === 'tollgate');
    expect(tg.restartPolicy).toBe('Always');
    // the kubelet probes the Pod IP; gRPC is bound to the Pod's loopback, so the probe is /readyz
    expect(tg.startupProbe.httpGet).toEqual({ path: '/readyz', port: 'http-metrics' });
    expect(spec().containers.map((c: any) => c.name)).toEqual(['envoy']);
  });

  it("Envoy's preStop drains its listeners, then waits, within terminationGracePeriodSeconds", () => {
    const cmd: string[] = envoy().lifecycle.preStop.exec.command;
    const script = cmd.at(-1)!;
    expect(cmd[0]).toBe('/bin/bash');
    expect(script).toMatch(/\/dev\/tcp\/127\.0\.0\.1\/9901/);
    expect(script).toMatch(/POST \/drain_listeners\?graceful HTTP\/1\.1/);
    const sleep = Number(/sleep (\d+)/.exec(script)![1]);
    expect(sleep).toBeGreaterThanOrEqual(60);
    const args: string[] = envoy().args;
    const drain = Number(args[args.indexOf('--drain-time-s') + 1]);
    expect(drain).toBeLessThan(sleep);
    // the grace period covers Envoy's wait and then tollgate's own shutdown
    expect(spec().terminationGracePeriodSeconds).toBeGreaterThanOrEqual(sleep + 20);
    // the drain goes to the admin address envoy.yaml configures
    const e = loadYaml(readFileSync(join(K8S, 'base/envoy.yaml'), 'utf8')) as any;
    expect(e.admin.address.socket_address).toEqual({ address: '127.0.0.1', port_value: 9901 });
  });

  it('--concurrency equals the container CPU limit', () => {
    const args: string[] = envoy().args;
    const n = Number(args[args.indexOf('--concurrency') + 1]);
    expect(n).toBeGreaterThan(0);
    expect(n).toBe(Number(envoy().resources.limits.cpu));
  });

  it('the Envoy image is a pinned, supported release >= 1.35 (no -latest, no dev)', () => {
    const m = /^envoyproxy\/envoy:v(\d+)\.(\d+)\.(\d+)(@sha256:[0-9a-f]{64})?$/.exec(envoy().image);
    expect(m, envoy().image).not.toBeNull();
    expect(Number(m![1])).toBe(1);
    expect(Number(m![2])).toBeGreaterThanOrEqual(35);
  });

  it('the stats port is exposed and scraped', () => {
    const port = envoy().ports.find((p: any) => p.name === 'envoy-metrics');
    expect(port.containerPort).toBe(9902);
    const pm = find('PodMonitor')!;
    expect(pm.spec.podMetricsEndpoints).toEqual(
      expect.arrayContaining([expect.objectContaining({ port: 'envoy-metrics', path: '/stats/prometheus' })]),
    );
  });
});

describe('item 6: alert rules on fail-open and overflow (promtool)', () => {
  const PROMTOOL = process.env.PROMTOOL || 'promtool';
  const PROMTOOL_HELP =
    'promtool is required for this test: `apt-get install -y --no-install-recommends prometheus` (Debian) or set PROMTOOL';
  const rule = () => find('PrometheusRule')!;
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-promtool-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const rulesFile = () => {
    const f = join(dir, 'rules.yaml');
    writeFileSync(f, JSON.stringify({ groups: rule().spec.groups }));
    return f;
  };

  it('alerts exist for failure_mode_allowed, ext_authz errors, breaker overflow (both counter names), no healthy tollgate', () => {
    const exprs = Object.fromEntries(
      rule()
        .spec.groups.flatMap((g: any) => g.rules)
        .map((r: any) => [r.alert, String(r.expr)]),
    );
    expect(exprs.TollgateChecksFailingOpen).toMatch(/envoy_cluster_ext_authz_failure_mode_allowed/);
    expect(exprs.TollgateExtAuthzErrors).toMatch(/envoy_cluster_ext_authz_error/);
    expect(exprs.TollgateCheckOverflow).toMatch(/upstream_rq_pending_overflow/);
    expect(exprs.TollgateCheckOverflow).toMatch(/upstream_rq_active_overflow/);
    expect(exprs.TollgateCheckOverflow).toMatch(/envoy_cluster_name="tollgate"/);
    expect(exprs.TollgateNotServingEnvoy).toMatch(/envoy_cluster_membership_healthy/);
  });

  it('promtool check rules accepts them', () => {
    const r = spawnSync(PROMTOOL, ['check', 'rules', rulesFile()], { encoding: 'utf8' });
    if (r.error) throw new Error(PROMTOOL_HELP);
    expect(r.stdout + r.stderr).toMatch(/SUCCESS: 6 rules found|SUCCESS: 5 rules found/);
    expect(r.status).toBe(0);
  });

  it('promtool test rules: they fire on the series Envoy exports, and stay quiet without them', () => {
    const rules = Object.fromEntries(
      rule()
        .spec.groups.flatMap((g: any) => g.rules)
        .map((r: any) => [r.alert, r]),
    );
    // the alert as promtool renders it: severity, the series' labels, annotations with templates filled
    const fired = (alert: string, pod: string, value = '') => ({
      exp_labels: { severity: rules[alert].labels.severity, namespace: 'ns', pod },
      exp_annotations: Object.fromEntries(
        Object.entries(rules[alert].annotations ?? {}).map(([k, v]) => [
          k,
          String(v).replaceAll('{{ $labels.pod }}', pod).replaceAll('{{ $value | humanize }}', value),
        ]),
      ),
    });
    const test = {
      rule_files: [rulesFile()],
      evaluation_interval: '1m',
      tests: [
        {
          interval: '1m',
          input_series: [
            {
              series:
                'envoy_cluster_ext_authz_failure_mode_allowed{envoy_cluster_name="openai",namespace="ns",pod="p1"}',
              values: '0+60x15',
            },
            {
              series: 'envoy_cluster_ext_authz_ok{envoy_cluster_name="openai",namespace="ns",pod="p1"}',
              values: '0+600x15',
            },
            {
              series: 'envoy_cluster_ext_authz_error{envoy_cluster_name="openai",namespace="ns",pod="p1"}',
              values: '0+60x15',
            },
            {
              series:
                'envoy_cluster_upstream_rq_active_overflow{envoy_cluster_name="tollgate",namespace="ns",pod="p1"}',
              values: '0+30x15',
            },
            {
              series:
                'envoy_cluster_upstream_rq_pending_overflow{envoy_cluster_name="tollgate",namespace="ns",pod="p1"}',
              values: '0x15',
            },
            {
              series:
                'envoy_cluster_upstream_rq_pending_overflow{envoy_cluster_name="openai",namespace="ns",pod="p2"}',
              values: '0+30x15',
            },
            {
              series:
                'envoy_cluster_membership_healthy{envoy_cluster_name="tollgate",namespace="ns",pod="p1"}',
              values: '0x15',
            },
          ],
          alert_rule_test: [
            // 60 fail-opens a minute = 1/s
            {
              eval_time: '10m',
              alertname: 'TollgateChecksFailingOpen',
              exp_alerts: [fired('TollgateChecksFailingOpen', 'p1', '1')],
            },
            ...['TollgateChecksFailingOpenHigh', 'TollgateExtAuthzErrors', 'TollgateNotServingEnvoy'].map(
              (a) => ({
                eval_time: '10m',
                alertname: a,
                exp_alerts: [fired(a, 'p1')],
              }),
            ),
            // only the tollgate cluster's overflow counts (p2's is a provider cluster's)
            {
              eval_time: '10m',
              alertname: 'TollgateCheckOverflow',
              exp_alerts: [fired('TollgateCheckOverflow', 'p1')],
            },
          ],
        },
        {
          interval: '1m',
          input_series: [
            {
              series: 'envoy_cluster_ext_authz_failure_mode_allowed{namespace="ns",pod="p1"}',
              values: '5x15',
            },
            { series: 'envoy_cluster_ext_authz_ok{namespace="ns",pod="p1"}', values: '0+600x15' },
            {
              series:
                'envoy_cluster_membership_healthy{envoy_cluster_name="tollgate",namespace="ns",pod="p1"}',
              values: '1x15',
            },
          ],
          alert_rule_test: [
            'TollgateChecksFailingOpen',
            'TollgateCheckOverflow',
            'TollgateNotServingEnvoy',
          ].map((a) => ({
            eval_time: '10m',
            alertname: a,
            exp_alerts: [],
          })),
        },
      ],
    };
    const f = join(dir, 'test.yaml');
    writeFileSync(f, JSON.stringify(test));
    const r = spawnSync(PROMTOOL, ['test', 'rules', f], { encoding: 'utf8' });
    if (r.error) throw new Error(PROMTOOL_HELP);
    expect(r.stdout + r.stderr).toMatch(/SUCCESS/);
    expect(r.status).toBe(0);
  });
});

// ------------------------------------------------------------------------------------------------
// Dockerfile
// ------------------------------------------------------------------------------------------------

describe('deploy/Dockerfile', () => {
  const text = readFileSync(join(DEPLOY, 'Dockerfile'), 'utf8');
  const stages = text.split(/^FROM /m).slice(1);
  const runtime = stages.at(-1)!;

  it('multi-stage on node:20-bookworm-slim: build runs npm ci + npm run build', () => {
    expect(stages).toHaveLength(2);
    expect(stages[0]).toMatch(/^node:20-bookworm-slim AS build/);
    expect(stages[0]).toMatch(/^RUN npm ci\s*$/m);
    expect(stages[0]).toMatch(/^RUN npm run build\s*$/m);
    expect(runtime).toMatch(/^node:20-bookworm-slim AS runtime/);
    expect(runtime).toMatch(/npm ci --omit=dev --ignore-scripts/);
  });

  it('the runtime stage ships every entry of package.json "files" plus package*.json', () => {
    const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8'));
    for (const f of pkg.files as string[])
      expect(runtime, f).toMatch(new RegExp(`^COPY .*\\b${f.replace('.', '\\.')}\\b`, 'm'));
    expect(runtime).toMatch(/^COPY package\.json package-lock\.json/m);
    expect(runtime).toMatch(/^COPY --from=build \/app\/dist \.\/dist/m);
  });

  it('sets the glibc malloc settings the bench measured (README: Environment)', () => {
    expect(runtime).toMatch(/^\s+MALLOC_ARENA_MAX=2 \\$/m);
    expect(runtime).toMatch(/^\s+MALLOC_MMAP_THRESHOLD_=131072$/m);
  });

  it('non-root, exposes 9191 8181, health-checks /healthz with node fetch, runs the CLI', () => {
    expect(runtime).toMatch(/^USER node$/m);
    expect(runtime).toMatch(/^EXPOSE 9191 8181$/m);
    expect(runtime).toMatch(/^HEALTHCHECK [\s\S]*fetch\('http:\/\/127\.0\.0\.1:8181\/healthz'\)/m);
    expect(runtime).toMatch(/^CMD \["node", "--max-semi-space-size=8", "dist\/src\/cli\.js", "serve"\]$/m);
    expect(text).toMatch(/docker build -f deploy\/Dockerfile/);
  });
});
