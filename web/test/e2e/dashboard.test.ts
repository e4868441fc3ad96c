// The dashboard in real headless Chromium against a running gateway (BECKON_URL): it loads
// with the dev token, lists campaigns and segments, and after a short scenario driven
// through the demo page its numbers for the first-export campaign equal GET …/stats.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Page } from 'playwright-core';
import { ADMIN, admin, artifact, browser, enabled, firstExportBanner, gateway, stopGateway, waitFor, type CampaignDef } from '../support/env';

const pct = (x: number | null) => (x == null ? '—' : `${(x * 100).toFixed(Math.abs(x * 100) > 0 && Math.abs(x * 100) < 1 ? 2 : 1)}%`);
const n = (x: number) => x.toLocaleString('en-US');

describe.skipIf(!enabled)('dashboard (/dashboard/)', () => {
  let base: string;
  let b: Awaited<ReturnType<typeof browser>>;
  let camp: CampaignDef;
  beforeAll(async () => {
    base = await gateway();
    b = await browser();
    camp = firstExportBanner((await admin<{ campaigns: CampaignDef[] }>(base, '/v1/campaigns')).campaigns)!;
  });
  afterAll(async () => {
    await b?.close();
    await stopGateway();
  });

  let converted = false;
  /** One demo user: export (banner), click its button, schedule the export (the goal); another: export, dismiss it. */
  async function scenario(): Promise<string[]> {
    const users: string[] = [];
    for (const act of ['click', 'dismiss'] as const) {
      const page = await b.ctx.newPage();
      await page.goto(`${base}/demo/`);
      if (users.length) { // a fresh user for the second run
        await page.click('#new-user');
        await page.waitForURL(/\/demo\/setup$/);
      }
      await page.locator('#conn[data-state="open"]').waitFor({ timeout: 15_000 });
      const user = await page.evaluate(() => window.acme!.user);
      users.push(user);
      await page.click('nav a[data-page="dashboard"]');
      await page.click('#export-button');
      const banner = page.locator('[data-beckon] .c.b');
      await banner.waitFor({ state: 'visible', timeout: 10_000 });
      if (act === 'click') {
        const v = await page.evaluate((id) => window.acme!.messages.find((m) => m.campaign === id)!.variant, camp.id);
        const go = (camp.variants!.find((x) => x.id === v)!.message.buttons as Array<{ label: string; action?: string }>).find((x) => x.action !== 'dismiss')!;
        await banner.locator('.a button', { hasText: go.label }).click();
        // "Schedule it" leads to /demo/dashboard#schedule, whose sheet sends the goal event (a conversion).
        const sheet = page.locator('dialog#sheet[open]');
        if (await sheet.waitFor({ timeout: 3000 }).then(() => true, () => false)) {
          await page.click('#sheet-ok');
          converted = (camp as any).goal?.event === 'export_scheduled';
        }
      } else {
        await banner.locator('button.x').click();
      }
      await waitFor(`${act} of ${user} on the server`, async () => {
        const u = await admin(base, `/v1/users/${encodeURIComponent(user)}`);
        return (u.engagement?.[camp.id]?.[act] ?? 0) >= 1;
      });
      await page.close();
    }
    return users;
  }

  async function openDashboard(hash = ''): Promise<Page> {
    const page = await b.ctx.newPage();
    page.on('pageerror', (e) => console.error('[dashboard pageerror]', e.message));
    await page.goto(`${base}/dashboard/?token=${encodeURIComponent(ADMIN)}${hash}`);
    return page;
  }

  it('asks for the token when it has none or a wrong one', async () => {
    const page = await b.ctx.newPage();
    await page.goto(`${base}/dashboard/?token=wrong-token`);
    await page.locator('dialog#login[open]').waitFor();
    await expect(page.locator('#login-reason').textContent()).resolves.toMatch(/401|refused/);
    await page.fill('#login-token', ADMIN);
    await page.click('#login-form button[type=submit]');
    await page.locator('table[data-table="campaigns"] tbody tr').first().waitFor();
    expect(new URL(page.url()).search).toBe(''); // the token left the address bar
    await page.close();
  });

  it('shows campaigns, segments and live numbers, equal to the stats API after a scenario', async () => {
    expect(camp, 'the dev seed has a first-export banner campaign').toBeTruthy();
    const users = await scenario();

    // Counters may be written in batches: wait until the stats API has the scenario.
    await waitFor('the scenario in the stats', async () => {
      const s = await admin(base, `/v1/campaigns/${camp.id}/stats`);
      const clicks = s.variants.reduce((a: number, v: any) => a + (v.control ? 0 : v.clicks), 0);
      const dis = s.variants.reduce((a: number, v: any) => a + (v.control ? 0 : v.dismissals), 0);
      const conv = s.variants.reduce((a: number, v: any) => a + (v.control ? 0 : v.conversions), 0);
      return clicks >= 1 && dis >= 1 && (!converted || conv >= 1);
    }, 20_000);

    // Keep one demo session open: the live numbers must show it.
    const live = await b.ctx.newPage();
    await live.goto(`${base}/demo/dashboard`);
    await live.locator('#conn[data-state="open"]').waitFor({ timeout: 15_000 });

    const { campaigns } = await admin<{ campaigns: CampaignDef[] }>(base, '/v1/campaigns');
    const { segments } = await admin<{ segments: Array<{ id: string }> }>(base, '/v1/segments');
    let page: Page | undefined;
    let matched = false;
    for (let attempt = 0; attempt < 3 && !matched; attempt++) {
      await page?.close();
      page = await openDashboard();
      const rowSel = `table[data-table="campaigns"] tr[data-campaign="${camp.id}"]`;
      await page.locator(`${rowSel} td[data-k="delivered"]:not(:text("…"))`).waitFor();
      await page.locator('[data-kpi="sessions"]').waitFor();
      const cell = (k: string) => page!.locator(`${rowSel} td[data-k="${k}"]`).textContent();
      const shown = { delivered: await cell('delivered'), impressions: await cell('impressions'), ctr: await cell('ctr'), conversions: await cell('conversions'), dismissal: await cell('dismissal') };
      const s = await admin(base, `/v1/campaigns/${camp.id}/stats`);
      const t = s.variants.filter((v: any) => !v.control).reduce((a: any, v: any) => ({ d: a.d + v.delivered, i: a.i + v.impressions, c: a.c + v.clicks, x: a.x + v.dismissals, v: a.v + v.conversions }), { d: 0, i: 0, c: 0, x: 0, v: 0 });
      const want = { delivered: n(t.d), impressions: n(t.i), ctr: pct(t.i ? t.c / t.i : null), conversions: n(t.v), dismissal: pct(t.i ? t.x / t.i : null) };
      if (JSON.stringify(shown) === JSON.stringify(want)) matched = true;
      else if (attempt === 2) expect(shown).toEqual(want);
      else await new Promise((r) => setTimeout(r, 1000));
    }
    page = page!;
    // Every campaign and every segment is listed.
    expect(await page.locator('table[data-table="campaigns"] tbody tr').count()).toBe(campaigns.length);
    await page.locator('table[data-table="segments"] tbody tr').first().waitFor();
    expect(await page.locator('table[data-table="segments"] tbody tr').count()).toBe(segments.length);
    // Live numbers arrive (two polls give an event rate).
    await page.locator('[data-kpi="event_rate"] b:not(:text("…"))').waitFor({ timeout: 10_000 });
    const sessions = Number(await page.locator('[data-kpi="sessions"] b').textContent());
    expect(sessions).toBeGreaterThanOrEqual(1);
    await live.evaluate(() => document.getElementById('upgrade-button')!.click()); // some traffic for the rate (a background tab: no rAF, so no page.click)
    await page.waitForTimeout(2500);
    await page.waitForTimeout(300);
    await page.screenshot({ path: artifact('dashboard.png'), fullPage: true });

    // Campaign view: the variant table equals the stats API, per variant.
    await page.click(`table[data-table="campaigns"] tr[data-campaign="${camp.id}"] a`);
    await page.locator('table[data-table="variants"]').waitFor();
    const s = await admin(base, `/v1/campaigns/${camp.id}/stats`);
    for (const v of s.variants.filter((v: any) => !v.control)) {
      const row = page.locator(`table[data-table="variants"] tr[data-variant="${v.variant}"]`);
      for (const k of ['delivered', 'impressions', 'clicks', 'dismissals', 'conversions'] as const) {
        expect(await row.locator(`td[data-k="${k}"] .v`).textContent(), `variant ${v.variant} ${k}`).toBe(n(v[k]));
      }
      expect(await row.locator('td[data-k="ctr"] .v').textContent()).toBe(pct(v.click_through_rate));
    }
    const funnelDelivered = await page.locator('[data-step="delivered"] .step-label b').textContent();
    expect(funnelDelivered).toBe(n(s.variants.filter((v: any) => !v.control).reduce((a: number, v: any) => a + v.delivered, 0)));
    await page.locator('.uplot').first().waitFor();
    await page.screenshot({ path: artifact('dashboard-campaign.png'), fullPage: true });

    // User lookup with explain.
    await page.goto(`${base}/dashboard/#/users/${encodeURIComponent(users[0])}?campaign=${encodeURIComponent(camp.id)}`);
    await page.locator('table[data-table="engagement"]').waitFor();
    expect(await page.locator(`table[data-table="engagement"] tr[data-campaign="${camp.id}"] td[data-k="click"]`).textContent()).toBe('1');
    await page.locator('[data-eligible]').waitFor();
    await page.screenshot({ path: artifact('dashboard-user.png'), fullPage: true });
    await page.close();
    await live.close();
  });
});
