/**
 * Whether this process's event loop was busy since a mark: a check that waited on a silent store while
 * our own loop was nearly saturated most likely waited on a store starved of CPU by our own burst (a
 * colocated Valkey, a CPU-throttled pod, a stolen vCPU), not on a dead one. The silence clock then
 * restarts (resilience/timeout.ts, resilience/gate.ts), within the overload budget.
 */
import { type EventLoopUtilization, performance } from 'node:perf_hooks';

/** Event-loop utilization at or above which the loop counts as saturated. */
const BUSY = 0.8;

let sample: EventLoopUtilization = performance.eventLoopUtilization();
let sampleAt = performance.now();

/** A mark to measure from; one sample is shared by every call within a millisecond (cheap). */
export function loopMark(): EventLoopUtilization {
  const now = performance.now();
  if (now - sampleAt >= 1) {
    sample = performance.eventLoopUtilization();
    sampleAt = now;
  }
  return sample;
}

export function loopBusySince(mark: EventLoopUtilization): boolean {
  return performance.eventLoopUtilization(mark).utilization >= BUSY;
}
