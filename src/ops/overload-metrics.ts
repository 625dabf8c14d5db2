/**
 * Metrics of the overload bounds (docs/overload.md), registered on the app's registry:
 *  - tollgate_overloaded_total{stage}: checks shed with 503 `overloaded` (stage `queued`: never sent to
 *    the store, nothing debited; `sent`: given up while the store still worked towards it);
 *  - tollgate_store_inflight_calls / tollgate_store_waiting_checks: store calls in flight (bounded by
 *    store.max_inflight) and checks waiting for a slot;
 *  - tollgate_grpc_buffered_bytes: request bytes held by direct-path gRPC streams (bounded by
 *    server.max_buffered_bytes); tollgate_grpc_streams_refused_total: streams refused past that bound.
 */
import client from 'prom-client';

export interface OverloadSources {
  storeInflight: () => number;
  storeWaiting: () => number;
  bufferedBytes: () => number;
  refusedStreams: () => number;
}

export class OverloadMetrics {
  private readonly overloaded: client.Counter<'stage'>;
  private readonly byStage: Record<'queued' | 'sent', client.Counter.Internal>;

  constructor(registry: client.Registry, src: OverloadSources) {
    this.overloaded = new client.Counter({
      name: 'tollgate_overloaded_total',
      help: 'Checks shed with a retryable 503 "overloaded": the store was answering, but not within server.overload_budget (stage queued: never sent, nothing debited; sent: given up after it was sent)',
      labelNames: ['stage'] as const,
      registers: [registry],
    });
    this.byStage = { queued: this.overloaded.labels('queued'), sent: this.overloaded.labels('sent') };
    this.byStage.queued.inc(0);
    this.byStage.sent.inc(0);
    const gauge = (name: string, help: string, read: () => number) =>
      new client.Gauge({
        name,
        help,
        registers: [registry],
        collect() {
          this.set(read());
        },
      });
    gauge(
      'tollgate_store_inflight_calls',
      'Store calls in flight (at most store.max_inflight)',
      src.storeInflight,
    );
    gauge(
      'tollgate_store_waiting_checks',
      'Checks waiting for a store call slot (store.max_inflight reached)',
      src.storeWaiting,
    );
    gauge(
      'tollgate_grpc_buffered_bytes',
      'Request bytes held by gRPC Check streams being received or decided (at most server.max_buffered_bytes)',
      src.bufferedBytes,
    );
    let seen = 0;
    const refused: client.Counter = new client.Counter({
      name: 'tollgate_grpc_streams_refused_total',
      help: 'gRPC Check streams refused with RESOURCE_EXHAUSTED because server.max_buffered_bytes was reached',
      registers: [registry],
      collect() {
        const v = src.refusedStreams();
        if (v > seen) refused.inc(v - seen);
        seen = v;
      },
    });
  }

  shed(stage: 'queued' | 'sent'): void {
    this.byStage[stage].inc();
  }
}
