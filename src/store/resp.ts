/**
 * The store's Valkey connection: one socket, RESP2, pipelined. Every check goes through here, so it
 * does only what the check path needs: send a batch of commands as one write, match replies to
 * commands in order, fail fast while disconnected, reconnect in the background.
 *
 * Why not the general client (iovalkey) on this path: per command it builds a Command object, a
 * promise with two wrappers, a timer and a Pipeline per batch, which costs measurable CPU per check
 * and old-generation garbage (docs/performance.md). iovalkey serves the queue consumer, tests and
 * `store.client: iovalkey`.
 *
 * Failure model (what the breaker relies on):
 * - not connected → a command is rejected at once (no hidden offline queue);
 * - the connection drops → every command in flight is rejected, and it reconnects with backoff;
 * - no reply to the oldest command for `replyTimeoutMs` (server hung, paused or partitioned) →
 *   every command in flight is rejected and the socket is replaced: replies match commands by
 *   order only, so a late reply must never reach the next command.
 */
import net from 'node:net';
import tls from 'node:tls';

export interface RespOptions {
  host: string;
  port: number;
  /** TLS options (valkeys://); plain TCP when absent. */
  tls?: tls.ConnectionOptions;
  username?: string;
  password?: string;
  db: number;
  /** CLIENT SETNAME (shows in CLIENT LIST). */
  name: string;
  /** Connect + TLS + AUTH/SELECT must finish within this. */
  connectTimeoutMs: number;
  /** No reply to the oldest command in flight for this long → drop the connection (see above). */
  replyTimeoutMs: number;
  /** Delay before reconnect attempt `n` (1, 2, …). */
  retryDelayMs?: (n: number) => number;
}

export type RespValue = number | string | null | RespValue[];

/** An error reply from the server (e.g. NOSCRIPT, WRONGPASS, NOPERM); `message` is its text. */
export class RespReplyError extends Error {
  override name = 'RespReplyError';
}

/** One command: its arguments, and where its reply goes. */
export interface RespCommand {
  args: (string | number)[];
  resolve: (v: RespValue) => void;
  reject: (e: Error) => void;
}

interface InFlight {
  cmd: RespCommand;
  sentAt: number;
}

const CRLF = '\r\n';
/** Reconnect attempt n waits 50 ms, doubling, at most 2 s (also the queue consumer's iovalkey retryStrategy). */
export const defaultRetryDelayMs = (n: number) => Math.min(50 * 2 ** Math.min(n, 6), 2000);
const INCOMPLETE = Symbol('incomplete');

export class RespConnection {
  status: 'idle' | 'connecting' | 'ready' | 'closed' = 'idle';
  /** The current socket (tests count its writes). */
  socket?: net.Socket;
  private inflight: (InFlight | undefined)[] = [];
  private head = 0;
  private buf: Buffer | null = null;
  private attempts = 0;
  private retryTimer?: NodeJS.Timeout;
  private watchdog?: NodeJS.Timeout;
  private waiters: { resolve: () => void; reject: (e: Error) => void }[] = [];
  private lastError?: Error;
  /** performance.now() of the latest bytes read from the server: it is making progress. */
  lastReplyAt = Number.NEGATIVE_INFINITY;

  constructor(private readonly o: RespOptions) {}

  /** Connect (if not yet) and resolve once ready; reject on this attempt's failure (it keeps retrying). */
  connect(): Promise<void> {
    if (this.status === 'ready') return Promise.resolve();
    if (this.status === 'closed') return Promise.reject(new Error('connection closed'));
    const p = new Promise<void>((resolve, reject) => this.waiters.push({ resolve, reject }));
    if (this.status === 'idle') this.open();
    return p;
  }

  /** Send commands as one write. Each is answered through its own resolve/reject. */
  send(cmds: RespCommand[]): void {
    if (this.status !== 'ready' || !this.socket) {
      const err = new Error(`Valkey not connected${this.lastError ? ` (${this.lastError.message})` : ''}`);
      for (const c of cmds) c.reject(err);
      return;
    }
    this.write(this.socket, cmds);
  }

  /** One command, as a promise (start-up, SCRIPT LOAD, PING: not the hot path). */
  command(args: (string | number)[]): Promise<RespValue> {
    return new Promise((resolve, reject) => this.send([{ args, resolve, reject }]));
  }

