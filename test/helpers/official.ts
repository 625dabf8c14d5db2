/** Envoy's OFFICIAL protos (from @grpc/grpc-js-xds, a devDependency), for building requests as Envoy does. */
import { accessSync, constants } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import protobuf from 'protobufjs';

const require = createRequire(import.meta.url);
const XDS_DEPS = join(dirname(require.resolve('@grpc/grpc-js-xds/package.json')), 'deps');
const INCLUDES = ['envoy-api', 'xds', 'protoc-gen-validate', 'googleapis'].map((d) => join(XDS_DEPS, d));

let root: protobuf.Root | undefined;

export function officialRoot(): protobuf.Root {
  if (root) return root;
  const r = new protobuf.Root();
  r.resolvePath = (origin, target) => {
    for (const dir of INCLUDES) {
      const full = join(dir, target);
      try {
        accessSync(full, constants.R_OK);
        return full;
      } catch {}
    }
    return protobuf.util.path.resolve(origin, target);
  };
  r.loadSync(['envoy/service/auth/v3/external_auth.proto'], { keepCase: true });
  r.resolveAll();
  root = r;
  return r;
}

/** A google.protobuf.Struct from plain JSON (as Envoy's jwt_authn writes claims into metadata). */
export function toStruct(obj: Record<string, unknown>): unknown {
  const value = (v: unknown): unknown => {
    if (v === null) return { nullValue: 0 };
    if (typeof v === 'string') return { stringValue: v };
    if (typeof v === 'number') return { numberValue: v };
    if (typeof v === 'boolean') return { boolValue: v };
    if (Array.isArray(v)) return { listValue: { values: v.map(value) } };
    return { structValue: toStruct(v as Record<string, unknown>) };
  };
  return { fields: Object.fromEntries(Object.entries(obj).map(([k, v]) => [k, value(v)])) };
}
