/**
 * An ext_proc client that plays Envoy's ext_proc filter against tollgate's Process stream, with
 * messages encoded from Envoy's OFFICIAL protos (@grpc/grpc-js-xds deps): the reservation id forwarded
 * as ext_authz metadata and/or as the upstream request header, the response headers, the body in the
 * given chunks, end_of_stream; in observability mode (nothing answered) or not (each message awaits
 * its answer).
 */
import { accessSync, constants } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import protobuf from 'protobufjs';

const require = createRequire(import.meta.url);
const XDS_DEPS = join(dirname(require.resolve('@grpc/grpc-js-xds/package.json')), 'deps');
const INCLUDES = ['envoy-api', 'xds', 'protoc-gen-validate', 'googleapis'].map((d) => join(XDS_DEPS, d));
const PATH = '/envoy.service.ext_proc.v3.ExternalProcessor/Process';

let root: protobuf.Root | undefined;
export function officialExtProc(): protobuf.Root {
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
  r.loadSync(['envoy/service/ext_proc/v3/external_processor.proto'], { keepCase: true });
  r.resolveAll();
  root = r;
  return r;
}

export interface ExtProcPlay {
  /** The reservation id (omit: a stream that names none). */
  id?: string;
  /** How Envoy passes it: forwarded ext_authz metadata (default), the request header, or both. */
  via?: 'metadata' | 'header' | 'both';
  status?: number;
  /** Response headers besides :status (content-type, content-encoding...). */
  headers?: Record<string, string>;
  /** The response body as Envoy streams it; empty/omitted: headers carry end_of_stream. */
  chunks?: (Buffer | string)[];
  /** observability_mode on each message (default true: nothing is answered). */
  observability?: boolean;
  /** Send end_of_stream on the last body chunk (default true). false: the stream is cut after the chunks. */
  complete?: boolean;
  /** How the stream ends: half-close (default) or cancel (Envoy/client gone). */
  close?: 'end' | 'cancel';
  /** Skip the response headers (a call whose response never came). */
  noResponse?: boolean;
}

export interface ExtProcResult {
  /** The answers received (decoded with the official protos), in order. */
  answers: any[];
  /** The kind of each answer (the set oneof member). */
  kinds: string[];
}

const headerMap = (h: Record<string, string>) => ({
  headers: Object.entries(h).map(([key, v]) => ({ key, raw_value: Buffer.from(v) })),
});

/** The ProcessingRequest messages Envoy would send for `p` (plain objects for the official types). */
export function extProcMessages(p: ExtProcPlay): Record<string, unknown>[] {
  const obs = p.observability ?? true;
  const via = p.via ?? 'metadata';
  const meta =
    p.id !== undefined && via !== 'header'
      ? {
          filter_metadata: {
            'envoy.filters.http.ext_authz': { fields: { tollgate_reservation: { stringValue: p.id } } },
          },
        }
      : undefined;
  const out: Record<string, unknown>[] = [];
  const base = () => ({ ...(meta && { metadata_context: meta }), observability_mode: obs });
  if (p.id !== undefined && via !== 'metadata')
    out.push({
      ...base(),
      request_headers: {
        headers: headerMap({ ':method': 'POST', ':path': '/v1/x', 'x-tollgate-reservation': p.id }),
        end_of_stream: false,
      },
    });
  if (p.noResponse) return out;
  const chunks = (p.chunks ?? []).map((c) => (typeof c === 'string' ? Buffer.from(c) : c));
  out.push({
    ...base(),
    response_headers: {
      headers: headerMap({ ':status': String(p.status ?? 200), ...(p.headers ?? {}) }),
      end_of_stream: chunks.length === 0 && (p.complete ?? true),
    },
  });
  chunks.forEach((body, i) => {
    const last = i === chunks.length - 1;
    // Body messages carry no metadata (Envoy forwards it on header messages only).
    out.push({
      observability_mode: obs,
      response_body: { body, end_of_stream: last && (p.complete ?? true) },
    });
  });
  return out;
}

/** Play one call's response to tollgate's ext_proc at 127.0.0.1:port. */
export async function playExtProc(port: number, p: ExtProcPlay): Promise<ExtProcResult> {
  const r = officialExtProc();
  const Req = r.lookupType('envoy.service.ext_proc.v3.ProcessingRequest');
  const Res = r.lookupType('envoy.service.ext_proc.v3.ProcessingResponse');
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  const answers: any[] = [];
  const kinds: string[] = [];
  try {
    const call = client.makeBidiStreamRequest(
      PATH,
      (m: Record<string, unknown>) => Buffer.from(Req.encode(Req.fromObject(m)).finish()),
      (b: Buffer) => Res.toObject(Res.decode(b), { enums: String, oneofs: true }),
    );
    const waiters: ((a: any) => void)[] = [];
    call.on('data', (a: any) => {
      answers.push(a);
      kinds.push(a.response);
      waiters.shift()?.(a);
    });
    const ended = new Promise<void>((resolve) => {
      call.on('status', () => resolve());
      call.on('error', () => resolve());
    });
    const obs = p.observability ?? true;
    for (const m of extProcMessages(p)) {
      const answered = obs
        ? undefined
        : new Promise<void>((resolve, reject) => {
            const t = setTimeout(() => reject(new Error('no ext_proc answer within 5 s')), 5000);
            waiters.push(() => {
              clearTimeout(t);
              resolve();
            });
          });
      call.write(m);
      await answered;
    }
    if (p.close === 'cancel') {
      await new Promise((res) => setTimeout(res, 20));
      call.cancel();
    } else call.end();
    await ended;
    return { answers, kinds };
  } finally {
    client.close();
  }
}

/** An open Process stream, fed as the response streams (the Envoy-like proxy). */
export interface ExtProcStream {
  send(message: Record<string, unknown>): void;
  /** Half-close and wait for the server's status. */
  end(): Promise<void>;
  cancel(): void;
}

export function openExtProc(port: number): ExtProcStream {
  const r = officialExtProc();
  const Req = r.lookupType('envoy.service.ext_proc.v3.ProcessingRequest');
  const Res = r.lookupType('envoy.service.ext_proc.v3.ProcessingResponse');
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  const call = client.makeBidiStreamRequest(
    PATH,
    (m: Record<string, unknown>) => Buffer.from(Req.encode(Req.fromObject(m)).finish()),
    (b: Buffer) => Res.toObject(Res.decode(b), { enums: String, oneofs: true }),
  );
  const ended = new Promise<void>((resolve) => {
    call.on('status', () => resolve());
    call.on('error', () => resolve());
  });
  call.on('data', () => {});
  return {
    send: (m) => call.write(m),
    end: async () => {
      call.end();
      await ended;
      client.close();
    },
    cancel: () => {
      call.cancel();
      client.close();
    },
  };
}
