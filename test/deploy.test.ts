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
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Valkey } from 'iovalkey';
import { loadAll as loadAllYaml, load as loadYaml } from 'js-yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { validateConfig } from '../src/config/schema.js';

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
  const container = (name: string) => dep().spec.template.spec.containers.find((c: any) => c.name === name);
  const portNumber = (c: any, port: number | string) =>
    typeof port === 'number' ? port : c.ports.find((p: any) => p.name === port)?.containerPort;

  it('has the envoy and tollgate containers', () => {
    expect(dep()).toBeDefined();
    expect(
      dep()
        .spec.template.spec.containers.map((c: any) => c.name)
        .sort(),
    ).toEqual(['envoy', 'tollgate']);
    expect(container('envoy').image).toBe('envoyproxy/envoy:v1.31-latest');
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
    for (const c of spec.containers) {
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
    expect(tenant.findIndex((x) => 'api_key' in x)).toBeLessThan(tenant.findIndex((x) => 'header' in x));
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
      expect(byKind('NetworkPolicy').map((n) => n.metadata.name)).toEqual(['llm-gateway']);
      if (dir.endsWith('with-valkey')) {
        expect(byKind('StatefulSet').map((s) => s.metadata.name)).toEqual(['valkey']);
        const secret = byKind('Secret').find((s) => s.metadata.name.startsWith('tollgate-valkey'))!;
        expect(secret).toBeDefined();
        const tollgate = dep.spec.template.spec.containers.find((c: any) => c.name === 'tollgate');
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
  for (const f of readdirSync(join(REPO, 'lua')).filter((x) => x.endsWith('.lua'))) {
    for (const m of readFileSync(join(REPO, 'lua', f), 'utf8').matchAll(
      /redis\.p?call\(\s*['"]([A-Za-z]+)['"]/g,
    )) {
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
    const source = readFileSync(join(REPO, 'lua/check-limits.lua'), 'utf8');
    const sha = (await c.script('LOAD', source)) as string;
    expect(await c.script('EXISTS', sha)).toEqual([1]);
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
          default:
            throw new Error(`test: add a probe for ${cmd} (new command in lua/)`);
        }
      })
      .join('\n')}\nreturn 1`;
    const probeKeys = ['tollgate:acl-test:k', 'tollgate:acl-test:q'];
    expect(await c.eval(probe, 2, ...probeKeys)).toBe(1);
    expect(await c.evalsha((await c.script('LOAD', probe)) as string, 2, ...probeKeys)).toBe(1);
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

  it('EnvoyFilter: same workload; clear_route_cache on ext_authz; header strip inserted before it', () => {
    const ef = find('EnvoyFilter')!;
    expect(ef.spec.workloadSelector.labels).toEqual(find('AuthorizationPolicy')!.spec.selector.matchLabels);
    const patches = ef.spec.configPatches;
    for (const p of patches) {
      expect(p.applyTo).toBe('HTTP_FILTER');
      expect(p.match.listener.filterChain.filter.subFilter.name).toBe('envoy.filters.http.ext_authz');
    }
    const merge = patches.find((p: any) => p.patch.operation === 'MERGE');
    expect(merge.patch.value.typed_config.clear_route_cache).toBe(true);
    const insert = patches.find((p: any) => p.patch.operation === 'INSERT_BEFORE');
    expect(insert.patch.value.typed_config['@type']).toMatch(/header_mutation\.v3\.HeaderMutation$/);
    expect(insert.patch.value.typed_config.mutations.request_mutations.map((m: any) => m.remove)).toContain(
      'x-tollgate-model',
    );
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
