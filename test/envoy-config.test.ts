/**
 * envoy.yaml (and its Kubernetes copy / the Istio EnvoyFilter patches) checked against Envoy's
 * OFFICIAL v3 protos, shipped with @grpc/grpc-js-xds under deps/.
 *
 * protobufjs' Type.fromObject silently ignores unknown keys, so this file has its own strict
 * walker over the proto3 JSON mapping (which is what Envoy applies to YAML configs):
 *  - every key must be a field of the message (proto name or lowerCamel json name);
 *  - nested messages, repeated fields, maps and enums (by name) are checked recursively;
 *  - well-known types use their JSON forms (Duration "0.25s", wrappers as plain scalars,
 *    Struct/Value as anything, ...);
 *  - google.protobuf.Any: "@type" (type.googleapis.com/<full name>) is resolved, the proto
 *    package containing it is loaded on demand, and the rest of the object is validated against
 *    it; an unresolvable type is an error;
 *  - a few protoc-gen-validate rules Envoy enforces at load time (required messages/durations,
 *    required oneofs, at most one member per oneof, string min_len) and deprecated fields.
 * Limitation: the protos come from whatever envoy-api commit grpc-js-xds vendors, which need not be
 * the Envoy image we deploy (v1.40.0): a field those protos have and that image lacks would pass here
 * and fail in Envoy.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadAll as loadAllYaml, load as loadYaml } from 'js-yaml';
import protobuf from 'protobufjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from './helpers/app.js';
import { chat, EnvoyClient } from './helpers/envoy.js';

const require = createRequire(import.meta.url);
const REPO = join(dirname(fileURLToPath(import.meta.url)), '..');
const XDS_DEPS = join(dirname(require.resolve('@grpc/grpc-js-xds/package.json')), 'deps');
// udpa/ and xds/ both live under deps/xds; google/protobuf/descriptor.proto ships with protobufjs.
const INCLUDE_DIRS = [
  ...['envoy-api', 'xds', 'protoc-gen-validate', 'googleapis'].map((d) => join(XDS_DEPS, d)),
  dirname(require.resolve('protobufjs/package.json')),
];

const BOOTSTRAP = 'envoy.config.bootstrap.v3.Bootstrap';
const TYPE_URL_PREFIX = 'type.googleapis.com/';
const ENVOY_FILES = {
  top: join(REPO, 'envoy.yaml'),
  kubernetes: join(REPO, 'deploy/kubernetes/base/envoy.yaml'),
};
const ISTIO_ENVOYFILTER = join(REPO, 'deploy/istio/envoyfilter-tollgate.yaml');

// ---------------------------------------------------------------------------------------------
// Proto loading
// ---------------------------------------------------------------------------------------------

function makeRoot(): protobuf.Root {
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => {
    for (const dir of INCLUDE_DIRS) {
      const full = join(dir, target);
      if (existsSync(full)) return full;
    }
    // google/protobuf/{any,duration,struct,wrappers,...}.proto are built into protobufjs.
    return target;
  };
  return root;
}

/**
 * Resolves fully-qualified message names, loading the proto package that defines them on demand.
 * Envoy/xds protos follow the "package a.b.v3 lives in a/b/v3/" layout, so a type URL names the
 * directory to load. This is how every extension referenced by an "@type" gets loaded.
 */
class ProtoRegistry {
  readonly root = makeRoot();
  private readonly loadedDirs = new Set<string>();

  constructor(initialTypes: string[]) {
    for (const t of initialTypes) this.lookup(t);
  }

  lookup(fullName: string): protobuf.Type | null {
    const found = this.tryLookup(fullName);
    if (found) return found;
    // Package = leading lower-case segments ("envoy.extensions.filters.http.ext_authz.v3").
    const segments = fullName.split('.');
    const pkg: string[] = [];
    for (const s of segments) {
      if (!/^[a-z_][a-z0-9_]*$/.test(s)) break;
      pkg.push(s);
    }
    if (pkg.length === 0 || pkg.length === segments.length) return null;
    const rel = pkg.join('/');
    if (this.loadedDirs.has(rel)) return null;
    this.loadedDirs.add(rel);
    const files: string[] = [];
    for (const dir of INCLUDE_DIRS) {
      const full = join(dir, rel);
      if (!existsSync(full)) continue;
      for (const f of readdirSync(full)) if (f.endsWith('.proto')) files.push(`${rel}/${f}`);
    }
    if (files.length === 0) return null;
    this.root.loadSync(files, { keepCase: true });
    this.root.resolveAll();
    return this.tryLookup(fullName);
  }

