/**
 * Listener settings (server.*): where each port is bound. The authorization listeners decide whose
 * budget a call spends, so they are the ones to keep private:
 *   grpc_host / grpc_port   ext_authz gRPC + grpc.health.v1            (default 0.0.0.0:9191)
 *   http_host / http_port   /metrics, /healthz, /readyz only            (default all interfaces :8181)
 *   http_authz              the HTTP authorization mode: off unless set; { port, host } with host
 *                           127.0.0.1 unless told otherwise
 */

export interface HttpAuthzListener {
  host: string;
  port: number;
}

export interface Listeners {
  grpcHost: string;
  /** undefined = every interface (Node's default: IPv6 and IPv4). */
  httpHost?: string;
  httpAuthz?: HttpAuthzListener;
}

/** The loopback address the HTTP authorization mode binds to unless told otherwise. */
export const AUTHZ_DEFAULT_HOST = '127.0.0.1';

interface Check {
  fail(path: string, expected: string, got?: unknown): void;
  problems: string[];
}

const HOST = /^[A-Za-z0-9.:%_-]{1,253}$/;

function host(c: Check, path: string, v: unknown): string | undefined {
  if (typeof v === 'string' && HOST.test(v)) return v;
  c.fail(path, 'an address to bind to (e.g. 127.0.0.1, 0.0.0.0, ::)', v);
  return undefined;
}

function port(c: Check, path: string, v: unknown): number | undefined {
  if (typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 65535) return v;
  c.fail(path, 'a port from 0 to 65535', v);
  return undefined;
}

/** Validate the listener fields of the raw `server` mapping. */
export function parseListeners(c: Check, sv: Record<string, unknown>): Listeners {
  const out: Listeners = {
    grpcHost: sv.grpc_host === undefined ? '0.0.0.0' : (host(c, 'server.grpc_host', sv.grpc_host) ?? ''),
  };
  if (sv.http_host !== undefined) out.httpHost = host(c, 'server.http_host', sv.http_host);
  const a = sv.http_authz;
  if (a === undefined || a === false) return out;
  if (!a || typeof a !== 'object' || Array.isArray(a)) {
    c.fail('server.http_authz', 'a mapping { port, host } (or false)', a);
    return out;
  }
  const o = a as Record<string, unknown>;
  for (const k of Object.keys(o))
    if (k !== 'port' && k !== 'host')
      c.problems.push(`server.http_authz.${k}: unknown field (allowed: port, host)`);
  if (o.port === undefined) {
    c.fail('server.http_authz.port', 'a port from 0 to 65535 (the HTTP authorization mode has its own port)');
    return out;
  }
  const p = port(c, 'server.http_authz.port', o.port);
  const h = o.host === undefined ? AUTHZ_DEFAULT_HOST : host(c, 'server.http_authz.host', o.host);
  if (p !== undefined && h !== undefined) out.httpAuthz = { host: h, port: p };
  return out;
}

/** Two listeners on one fixed port would fail at start-up; say so at validation instead. */
export function checkPortClash(
  c: Check,
  s: { grpcPort: number; httpPort: number; httpAuthz?: HttpAuthzListener },
): void {
  const a = s.httpAuthz?.port;
  if (a && (a === s.httpPort || a === s.grpcPort))
    c.problems.push(
      `server.http_authz.port: expected a port of its own (not the ${a === s.httpPort ? 'metrics port server.http_port' : 'gRPC port'}), got ${a}`,
    );
  if (s.httpPort && s.httpPort === s.grpcPort)
    c.problems.push(`server.http_port: expected a port other than server.grpc_port, got ${s.httpPort}`);
}
