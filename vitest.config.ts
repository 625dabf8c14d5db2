import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    pool: 'forks',
    // Valkey-backed files each start their own private server; cap parallelism on small CI machines.
    maxWorkers: 2,
  },
});
