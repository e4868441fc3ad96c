// Shared harness for the browser tests: which gateway, the admin API, and Chromium.
//   BECKON_URL=http://127.0.0.1:PORT  a running `beckon serve --dev` (the real tests)
//   BECKON_URL=stub                   the in-process stub (test/support/stub.mjs): checks the pages and harness only
//   unset                             the browser tests skip with a message
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type BrowserContext } from 'playwright-core';

export const RAW_URL = process.env.BECKON_URL ?? '';
export const ADMIN = process.env.BECKON_ADMIN_TOKEN ?? 'beckon-dev-admin';
export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
export const ARTIFACTS = process.env.BECKON_ARTIFACTS ?? fileURLToPath(new URL('../../../test-artifacts/', import.meta.url));
export const enabled = RAW_URL !== '';
if (!enabled) {
  console.warn('[web] browser tests skipped: set BECKON_URL to a running `beckon serve --dev` (e.g. BECKON_URL=http://127.0.0.1:8080), or BECKON_URL=stub to check the pages against the stub');
}

let stub: { url: string; close(): Promise<void> } | undefined;
/** The gateway's base URL (starting the stub when BECKON_URL=stub). */
export async function gateway(): Promise<string> {
  if (RAW_URL !== 'stub') return RAW_URL.replace(/\/$/, '');
  if (!stub) {
    const { startStub } = await import('./stub.mjs');
    stub = await startStub(0);
  }
  return stub.url;
}
export async function stopGateway() {
  await stub?.close();
  stub = undefined;
}

export async function admin<T = any>(base: string, path: string): Promise<T> {
  const r = await fetch(base + path, { headers: { authorization: `Bearer ${ADMIN}` } });
  if (!r.ok) throw new Error(`GET ${path}: HTTP ${r.status} ${await r.text()}`);
  return r.json() as Promise<T>;
}

export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | null | false>, timeoutMs = 15_000, everyMs = 200): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Debian's Chromium with the flags that work on these machines and a fresh profile. */
export async function browser(): Promise<{ ctx: BrowserContext; close(): Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), 'beckon-web-'));
  const ctx = await chromium.launchPersistentContext(dir, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1360, height: 900 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  return { ctx, close: async () => { await ctx.close(); rmSync(dir, { recursive: true, force: true }); } };
}

export function artifact(name: string): string {
  mkdirSync(ARTIFACTS, { recursive: true });
  return join(ARTIFACTS, name);
}

export interface CampaignDef { id: string; name?: string; status?: string; trigger?: any; variants?: Array<{ id: string; control?: boolean; message?: any }> }
/** The seeded "first export" banner campaign (goal on export_completed with a banner variant). */
export function firstExportBanner(campaigns: CampaignDef[]): CampaignDef | undefined {
  return campaigns.find((c) => c.status === 'active' && c.trigger?.type === 'goal' && c.trigger?.event === 'export_completed'
    && (c.variants ?? []).some((v) => v.message?.kind === 'banner'));
}
