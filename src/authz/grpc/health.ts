/** grpc.health.v1.Health: Check and Watch, per service name ("" = the whole server). */
import * as grpc from '@grpc/grpc-js';

export type ServingStatus = 'SERVING' | 'NOT_SERVING' | 'SERVICE_UNKNOWN';

export class HealthService {
  private readonly statuses = new Map<string, ServingStatus>();
  private readonly watchers = new Set<{ service: string; call: grpc.ServerWritableStream<any, any> }>();

  status(service: string): ServingStatus {
    return this.statuses.get(service) ?? 'SERVICE_UNKNOWN';
  }

  set(service: string, status: ServingStatus): void {
    if (this.statuses.get(service) === status) return; // Watch streams only hear about changes
    this.statuses.set(service, status);
    for (const w of this.watchers) if (w.service === service) w.call.write({ status });
  }

  /** Set every registered service (and "") at once. */
  setAll(status: ServingStatus): void {
    for (const service of new Set(['', ...this.statuses.keys()])) this.set(service, status);
  }

  /** End every Watch stream (they would otherwise hold a graceful gRPC shutdown open). */
  close(): void {
    for (const w of this.watchers) w.call.end();
    this.watchers.clear();
  }

  handlers(): grpc.UntypedServiceImplementation {
    return {
      Check: (call: grpc.ServerUnaryCall<any, any>, cb: grpc.sendUnaryData<any>) => {
        const service = call.request?.service ?? '';
        const s = this.statuses.get(service);
        if (!s) return cb({ code: grpc.status.NOT_FOUND, details: `unknown service ${service}` });
        cb(null, { status: s });
      },
      Watch: (call: grpc.ServerWritableStream<any, any>) => {
        const service = call.request?.service ?? '';
        const w = { service, call };
        this.watchers.add(w);
        call.write({ status: this.status(service) });
        call.on('cancelled', () => this.watchers.delete(w));
        call.on('error', () => this.watchers.delete(w));
      },
    };
  }
}
