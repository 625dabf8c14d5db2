/**
 * `identity`: dimensions (tenant, team, plan, …) → an ordered list of sources, first present wins;
 * plus `api_key_secret_env`, `key_map` and `unknown_keys` (what a key missing from the key map becomes).
 */
import { z } from 'zod';
import { always, DIM, int, mapping, oneOf, problem, str, whenValid } from './fields.js';

const SOURCES = ['header', 'api_key', 'metadata', 'path_segment', 'key_map', 'default', 'source_ip'] as const;

/** One IPv6 client usually holds a whole /64: by default its addresses are one client. */
export const DEFAULT_IPV6_PREFIX = 64;

/** Where the client address comes from; IPv6 addresses are grouped by their first `ipv6Prefix` bits. */
export type SourceIpFrom = ({ from: 'envoy' } | { from: 'xff'; trustedHops: number }) & {
  ipv6Prefix: number;
};

/**
 * `source_ip: envoy` (Envoy's attributes.source.address) or `source_ip: { xff_trusted_hops?: N,
 * ipv6_prefix?: bits }` (x-forwarded-for's hop after N trusted ones; without it, Envoy's address).
 */
const sourceIpSchema = z
  .union(
    [
      z.literal('envoy'),
      z.strictObject(
        {
          xff_trusted_hops: int(0, 16).optional(),
          ipv6_prefix: int(0, 128).default(DEFAULT_IPV6_PREFIX),
        },
        { error: 'expected xff_trusted_hops or ipv6_prefix' },
      ),
    ],
    {
      error:
        'expected envoy (attributes.source.address) or a mapping { xff_trusted_hops: N (x-forwarded-for; omit for envoy), ipv6_prefix: 64 }',
    },
  )
  .transform((v): SourceIpFrom => {
    if (v === 'envoy') return { from: 'envoy', ipv6Prefix: DEFAULT_IPV6_PREFIX };
    const { xff_trusted_hops: hops, ipv6_prefix: ipv6Prefix } = v;
    return hops === undefined
      ? { from: 'envoy', ipv6Prefix }
      : { from: 'xff', trustedHops: hops, ipv6Prefix };
  });

/** What an API key missing from the key map becomes (identity.unknown_keys). */
export type UnknownKeys = 'own' | 'shared' | 'deny';

/** One source: a mapping with exactly one of the SOURCES keys. */
const sourceFields = z.strictObject(
  {
    header: str('a header name', /^[A-Za-z0-9-]{1,128}$/).optional(),
    api_key: z.literal(true, { error: 'expected true' }).optional(),
    // "jwt_authn:payload.org_id" → filter "jwt_authn" (its name may contain dots), field path [payload, org_id]
    metadata: str('a "filter.name:field.path" string', /^[^:]+:[^:]+$/).optional(),
    path_segment: int(0, 32).optional(),
    key_map: str('a field name of the key map entries (e.g. org, plan)', DIM).optional(),
    default: str('a non-empty string', /^.{1,256}$/s).optional(),
    /** The client's address: Envoy's attributes.source.address, or the right hop of x-forwarded-for. */
    source_ip: sourceIpSchema.optional(),
  },
  {
    error: (iss) =>
      iss.code === 'unrecognized_keys'
        ? `unknown identity source (allowed: ${SOURCES.join(', ')})`
        : `expected exactly one of ${SOURCES.join(', ')}`,
  },
);

export const identitySourceSchema = sourceFields
  .meta({ minProperties: 1, maxProperties: 1 })
  .superRefine((o, ctx) => {
    if (Object.keys(o).length !== 1)
      ctx.addIssue({ code: 'custom', message: `expected exactly one of ${SOURCES.join(', ')}`, input: o });
  }, whenValid)
  .transform(toSource);

/** A source as identity.ts reads it (one key each; written out so that `'header' in src` narrows). */
export type IdentitySource =
  | { header: string }
  | { api_key: true }
  | { metadata: { filter: string; path: string[] } }
  | { path_segment: number }
  | { key_map: string }
  | { default: string }
  /** The client's address: Envoy's attributes.source.address, or the right hop of x-forwarded-for. */
  | { source_ip: SourceIpFrom };

