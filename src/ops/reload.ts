/**
 * Config reload: SIGHUP / App.reload() and the file watch. Validate the file completely, then swap it
 * in with one assignment (`apply`, i.e. Decider.setConfig): a check in flight keeps the config it
 * started with, the next one sees the new one; never a mix. Limit state lives in the store under the
 * limit names, so it carries over.
 */
import { createHash } from 'node:crypto';
import { type FSWatcher, readFileSync, watch } from 'node:fs';
import { basename, dirname } from 'node:path';
import { loadConfig } from '../config/load.js';
import type { Config } from '../config/types.js';
import type { Logger } from './log.js';
import type { Metrics } from './metrics.js';

export interface ReloaderOptions {
  config: Config;
  /** File the config came from: without one there is nothing to reload. */
  file?: string;
  log: Logger;
  metrics: Metrics;
  /** Swap the validated config in (and refresh what depends on it). */
  apply: (next: Config) => void;
  /** No reload while draining. */
  closing: () => boolean;
}

function digest(file: string): string | undefined {
  try {
    return createHash('sha256').update(readFileSync(file)).digest('hex');
  } catch {
    return undefined;
  }
}

export class ConfigReloader {
  config: Config;
  loadedAt = new Date();
  private loadedDigest: string | undefined;
  private watcher: FSWatcher | undefined;

  constructor(private readonly o: ReloaderOptions) {
    this.config = o.config;
    this.loadedDigest = o.file ? this.digestAll() : undefined;
  }

  /** The config file plus its key map (identity.key_map): a change to either reloads. */
  private digestAll(): string {
    return `${digest(this.o.file!)}:${this.config.keyMap ? digest(this.config.keyMap.file) : ''}`;
  }

  /** Re-read the file; keeps the running config when the new one is invalid. */
  readonly reload = (): boolean => {
    const { file, log, metrics } = this.o;
    if (!file || this.o.closing()) return false;
    try {
      const next = loadConfig(file);
      const restartOnly = restartRequired(this.config, next);
      this.config = next;
      this.o.apply(next);
      this.loadedDigest = this.digestAll();
      this.loadedAt = new Date();
      metrics.reloaded(true, next);
      log.info({ file, limits: next.limits.length }, 'configuration reloaded');
      if (restartOnly.length)
        log.warn({ fields: restartOnly }, 'configuration fields changed that only apply after a restart');
      return true;
    } catch (err) {
      metrics.reloaded(false);
      log.error(
        { file, err: (err as Error).message },
        'configuration reload failed; keeping the running configuration',
      );
      return false;
    }
  };

  /**
   * Watch the directory, not the file: editors replace the file (rename) and Kubernetes ConfigMap
   * volumes swap the `..data` symlink atomically; both break a watch on the file itself. Events are
   * debounced (a swap or a save is several events) and a reload only happens when the bytes changed;
   * SIGHUP always reloads.
   */
  watch(): void {
    const configFile = this.o.file;
    if (!configFile) return;
    let timer: NodeJS.Timeout | undefined;
    const file = basename(configFile);
    this.watcher = watch(dirname(configFile), (_ev, name) => {
      const km = this.config.keyMap;
      const keyMap = km && dirname(km.file) === dirname(configFile) ? basename(km.file) : '';
      if (name && name !== file && name !== '..data' && name !== keyMap) return;
      clearTimeout(timer);
      timer = setTimeout(() => {
        if (this.digestAll() !== this.loadedDigest) this.reload();
      }, 100);
      timer.unref();
    });
    this.watcher.on('error', (err) =>
      this.o.log.warn({ err: err.message }, 'config watch failed; SIGHUP still reloads'),
    );
    this.watcher.unref();
  }

  close(): void {
    this.watcher?.close();
  }
}

/** Fields a reload cannot apply to a running server (ports, gRPC message size). */
export function restartRequired(a: Config, b: Config): string[] {
  const out: string[] = [];
  if (a.server.grpcPort !== b.server.grpcPort || a.server.grpcHost !== b.server.grpcHost)
    out.push('server.grpc_port');
  if (a.server.httpPort !== b.server.httpPort || a.server.httpHost !== b.server.httpHost)
    out.push('server.http_port / http_host');
  if (JSON.stringify(a.server.httpAuthz) !== JSON.stringify(b.server.httpAuthz))
    out.push('server.http_authz');
  if (JSON.stringify(a.server.admin) !== JSON.stringify(b.server.admin)) out.push('server.admin');
  if (a.server.maxBodyBytes !== b.server.maxBodyBytes) out.push('server.max_body_bytes (gRPC receive limit)');
  if (a.server.maxConcurrentStreams !== b.server.maxConcurrentStreams)
    out.push('server.max_concurrent_streams');
  if (
    a.server.http2StreamWindow !== b.server.http2StreamWindow ||
    a.server.http2ConnectionWindow !== b.server.http2ConnectionWindow
  )
    out.push('server.http2_stream_window / http2_connection_window');
  if (a.server.grpcDirectCheck !== b.server.grpcDirectCheck) out.push('server.grpc_direct_check');
  if (a.server.grpcDirectProcess !== b.server.grpcDirectProcess) out.push('server.grpc_direct_process');
  if (a.store.client !== b.store.client) out.push('store.client');
  if (a.store.topology !== b.store.topology) out.push('store.topology');
  if (a.store.shardBy !== b.store.shardBy) out.push('store.shard_by');
  if (a.store.waitReplicas !== b.store.waitReplicas) out.push('store.wait_replicas');
  if (a.server.maxBufferedBytes !== b.server.maxBufferedBytes) out.push('server.max_buffered_bytes');
  return out;
}
