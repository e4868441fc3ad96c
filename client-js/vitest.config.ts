import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // Gateway and browser tests wait on real sockets.
    testTimeout: 30_000,
    hookTimeout: 30_000,
    globalSetup: ['test/support/global-setup.ts'],
  },
});