  close(): void {
    this.status = 'closed';
    clearTimeout(this.retryTimer);
    this.stopWatchdog();
    this.failAll(new Error('connection closed'));
    this.socket?.destroy();
    this.settleWaiters(new Error('connection closed'));
  }

  private write(socket: net.Socket, cmds: RespCommand[]): void {
    let out = '';
    const now = Date.now();
    for (const c of cmds) {
      const a = c.args;
      out += `*${a.length}${CRLF}`;
      for (let i = 0; i < a.length; i++) {
        const v = typeof a[i] === 'string' ? (a[i] as string) : String(a[i]);
        out += `$${Buffer.byteLength(v)}${CRLF}${v}${CRLF}`;
      }
      this.inflight.push({ cmd: c, sentAt: now });
    }
    socket.write(out);
    this.startWatchdog();
  }

  private open(): void {
    this.status = 'connecting';
    const o = this.o;
    const socket = o.tls
      ? tls.connect({ host: o.host, port: o.port, ...o.tls })
      : net.connect({ host: o.host, port: o.port });
    socket.setNoDelay(true);
    this.socket = socket;
    this.buf = null;
    const timer = setTimeout(
      () => this.drop(socket, new Error(`connect timeout after ${o.connectTimeoutMs} ms`)),
      o.connectTimeoutMs,
    );
    socket.on(o.tls ? 'secureConnect' : 'connect', () => {
      // The handshake goes through the same in-order reply matching as every command.
      // An optional step's error reply is ignored instead of failing the handshake.
      const hs: Promise<RespValue>[] = [];
      const cmd = (args: (string | number)[], optional = false) =>
        hs.push(
          new Promise((resolve, reject) =>
            this.write(socket, [{ args, resolve, reject: optional ? () => resolve(null) : reject }]),
          ),
        );
      if (o.password !== undefined) cmd(o.username ? ['AUTH', o.username, o.password] : ['AUTH', o.password]);
      if (o.db) cmd(['SELECT', o.db]);
      // The name is a courtesy for CLIENT LIST: an ACL that does not grant client|setname must not
      // keep tollgate from connecting.
      cmd(['CLIENT', 'SETNAME', o.name], true);
      Promise.all(hs).then(
        () => {
          if (this.socket !== socket || this.status === 'closed') return;
          clearTimeout(timer);
          this.status = 'ready';
          this.attempts = 0;
          this.lastError = undefined;
          this.settleWaiters();
        },
        (err: Error) => this.drop(socket, err),
      );
    });
    socket.on('data', (d: Buffer) => this.onData(socket, d));
    socket.on('error', (err) => {
      if (this.socket === socket) this.lastError = err;
    });
    socket.on('close', () => {
      clearTimeout(timer);
      this.drop(socket, this.lastError ?? new Error('connection closed by the server'));
    });
  }

  /**
   * Stop using `socket`: fail what is in flight on it, fail a pending connect(), reconnect with
   * backoff (unless closed). Synchronous, so no command is written to a socket being torn down.
   */
  private drop(socket: net.Socket, err: Error): void {
    if (this.socket !== socket) return;
    this.socket = undefined;
    this.lastError = err;
    socket.destroy();
    this.stopWatchdog();
    this.failAll(new Error(`Connection is closed. ${err.message}`));
    this.settleWaiters(err);
    if (this.status === 'closed') return;
    this.status = 'connecting';
    const delay = (this.o.retryDelayMs ?? defaultRetryDelayMs)(++this.attempts);
    this.retryTimer = setTimeout(() => {
      if (this.status !== 'closed') this.open();
    }, delay);
    this.retryTimer.unref();
  }

  private settleWaiters(err?: Error): void {
    const w = this.waiters;
    this.waiters = [];
    for (const x of w) {
      if (err) x.reject(err);
      else x.resolve();
    }
  }

  private failAll(err: Error): void {
    const list = this.inflight;
    const from = this.head;
    this.inflight = [];
    this.head = 0;
    for (let i = from; i < list.length; i++) list[i]?.cmd.reject(err);
  }

