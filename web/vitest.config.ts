import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Browser tests wait on real sockets and timers; one file at a time (2-core machine).
    testTimeout: 60_000,
    hookTimeout: 60_000,
    fileParallelism: false,
  },
});
