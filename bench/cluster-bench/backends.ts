/**
 * The Valkey deployments a run is measured on: one standalone valkey-server, or a Valkey Cluster
 * (test/helpers/valkey-cluster.ts); every server process with its pid, and the tenants per primary.
 */
import type { Valkey } from 'iovalkey';
import { keySlot } from '../../src/store/slot.js';
import type { TestValkey } from '../../test/helpers/valkey.js';
import type { TestCluster } from '../../test/helpers/valkey-cluster.js';
import { TENANTS } from '../workloads.js';
import type { Backend } from './common.js';

async function pidOf(c: Valkey): Promise<number> {
  const m = /^process_id:(\d+)/m.exec(await c.info('server'));
  if (!m) throw new Error('INFO server has no process_id');
  return Number(m[1]);
}

export async function standaloneBackend(v: TestValkey): Promise<Backend> {
  return {
    url: v.url,
    nodes: [{ port: v.port, pid: await pidOf(v.client), role: 'primary' }],
    client: () => v.client,
  };
}

export async function clusterBackend(cl: TestCluster): Promise<Backend> {
  const nodes = await cl.nodes();
  const out: Backend['nodes'] = [];
  for (const n of nodes) out.push({ port: n.port, pid: await pidOf(cl.client(n.port)), role: n.role });
  return { url: cl.url, nodes: out, client: (port) => cl.client(port), cluster: cl };
}

/** Primaries' ports with the number of tenants whose hash tag `{tenant-N}` falls in their slots. */
export async function tenantsPerPrimary(b: Backend): Promise<Map<number, number>> {
  const out = new Map<number, number>();
  if (!b.cluster) {
    out.set(b.nodes[0].port, TENANTS);
    return out;
  }
  const prims = await b.cluster.primaries();
  for (const p of prims) out.set(p.port, 0);
  for (let t = 0; t < TENANTS; t++) {
    const slot = keySlot(`{tenant-${t}}`);
    const owner = prims.find((p) => p.slots.some(([a, z]) => slot >= a && slot <= z));
    if (owner) out.set(owner.port, (out.get(owner.port) ?? 0) + 1);
  }
  return out;
}
