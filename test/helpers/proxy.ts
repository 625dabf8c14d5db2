/**
 * An Envoy-like HTTP proxy for the official SDKs, and a fake provider behind it. Per request the proxy
 * asks tollgate's Check over gRPC as Envoy's ext_authz filter does (method, path, headers, the body as
 * raw_body), answers denies itself (status, headers, body), forwards allows to the provider with the
 * Check's upstream headers (x-tollgate-reservation removed before the provider, as the shipped route
 * does), and streams the provider's answer back while feeding it to tollgate's ext_proc as Envoy does
 * in observability mode (response headers with the forwarded ext_authz metadata, each body chunk,
 * end_of_stream). A reroute (x-tollgate-model on the upstream request) rewrites the body's top-level
 * "model" as envoy.yaml's Lua filter does (deploy/lua/model-rewrite.lua), refusing with 400 a body it
 * cannot rewrite, never forwarding it unrewritten.
 */
import { createServer, type IncomingMessage, request, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { EnvoyClient } from './envoy.js';
import { openExtProc } from './ext-proc.js';
import { anthropicJson, anthropicSse, chatJson, chatSse } from './provider-bodies.js';

export interface Listening {
  port: number;
  close(): Promise<void>;
}

const listen = async (server: Server): Promise<Listening> => {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as AddressInfo).port,
    close: () => new Promise((r) => server.close(() => r())),
  };
};

const readBody = async (req: IncomingMessage): Promise<Buffer> => {
  const parts: Buffer[] = [];
  for await (const c of req) parts.push(c as Buffer);
  return Buffer.concat(parts);
};

/** What the fake provider reports for every call. */
export const PROVIDER_USAGE = {
  openai: { prompt: 23, output: 41, cached: 0 },
  anthropic: { input: 19, output: 37 },
};
export const PROVIDER_PIECES = ['Hello', ' from', ' the', ' fake', ' provider', ' 😀'];

/** What the fake provider received. */
export interface ProviderRequest {
  path: string;
  headers: IncomingMessage['headers'];
  body: any;
}

/**
 * A provider answering OpenAI chat and Anthropic messages, JSON or SSE (with usage), in small writes;
 * it records every request.
 */
export async function startFakeProvider(): Promise<Listening & { requests: ProviderRequest[] }> {
  const requests: ProviderRequest[] = [];
  const server = createServer(async (req, res) => {
    const body = JSON.parse((await readBody(req)).toString('utf8') || '{}');
    requests.push({ path: req.url ?? '', headers: req.headers, body });
    const stream = body.stream === true;
    let text: string;
    if (req.url?.startsWith('/v1/chat/completions')) {
      const u = PROVIDER_USAGE.openai;
      const withUsage = body.stream_options?.include_usage === true;
      text = stream
        ? chatSse(PROVIDER_PIECES, withUsage ? u : undefined)
        : chatJson(u.prompt, u.output, u.cached, PROVIDER_PIECES.join(''));
    } else if (req.url?.startsWith('/v1/messages')) {
      const u = PROVIDER_USAGE.anthropic;
      text = stream ? anthropicSse(PROVIDER_PIECES, u.input, u.output) : anthropicJson(u.input, u.output);
    } else {
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"not found"}');
      return;
    }
    res.writeHead(200, { 'content-type': stream ? 'text/event-stream' : 'application/json' });
    const b = Buffer.from(text);
    for (let i = 0; i < b.length; i += 97) {
      res.write(b.subarray(i, i + 97));
      await new Promise((r) => setImmediate(r));
    }
    res.end();
  });
  return Object.assign(await listen(server), { requests });
}

/**
 * deploy/lua/model-rewrite.lua's rewrite: every top-level "model" of a JSON object set to `model`, or
 * why it cannot be done (not JSON, not an object, no top-level string "model").
 */
