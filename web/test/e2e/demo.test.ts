// The demo app in real headless Chromium against a running gateway (BECKON_URL).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Page } from 'playwright-core';
import { admin, artifact, browser, enabled, firstExportBanner, gateway, stopGateway, waitFor, type CampaignDef } from '../support/env';

describe.skipIf(!enabled)('demo app (/demo/)', () => {
  let base: string;
  let b: Awaited<ReturnType<typeof browser>>;
  beforeAll(async () => {
    base = await gateway();
    b = await browser();
  });
  afterAll(async () => {
    await b?.close();
    await stopGateway();
  });

  async function openDemo(): Promise<{ page: Page; user: string }> {
    const page = await b.ctx.newPage();
    page.on('pageerror', (e) => console.error('[demo pageerror]', e.message));
    await page.goto(`${base}/demo/`);
    await page.locator('#conn[data-state="open"]').waitFor({ timeout: 15_000 });
    const user = await page.evaluate(() => window.acme!.user);
    expect(user).toMatch(/^demo-/);
    expect(new URL(page.url()).pathname).toBe('/demo/setup');
    return { page, user };
  }

  it('Export shows the first-export banner; its button click reaches the server', async () => {
    const { campaigns } = await admin<{ campaigns: CampaignDef[] }>(base, '/v1/campaigns');
    const camp = firstExportBanner(campaigns);
    expect(camp, 'the dev seed has an active goal(export_completed) campaign with a banner').toBeTruthy();
    const { page, user } = await openDemo();

    // Client-side routing: the Dashboard tab, no reload.
    await page.click('nav a[data-page="dashboard"]');
    expect(new URL(page.url()).pathname).toBe('/demo/dashboard');
    await page.locator('#export-button').waitFor();

    // Measure in the page: from the click event to the banner laid out on screen.
    await page.evaluate(() => {
      const w = window as any;
      w.ctv = new Promise<number>((resolve) => {
        let t0 = 0;
        document.getElementById('export-button')!.addEventListener('click', () => {
          t0 = performance.now();
          const poll = () => {
            const el = document.querySelector('[data-beckon]')?.shadowRoot?.querySelector('.c.b');
            const r = el?.getBoundingClientRect();
            if (r && r.width > 0 && r.height > 0) resolve(performance.now() - t0);
            else requestAnimationFrame(poll);
          };
          poll();
        }, { capture: true, once: true });
      });
    });
    await page.click('#export-button');
    const ms = await page.evaluate(() => Promise.race([(window as any).ctv, new Promise((_, rej) => setTimeout(() => rej(new Error('banner not visible after 10 s')), 10_000))])) as number;
    console.log(`[demo] click → banner visible: ${ms.toFixed(1)} ms (campaign ${camp!.id}, user ${user})`);
    const banner = page.locator('[data-beckon] .c.b');
    await banner.waitFor({ state: 'visible' });
    const shown = await page.evaluate(() => window.acme!.messages.map((m) => m.campaign));
    expect(shown).toContain(camp!.id);
    await page.waitForTimeout(300); // let the slide-in finish for the screenshot
    await page.screenshot({ path: artifact('demo.png') });

    // The impression is reported once the banner is on screen.
    await waitFor('the impression on the server', async () => {
      const u = await admin(base, `/v1/users/${encodeURIComponent(user)}`);
      return (u.engagement?.[camp!.id]?.impression ?? 0) >= 1;
    });

    // Click the banner's first real (non-dismiss) button.
    const variant = await page.evaluate((id) => window.acme!.messages.find((m) => m.campaign === id)!.variant, camp!.id);
    const buttons = (camp!.variants!.find((v) => v.id === variant)?.message?.buttons ?? []) as Array<{ id: string; label: string; action?: string }>;
    const go = buttons.find((x) => x.action !== 'dismiss');
    expect(go, 'the banner has a button that is not a dismiss').toBeTruthy();
    await banner.locator('.a button', { hasText: go!.label }).click();
    const u = await waitFor('the click on the server', async () => {
      const u = await admin(base, `/v1/users/${encodeURIComponent(user)}`);
      return (u.engagement?.[camp!.id]?.click ?? 0) >= 1 && u;
    });
    expect(u.engagement[camp!.id].delivered).toBeGreaterThanOrEqual(1);
    expect(u.engagement[camp!.id].impression).toBe(1);
    await page.close();
  });

  it('the upgrade and plan switch send what the page says', async () => {
    const { page, user } = await openDemo();
    await page.click('nav a[data-page="dashboard"]');
    // A modal (upgrade variant b, the Professional welcome) covers the page: Escape closes it.
    const closeModal = async () => {
      await page.waitForTimeout(500);
      const overlay = page.locator('[data-beckon] .o');
      if (await overlay.count()) {
        await page.keyboard.press('Escape');
        await overlay.waitFor({ state: 'detached' });
      }
    };
    await page.click('#upgrade-button');
    await closeModal();
    await page.click('#feature-viewed');
    await page.click('[data-plan="professional"]'); // → the Professional welcome modal (segment entry)
    await closeModal();
    const u = await waitFor('the events and plan on the server', async () => {
      const u = await admin(base, `/v1/users/${encodeURIComponent(user)}`);
      return u.aggregates?.clicked_upgrade?.count >= 1 && u.aggregates?.feature_viewed?.count >= 1 && u.attributes?.plan === 'professional' && u;
    });
    expect(u.attributes.plan).toBe('professional');
    // The live log shows frames both ways.
    const log = await page.evaluate(() => window.acme!.log.map((e) => `${e.dir} ${e.type} ${e.text}`));
    expect(log.some((l) => l.startsWith('up track clicked_upgrade'))).toBe(true);
    expect(log.some((l) => l.startsWith('down welcome'))).toBe(true);
    await page.close();
  });
});