  private tryLookup(fullName: string): protobuf.Type | null {
    try {
      return this.root.lookupType(fullName);
    } catch {
      return null;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Strict proto3-JSON walker
// ---------------------------------------------------------------------------------------------

/** protoc's json_name: drop underscores, upper-case the following letter. */
function jsonName(protoName: string): string {
  return protoName.replace(/_([a-z0-9])/g, (_m, c: string) => c.toUpperCase());
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const INT_RE = /^-?\d+$/;
const DURATION_RE = /^-?\d+(\.\d{1,9})?s$/;
const WRAPPERS: Record<string, string> = {
  'google.protobuf.DoubleValue': 'double',
  'google.protobuf.FloatValue': 'float',
  'google.protobuf.Int64Value': 'int64',
  'google.protobuf.UInt64Value': 'uint64',
  'google.protobuf.Int32Value': 'int32',
  'google.protobuf.UInt32Value': 'uint32',
  'google.protobuf.BoolValue': 'bool',
  'google.protobuf.StringValue': 'string',
  'google.protobuf.BytesValue': 'bytes',
};

function fullNameOf(t: protobuf.ReflectionObject): string {
  return t.fullName.replace(/^\./, '');
}

class EnvoyConfigValidator {
  readonly errors: string[] = [];

  constructor(private readonly registry: ProtoRegistry) {}

  /** Validates `value` as message `typeName`; returns the list of problems (empty = valid). */
  static validate(registry: ProtoRegistry, typeName: string, value: unknown): string[] {
    const v = new EnvoyConfigValidator(registry);
    const type = registry.lookup(typeName);
    if (!type) return [`<root>: cannot resolve message type ${typeName}`];
    v.message(type, value, '');
    return v.errors;
  }

  private err(path: string, msg: string): void {
    this.errors.push(`${path || '<root>'}: ${msg}`);
  }

  private message(type: protobuf.Type, value: unknown, path: string, skipKeys: string[] = []): void {
    const name = fullNameOf(type);
    if (value === null) return; // JSON null = field unset
    if (this.wellKnown(name, value, path)) return;
    if (!isPlainObject(value)) {
      this.err(path, `expected an object for ${name}, got ${JSON.stringify(value)}`);
      return;
    }
    const byName = new Map<string, protobuf.Field>();
    for (const f of type.fieldsArray) {
      byName.set(f.name, f);
      byName.set(jsonName(f.name), f);
    }
    const present = new Set<string>();
    for (const [key, v] of Object.entries(value)) {
      if (skipKeys.includes(key)) continue;
      const field = byName.get(key);
      const fieldPath = path ? `${path}.${key}` : key;
      if (!field) {
        this.err(fieldPath, `unknown field "${key}" in ${name}`);
        continue;
      }
      if (present.has(field.name)) {
        this.err(fieldPath, `field ${field.name} given twice (proto and json name)`);
        continue;
      }
      present.add(field.name);
      if (field.options?.deprecated === true)
        this.err(fieldPath, `field ${name}.${field.name} is deprecated`);
      this.field(field, v, fieldPath);
    }
    this.pgvRules(type, value, present, path);
  }

  /** The protoc-gen-validate rules Envoy enforces when loading config (the common ones). */
  private pgvRules(type: protobuf.Type, value: Record<string, unknown>, present: Set<string>, path: string) {
    const name = fullNameOf(type);
    for (const f of type.fieldsArray) {
      // PGV rules on a oneof member only apply when that member is the one set.
      if (f.partOf && !present.has(f.name)) continue;
      const o = (f.options ?? {}) as Record<string, unknown>;
      const required =
        o['(validate.rules).message.required'] === true ||
        o['(validate.rules).duration.required'] === true ||
        o['(validate.rules).timestamp.required'] === true ||
        o['(validate.rules).any.required'] === true;
      if (required && !present.has(f.name)) this.err(path, `required field ${name}.${f.name} is missing`);
      const minLen = o['(validate.rules).string.min_len'] ?? o['(validate.rules).string.min_bytes'];
      if (typeof minLen === 'number' && f.type === 'string' && !f.repeated) {
        const v = value[f.name] ?? value[jsonName(f.name)];
        if ((typeof v === 'string' ? v.length : 0) < minLen) {
          this.err(path, `${name}.${f.name} must have at least ${minLen} character(s)`);
        }
      }
      const minItems = o['(validate.rules).repeated.min_items'];
      if (typeof minItems === 'number' && f.repeated) {
        const v = value[f.name] ?? value[jsonName(f.name)];
        if ((Array.isArray(v) ? v.length : 0) < minItems) {
          this.err(path, `${name}.${f.name} needs at least ${minItems} item(s)`);
        }
      }
    }
    for (const oneof of type.oneofsArray) {
      const set = oneof.fieldsArray.filter((f) => present.has(f.name));
      if (set.length > 1) {
        this.err(path, `oneof ${name}.${oneof.name} has more than one member set: ${set.map((f) => f.name)}`);
      }
      if (oneof.options?.['(validate.required)'] === true && set.length === 0) {
        this.err(
          path,
          `oneof ${name}.${oneof.name} requires one of: ${oneof.fieldsArray.map((f) => f.name)}`,
        );
      }
    }
  }

  private field(field: protobuf.Field, value: unknown, path: string): void {
    if (value === null) return;
    if (field instanceof protobuf.MapField) {
      if (!isPlainObject(value)) {
        this.err(path, `expected an object (map<${field.keyType}, ${field.type}>)`);
        return;
      }
      for (const [k, v] of Object.entries(value)) {
        if (field.keyType !== 'string' && !INT_RE.test(k) && field.keyType !== 'bool') {
          this.err(`${path}.${k}`, `map key must be ${field.keyType}`);
        }
        this.single(field, v, `${path}.${k}`);
      }
      return;
    }
    if (field.repeated) {
      if (!Array.isArray(value)) {
        this.err(path, `expected a list for repeated field ${field.name}`);
        return;
      }
      for (const [i, v] of value.entries()) this.single(field, v, `${path}[${i}]`);
      return;
    }
    this.single(field, value, path);
  }

  private single(field: protobuf.Field, value: unknown, path: string): void {
    const rt = field.resolvedType;
    if (rt instanceof protobuf.Type) this.message(rt, value, path);
    else if (rt instanceof protobuf.Enum) this.enumValue(rt, value, path);
    else this.scalar(field.type, value, path);
  }

  private enumValue(e: protobuf.Enum, value: unknown, path: string): void {
    if (typeof value !== 'string' || !(value in e.values)) {
      this.err(
        path,
        `invalid enum value ${JSON.stringify(value)} for ${fullNameOf(e)} (expected one of ${Object.keys(e.values).join(', ')})`,
      );
    }
  }

  private scalar(type: string, value: unknown, path: string): void {
    const bad = () => this.err(path, `expected ${type}, got ${JSON.stringify(value)}`);
    switch (type) {
      case 'string':
      case 'bytes':
        if (typeof value !== 'string') bad();
        return;
      case 'bool':
        if (typeof value !== 'boolean') bad();
        return;
      case 'double':
      case 'float':
        if (
          typeof value !== 'number' &&
          !(typeof value === 'string' && /^(NaN|-?Infinity|-?[\d.eE+-]+)$/.test(value))
        ) {
          bad();
        }
        return;
      case 'int32':
      case 'sint32':
      case 'sfixed32':
      case 'int64':
      case 'sint64':
      case 'sfixed64':
      case 'uint32':
      case 'fixed32':
      case 'uint64':
      case 'fixed64': {
        const n =
          typeof value === 'number'
            ? value
            : typeof value === 'string' && INT_RE.test(value)
              ? Number(value)
              : NaN;
        if (!Number.isInteger(n) || (type.includes('fixed') || type.startsWith('u') ? n < 0 : false)) bad();
        return;
      }
      default:
        this.err(path, `unresolved field type ${type}`);
    }
  }

  /** JSON forms of google.protobuf well-known types. Returns true when `name` is one. */
  private wellKnown(name: string, value: unknown, path: string): boolean {
    if (name in WRAPPERS) {
      this.scalar(WRAPPERS[name], value, path);
      return true;
    }
    switch (name) {
      case 'google.protobuf.Duration':
        if (typeof value !== 'string' || !DURATION_RE.test(value)) {
          this.err(path, `expected a Duration string like "0.25s", got ${JSON.stringify(value)}`);
        }
        return true;
      case 'google.protobuf.Timestamp':
      case 'google.protobuf.FieldMask':
        if (typeof value !== 'string') this.err(path, `expected a string for ${name}`);
        return true;
      case 'google.protobuf.Struct':
        if (!isPlainObject(value)) this.err(path, 'expected an object for google.protobuf.Struct');
        return true;
      case 'google.protobuf.ListValue':
        if (!Array.isArray(value)) this.err(path, 'expected a list for google.protobuf.ListValue');
        return true;
      case 'google.protobuf.Value':
        return true;
      case 'google.protobuf.Empty':
        if (!isPlainObject(value) || Object.keys(value).length > 0) this.err(path, 'expected {} for Empty');
        return true;
      case 'google.protobuf.Any':
        this.any(value, path);
        return true;
      default:
        return false;
    }
  }

  private any(value: unknown, path: string): void {
    if (!isPlainObject(value)) {
      this.err(path, 'expected an object with "@type" for google.protobuf.Any');
      return;
    }
    const url = value['@type'];
    if (typeof url !== 'string' || !url.startsWith(TYPE_URL_PREFIX)) {
      this.err(path, `Any needs "@type": "${TYPE_URL_PREFIX}<message>", got ${JSON.stringify(url)}`);
      return;
    }
    const typeName = url.slice(TYPE_URL_PREFIX.length);
    const type = this.registry.lookup(typeName);
    if (!type) {
      this.err(path, `cannot resolve @type ${url}`);
      return;
    }
    const fqn = fullNameOf(type);
    if (fqn.startsWith('google.protobuf.') && (fqn in WRAPPERS || this.isSpecialWkt(fqn))) {
      // Any wrapping a WKT with a special JSON form: {"@type": ..., "value": <json>}.
      const extra = Object.keys(value).filter((k) => k !== '@type' && k !== 'value');
      if (extra.length) this.err(path, `unknown keys ${extra} in Any(${fqn})`);
      this.message(type, value.value, `${path}.value`);
      return;
    }
    this.message(type, value, path, ['@type']);
  }

  private isSpecialWkt(fqn: string): boolean {
    return [
      'google.protobuf.Duration',
      'google.protobuf.Timestamp',
      'google.protobuf.FieldMask',
      'google.protobuf.Struct',
      'google.protobuf.ListValue',
      'google.protobuf.Value',
      'google.protobuf.Empty',
      'google.protobuf.Any',
    ].includes(fqn);
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/** YAML -> the JSON value Envoy feeds to its proto3 JSON parser. */
function loadEnvoyYaml(file: string): any {
  return JSON.parse(JSON.stringify(loadYaml(readFileSync(file, 'utf8'))));
}

function listenerHttpFilters(config: any): any[] {
  const listener = config.static_resources.listeners[0];
  const hcm = listener.filter_chains[0].filters.find(
    (f: any) => f.name === 'envoy.filters.network.http_connection_manager',
  );
  return hcm.typed_config.http_filters;
}

function routes(config: any): any[] {
  const listener = config.static_resources.listeners[0];
  const hcm = listener.filter_chains[0].filters[0].typed_config;
  return hcm.route_config.virtual_hosts.flatMap((vh: any) => vh.routes);
}

/** The Envoy message each Istio EnvoyFilter applyTo patches. */
const ISTIO_PATCH_TYPES: Record<string, string> = {
  HTTP_FILTER: 'envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter',
  ROUTE_CONFIGURATION: 'envoy.config.route.v3.RouteConfiguration',
};

function istioPatches(): any[] {
  const docs = loadAllYaml(readFileSync(ISTIO_ENVOYFILTER, 'utf8')) as any[];
  return docs.filter((d) => d?.kind === 'EnvoyFilter').flatMap((d) => d.spec.configPatches);
}

function extProcConfig(config: any): any {
  const f = listenerHttpFilters(config).find((x) => x.name === 'envoy.filters.http.ext_proc');
  if (!f) throw new Error('no envoy.filters.http.ext_proc filter in envoy.yaml');
  return f.typed_config;
}

function extAuthzConfig(config: any): any {
  const f = listenerHttpFilters(config).find((x) => x.name === 'envoy.filters.http.ext_authz');
  if (!f) throw new Error('no envoy.filters.http.ext_authz filter in envoy.yaml');
  return f.typed_config;
}

// Exported on purpose (requested): other tests may import the body settings Envoy uses.
// Note that importing this file from another test file also registers the tests below there.
// biome-ignore lint/suspicious/noExportsInTest: shared helper, see above
export interface WithRequestBodySettings {
  maxRequestBytes: number;
  allowPartialMessage: boolean;
  packAsBytes: boolean;
}

/**
 * ext_authz `with_request_body` (BufferSettings) as configured in envoy.yaml, with proto3 defaults
 * filled in. Intended for tests that want to drive the server the way Envoy would (body
 * truncation at maxRequestBytes when allowPartialMessage, raw_body vs body when packAsBytes).
 */
// biome-ignore lint/suspicious/noExportsInTest: shared helper, see WithRequestBodySettings
export function extractWithRequestBody(file: string = ENVOY_FILES.top): WithRequestBodySettings {
  const body = extAuthzConfig(loadEnvoyYaml(file)).with_request_body ?? {};
  return {
    maxRequestBytes: Number(body.max_request_bytes ?? body.maxRequestBytes ?? 0),
    allowPartialMessage: Boolean(body.allow_partial_message ?? body.allowPartialMessage ?? false),
    packAsBytes: Boolean(body.pack_as_bytes ?? body.packAsBytes ?? false),
  };
}

function durationSeconds(d: string): number {
  const m = /^(-?\d+(?:\.\d+)?)s$/.exec(d);
  if (!m) throw new Error(`not a duration: ${d}`);
  return Number(m[1]);
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

let registry: ProtoRegistry;

beforeAll(() => {
  registry = new ProtoRegistry([BOOTSTRAP]);
});

describe('envoy.yaml against the official Envoy v3 protos', () => {
  for (const [label, file] of Object.entries(ENVOY_FILES)) {
    it(`${label}: ${file.slice(REPO.length + 1)} is a valid Bootstrap (strict: no unknown keys)`, () => {
      const errors = EnvoyConfigValidator.validate(registry, BOOTSTRAP, loadEnvoyYaml(file));
      expect(errors).toEqual([]);
    });
  }

  it('resolved every @type used in envoy.yaml', () => {
    const urls = new Set<string>();
    const walk = (v: unknown) => {
      if (Array.isArray(v)) v.forEach(walk);
      else if (isPlainObject(v)) {
        if (typeof v['@type'] === 'string') urls.add(v['@type']);
        Object.values(v).forEach(walk);
      }
    };
    walk(loadEnvoyYaml(ENVOY_FILES.top));
    expect(urls.size).toBeGreaterThanOrEqual(7);
    for (const url of urls) expect(registry.lookup(url.slice(TYPE_URL_PREFIX.length)), url).not.toBeNull();
  });

  it('the Kubernetes copy keeps the same filter chain as envoy.yaml', () => {
    const names = (f: string) => listenerHttpFilters(loadEnvoyYaml(f)).map((x) => x.name);
    expect(names(ENVOY_FILES.kubernetes)).toEqual(names(ENVOY_FILES.top));
    expect(extAuthzConfig(loadEnvoyYaml(ENVOY_FILES.kubernetes))).toEqual(
      extAuthzConfig(loadEnvoyYaml(ENVOY_FILES.top)),
    );
  });

  it('Istio EnvoyFilter patch values are valid configs of what they patch (HttpFilter, RouteConfiguration)', () => {
    const patches = istioPatches();
    expect(patches.length).toBeGreaterThan(0);
    for (const p of patches) {
      const value = JSON.parse(JSON.stringify(p.patch.value));
      const type = ISTIO_PATCH_TYPES[p.applyTo];
      expect(type, `applyTo ${p.applyTo}`).toBeDefined();
      // MERGE patches carry a partial filter (no name); validation of the fields still applies.
      const errors = EnvoyConfigValidator.validate(
        registry,
        type,
        p.applyTo === 'HTTP_FILTER' ? { name: value.name ?? 'merge-patch', ...value } : value,
      );
      expect(errors).toEqual([]);
    }
  });
});

describe('the validator rejects bad configs', () => {
  const validate = (config: unknown) => EnvoyConfigValidator.validate(registry, BOOTSTRAP, config);

  it('a bogus field inside the ext_authz typed_config', () => {
    const config = loadEnvoyYaml(ENVOY_FILES.top);
    extAuthzConfig(config).with_request_boddy = { max_request_bytes: 1 };
    const errors = validate(config);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(
      /unknown field "with_request_boddy" in envoy\.extensions\.filters\.http\.ext_authz\.v3\.ExtAuthz/,
    );
  });

  it('a bogus field nested deeper (with_request_body)', () => {
    const config = loadEnvoyYaml(ENVOY_FILES.top);
    extAuthzConfig(config).with_request_body.pack_as_byte = true;
    expect(validate(config).join('\n')).toMatch(/unknown field "pack_as_byte" in .*BufferSettings/);
  });

  it('an @type that does not exist', () => {
    const config = loadEnvoyYaml(ENVOY_FILES.top);
    const f = listenerHttpFilters(config).find((x) => x.name === 'envoy.filters.http.ext_authz');
    f.typed_config['@type'] = 'type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzz';
    expect(validate(config).join('\n')).toMatch(/cannot resolve @type .*ExtAuthzz/);
  });

  it('an @type in a package that does not exist', () => {
    const config = loadEnvoyYaml(ENVOY_FILES.top);
    config.static_resources.clusters[0].typed_extension_protocol_options[
      'envoy.extensions.upstreams.http.v3.HttpProtocolOptions'
    ]['@type'] = 'type.googleapis.com/envoy.extensions.upstreams.http.v9.HttpProtocolOptions';
    expect(validate(config).join('\n')).toMatch(/cannot resolve @type .*v9\.HttpProtocolOptions/);
  });

  it('an invalid enum name, a malformed duration, a wrong scalar type', () => {
    const config = loadEnvoyYaml(ENVOY_FILES.top);
    const ea = extAuthzConfig(config);
    ea.transport_api_version = 'V4';
    ea.grpc_service.timeout = '250ms';
    ea.failure_mode_allow = 'yes';
    const text = validate(config).join('\n');
    expect(text).toMatch(/invalid enum value "V4"/);
    expect(text).toMatch(/Duration string/);
    expect(text).toMatch(/failure_mode_allow: expected bool/);
  });

  it('two members of a oneof, and a missing required field', () => {
    const config = loadEnvoyYaml(ENVOY_FILES.top);
    const cluster = config.static_resources.clusters[0];
    cluster.health_checks[0].http_health_check = { path: '/healthz' };
    delete cluster.health_checks[0].interval;
    const text = validate(config).join('\n');
    expect(text).toMatch(/oneof .*health_checker has more than one member/);
    expect(text).toMatch(/required field .*HealthCheck\.interval is missing/);
  });

  it('accepts lowerCamel json names as Envoy does', () => {
    const config = loadEnvoyYaml(ENVOY_FILES.top);
    const ea = extAuthzConfig(config);
    ea.clearRouteCache = ea.clear_route_cache;
    delete ea.clear_route_cache;
    expect(validate(config)).toEqual([]);
  });
});

describe('envoy.yaml semantics tollgate relies on', () => {
  const config = () => loadEnvoyYaml(ENVOY_FILES.top);

  it('admin is loopback-only and the listener is 0.0.0.0:10000', () => {
    const c = config();
    expect(c.admin.address.socket_address).toEqual({ address: '127.0.0.1', port_value: 9901 });
    expect(c.static_resources.listeners[0].address.socket_address).toEqual({
      address: '0.0.0.0',
      port_value: 10000,
    });
  });

  it('header_mutation strips client x-tollgate-* headers before ext_authz, router last', () => {
    const filters = listenerHttpFilters(config());
    const names = filters.map((f) => f.name);
    expect(names.indexOf('envoy.filters.http.header_mutation')).toBeGreaterThanOrEqual(0);
    expect(names.indexOf('envoy.filters.http.header_mutation')).toBeLessThan(
      names.indexOf('envoy.filters.http.ext_authz'),
    );
    expect(names.at(-1)).toBe('envoy.filters.http.router');
    const removed = filters
      .find((f) => f.name === 'envoy.filters.http.header_mutation')
      .typed_config.mutations.request_mutations.map((m: any) => m.remove);
    expect(removed).toEqual(
      expect.arrayContaining([
        'x-tollgate-model',
        'x-tollgate-rerouted-from',
        'x-tollgate-degraded',
        'x-tollgate-shadow',
        'x-tollgate-estimated',
        // client-chosen identity headers are not trusted at the edge
        'x-tenant-id',
        'x-team-id',
      ]),
    );
  });

  it('ext_authz: gRPC to tollgate, body packed as bytes, partial allowed, fail-open, clears route cache', () => {
    const ea = extAuthzConfig(config());
    expect(ea.grpc_service.envoy_grpc.cluster_name).toBe('tollgate');
    expect(ea.transport_api_version).toBe('V3');
    expect(ea.with_request_body.pack_as_bytes).toBe(true);
    expect(ea.with_request_body.allow_partial_message).toBe(true);
    expect(ea.with_request_body.max_request_bytes).toBeGreaterThanOrEqual(1048576);
    expect(ea.clear_route_cache).toBe(true);
    expect(ea.failure_mode_allow).toBe(true);
    // Must exceed tollgate's 50 ms decision deadline, or Envoy gives up before tollgate answers.
    expect(durationSeconds(ea.grpc_service.timeout)).toBeGreaterThan(0.05);
  });

  it('extractWithRequestBody() returns the configured BufferSettings', () => {
    expect(extractWithRequestBody()).toEqual({
      maxRequestBytes: 1048576,
      allowPartialMessage: true,
      packAsBytes: true,
    });
  });

  it('routes: one on x-tollgate-model, /v1/messages to anthropic, a final catch-all', () => {
    const rs = routes(config());
    const headerRoute = rs.find((r) => r.match.headers?.some((h: any) => h.name === 'x-tollgate-model'));
    expect(headerRoute).toBeDefined();
    expect(headerRoute.match.headers[0].string_match.exact).toBe('gpt-4o-mini');
    expect(headerRoute.route.cluster).toBe('openai');
    const last = rs.at(-1);
    // ext_authz is skipped when no route matches, so an unconditional catch-all must exist.
    expect(last.match).toEqual({ prefix: '/' });
    expect(rs.find((r) => r.match.prefix === '/v1/messages')?.route.cluster).toBe('anthropic');
    for (const r of rs) expect(r.route.host_rewrite_literal ?? r.route.auto_host_rewrite).toBeTruthy();
  });

  it('clusters: tollgate over HTTP/2 with gRPC health checks; providers over verified TLS', () => {
    const clusters = Object.fromEntries(config().static_resources.clusters.map((c: any) => [c.name, c]));
    const tg = clusters.tollgate;
    expect(
      tg.typed_extension_protocol_options['envoy.extensions.upstreams.http.v3.HttpProtocolOptions']
        .explicit_http_config.http2_protocol_options,
    ).toBeDefined();
    expect(tg.health_checks[0].grpc_health_check).toBeDefined();
    // Checks in flight to tollgate are bounded (Envoy opens connections beyond tollgate's
    // per-connection stream limit, so the circuit breaker is the bound), in both copies.
    expect(tg.circuit_breakers.thresholds[0].max_requests).toBe(320);
    const k8s = loadEnvoyYaml(ENVOY_FILES.kubernetes).static_resources.clusters.find(
      (c: any) => c.name === 'tollgate',
    );
    expect(k8s.circuit_breakers).toEqual(tg.circuit_breakers);
    expect(tg.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address).toEqual({
      address: '127.0.0.1',
      port_value: 9191,
    });
    for (const [name, host] of [
      ['openai', 'api.openai.com'],
      ['anthropic', 'api.anthropic.com'],
    ]) {
      const c = clusters[name];
      expect(c.type).toBe('LOGICAL_DNS');
      expect(c.transport_socket.name).toBe('envoy.transport_sockets.tls');
      expect(c.transport_socket.typed_config.sni).toBe(host);
      expect(c.transport_socket.typed_config.common_tls_context.validation_context.trusted_ca).toBeDefined();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Issue 21: the response phase (ext_proc) in envoy.yaml, its Kubernetes copy, the Istio EnvoyFilter
// and the docs' snippets (docs/envoy-and-istio.md "Response phase (ext_proc)")
// ---------------------------------------------------------------------------------------------

const EXT_PROC_TYPE = 'type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor';
const RESERVATION_HEADER = 'x-tollgate-reservation';
const EXT_AUTHZ_NAMESPACE = 'envoy.filters.http.ext_authz';
/** Only the response: headers and the streamed body; nothing of the request, no trailers. */
const RESPONSE_ONLY = {
  request_header_mode: 'SKIP',
  response_header_mode: 'SEND',
  request_body_mode: 'NONE',
  response_body_mode: 'STREAMED',
  request_trailer_mode: 'SKIP',
  response_trailer_mode: 'SKIP',
};

describe('response phase (ext_proc): envoy.yaml and the Kubernetes copy', () => {
  const clusterOf = (c: any, name: string) => c.static_resources.clusters.find((x: any) => x.name === name);
  const each = (fn: (c: any, label: string) => void) => {
    for (const [label, file] of Object.entries(ENVOY_FILES)) fn(loadEnvoyYaml(file), label);
  };

  it('the ExternalProcessor @type resolves from the vendored protos, with the fields the config uses', () => {
    const t = registry.lookup(EXT_PROC_TYPE.slice(TYPE_URL_PREFIX.length));
    expect(t).not.toBeNull();
    // present in the grpc-js-xds envoy-api copy: no allowance in the walker is needed for them
    for (const f of ['observability_mode', 'deferred_close_timeout', 'metadata_options', 'processing_mode'])
      expect(t!.fields[f], f).toBeDefined();
  });

  it('sits after ext_authz (and the Lua rewrite) and before the router', () => {
    each((c, label) => {
      const names = listenerHttpFilters(c).map((f) => f.name);
      const at = names.indexOf('envoy.filters.http.ext_proc');
      expect(at, label).toBeGreaterThan(names.indexOf('envoy.filters.http.ext_authz'));
      expect(at, label).toBeGreaterThan(names.indexOf('envoy.filters.http.lua'));
      expect(at, label).toBeLessThan(names.indexOf('envoy.filters.http.router'));
      expect(names.at(-1), label).toBe('envoy.filters.http.router');
      expect(listenerHttpFilters(c)[at].typed_config['@type'], label).toBe(EXT_PROC_TYPE);
    });
  });

  it('reads only the response, in observability mode, fail-open, with ext_authz metadata forwarded', () => {
    each((c, label) => {
      const ep = extProcConfig(c);
      expect(ep.processing_mode, label).toEqual(RESPONSE_ONLY);
      expect(ep.observability_mode, label).toBe(true);
      expect(ep.failure_mode_allow, label).toBe(true);
      // long enough for tollgate to read the response's last chunk, short enough not to hoard streams
      const close = durationSeconds(ep.deferred_close_timeout);
      expect(close, label).toBeGreaterThan(0);
      expect(close, label).toBeLessThanOrEqual(30);
      expect(ep.metadata_options.forwarding_namespaces.untyped, label).toContain(EXT_AUTHZ_NAMESPACE);
      // tollgate decodes compressed bodies itself: nothing may strip accept-encoding for it
      expect(JSON.stringify(c), label).not.toMatch(/accept-encoding/i);
    });
    expect(extProcConfig(loadEnvoyYaml(ENVOY_FILES.kubernetes))).toEqual(
      extProcConfig(loadEnvoyYaml(ENVOY_FILES.top)),
    );
  });

  it('streams to the same tollgate as ext_authz (same endpoint, HTTP/2, health-checked) through its own breaker', () => {
    each((c, label) => {
      const authzCluster = clusterOf(c, extAuthzConfig(c).grpc_service.envoy_grpc.cluster_name);
      const procCluster = clusterOf(c, extProcConfig(c).grpc_service.envoy_grpc.cluster_name);
      expect(procCluster, label).toBeDefined();
      // same tollgate process, same gRPC port
      expect(procCluster.load_assignment.endpoints, label).toEqual(authzCluster.load_assignment.endpoints);
      expect(procCluster.typed_extension_protocol_options, label).toEqual(
        authzCluster.typed_extension_protocol_options,
      );
      expect(procCluster.health_checks, label).toEqual(authzCluster.health_checks);
      expect(procCluster.common_lb_config, label).toEqual(authzCluster.common_lb_config);
      // but not the ext_authz cluster: a stream per response in flight (minutes each) would fill its
      // check-sized breaker (320) and fail every check open
      expect(procCluster.name, label).not.toBe(authzCluster.name);
      const providers = ['openai', 'anthropic'].map(
        (n) => clusterOf(c, n).circuit_breakers.thresholds[0].max_requests,
      );
      const [t] = procCluster.circuit_breakers.thresholds;
      expect(t.max_requests, label).toBeGreaterThanOrEqual(providers.reduce((a: number, b: number) => a + b));
      expect(t.track_remaining, label).toBe(true);
    });
  });

  it('every route to a provider removes x-tollgate-reservation; clients cannot send it', () => {
    each((c, label) => {
      const rc = c.static_resources.listeners.find((l: any) => l.name === 'llm_ingress').filter_chains[0]
        .filters[0].typed_config.route_config;
      const routed = new Set<string>();
      for (const vh of rc.virtual_hosts)
        for (const r of vh.routes) {
          const removed = [
            ...(rc.request_headers_to_remove ?? []),
            ...(vh.request_headers_to_remove ?? []),
            ...(r.request_headers_to_remove ?? []),
          ];
          expect(removed, `${label} ${r.name}`).toContain(RESERVATION_HEADER);
          routed.add(r.route.cluster);
        }
      expect([...routed].sort(), label).toEqual(['anthropic', 'openai']);
      const strip = listenerHttpFilters(c)
        .find((f) => f.name === 'envoy.filters.http.header_mutation')
        .typed_config.mutations.request_mutations.map((m: any) => m.remove);
      expect(strip, label).toContain(RESERVATION_HEADER);
    });
  });

  it('the validator walks the ext_proc config (a bogus field, a bad enum, a bad duration fail)', () => {
    const config = loadEnvoyYaml(ENVOY_FILES.top);
    const ep = extProcConfig(config);
    ep.observability_mod = true;
    ep.processing_mode.response_body_mode = 'STREAMING';
    ep.deferred_close_timeout = '5000ms';
    ep.metadata_options.forwarding_namespaces.untypd = [];
    const text = EnvoyConfigValidator.validate(registry, BOOTSTRAP, config).join('\n');
    expect(text).toMatch(
      /unknown field "observability_mod" in envoy\.extensions\.filters\.http\.ext_proc\.v3\.ExternalProcessor/,
    );
    expect(text).toMatch(/invalid enum value "STREAMING"/);
    expect(text).toMatch(/deferred_close_timeout: expected a Duration string/);
    expect(text).toMatch(/unknown field "untypd" in .*MetadataNamespaces/);
  });
});

describe('response phase (ext_proc): Istio EnvoyFilter', () => {
  const mesh = () =>
    (loadAllYaml(readFileSync(join(REPO, 'deploy/istio/mesh-config.yaml'), 'utf8')) as any[])
      .find((d) => d?.kind === 'IstioOperator')
      .spec.meshConfig.extensionProviders.find((p: any) => p.name === 'tollgate-ext-authz').envoyExtAuthzGrpc;
  const extProcPatch = () =>
    istioPatches().find((p) => p.patch.value?.typed_config?.['@type'] === EXT_PROC_TYPE);

  it('inserts the ext_proc filter after ext_authz, with envoy.yaml settings', () => {
    const p = extProcPatch();
    expect(p).toBeDefined();
    expect(p.applyTo).toBe('HTTP_FILTER');
    expect(p.patch.operation).toBe('INSERT_AFTER');
    expect(p.match.listener.filterChain.filter.subFilter.name).toBe('envoy.filters.http.ext_authz');
    const { grpc_service, ...rest } = p.patch.value.typed_config;
    const { grpc_service: _g, ...shipped } = extProcConfig(loadEnvoyYaml(ENVOY_FILES.top));
    expect(rest).toEqual(shipped);
    expect(rest.processing_mode).toEqual(RESPONSE_ONLY);
    expect(rest.observability_mode).toBe(true);
    expect(rest.failure_mode_allow).toBe(true);
    expect(rest.metadata_options.forwarding_namespaces.untyped).toContain(EXT_AUTHZ_NAMESPACE);
    // the cluster Istio generates for the ext_authz provider: same tollgate, same port
    const { service, port } = mesh();
    expect(grpc_service.envoy_grpc.cluster_name).toBe(`outbound|${port}||${service}`);
    expect(grpc_service.envoy_grpc.authority).toBe(service);
  });

  it('is patched in before the Lua rewrite, so the chain is ext_authz, Lua, ext_proc as in envoy.yaml', () => {
    const patches = istioPatches();
    const lua = patches.findIndex((p) => p.patch.value?.name === 'tollgate.model-rewrite');
    expect(lua).toBeGreaterThanOrEqual(0);
    expect(patches[lua].patch.operation).toBe('INSERT_AFTER');
    expect(patches.indexOf(extProcPatch())).toBeLessThan(lua);
  });

  it("the gateway's routes remove x-tollgate-reservation (and the rest of envoy.yaml's list) before the provider", () => {
    const rc = istioPatches().filter((p) => p.applyTo === 'ROUTE_CONFIGURATION');
    expect(rc).toHaveLength(1);
    expect(rc[0].patch.operation).toBe('MERGE');
    expect(rc[0].match.context).toBe(extProcPatch().match.context);
    const removed = rc[0].patch.value.request_headers_to_remove;
    expect(removed).toContain(RESERVATION_HEADER);
    const top = loadEnvoyYaml(ENVOY_FILES.top).static_resources.listeners[0].filter_chains[0].filters[0]
      .typed_config.route_config.request_headers_to_remove;
    expect([...removed].sort()).toEqual([...top].sort());
  });
});

describe('response phase (ext_proc): the docs snippets', () => {
  const doc = readFileSync(join(REPO, 'docs/envoy-and-istio.md'), 'utf8');
  const section = doc.slice(doc.indexOf('## Response phase (ext_proc)'));
  const snippets = [...section.slice(0, section.indexOf('\n## ', 1)).matchAll(/```yaml\n([\s\S]*?)```/g)]
    .map((m) => loadYaml(m[1]) as any)
    .filter((y) => Array.isArray(y) && y[0]?.name === 'envoy.filters.http.ext_proc')
    .map((y) => JSON.parse(JSON.stringify(y[0])));

  it('has the shipped filter and the two variants for older Envoys, all valid HttpFilters', () => {
    expect(snippets).toHaveLength(3);
    for (const f of snippets)
      expect(
        EnvoyConfigValidator.validate(
          registry,
          'envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter',
          f,
        ),
      ).toEqual([]);
  });

  it("the first is envoy.yaml's filter exactly", () => {
    const shipped = listenerHttpFilters(loadEnvoyYaml(ENVOY_FILES.top)).find(
      (f) => f.name === 'envoy.filters.http.ext_proc',
    );
    expect(snippets[0]).toEqual(shipped);
  });

  it('Envoy 1.30: no observability mode (Envoy waits for each answer), metadata still forwarded', () => {
    const ep = snippets[1].typed_config;
    expect(ep.observability_mode).toBeUndefined();
    expect(ep.deferred_close_timeout).toBeUndefined();
    expect(ep.processing_mode).toEqual(RESPONSE_ONLY);
    expect(ep.metadata_options.forwarding_namespaces.untyped).toContain(EXT_AUTHZ_NAMESPACE);
    expect(ep.failure_mode_allow).toBe(true);
  });

  it('Envoy < 1.30: no metadata options; the request headers (x-tollgate-reservation) are sent instead', () => {
    const ep = snippets[2].typed_config;
    expect(ep.observability_mode).toBeUndefined();
    expect(ep.metadata_options).toBeUndefined();
    expect(ep.processing_mode).toEqual({ ...RESPONSE_ONLY, request_header_mode: 'SEND' });
    expect(ep.failure_mode_allow).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------------
// Issue 26: the settings that make the shipped configs do what README says (docs/envoy-and-istio.md)
// ---------------------------------------------------------------------------------------------

describe('envoy.yaml: streams, breakers, health, leaks (both copies)', () => {
  const clusterOf = (c: any, name: string) => c.static_resources.clusters.find((x: any) => x.name === name);
  const hcmOf = (c: any) =>
    c.static_resources.listeners
      .find((l: any) => l.name === 'llm_ingress')
      .filter_chains[0].filters.find((f: any) => f.name === 'envoy.filters.network.http_connection_manager')
      .typed_config;
  const each = (fn: (c: any, label: string) => void) => {
    for (const [label, file] of Object.entries(ENVOY_FILES)) fn(loadEnvoyYaml(file), label);
  };

  it('item 6: the tollgate circuit breaker is sized from docs/performance.md (rate x ext_authz timeout)', () => {
    const readme = readFileSync(join(REPO, 'docs/performance.md'), 'utf8');
    // the open-loop target rate the bench holds tollgate to ("| small | open @1200/s | ...")
    const rate = Number(/\| small \| open @(\d+)\/s \| valkey \|/.exec(readme)?.[1]);
    expect(rate).toBeGreaterThan(0);
    each((c, label) => {
      const timeout = durationSeconds(extAuthzConfig(c).grpc_service.timeout);
      const t = clusterOf(c, 'tollgate').circuit_breakers.thresholds;
      expect(t, label).toHaveLength(1);
      // Little's law: every check that can still be answered within the timeout fits
      expect(t[0].max_requests, label).toBeGreaterThanOrEqual(Math.ceil(rate * timeout));
      // ...and not much more: the bound exists for tollgate's memory (bodies in flight)
      expect(t[0].max_requests, label).toBeLessThanOrEqual(Math.ceil(rate * timeout * 1.2));
      expect(t[0].track_remaining, label).toBe(true);
      expect(t[0].max_retries, label).toBe(0);
    });
  });

  it('item 6: Envoy stats are served on :9902 /stats/prometheus only, from the loopback admin', () => {
    each((c, label) => {
      const l = c.static_resources.listeners.find((x: any) => x.name === 'envoy_stats');
      expect(l.address.socket_address.port_value, label).toBe(9902);
      const hcm = l.filter_chains[0].filters[0].typed_config;
      const rs = hcm.route_config.virtual_hosts.flatMap((v: any) => v.routes);
      expect(rs, label).toEqual([
        { match: { path: '/stats/prometheus' }, route: { cluster: 'envoy_admin' } },
      ]);
      const admin = clusterOf(c, 'envoy_admin').load_assignment.endpoints[0].lb_endpoints[0].endpoint.address;
      expect(admin.socket_address, label).toEqual(c.admin.address.socket_address);
      expect(c.admin.address.socket_address.address, label).toBe('127.0.0.1');
    });
  });

  it('item 7: one tollgate host, no panic routing; health checks every few seconds without traffic', () => {
    each((c, label) => {
      const tg = clusterOf(c, 'tollgate');
      expect(tg.common_lb_config.healthy_panic_threshold, label).toEqual({ value: 0 });
      const hc = tg.health_checks[0];
      expect(hc.grpc_health_check, label).toBeDefined();
      expect(durationSeconds(hc.no_traffic_interval), label).toBeLessThanOrEqual(10);
      expect(durationSeconds(hc.interval), label).toBeLessThanOrEqual(5);
    });
  });

  it('item 8: no whole-response route timeout; idle timeouts far above 5 min on every route and the HCM', () => {
    each((c, label) => {
      for (const r of routes(c)) {
        expect(r.route.timeout, `${label} ${r.name}`).toBe('0s');
        expect(durationSeconds(r.route.idle_timeout), `${label} ${r.name}`).toBeGreaterThanOrEqual(900);
      }
      expect(durationSeconds(hcmOf(c).stream_idle_timeout), label).toBeGreaterThanOrEqual(900);
    });
  });

  it('item 9: provider clusters have explicit breakers well above the 1,024 defaults', () => {
    each((c, label) => {
      for (const name of ['openai', 'anthropic']) {
        const [t] = clusterOf(c, name).circuit_breakers.thresholds;
        expect(t.priority ?? 'DEFAULT', `${label} ${name}`).toBe('DEFAULT');
        for (const k of ['max_connections', 'max_requests'])
          expect(t[k], `${label} ${name} ${k}`).toBeGreaterThan(1024);
        expect(t.max_pending_requests, `${label} ${name}`).toBeGreaterThanOrEqual(1024);
        expect(t.track_remaining, `${label} ${name}`).toBe(true);
      }
    });
  });

  it('item 11: fail-open marker stripped before ext_authz; tollgate and Envoy headers never reach the provider', () => {
    each((c, label) => {
      const filters = listenerHttpFilters(c);
      const strip = filters
        .find((f) => f.name === 'envoy.filters.http.header_mutation')
        .typed_config.mutations.request_mutations.map((m: any) => m.remove);
      expect(strip, label).toContain('x-envoy-auth-failure-mode-allowed');
      const removed = hcmOf(c).route_config.request_headers_to_remove;
      for (const h of [
        'x-tollgate-model',
        'x-tollgate-rerouted-from',
        'x-tollgate-degraded',
        'x-tollgate-shadow',
        'x-tollgate-estimated',
        'x-envoy-auth-failure-mode-allowed',
      ])
        expect(removed, `${label} ${h}`).toContain(h);
      expect(filters.at(-1).typed_config.suppress_envoy_headers, label).toBe(true);
    });
  });

  it('item 11: the connection buffer limit is above ext_authz max_request_bytes', () => {
    each((c, label) => {
      const l = c.static_resources.listeners.find((x: any) => x.name === 'llm_ingress');
      expect(l.per_connection_buffer_limit_bytes, label).toBeGreaterThan(
        extAuthzConfig(c).with_request_body.max_request_bytes,
      );
    });
  });

  it('item 10: an overload manager bounds Envoy below its container memory limit', () => {
    const dep = (
      loadAllYaml(readFileSync(join(REPO, 'deploy/kubernetes/base/deployment.yaml'), 'utf8')) as any[]
    ).find((d) => d?.kind === 'Deployment').spec.template.spec;
    const envoy = [...(dep.initContainers ?? []), ...dep.containers].find((x: any) => x.name === 'envoy');
    const mi = /^(\d+)Mi$/.exec(envoy.resources.limits.memory);
    expect(mi).not.toBeNull();
    const limit = Number(mi![1]) * 1024 * 1024;
    each((c, label) => {
      const om = c.overload_manager;
      const heap = om.resource_monitors.find((m: any) => m.name === 'envoy.resource_monitors.fixed_heap');
      const max = Number(heap.typed_config.max_heap_size_bytes);
      expect(max, label).toBeLessThan(limit);
      expect(max, label).toBeGreaterThan(limit * 0.8);
      // without buffer tracking reset_high_memory_stream has no stream to reset
      expect(om.buffer_factory_config.minimum_account_to_track_power_of_two, label).toBeGreaterThanOrEqual(
        10,
      );
      const actions = om.actions.map((a: any) => a.name);
      expect(actions, label).toEqual(
        expect.arrayContaining([
          'envoy.overload_actions.stop_accepting_requests',
          'envoy.overload_actions.reset_high_memory_stream',
        ]),
      );
    });
  });
});

// ---------------------------------------------------------------------------------------------
// Our server driven exactly as envoy.yaml's with_request_body makes Envoy drive it
// ---------------------------------------------------------------------------------------------

describe("tollgate under envoy.yaml's with_request_body settings", () => {
  const settings = extractWithRequestBody();
  let app: TestApp;
  let envoy: EnvoyClient;
  let n = 0;

  beforeAll(async () => {
    app = await startTestApp(`
models:
  gpt-4o: { encoding: o200k_base, default_max_output_tokens: 100 }
limits:
  - name: tokens
    per: tenant
    tokens: 2000000
    reset: daily
`);
    envoy = new EnvoyClient(app.grpcPort);
  });
  afterAll(async () => {
    envoy?.close();
    await app?.close(500);
  });

  /** What Envoy's ext_authz sends for a request body (ext_authz.cc + check_request_utils.cc). */
  async function asEnvoy(body: Buffer, tenant: string) {
    const partial = settings.allowPartialMessage && body.length > settings.maxRequestBytes;
    const sent = partial ? body.subarray(0, settings.maxRequestBytes) : body;
    const http: any = {
      method: 'POST',
      path: '/v1/chat/completions',
      protocol: 'HTTP/1.1',
      size: body.length,
      headers: {
        ':method': 'POST',
        ':path': '/v1/chat/completions',
        'content-type': 'application/json',
        'content-length': String(body.length),
        'x-tenant-id': tenant,
        'x-envoy-auth-partial-body': partial ? 'true' : 'false',
      },
    };
    if (settings.packAsBytes) http.raw_body = sent;
    else http.body = sent.toString('utf8');
    const res = await envoy.checkRaw({ attributes: { request: { http } } });
    const map = (list: any[] | undefined) =>
      Object.fromEntries((list ?? []).map((h: any) => [h.header.key, h.header.value])) as Record<
        string,
        string
      >;
    return {
      allowed: (res.status?.code ?? 0) === 0,
      code: res.status?.code ?? 0,
      headers: map(res.ok_response?.response_headers_to_add ?? res.denied_response?.headers),
      upstream: map(res.ok_response?.headers),
      json: res.denied_response?.body ? JSON.parse(res.denied_response.body) : undefined,
    };
  }

  it('a body up to max_request_bytes arrives whole (raw_body) and is counted exactly', async () => {
    const t = `whole-${++n}`;
    const small = Buffer.from(JSON.stringify(chat('gpt-4o', 'hello there', { max_tokens: 10 })));
    const a = await envoy.check({ headers: { 'x-tenant-id': t }, body: small });
    expect(a.allowed).toBe(true);
    expect(a.headers['x-tollgate-estimated']).toBeUndefined();
    // exactly max_request_bytes: still whole, still parsed (not estimated)
    const filler = 'x'.repeat(settings.maxRequestBytes);
    let exact = Buffer.from(JSON.stringify(chat('gpt-4o', filler, { max_tokens: 10 })));
    exact = Buffer.from(
      JSON.stringify(
        chat('gpt-4o', filler.slice(0, filler.length - (exact.length - settings.maxRequestBytes)), {
          max_tokens: 10,
        }),
      ),
    );
    expect(exact.length).toBe(settings.maxRequestBytes);
    const b = await asEnvoy(exact, `exact-${++n}`);
    expect(b.allowed).toBe(true);
    expect(b.headers['x-tollgate-estimated']).toBeUndefined();
  });

  it('a larger body arrives truncated to max_request_bytes, flagged partial: cost estimated from content-length', async () => {
    expect(settings).toEqual({ maxRequestBytes: 1048576, allowPartialMessage: true, packAsBytes: true });
    const body = Buffer.from(JSON.stringify(chat('gpt-4o', 'y'.repeat(3 * settings.maxRequestBytes))));
    const t = `partial-${++n}`;
    const a = await asEnvoy(body, t);
    expect(a.allowed).toBe(true);
    expect(a.headers['x-tollgate-estimated']).toBe('true');
    expect(a.upstream['x-tollgate-estimated']).toBe('true');
    // ceil(content-length / bytes_per_token 4) + the output reserve of the costliest model the call
    // could be (a prefix cannot prove its model, issue 19): "*" reserves server.default_max_output_tokens
    // (4096), more than gpt-4o's 100 (a daily quota: no refill)
    const cost = Math.ceil(body.length / 4) + 4096;
    expect(Number(a.headers['x-ratelimit-remaining-tokens'])).toBe(2000000 - cost);
  });

  it('partial bodies whose estimate exceeds the limit are denied with 429, not let through', async () => {
    const body = Buffer.from(JSON.stringify(chat('gpt-4o', 'z'.repeat(9 * settings.maxRequestBytes))));
    const a = await asEnvoy(body, `big-${++n}`);
    expect(a.allowed).toBe(false);
    expect(a.code).toBe(8); // RESOURCE_EXHAUSTED
    expect(a.json.limit).toBe('tokens');
    expect(a.headers['x-tollgate-estimated']).toBe('true');
  });
});
