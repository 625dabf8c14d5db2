/**
 * The HTTP authorization mode (Envoy ext_authz `http_service`) on its own listener
 * (server.http_authz; off unless configured, bound to 127.0.0.1 unless told otherwise). Every
 * request is a check of that method, path, headers and body; 200 = allow (headers to add upstream
 * returned as response headers), anything else = deny with its status, headers and body. An optional
 * "/authz" prefix (Envoy's `path_prefix`) is stripped.
 *
 * Bodies larger than server.max_body_bytes are handled like Envoy's allow_partial_message: the first
 * max_body_bytes are decided on, marked partial, and the cost is estimated from the full size.
 */
import { createServer, type IncomingMessage } from 'node:http';
import type { Decider } from '../decision/decide.js';
import type { Decision } from '../decision/types.js';
import { errorJson, type HttpListener, listen, sendJson } from '../ops/http.js';

export interface AuthzHttpOptions {
  port: number;
  host: string;
  decider: Decider;
  observe: (d: Decision, seconds: number, requestId: string | undefined) => void;
  /** Count an authz check in flight; false = draining, refuse it. */
  begin?: () => boolean;
  end?: () => void;
}

export interface ReadBody {
  /** At most `limit` bytes; undefined when the request had no body. */
  body?: Buffer;
  /** Bytes the client sent in total. */
  size: number;
  truncated: boolean;
}

export function readBody(req: IncomingMessage, limit: number): Promise<ReadBody> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let kept = 0;
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (kept >= limit) return; // keep reading (the client is still sending) but store no more
      const part = kept + c.length > limit ? c.subarray(0, limit - kept) : c;
      chunks.push(part);
      kept += part.length;
    });
    req.on('end', () =>
      resolve({ body: kept > 0 ? Buffer.concat(chunks) : undefined, size, truncated: size > kept }),
    );
    req.on('error', reject);
  });
}

const SHUTTING_DOWN = errorJson('tollgate is shutting down', 'server_error', 'unavailable');

export async function startAuthzHttp(opts: AuthzHttpOptions): Promise<HttpListener> {
  const server = createServer(async (req, res) => {
    try {
      if (opts.begin && !opts.begin()) {
        req.resume();
        return sendJson(res, 503, SHUTTING_DOWN, { connection: 'close' });
      }
      try {
        const t0 = performance.now();
        const headers: Record<string, string> = {};
        for (const [k, v] of Object.entries(req.headers))
          if (v !== undefined) headers[k] = Array.isArray(v) ? v.join(',') : v;
        const { body, size, truncated } = await readBody(req, opts.decider.config.server.maxBodyBytes);
        if (truncated) {
          // As Envoy does with allow_partial_message: a prefix of the body, flagged partial.
          headers['x-envoy-auth-partial-body'] = 'true';
          if (!(Number(headers['content-length']) > 0)) headers['content-length'] = String(size);
        }
        const url = req.url ?? '/';
        const path = url.startsWith('/authz/') ? url.slice('/authz'.length) : url;
        const d = await opts.decider.decide({ method: req.method ?? 'GET', path, headers, body });
        opts.observe(d, (performance.now() - t0) / 1000, headers['x-request-id']);
        if (d.kind === 'allow') {
          // Envoy's http_service removes the headers named here from the upstream request
          // (client-sent x-tollgate-*: no spoofing in HTTP mode either).
          const remove = d.removeHeaders.length
            ? { 'x-envoy-auth-headers-to-remove': d.removeHeaders.join(',') }
            : {};
          res.writeHead(200, { ...d.upstreamHeaders, ...d.responseHeaders, ...remove });
          return res.end();
        }
        res.writeHead(d.httpStatus, d.headers);
        res.end(d.body);
      } finally {
        opts.end?.();
      }
    } catch {
      if (res.headersSent) return res.destroy();
      sendJson(res, 500, errorJson('internal error', 'server_error', 'internal_error'));
    }
  });
  return listen(server, opts.port, opts.host);
}