  /** One timer while commands are in flight: the oldest must be answered within replyTimeoutMs. */
  private startWatchdog(): void {
    if (this.watchdog) return;
    const every = Math.max(10, Math.min(250, this.o.replyTimeoutMs / 4));
    this.watchdog = setInterval(() => {
      const oldest = this.inflight[this.head];
      if (!oldest) {
        this.stopWatchdog();
        return;
      }
      if (Date.now() - oldest.sentAt >= this.o.replyTimeoutMs && this.socket) {
        this.failAll(new Error('Command timed out'));
        this.drop(this.socket, new Error(`no reply within ${this.o.replyTimeoutMs} ms`));
      }
    }, every);
    this.watchdog.unref();
  }

  private stopWatchdog(): void {
    clearInterval(this.watchdog);
    this.watchdog = undefined;
  }

  private onData(socket: net.Socket, chunk: Buffer): void {
    if (this.socket !== socket) return;
    this.lastReplyAt = performance.now(); // bytes of a reply arrived: progress, even if incomplete
    const b = this.buf ? Buffer.concat([this.buf, chunk]) : chunk;
    this.buf = null;
    let pos = 0;
    while (pos < b.length) {
      let r: Parsed | typeof INCOMPLETE;
      try {
        r = parse(b, pos);
      } catch (err) {
        // Not RESP (e.g. a TLS port spoken to in plain text): drop the connection, never crash.
        this.drop(socket, err as Error);
        return;
      }
      if (r === INCOMPLETE) break;
      pos = r.pos;
      const f = this.inflight[this.head];
      if (!f) {
        // A reply nobody asked for: replies and commands no longer line up.
        this.drop(socket, new Error('unexpected reply from Valkey'));
        return;
      }
      this.inflight[this.head++] = undefined;
      if (this.head === this.inflight.length) {
        this.inflight.length = 0;
        this.head = 0;
      } else if (this.head >= 1024) {
        this.inflight = this.inflight.slice(this.head);
        this.head = 0;
      }
      if (r.err) f.cmd.reject(new RespReplyError(r.err));
      else f.cmd.resolve(r.v);
    }
    if (pos < b.length) this.buf = b.subarray(pos);
  }
}

interface Parsed {
  v: RespValue;
  err?: string;
  pos: number;
}

/** One RESP2 reply starting at `pos`, or INCOMPLETE when the buffer ends first. */
function parse(b: Buffer, pos: number): Parsed | typeof INCOMPLETE {
  const end = b.indexOf(13, pos + 1);
  if (end < 0 || end + 1 >= b.length) return INCOMPLETE;
  const type = b[pos];
  const next = end + 2;
  switch (type) {
    case 58: // ':' integer
      return { v: int(b, pos + 1, end), pos: next };
    case 43: // '+' simple string
      return { v: b.toString('utf8', pos + 1, end), pos: next };
    case 45: // '-' error
      return { v: null, err: b.toString('utf8', pos + 1, end), pos: next };
    case 36: {
      // '$' bulk string
      const n = int(b, pos + 1, end);
      if (n < 0) return { v: null, pos: next };
      if (next + n + 2 > b.length) return INCOMPLETE;
      return { v: b.toString('utf8', next, next + n), pos: next + n + 2 };
    }
    case 42: {
      // '*' array
      const n = int(b, pos + 1, end);
      if (n < 0) return { v: null, pos: next };
      const out: RespValue[] = new Array(n);
      let p = next;
      let err: string | undefined;
      for (let i = 0; i < n; i++) {
        const r = parse(b, p);
        if (r === INCOMPLETE) return INCOMPLETE;
        out[i] = r.v;
        err ??= r.err;
        p = r.pos;
      }
      return { v: out, pos: p, err };
    }
    default:
      throw new Error(`RESP: unexpected type byte ${type}`);
  }
}

/** The decimal integer in b[start, end). */
function int(b: Buffer, start: number, end: number): number {
  let neg = false;
  let i = start;
  if (b[i] === 45) {
    neg = true;
    i++;
  }
  if (i >= end) throw new Error('RESP: empty integer');
  let n = 0;
  for (; i < end; i++) {
    const d = b[i] - 48;
    if (d < 0 || d > 9) throw new Error('RESP: bad integer');
    n = n * 10 + d;
  }
  return neg ? -n : n;
}
