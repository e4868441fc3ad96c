// The built browser bundle (dist/beckon.global.js) in real headless Chromium,
// driven by playwright-core with the system Chromium (no browser download).
//  - "bundle" tests play the gateway with the stub (test/support/stub-gateway.ts).
//  - "gateway" tests need BECKON_URL (+ BECKON_ADMIN_TOKEN) and skip without it.
// Run with `npm run test:e2e` (builds first).
import { existsSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN, GATEWAY, eventCampaign, run, userToken, waitFor } from '../support/gateway';
import { startStub, type Stub } from '../support/stub-gateway';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const BUNDLE = new URL('../../dist/beckon.global.js', import.meta.url);
const haveBrowser = existsSync(CHROMIUM) && existsSync(BUNDLE);
if (!haveBrowser) console.warn(`[beckon] e2e skipped: need ${CHROMIUM} (apt-get install chromium) and a built dist/ (npm run build)`);

let browser: Browser;
let site: Server;
let origin: string;

/** Serve a blank page that loads the bundle; the test calls Beckon.init itself. */
function serveSite(): Promise<void> {
  site = createServer((req, res) => {
    if (req.url === '/beckon.global.js') {
      res.writeHead(200, { 'content-type': 'text/javascript' }).end(readFileSync(BUNDLE));
      return;
    }
    res.writeHead(200, { 'content-type': 'text/html' }).end(
      `<!doctype html><title>E2E</title><h1>App</h1><button id="opener">open</button><div id="slot"></div><script src="/beckon.global.js"></script>`,
    );
  });
  return new Promise((r) =>
    site.listen(0, '127.0.0.1', () => {
      origin = `http://127.0.0.1:${(site.address() as AddressInfo).port}`;
      r();
    }),
  );
}

async function openPage(url: string, token: string): Promise<Page> {
  const page = await browser.newPage();
  await page.goto(origin + '/setup');
  await page.evaluate(
    ([url, token]) => {
      const w = window as any;
      w.seen = [];
      w.client = w.Beckon.init({ url, token });
      w.client.on('message', (m: any) => w.seen.push(m.delivery));
    },
    [url, token] as const,
  );
  return page;
}

beforeAll(async () => {
  if (!haveBrowser) return;
  await serveSite();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});
afterAll(async () => {
  await browser?.close();
  site?.close();
});

describe.skipIf(!haveBrowser)('bundle in Chromium (stub gateway)', () => {
  let stub: Stub;
  beforeAll(async () => {
    stub = await startStub();
  });
  afterAll(() => stub.close());
  const token = (sub: string) => `${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from(JSON.stringify({ sub })).toString('base64url')}.x`;

  it('renders a modal, reports the impression, Escape dismisses and focus returns', async () => {
    const page = await openPage(stub.url, token('e2e-modal'));
    await page.focus('#opener');
    const s = await waitFor(() => stub.sessions.find((x) => x.user === 'e2e-modal'));
    await waitFor(() => s.frames.some((f) => f.type === 'page'), 5000, 'page view');
    const frame = s.deliver({
      kind: 'modal',
      title: '<img src=x onerror=alert(1)>Connect',
      body: 'Two minutes.',
      buttons: [{ id: 'go', label: 'Connect now', url: 'javascript:alert(1)' }],
    });
    const dialog = page.locator('[role=dialog]');
    await dialog.waitFor();
    expect(await dialog.getAttribute('aria-modal')).toBe('true');
    expect(await page.locator('[data-beckon] h2').textContent()).toBe('<img src=x onerror=alert(1)>Connect');
    await waitFor(() => s.frames.find((f) => f.type === 'engage' && f.action === 'impression' && f.delivery === frame.delivery), 5000, 'impression');
    expect(s.frames.find((f) => f.type === 'ack')).toEqual({ type: 'ack', seq: frame.seq });
    await page.screenshot({ path: 'test-results/modal.png' });
    await page.keyboard.press('Escape');
    await waitFor(() => s.frames.find((f) => f.type === 'engage' && f.action === 'dismiss'), 5000, 'dismiss');
    expect(await dialog.count()).toBe(0);
    expect(await page.evaluate(() => document.activeElement?.id)).toBe('opener');
    await page.close();
  });

  it('waits for a tooltip anchor that appears later and points at it', async () => {
    const page = await openPage(stub.url, token('e2e-tip'));
    const s = await waitFor(() => stub.sessions.find((x) => x.user === 'e2e-tip'));
    s.deliver({ kind: 'tooltip', anchor: '#later', placement: 'bottom', body: 'New: export' });
    await page.waitForTimeout(300);
    await page.evaluate(() => {
      const b = document.createElement('button');
      b.id = 'later';
      b.textContent = 'Export';
      b.style.cssText = 'position:absolute;top:200px;left:300px';
      document.getElementById('slot')!.appendChild(b);
    });
    const tip = page.locator('[data-beckon] .t');
    await tip.waitFor();
    const [a, t] = await Promise.all([page.locator('#later').boundingBox(), tip.boundingBox()]);
    expect(t!.y).toBeGreaterThan(a!.y + a!.height - 1);
    await page.screenshot({ path: 'test-results/tooltip.png' });
    await page.close();
  });

  it('a reload loses no event and resumes the session', async () => {
    const page = await openPage(stub.url, token('e2e-reload'));
    const s1 = await waitFor(() => stub.sessions.find((x) => x.user === 'e2e-reload'));
    // Cut the socket so the event cannot be acknowledged, then reload.
    s1.socket.terminate();
    const id = await page.evaluate(() => (window as any).client.track('before_reload'));
    await page.reload();
    await page.evaluate(([url, t]) => ((window as any).client = (window as any).Beckon.init({ url, token: t })), [stub.url, token('e2e-reload')] as const);
    const again = await waitFor(() => stub.sessions.filter((x) => x.user === 'e2e-reload' && x.frames.some((f) => f.id === id))[0], 5000, 'resent event');
    expect(again.id).toBe(s1.id);
    await page.close();
  });
});

describe.skipIf(!haveBrowser || !GATEWAY || !ADMIN)('bundle in Chromium against a real gateway', () => {
  it('shows a campaign modal triggered by a tracked event and reports the click', async () => {
    const event = `e2e_modal_${run}`;
    await eventCampaign(event, { kind: 'modal', title: 'Hello from Beckon', body: 'e2e', buttons: [{ id: 'later', label: 'Later' }] });
    const page = await openPage(GATEWAY!, userToken(`e2e-${run}`));
    await page.evaluate((e) => (window as any).client.track(e), event);
    await page.locator('[role=dialog]').waitFor({ timeout: 10_000 });
    expect(await page.locator('[data-beckon] h2').textContent()).toBe('Hello from Beckon');
    await page.locator('[data-beckon] .a button').click();
    expect(await page.locator('[role=dialog]').count()).toBe(0);
    await page.close();
  });
});
