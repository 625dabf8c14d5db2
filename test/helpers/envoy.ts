/** A gRPC client that speaks to tollgate the way Envoy's ext_authz filter does. */
import * as grpc from '@grpc/grpc-js';
import { loadGrpcPackages } from '../../src/authz/grpc/protos.js';

export interface CheckOptions {
  path?: string;
  method?: string;
  headers?: Record<string, string>;
  /** JSON value (stringified), a raw string, or a Buffer. Packed as raw_body like pack_as_bytes: true. */
  body?: unknown;
  /** Send `body` as the string field instead of raw_body. */
  asString?: boolean;
  partial?: boolean;
  metadata?: Record<string, unknown>;
}

export interface CheckAnswer {
  code: number;
  allowed: boolean;
  httpStatus?: number;
  /** denied_response.headers or ok_response.response_headers_to_add, lower-case keys. */
  headers: Record<string, string>;
  /** ok_response.headers (to upstream). */
  upstream: Record<string, string>;
  removed: string[];
  appendActions: string[];
  body?: string;
  json?: any;
  /** An allow's reservation id: dynamic_metadata.tollgate_reservation (else the upstream header). */
  reservation?: string;
  raw: any;
}

export function buildCheckRequest(o: CheckOptions): any {
  const bodyBuf =
    o.body === undefined
      ? undefined
      : Buffer.isBuffer(o.body)
        ? o.body
        : Buffer.from(typeof o.body === 'string' ? o.body : JSON.stringify(o.body));
  const headers: Record<string, string> = {
    ':method': o.method ?? 'POST',
    ':path': o.path ?? '/v1/chat/completions',
    'content-type': 'application/json',
    ...(bodyBuf
      ? {
          'content-length': String(bodyBuf.length),
          'x-envoy-auth-partial-body': o.partial ? 'true' : 'false',
        }
      : {}),
    ...(o.headers ?? {}),
  };
  const http: any = {
    method: o.method ?? 'POST',
    path: o.path ?? '/v1/chat/completions',
    headers,
    protocol: 'HTTP/1.1',
  };
  if (bodyBuf) {
    if (o.asString) http.body = bodyBuf.toString('utf8');
    else http.raw_body = bodyBuf;
    http.size = bodyBuf.length;
  }
  const req: any = { attributes: { request: { http } } };
  if (o.metadata) req.attributes.metadata_context = { filter_metadata: o.metadata };
  return req;
}

export class EnvoyClient {
  readonly client: any;
  constructor(port: number) {
    const { AuthorizationClient } = loadGrpcPackages();
    this.client = new AuthorizationClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), {
      'grpc.max_send_message_length': 64 * 1024 * 1024,
    });
  }

  checkRaw(req: any, deadlineMs = 10_000): Promise<any> {
    return new Promise((resolve, reject) =>
      this.client.Check(req, { deadline: Date.now() + deadlineMs }, (err: Error | null, res: any) =>
        err ? reject(err) : resolve(res),
      ),
    );
  }

  async check(o: CheckOptions, deadlineMs?: number): Promise<CheckAnswer> {
    const res = await this.checkRaw(buildCheckRequest(o), deadlineMs);
    const code = res.status?.code ?? 0;
    const toMap = (list: any[] | undefined) => {
      const m: Record<string, string> = {};
      for (const h of list ?? []) m[h.header.key.toLowerCase()] = h.header.value;
      return m;
    };
    const appendActions: string[] = [];
    for (const list of [
      res.ok_response?.headers,
      res.ok_response?.response_headers_to_add,
      res.denied_response?.headers,
    ])
      for (const h of list ?? []) appendActions.push(h.append_action ?? 'APPEND_IF_EXISTS_OR_ADD');
    if (code === 0) {
      const upstream = toMap(res.ok_response?.headers);
      return {
        reservation:
          res.dynamic_metadata?.fields?.tollgate_reservation?.stringValue ??
          upstream['x-tollgate-reservation'],
        code,
        allowed: true,
        headers: toMap(res.ok_response?.response_headers_to_add),
        upstream,
        removed: res.ok_response?.headers_to_remove ?? [],
        appendActions,
        raw: res,
      };
    }
    const body = res.denied_response?.body;
    let json: any;
    try {
      json = body ? JSON.parse(body) : undefined;
    } catch {}
    const st = res.denied_response?.status?.code;
    return {
      code,
      allowed: false,
      httpStatus: typeof st === 'number' ? st : httpStatusNumber(st),
      headers: toMap(res.denied_response?.headers),
      upstream: {},
      removed: [],
      appendActions,
      body,
      json,
      raw: res,
    };
  }

  close(): void {
    this.client.close();
  }
}

const STATUS: Record<string, number> = {
  TooManyRequests: 429,
  BadRequest: 400,
  Forbidden: 403,
  ServiceUnavailable: 503,
  Accepted: 202,
  PayloadTooLarge: 413,
  OK: 200,
};
function httpStatusNumber(s: string | undefined): number | undefined {
  return s === undefined ? undefined : STATUS[s];
}

export function chat(
  model: string,
  content: string,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  return { model, messages: [{ role: 'user', content }], ...extra };
}
