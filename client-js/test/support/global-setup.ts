// Vitest global setup: `BECKON_URL=stub` starts the in-process stub gateway
// (test/support/stub-gateway.ts) and points the tests at it. That checks the
// test harness itself while the real gateway is not ready; real runs set
// BECKON_URL to a `beckon serve` address.
import { startStub, type Stub } from './stub-gateway';

let stub: Stub | undefined;

export async function setup(): Promise<void> {
  if (process.env.BECKON_URL !== 'stub') return;
  stub = await startStub();
  process.env.BECKON_URL = stub.url;
  process.env.BECKON_JWT_SECRET ??= 'stub-secret';
  console.log(`[beckon] using the stub gateway at ${stub.url} (no campaigns, no auth checks)`);
}

export async function teardown(): Promise<void> {
  await stub?.close();
}