function toSource(o: z.output<typeof sourceFields>): IdentitySource {
  if (o.header !== undefined) return { header: o.header.toLowerCase() };
  if (o.api_key !== undefined) return { api_key: true as const };
  if (o.metadata !== undefined) {
    const [filter, field] = o.metadata.split(':');
    return { metadata: { filter, path: field.split('.') } };
  }
  if (o.path_segment !== undefined) return { path_segment: o.path_segment };
  if (o.key_map !== undefined) return { key_map: o.key_map };
  if (o.source_ip !== undefined) return { source_ip: o.source_ip };
  return { default: o.default as string };
}

const LIST = 'a non-empty list of sources';
const sourceList = z
  .array(identitySourceSchema, { error: `expected ${LIST}` })
  .min(1, { error: `expected ${LIST}` });

/** A dimension: a list of sources, or `{ sources, values, default }` (unknown values become `default`). */
const dimensionSchema = z
  .union(
    [
      sourceList,
      mapping({
        sources: sourceList,
        values: z
          .array(z.string({ error: 'expected a string' }), { error: 'expected a non-empty list of strings' })
          .min(1, { error: 'expected a non-empty list of strings' })
          .optional(),
        default: str('a non-empty string', /^.{1,256}$/s).optional(),
      }).superRefine((d, ctx) => {
        if (d.default !== undefined && d.values && !d.values.includes(d.default))
          problem(ctx, ['default'], `expected one of values (${d.values.join(', ')}), got "${d.default}"`);
      }, whenValid),
    ],
    { error: `expected ${LIST}` },
  )
  .transform((d) => {
    if (Array.isArray(d)) return { sources: d } as IdentityDim;
    const values = d.values ? new Set(d.values) : undefined;
    return { sources: d.sources, values, fallback: d.default } as IdentityDim;
  });

export interface IdentityDim {
  sources: IdentitySource[];
  /** Known values; anything else becomes `fallback` (e.g. an unknown plan → the default plan). */
  values?: Set<string>;
  fallback?: string;
}

/** Without dimensions: the API key first (a header is only as trustworthy as the hop that set it). */
const DEFAULT_IDENTITY: Record<string, IdentityDim> = {
  tenant: { sources: [{ api_key: true }, { header: 'x-tenant-id' }] },
};

const SETTINGS = ['api_key_secret_env', 'key_map', 'unknown_keys'];

export const identitySchema = mapping({
  /** Environment variable holding the API-key HMAC secret (default TOLLGATE_API_KEY_SECRET). */
  api_key_secret_env: str('an environment variable name', /^[A-Z_][A-Z0-9_]*$/).optional(),
  /** The key map file (API key digest → dimension values), relative to the config file. */
  key_map: str('a file path', /^.{1,4096}$/).optional(),
  /** With a key map: what an API key not in it becomes (own: its own id; shared: one id; deny: 401). */
  unknown_keys: oneOf(['own', 'shared', 'deny']).optional(),
})
  .catchall(dimensionSchema)
  .superRefine((o, ctx) => {
    for (const dim of Object.keys(o)) {
      if (!SETTINGS.includes(dim) && (!DIM.test(dim) || dim === 'model'))
        ctx.addIssue({
          code: 'custom',
          path: [dim],
          input: dim,
          message: 'expected a dimension name (lowercase letters, digits, _; not "model")',
        });
    }
  }, always)
  .transform((o, ctx) => {
    const { api_key_secret_env: secretEnv, key_map: keyMapFile, unknown_keys: unknownKeys, ...rest } = o;
    const dims = rest as Record<string, IdentityDim>;
    const identity = Object.keys(dims).length > 0 ? dims : DEFAULT_IDENTITY;
    const usesKeyMap = Object.values(identity).some((d) => d.sources.some((s) => 'key_map' in s));
    if (usesKeyMap && !keyMapFile) problem(ctx, ['key_map'], 'expected a file path (a source uses key_map)');
    if (unknownKeys && !keyMapFile)
      problem(ctx, ['unknown_keys'], 'only valid with identity.key_map (which keys are known)');
    return { identity, secretEnv, keyMapFile, unknownKeys: unknownKeys as UnknownKeys | undefined };
  });
