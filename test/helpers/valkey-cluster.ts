/** TEMP dev stub: replaced by the harness from the cluster-harness branch. */
export interface TestCluster {
  url: string;
  stop(): Promise<void>;
}
export async function startCluster(): Promise<TestCluster> {
  return { url: process.env.DEV_CLUSTER_URL!, stop: async () => {} };
}