export function rewriteModel(body: Buffer, model: string): Buffer | { refused: string } {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch {
    return { refused: 'the body is not valid JSON' };
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed))
    return { refused: 'the body is not a JSON object' };
  const o = parsed as Record<string, unknown>;
  if (!('model' in o)) return { refused: 'the body has no top-level "model"' };
  if (typeof o.model !== 'string') return { refused: 'a top-level "model" is not a string' };
  return Buffer.from(JSON.stringify({ ...o, model }));
}

/** A call the proxy answered itself (tollgate denied it): when, the status and headers. */
export interface Denial {
  at: number;
  status: number;
  headers: Record<string, string>;
}

/** The body to forward (rewritten on a reroute), or undefined when the Lua filter would refuse it (answered). */
function applyReroute(body: Buffer, model: string | undefined, res: ServerResponse): Buffer | undefined {
  if (model === undefined) return body;
  const out = rewriteModel(body, model);
  if (!('refused' in out)) return out;
  const message = `tollgate rerouted this request to another model but the gateway could not rewrite its body: ${out.refused}`;
  const error = { message, type: 'invalid_request_error', code: 'reroute_not_applied', param: 'model' };
  res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ error }));
  return undefined;
}

/** The proxy in front of `providerPort`, authorizing with tollgate at `grpcPort`. */
export async function startEnvoyLikeProxy(
  grpcPort: number,
  providerPort: number,
): Promise<Listening & { attempts: () => number; denials: Denial[] }> {
  const envoy = new EnvoyClient(grpcPort);
  let attempts = 0;
  const denials: Denial[] = [];
  const server = createServer(async (req, res) => {
    attempts++;
    try {
      let body = await readBody(req);
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(req.headers))
        if (typeof v === 'string') headers[k] = v;
        else if (Array.isArray(v)) headers[k] = v.join(', ');
      const a = await envoy.check({ method: req.method, path: req.url, headers, body });
      if (!a.allowed) {
        denials.push({ at: Date.now(), status: a.httpStatus ?? 403, headers: a.headers });
        res.writeHead(a.httpStatus ?? 403, a.headers).end(a.body ?? '');
        return;
      }
      const rewritten = applyReroute(body, a.upstream['x-tollgate-model'], res);
      if (!rewritten) return;
      body = rewritten;
      const id = a.reservation;
      const up: Record<string, string> = { ...headers, ...a.upstream, 'content-length': String(body.length) };
      for (const r of [...a.removed, 'x-tollgate-reservation']) delete up[r];
      delete up.host;
      const pr = request({
        host: '127.0.0.1',
        port: providerPort,
        method: req.method,
        path: req.url,
        headers: up,
      });
      pr.on('response', (upres) => {
        const proc = id ? openExtProc(grpcPort) : undefined;
        const meta = id && {
          filter_metadata: {
            'envoy.filters.http.ext_authz': { fields: { tollgate_reservation: { stringValue: id } } },
          },
        };
        const rh = Object.entries(upres.headers).flatMap(([key, v]) =>
          typeof v === 'string' ? [{ key, raw_value: Buffer.from(v) }] : [],
        );
        rh.unshift({ key: ':status', raw_value: Buffer.from(String(upres.statusCode)) });
        proc?.send({
          metadata_context: meta,
          observability_mode: true,
          response_headers: { headers: { headers: rh }, end_of_stream: false },
        });
        res.writeHead(upres.statusCode ?? 502, { ...upres.headers, ...a.headers });
        upres.on('data', (c: Buffer) => {
          proc?.send({ observability_mode: true, response_body: { body: c, end_of_stream: false } });
          res.write(c);
        });
        upres.on('end', () => {
          proc?.send({
            observability_mode: true,
            response_body: { body: Buffer.alloc(0), end_of_stream: true },
          });
          res.end();
          void proc?.end();
        });
      });
      pr.on('error', () => res.writeHead(502).end());
      pr.end(body);
    } catch {
      if (!res.headersSent) res.writeHead(500);
      res.end();
    }
  });
  const l = await listen(server);
  return {
    port: l.port,
    attempts: () => attempts,
    denials,
    close: async () => {
      envoy.close();
      await l.close();
    },
  };
}
