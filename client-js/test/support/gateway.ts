// Shared helpers for tests against a real Beckon gateway (contract §9).
//
// Environment:
//   BECKON_URL          gateway base URL, e.g. http://127.0.0.1:8080 (required; tests skip without it)
//   BECKON_JWT_SECRET   HS256 secret to mint user tokens locally, or else
//   BECKON_BIN          path of the `beckon` binary (default `beckon` on PATH, then ../target/debug/beckon),
//                       run as `BECKON_DEV=1 beckon token --user ID`
//   BECKON_ADMIN_TOKEN  admin token, for tests that create campaigns (they skip without it)
import { execFileSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const GATEWAY = process.env.BECKON_URL;
export const ADMIN = process.env.BECKON_ADMIN_TOKEN;

if (!GATEWAY) {
  console.warn(
    '\n[beckon] BECKON_URL is not set: skipping tests against a real gateway.\n' +
      '         Start one with `beckon serve --dev --listen 127.0.0.1:0` and export BECKON_URL=http://<addr>\n' +
      '         (plus BECKON_JWT_SECRET or BECKON_BIN for tokens, BECKON_ADMIN_TOKEN for campaign tests).\n',
  );
}

const b64 = (v: object | string) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

/** A user token: minted locally with BECKON_JWT_SECRET, else by the `beckon token` CLI. */
export function userToken(user: string, ttlSeconds = 3600, attributes?: Record<string, unknown>): string {
  const secret = process.env.BECKON_JWT_SECRET;
  if (secret) {
    const now = Math.floor(Date.now() / 1000);
    const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub: user, iat: now, exp: now + ttlSeconds, ...(attributes ? { attributes } : {}) })}`;
    return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
  }
  const local = fileURLToPath(new URL('../../../target/debug/beckon', import.meta.url));
  const bin = process.env.BECKON_BIN ?? (existsSync(local) ? local : 'beckon');
  const args = ['token', '--user', user, '--ttl', `${ttlSeconds}s`];
  for (const [k, v] of Object.entries(attributes ?? {})) args.push('--attr', `${k}=${JSON.stringify(v)}`);
  return execFileSync(bin, args, { env: { ...process.env, BECKON_DEV: '1' }, encoding: 'utf8' }).trim();
}

/** Call the admin API. */
export async function admin(method: string, path: string, body?: unknown): Promise<Response> {
  const res = await fetch(new URL(path, GATEWAY), {
    method,
    headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!res.ok && res.status !== 404) throw new Error(`${method} ${path}: ${res.status} ${await res.text()}`);
  return res;
}

/** An active campaign that shows `message` on every `event` (no caps), unique per test run. */
export async function eventCampaign(event: string, message: Record<string, unknown>): Promise<string> {
  const id = `sdk-test-${event}`;
  await admin('PUT', `/v1/campaigns/${id}`, {
    id,
    name: `SDK test ${event}`,
    status: 'active',
    trigger: { type: 'event', event },
    variants: [{ id: 'a', weight: 100, message }],
    frequency: { max_per_user: 1000, max_per_session: 1000 },
    priority: 50,
    expires_after: '5m',
  });
  return id;
}

/** Poll until `fn` returns a truthy value (or throw after `ms`). */
export async function waitFor<T>(fn: () => T | Promise<T>, ms = 5000, what = 'condition'): Promise<NonNullable<T>> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v as NonNullable<T>;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** A unique suffix for user ids and event names of one test run. */
export const run = Date.now().toString(36);
