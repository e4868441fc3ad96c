// Beckon operator dashboard. Hash routes: #/ (overview), #/campaigns, #/campaigns/<id>,
// #/segments, #/users, #/users/<id>[?campaign=<id>]. Every call goes to the admin API with
// the bearer token from sessionStorage.
import uPlot from 'uplot';
import { api, clearToken, getToken, HttpError, setToken, takeTokenFromUrl, Unauthorized } from './api';
import { clear, h } from './dom';
import {
  ago, bestLift, eventRate, funnel, liftText, num, pct, seriesColumns, significance, totals,
  type Stats, type VariantStats,
} from './stats';
import { describeCondition, describeTrigger, hasControl, messageKinds, type Campaign, type Json, type Obj } from '../shared/describe';

const view = document.getElementById('view')!;
const $ = (s: string) => document.querySelector(s) as HTMLElement;

// Exposed for tests and curious operators.
const dash = { statsByCampaign: {} as Record<string, Stats>, overview: null as Obj | null, route: '' };
(window as unknown as { beckonDashboard: typeof dash }).beckonDashboard = dash;

// ---------------------------------------------------------------- auth
takeTokenFromUrl();
function showLogin(reason?: string) {
  const dlg = $('#login') as HTMLDialogElement;
  $('#login-reason').textContent = reason ?? '';
  (document.getElementById('login-token') as HTMLInputElement).value = getToken();
  if (!dlg.open) dlg.showModal();
  (document.getElementById('login-token') as HTMLInputElement).focus();
}
$('#login-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const t = (document.getElementById('login-token') as HTMLInputElement).value.trim();
  if (!t) return;
  setToken(t);
  ($('#login') as HTMLDialogElement).close();
  route();
});
$('#logout').addEventListener('click', () => { clearToken(); showLogin('Signed out.'); });

/** Runs a view; turns 401 into the token prompt and other errors into a readable notice. */
async function guard(fn: () => Promise<void>, where: HTMLElement = view) {
  try {
    await fn();
  } catch (e) {
    if (e instanceof Unauthorized) {
      if (getToken()) clearToken();
      showLogin(e.message === 'no token' ? 'Enter the admin token to continue.' : 'The gateway refused that token (401). Enter the admin token.');
    } else {
      where.prepend(h('div', { class: 'notice error' }, errorText(e)));
    }
  }
}
const errorText = (e: unknown) => (e instanceof HttpError ? `${e.status} ${e.code}: ${e.message}` : `Could not reach the gateway: ${(e as Error).message}`);

// ---------------------------------------------------------------- routing
let teardown: Array<() => void> = [];
function route() {
  for (const f of teardown) f();
  teardown = [];
  const hash = location.hash.replace(/^#/, '') || '/';
  const [path, query] = hash.split('?');
  const q = new URLSearchParams(query ?? '');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  dash.route = path;
  for (const a of document.querySelectorAll<HTMLAnchorElement>('nav.side a')) {
    const p = a.getAttribute('href')!.slice(1);
    a.toggleAttribute('aria-current', p === '/' ? parts.length === 0 : path.startsWith(p));
  }
  clear(view);
  if (!getToken()) { showLogin('Enter the admin token to continue.'); return; }
  if (parts[0] === 'campaigns' && parts[1]) return void guard(() => campaignView(parts[1]));
  if (parts[0] === 'campaigns') return void guard(() => campaignsView());
  if (parts[0] === 'segments') return void guard(() => segmentsView());
  if (parts[0] === 'users') return void guard(() => usersView(parts[1], q.get('campaign')));
  return void guard(() => overviewView());
}
addEventListener('hashchange', route);

// ---------------------------------------------------------------- small pieces
const statusPill = (s: string | undefined) => h('span', { class: `pill status-${s ?? 'unknown'}` }, s ?? '?');
const verdict = (v: boolean | null | undefined) =>
  h('span', { class: `verdict ${v ? 'yes' : v === false ? 'no' : 'na'}`, title: v ? 'true' : v === false ? 'false' : 'n/a' }, v ? '✓' : v === false ? '✗' : '–');
const pageHead = (title: string, sub?: Node | string, ...actions: Node[]) =>
  h('header', { class: 'page-head' }, h('div', null, h('h1', null, title), sub ? h('p', { class: 'muted' }, sub) : null), h('div', { class: 'actions' }, actions));
const empty = (text: string, hint?: Node | string) => h('div', { class: 'empty' }, h('p', null, text), hint ? h('p', { class: 'muted small' }, hint) : null);
const card = (title: string | Node | null, ...body: Node[]) => h('section', { class: 'card' }, title ? h('h2', null, title) : null, body);
const fmtTime = (iso: string | null | undefined) => (iso ? new Date(iso).toLocaleString([], { dateStyle: 'medium', timeStyle: 'medium' }) : '—');
const val = (v: Json | undefined): string => (v === undefined ? '—' : v === null ? 'null' : typeof v === 'string' ? v : JSON.stringify(v));

async function pool<T, R>(items: T[], n: number, fn: (x: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let i = 0;
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, async () => {
    while (i < items.length) { const k = i++; out[k] = await fn(items[k]); }
  }));
  return out;
}

// ---------------------------------------------------------------- overview
async function overviewView() {
  const live = h('div', { class: 'kpis' });
  const chartBox = h('div', { class: 'chart', id: 'rate-chart' });
  const decisions = h('div', { class: 'decisions' });
  const camps = h('div');
  const segs = h('div');
  view.append(
    pageHead('Overview', 'Live sessions and traffic, updated every 2 s.'),
    live,
    h('div', { class: 'grid2' }, card('Events per second (last 5 minutes)', chartBox), card('Decisions since start', decisions)),
    card(h('a', { href: '#/campaigns' }, 'Campaigns'), camps),
    card(h('a', { href: '#/segments' }, 'Segments'), segs),
  );
  startLive(live, chartBox, decisions);
  await Promise.all([
    guard(async () => { const f = await renderCampaignTable(camps); if (f) every(10_000, f, camps); }, camps),
    guard(async () => { const f = await renderSegmentTable(segs); if (f) every(5_000, f, segs); }, segs),
  ]);
}

function startLive(live: HTMLElement, chartBox: HTMLElement, decisions: HTMLElement) {
  const samples: Array<{ t: number; total: number }> = [];
  const rates: { x: number[]; y: (number | null)[] } = { x: [], y: [] };
  let plot: uPlot | null = null;
  let stopped = false;
  const kpi = (label: string, key: string, valueText: string, sub = '') =>
    h('div', { class: 'card kpi', 'data-kpi': key }, h('span', { class: 'label' }, label), h('b', null, valueText), h('span', { class: 'muted small' }, sub));
  const tick = async () => {
    try {
      const o = await api<Obj>('/v1/overview');
      dash.overview = o;
      const st = Date.parse(String(o.server_time ?? ''));
      const t = Number.isFinite(st) ? st : Date.now();
      if (!samples.length || t > samples[samples.length - 1].t) samples.push({ t, total: Number(o.events_total) || 0 });
      while (samples.length > 200) samples.shift();
      const r = eventRate(samples);
      if (samples.length >= 2) {
        rates.x.push(t / 1000);
        rates.y.push(r);
        while (rates.x.length && rates.x[0] < t / 1000 - 300) { rates.x.shift(); rates.y.shift(); }
      }
      const dec = (o.decisions ?? {}) as Record<string, number>;
      clear(live,
        kpi('Live sessions', 'sessions', num(o.sessions as number), 'open WebSocket sessions'),
        kpi('Connections', 'connections', num(o.connections as number), 'open TCP connections (HTTP + WebSocket)'),
        kpi('Events / s', 'event_rate', r == null ? '…' : r.toFixed(r < 10 ? 1 : 0), 'over the last 10 s'),
        kpi('Events recorded', 'events_total', num(o.events_total as number), 'since the gateway started'),
        kpi('Delivered', 'delivered', num(dec.delivered ?? 0), 'messages sent'),
      );
      const entries = Object.entries(dec).sort((a, b) => b[1] - a[1]);
      const max = Math.max(1, ...entries.map((e) => e[1]));
      clear(decisions, entries.length
        ? h('ul', { class: 'bars' }, entries.map(([k, n]) => h('li', null, h('span', null, k.replace(/_/g, ' ')), h('span', { class: 'bar' }, h('i', { style: `width:${(100 * n) / max}%`, class: `o-${k}` })), h('b', null, num(n)))))
        : empty('No decisions yet.', 'They appear as campaigns fire.'));
      if (rates.x.length) {
        const data: uPlot.AlignedData = [rates.x, rates.y];
        if (!plot) plot = lineChart(chartBox, data, [{ label: 'events/s', stroke: '#4f46e5', fill: 'rgba(79,70,229,.08)', value: (_u, v) => (v == null ? '—' : v.toFixed(1)) }], 180,
          { scales: { x: { time: true, range: (_u, _min, max) => [max - 300, max] }, y: { range: (_u, _min, max) => [0, Math.max(1, max * 1.15)] } },
            axes: [{ stroke: '#667085', grid: { stroke: '#eef0f4' }, ticks: { stroke: '#eef0f4' }, values: (_u: uPlot, v: number[]) => v.map((t) => new Date(t * 1000).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', hour12: false })) },
              { stroke: '#667085', grid: { stroke: '#eef0f4' }, ticks: { stroke: '#eef0f4' }, size: 48 }] });
        else plot.setData(data);
      } else if (!chartBox.childElementCount) chartBox.append(h('p', { class: 'muted small' }, 'Measuring…'));
    } catch (e) {
      if (e instanceof Unauthorized) { stopped = true; throw e; }
      clear(live, h('div', { class: 'notice error' }, `Live overview unavailable: ${errorText(e)}`));
    }
  };
  const loop = async () => {
    if (stopped) return;
    await guard(tick, live);
    if (!stopped) timer = setTimeout(loop, 2000);
  };
  let timer = setTimeout(loop, 0);
  const onResize = () => plot?.setSize({ width: chartBox.clientWidth, height: 180 });
  addEventListener('resize', onResize);
  teardown.push(() => { stopped = true; clearTimeout(timer); plot?.destroy(); removeEventListener('resize', onResize); });
}

function lineChart(box: HTMLElement, data: uPlot.AlignedData, series: uPlot.Series[], height: number, opts: Partial<uPlot.Options> = {}): uPlot {
  box.textContent = '';
  return new uPlot({
    width: Math.max(280, box.clientWidth || 600),
    height,
    series: [{}, ...series.map((s) => ({ width: 2, points: { show: false }, ...s }))],
    axes: [
      { stroke: '#667085', grid: { stroke: '#eef0f4' }, ticks: { stroke: '#eef0f4' } },
      { stroke: '#667085', grid: { stroke: '#eef0f4' }, ticks: { stroke: '#eef0f4' }, size: 48 },
    ],
    scales: { y: { range: (_u, _min, max) => [0, Math.max(1, max * 1.15)] } },
    legend: { live: true },
    cursor: { drag: { x: false, y: false } },
    ...opts,
  }, data, box);
}

// ---------------------------------------------------------------- campaigns
async function campaignsView() {
  const box = h('div');
  view.append(pageHead('Campaigns', 'Last 7 days, all variants. Rates are per impression. Refreshed every 10 s.'), card(null, box));
  const f = await renderCampaignTable(box);
  if (f) every(10_000, f, box);
}

async function renderCampaignTable(box: HTMLElement): Promise<(() => Promise<unknown>) | undefined> {
  const { campaigns } = await api<{ campaigns: Campaign[] }>('/v1/campaigns');
  if (!campaigns?.length) {
    clear(box, empty('No campaigns yet.', h('span', null, 'Create one with ', h('code', null, 'PUT /v1/campaigns/{id}'), ' (see docs/campaigns.md).')));
    return;
  }
  const rows = campaigns.map((c) => {
    const cells: Record<string, HTMLElement> = {};
    for (const k of ['delivered', 'impressions', 'ctr', 'dismissal', 'conversions', 'conversion', 'lift']) cells[k] = h('td', { class: 'num', 'data-k': k }, '…');
    const tr = h('tr', { 'data-campaign': c.id, class: 'clickable', onclick: () => (location.hash = `#/campaigns/${encodeURIComponent(c.id)}`) },
      h('td', null, h('a', { href: `#/campaigns/${encodeURIComponent(c.id)}` }, c.name || c.id), c.name ? h('div', { class: 'muted small mono' }, c.id) : null),
      h('td', null, statusPill(c.status)),
      h('td', null, describeTrigger(c.trigger), h('div', { class: 'muted small' }, messageKinds(c), hasControl(c) ? ' · control group' : '')),
      cells.delivered, cells.impressions, cells.ctr, cells.dismissal, cells.conversions, cells.conversion, cells.lift);
    return { c, tr, cells };
  });
  clear(box, h('div', { class: 'table-wrap' }, h('table', { class: 'table', 'data-table': 'campaigns' },
    h('thead', null, h('tr', null, h('th', null, 'Campaign'), h('th', null, 'Status'), h('th', null, 'Trigger · message'),
      h('th', { class: 'num' }, 'Delivered'), h('th', { class: 'num' }, 'Impressions'), h('th', { class: 'num', title: 'clicks / impressions' }, 'CTR'),
      h('th', { class: 'num', title: 'dismissals / impressions' }, 'Dismissed'), h('th', { class: 'num' }, 'Conversions'),
      h('th', { class: 'num', title: 'conversions / impressions' }, 'Conv. rate'), h('th', { class: 'num', title: 'best variant vs control, 95% interval' }, 'Lift'))),
    h('tbody', null, rows.map((r) => r.tr)))));
  const fill = () => pool(rows, 4, async ({ c, cells }) => {
    try {
      const s = await api<Stats>(`/v1/campaigns/${encodeURIComponent(c.id)}/stats`);
      dash.statsByCampaign[c.id] = s;
      const t = totals(s.variants);
      cells.delivered.textContent = num(t.delivered);
      cells.impressions.textContent = num(t.impressions);
      cells.ctr.textContent = pct(t.click_through_rate);
      cells.dismissal.textContent = pct(t.dismissal_rate);
      cells.conversions.textContent = num(t.conversions);
      cells.conversion.textContent = pct(t.conversion_rate);
      const b = bestLift(s.variants);
      clear(cells.lift, b ? liftCell(b) : '—');
    } catch (e) {
      if (e instanceof Unauthorized) throw e;
      for (const k of Object.keys(cells)) cells[k].textContent = '—';
      cells.delivered.title = errorText(e);
      cells.delivered.textContent = 'n/a';
    }
  });
  await fill();
  return fill;
}

/** Calls `fn` every `ms` while the current view lives (stops at the next route or on 401). */
function every(ms: number, fn: () => Promise<unknown>, where: HTMLElement) {
  let alive = true;
  let t: ReturnType<typeof setTimeout>;
  const loop = () => { t = setTimeout(async () => { if (!alive) return; await guard(async () => { await fn(); }, where); if (alive && getToken()) loop(); }, ms); };
  loop();
  teardown.push(() => { alive = false; clearTimeout(t); });
}

function liftCell(v: VariantStats): HTMLElement {
  const sig = significance(v.lift_ci95);
  return h('span', { class: `lift ${sig ?? 'ns'}`, title: `variant ${v.variant}: ${liftText(v.lift, v.lift_ci95)} (95% interval)${sig ? '' : ' — not significant'}` },
    liftText(v.lift, null));
}

/** A small SVG showing a lift and its 95% interval around zero. */
function ciBar(lift: number | null, ci: [number, number] | null): Node {
  if (lift == null || !ci) return h('span', { class: 'muted' }, '—');
  const span = Math.max(0.05, Math.abs(ci[0]), Math.abs(ci[1]), Math.abs(lift)) * 1.1;
  const X = (x: number) => 60 + (x / span) * 56;
  const sig = significance(ci);
  const color = sig === 'up' ? '#12805c' : sig === 'down' ? '#c0352b' : '#667085';
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 120 16'); svg.setAttribute('width', '120'); svg.setAttribute('height', '16'); svg.setAttribute('class', 'ci');
  const mk = (tag: string, a: Record<string, string | number>) => { const e = document.createElementNS(ns, tag); for (const [k, v] of Object.entries(a)) e.setAttribute(k, String(v)); svg.append(e); };
  mk('line', { x1: 60, x2: 60, y1: 1, y2: 15, stroke: '#cbd0dc', 'stroke-dasharray': '2 2' });
  mk('line', { x1: X(ci[0]), x2: X(ci[1]), y1: 8, y2: 8, stroke: color, 'stroke-width': 3, 'stroke-linecap': 'round', opacity: 0.45 });
  mk('circle', { cx: X(lift), cy: 8, r: 3.5, fill: color });
  return svg;
}

let campaignRange = '7d';
async function campaignView(id: string) {
  const c = await api<Campaign>(`/v1/campaigns/${encodeURIComponent(id)}`);
  const ranges: Record<string, { label: string; ms?: number; interval: string }> = {
    '24h': { label: 'Last 24 hours · hourly', ms: 864e5, interval: 'hour' },
    '7d': { label: 'Last 7 days · daily', interval: 'day' },
    '7dh': { label: 'Last 7 days · hourly', ms: 7 * 864e5, interval: 'hour' },
    '30d': { label: 'Last 30 days · daily', ms: 30 * 864e5, interval: 'day' },
  };
  const select = h('select', { 'aria-label': 'Range' }, Object.entries(ranges).map(([k, r]) => h('option', { value: k, selected: k === campaignRange }, r.label)));
  const csv = h('button', { class: 'secondary', type: 'button' }, 'Download CSV');
  const body = h('div', { class: 'campaign-body' });
  view.append(
    h('p', { class: 'crumbs' }, h('a', { href: '#/campaigns' }, 'Campaigns'), ' / ', c.id),
    pageHead(c.name || c.id, h('span', null, statusPill(c.status), ' ', `Trigger: ${describeTrigger(c.trigger)} · ${messageKinds(c)}`,
      c.goal ? ` · goal: ${val((c.goal as Obj).event)} within ${val((c.goal as Obj).within ?? '—')}` : ' · no goal'), select, csv),
    body,
  );
  const query = () => {
    const r = ranges[campaignRange];
    const p = new URLSearchParams({ interval: r.interval });
    if (r.ms) {
      const to = new Date(Math.ceil(Date.now() / 3_600_000) * 3_600_000);
      p.set('from', new Date(to.getTime() - r.ms).toISOString().replace(/\.\d+Z$/, 'Z'));
      p.set('to', to.toISOString().replace(/\.\d+Z$/, 'Z'));
    }
    return p;
  };
  let lastJson = '';
  const load = async (quiet = false) => {
    if (!quiet) clear(body, h('p', { class: 'muted' }, 'Loading…'));
    const s = await api<Stats>(`/v1/campaigns/${encodeURIComponent(id)}/stats?${query()}`);
    dash.statsByCampaign[id] = s;
    const j = JSON.stringify({ v: s.variants, c: s.control, s: s.series });
    if (quiet && j === lastJson) return; // nothing moved: keep the page as it is
    lastJson = j;
    renderCampaignStats(body, c, s);
  };
  every(15_000, () => load(true), body);
  teardown.push(() => { statsCleanup(); statsCleanup = () => {}; });
  select.addEventListener('change', () => { campaignRange = select.value; guard(() => load(), body); });
  csv.addEventListener('click', () => guard(async () => {
    const p = query(); p.set('format', 'csv');
    const r = await api<Response>(`/v1/campaigns/${encodeURIComponent(id)}/stats?${p}`, { raw: true, headers: { accept: 'text/csv' } });
    const url = URL.createObjectURL(await r.blob());
    const a = h('a', { href: url, download: `beckon-${id}-${campaignRange}.csv` });
    document.body.append(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 5000);
  }, body));
  await load();
}

let chosenVariant: string | null = null;
let statsCleanup: () => void = () => {};
function renderCampaignStats(body: HTMLElement, c: Campaign, s: Stats) {
  statsCleanup();
  const treatments = (s.variants ?? []).filter((v) => !v.control);
  if (chosenVariant && !treatments.some((v) => v.variant === chosenVariant)) chosenVariant = null;
  let chosen: string | null = chosenVariant;
  const funnelBox = h('div', { class: 'funnel', 'data-funnel': '' });
  const chartBox = h('div', { class: 'chart' });
  const variantPick = h('select', { 'aria-label': 'Variant' }, h('option', { value: '' }, 'All variants'), treatments.map((v) => h('option', { value: v.variant }, `Variant ${v.variant}`)));
  const drawFunnel = () => {
    const t = totals(chosen ? treatments.filter((v) => v.variant === chosen) : treatments);
    const steps = funnel(t);
    const max = Math.max(1, steps[0].n, ...steps.map((x) => x.n));
    clear(funnelBox, steps.map((st) => h('div', { class: 'step', 'data-step': st.label.toLowerCase() },
      h('div', { class: 'step-label' }, h('span', null, st.label), h('b', null, num(st.n))),
      h('div', { class: 'step-bar' }, h('i', { style: `width:${Math.max(st.n ? 1.5 : 0, (100 * st.n) / max)}%` })),
      h('div', { class: 'muted small' }, st.label === 'Delivered' ? 'messages sent' : `${pct(st.ofPrev)} of previous · ${pct(st.ofFirst)} of delivered`))));
  };
  let plot: uPlot | null = null;
  const keys = ['delivered', 'impressions', 'clicks', 'dismissals', 'conversions'];
  const colors = ['#94a3b8', '#4f46e5', '#0ea5e9', '#f59e0b', '#12805c'];
  const drawChart = () => {
    const { x, ys } = seriesColumns(s, keys, chosen);
    plot?.destroy();
    if (!x.length) { clear(chartBox, empty('No data in this range.')); return; }
    // Counts per bucket: drawn as steps over each bucket (UTC), not as lines between points.
    const stepped = uPlot.paths.stepped!({ align: 1 });
    x.push(x[x.length - 1] + (s.interval === 'hour' ? 3600 : 86400)); // the last bucket's end, so its step has a width
    for (const y of ys) y.push(y[y.length - 1]);
    plot = lineChart(chartBox, [x, ...ys], keys.map((k, i) => ({ label: k, stroke: colors[i], paths: stepped })), 240, {
      tzDate: (ts: number) => uPlot.tzDate(new Date(ts * 1e3), 'Etc/UTC'),
      ...(s.interval === 'day' ? { axes: [{ stroke: '#667085', grid: { stroke: '#eef0f4' }, values: (_u: uPlot, v: number[]) => v.map((t) => new Date(t * 1000).toLocaleDateString([], { month: 'short', day: 'numeric', timeZone: 'UTC' })) }, { stroke: '#667085', grid: { stroke: '#eef0f4' }, size: 48 }] } : {}),
    });
  };
  variantPick.value = chosen ?? '';
  variantPick.addEventListener('change', () => { chosen = chosenVariant = variantPick.value || null; drawFunnel(); drawChart(); });
  const onResize = () => plot?.setSize({ width: chartBox.clientWidth, height: 240 });
  addEventListener('resize', onResize);
  statsCleanup = () => { plot?.destroy(); plot = null; removeEventListener('resize', onResize); };

  const anyData = (s.variants ?? []).some((v) => v.delivered || v.impressions) || (s.control?.exposures ?? 0) > 0;
  clear(body,
    !anyData ? h('div', { class: 'notice' }, `No deliveries between ${fmtTime(s.from)} and ${fmtTime(s.to)} yet.`) : null,
    h('div', { class: 'grid2' },
      card(h('span', { class: 'row' }, 'Funnel ', variantPick), funnelBox),
      card(`Over time (${s.interval === 'hour' ? 'hourly' : 'daily'}, UTC)`, chartBox)),
    card('Variants', variantTable(c, s)),
    h('p', { class: 'muted small' }, `${fmtTime(s.from)} → ${fmtTime(s.to)}. Conversions count users with an impression who did the goal event within the goal window; lift compares each variant’s conversion rate with the control group’s, with its 95% interval.`),
  );
  drawFunnel();
  requestAnimationFrame(drawChart);
}

function variantTable(c: Campaign, s: Stats): HTMLElement {
  const weights = new Map((c.variants ?? []).map((v) => [v.id, v.weight]));
  const uu = (v: VariantStats, k: keyof NonNullable<VariantStats['unique_users']>) => {
    const n = v.unique_users?.[k];
    return n == null ? null : h('div', { class: 'muted small' }, `${num(n)} user${n === 1 ? '' : 's'}`);
  };
  const cell = (k: string, main: string, sub?: Node | null, title?: string) => h('td', { class: 'num', 'data-k': k, title: title ?? null }, h('span', { class: 'v' }, main), sub ?? null);
  // Every treatment variant of the definition gets a row (zeros before its first delivery),
  // then any variant the stats still name that the definition no longer has.
  const byId = new Map((s.variants ?? []).filter((v) => !v.control).map((v) => [v.variant, v]));
  const zero = (id: string): VariantStats => ({ variant: id, control: false, delivered: 0, impressions: 0, clicks: 0, dismissals: 0, conversions: 0,
    click_through_rate: null, dismissal_rate: null, conversion_rate: null, lift: null, lift_ci95: null });
  const list = (c.variants ?? []).filter((v) => !v.control).map((v) => byId.get(v.id) ?? zero(v.id));
  for (const [id, v] of byId) if (!list.some((x) => x.variant === id)) list.push(v);
  const rows = list.map((v) => h('tr', { 'data-variant': v.variant },
    h('td', null, h('b', null, v.variant), weights.get(v.variant) != null ? h('div', { class: 'muted small' }, `weight ${weights.get(v.variant)}`) : null),
    cell('delivered', num(v.delivered), uu(v, 'delivered')),
    cell('impressions', num(v.impressions), uu(v, 'impressions')),
    cell('clicks', num(v.clicks), uu(v, 'clicks'), Object.entries(v.clicks_by_button ?? {}).map(([b, n]) => `${b}: ${n}`).join('\n') || undefined),
    cell('ctr', pct(v.click_through_rate)),
    cell('dismissals', num(v.dismissals), uu(v, 'dismissals')),
    cell('dismissal_rate', pct(v.dismissal_rate)),
    cell('conversions', num(v.conversions), uu(v, 'conversions')),
    cell('conversion_rate', pct(v.conversion_rate)),
    h('td', { class: 'num', 'data-k': 'lift' }, h('span', { class: `lift ${significance(v.lift_ci95) ?? 'ns'}` }, liftText(v.lift, null)),
      v.lift_ci95 ? h('div', { class: 'muted small' }, `95% CI ${liftText(v.lift_ci95[0], null)} … ${liftText(v.lift_ci95[1], null)}`) : null),
    h('td', null, ciBar(v.lift, v.lift_ci95)),
  ));
  const ctl = s.control;
  const controlRow = ctl && (hasControl(c) || ctl.exposures > 0) ? h('tr', { 'data-variant': 'control', class: 'control' },
    h('td', null, h('b', null, 'control'), h('div', { class: 'muted small' }, 'sent nothing')),
    cell('delivered', `${num(ctl.exposures)}`, h('div', { class: 'muted small' }, `exposures${ctl.unique_users?.exposures != null ? ` · ${num(ctl.unique_users.exposures)} users` : ''}`)),
    h('td', { class: 'num' }, '—'), h('td', { class: 'num' }, '—'), h('td', { class: 'num' }, '—'), h('td', { class: 'num' }, '—'), h('td', { class: 'num' }, '—'),
    cell('conversions', num(ctl.conversions), ctl.unique_users?.conversions != null ? h('div', { class: 'muted small' }, `${num(ctl.unique_users.conversions)} users`) : null),
    cell('conversion_rate', pct(ctl.conversion_rate), null, 'conversions / exposures'),
    h('td', { class: 'num muted' }, 'baseline'), h('td', null)) : null;
  if (!rows.length && !controlRow) return empty('This campaign has no variants with data.');
  return h('div', { class: 'table-wrap' }, h('table', { class: 'table', 'data-table': 'variants' },
    h('thead', null, h('tr', null, ['Variant', 'Delivered', 'Impressions', 'Clicks', 'CTR', 'Dismissals', 'Dismissal rate', 'Conversions', 'Conv. rate', 'Lift', '95% interval']
      .map((t, i) => h('th', { class: i > 0 && i < 10 ? 'num' : null }, t)))),
    h('tbody', null, rows, controlRow)));
}

// ---------------------------------------------------------------- segments
async function segmentsView() {
  const box = h('div');
  view.append(pageHead('Segments', 'Live member counts among connected users, refreshed every 5 s.'), card(null, box));
  const f = await renderSegmentTable(box);
  if (f) every(5_000, f, box);
}

async function renderSegmentTable(box: HTMLElement): Promise<(() => Promise<unknown>) | undefined> {
  const { segments } = await api<{ segments: Array<Obj & { id: string }> }>('/v1/segments');
  if (!segments?.length) {
    clear(box, empty('No segments yet.', h('span', null, 'Create one with ', h('code', null, 'PUT /v1/segments/{id}'), '.')));
    return;
  }
  const rows = segments.map((s) => {
    const members = h('td', { class: 'num', 'data-k': 'live_members' }, s.live_members != null ? num(s.live_members as number) : '…');
    return { s, members, tr: h('tr', { 'data-segment': s.id },
      h('td', null, h('b', null, (s.name as string) || s.id), s.name ? h('div', { class: 'muted small mono' }, s.id) : null),
      h('td', { class: 'cond' }, describeCondition(s.conditions)),
      members) };
  });
  clear(box, h('div', { class: 'table-wrap' }, h('table', { class: 'table', 'data-table': 'segments' },
    h('thead', null, h('tr', null, h('th', null, 'Segment'), h('th', null, 'Conditions'), h('th', { class: 'num' }, 'Live members'))),
    h('tbody', null, rows.map((r) => r.tr)))));
  const refresh = async () => {
    const { segments: now } = await api<{ segments: Array<Obj & { id: string }> }>('/v1/segments');
    const byId = new Map(now.map((x) => [x.id, x]));
    for (const r of rows) {
      const n = byId.get(r.s.id)?.live_members;
      if (n != null) r.members.textContent = num(n as number);
    }
  };
  // Older gateways list definitions only: ask each segment for its live count.
  await pool(rows.filter((r) => r.s.live_members == null), 4, async (r) => {
    try {
      const one = await api<Obj>(`/v1/segments/${encodeURIComponent(r.s.id)}`);
      r.members.textContent = num(one.live_members as number);
    } catch (e) {
      if (e instanceof Unauthorized) throw e;
      r.members.textContent = 'n/a';
    }
  });
  return refresh;
}

// ---------------------------------------------------------------- users
async function usersView(id: string | undefined, campaign: string | null) {
  const input = h('input', { type: 'search', name: 'user', placeholder: 'user id, e.g. demo-1a2b3c', value: id ?? '', 'aria-label': 'User id', autocomplete: 'off' });
  const form = h('form', { class: 'lookup' }, input, h('button', { class: 'primary', type: 'submit' }, 'Look up'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const v = input.value.trim();
    if (v) location.hash = `#/users/${encodeURIComponent(v)}`;
  });
  view.append(pageHead('Users', 'Profile, segments, engagement, and why a campaign would or would not fire.'), form);
  if (!id) { view.append(empty('Enter a user id.', 'In dev mode, the demo shows its user id in the top bar.')); input.focus(); return; }
  let u: Obj;
  try {
    u = await api<Obj>(`/v1/users/${encodeURIComponent(id)}`);
  } catch (e) {
    if (e instanceof HttpError && e.status === 404) { view.append(empty(`No user “${id}”.`, 'A user exists once the gateway has seen an event, a session or an attribute for them.')); return; }
    throw e;
  }
  const attrs = Object.entries((u.attributes ?? {}) as Obj);
  const aggs = Object.entries((u.aggregates ?? {}) as Record<string, Obj>).sort((a, b) => String(b[1].last_seen).localeCompare(String(a[1].last_seen)));
  const eng = Object.entries((u.engagement ?? {}) as Record<string, Record<string, number>>);
  const sessions = (u.sessions ?? []) as Obj[];
  const segs = (u.segments ?? []) as string[];
  const explainBox = h('div', { id: 'explain' });
  const { campaigns } = await api<{ campaigns: Campaign[] }>('/v1/campaigns').catch((e) => { if (e instanceof Unauthorized) throw e; return { campaigns: [] as Campaign[] }; });
  const pick = h('select', { 'aria-label': 'Campaign to explain' }, h('option', { value: '' }, 'Choose a campaign…'),
    campaigns.map((c) => h('option', { value: c.id, selected: c.id === campaign }, `${c.name || c.id} (${c.status})`)));
  pick.addEventListener('change', () => { location.hash = `#/users/${encodeURIComponent(id)}${pick.value ? `?campaign=${encodeURIComponent(pick.value)}` : ''}`; });

  view.append(
    h('div', { class: 'user-head card' },
      h('div', null, h('p', { class: 'muted small' }, 'User'), h('h2', { class: 'mono' }, id)),
      h('div', null, h('p', { class: 'muted small' }, 'Activity score'), h('b', null, String(u.activity ?? '—'))),
      h('div', null, h('p', { class: 'muted small' }, 'Live sessions'), h('b', { 'data-k': 'sessions' }, String(sessions.length))),
      h('div', { class: 'chips' }, h('p', { class: 'muted small' }, 'Segments'), segs.length ? segs.map((s) => h('span', { class: 'chip' }, s)) : h('span', { class: 'muted' }, 'none'))),
    h('div', { class: 'grid2' },
      card('Attributes', attrs.length ? kvTable(attrs.map(([k, v]) => [k, val(v)])) : empty('No attributes.')),
      card('Engagement', eng.length ? h('table', { class: 'table', 'data-table': 'engagement' },
        h('thead', null, h('tr', null, ['Campaign', 'delivered', 'impression', 'click', 'dismiss', 'convert'].map((t, i) => h('th', { class: i ? 'num' : null }, t)))),
        h('tbody', null, eng.map(([c, e]) => h('tr', { 'data-campaign': c }, h('td', null, h('a', { href: `#/campaigns/${encodeURIComponent(c)}` }, c)),
          ['delivered', 'impression', 'click', 'dismiss', 'convert'].map((k) => h('td', { class: 'num', 'data-k': k }, num(e[k] ?? 0)))))))
        : empty('No engagement yet.'))),
    h('div', { class: 'grid2' },
      card('Events', aggs.length ? h('table', { class: 'table' },
        h('thead', null, h('tr', null, h('th', null, 'Event'), h('th', { class: 'num' }, 'Count'), h('th', null, 'Last seen'), h('th', null, 'First seen'))),
        h('tbody', null, aggs.map(([k, a]) => h('tr', null, h('td', { class: 'mono' }, k), h('td', { class: 'num' }, num(a.count as number)), h('td', { title: fmtTime(a.last_seen as string) }, ago(a.last_seen as string)), h('td', { title: fmtTime(a.first_seen as string) }, ago(a.first_seen as string))))))
        : empty('No events yet.')),
      card('Live sessions', sessions.length ? h('table', { class: 'table' },
        h('thead', null, h('tr', null, h('th', null, 'Session'), h('th', null, 'Page'), h('th', null, 'Started'), h('th', null, 'Last active'))),
        h('tbody', null, sessions.map((s) => h('tr', null, h('td', { class: 'mono small' }, val(s.session)), h('td', { class: 'mono' }, val(s.page ?? '—')), h('td', null, ago(s.started_at as string)), h('td', null, ago(s.last_active as string))))))
        : empty('Not connected.'))),
    card(h('span', { class: 'row' }, 'Explain ', pick), explainBox),
  );
  if (campaign) await guard(async () => renderExplain(explainBox, await api<Obj>(`/v1/users/${encodeURIComponent(id)}/explain?campaign=${encodeURIComponent(campaign)}`)), explainBox);
  else explainBox.append(h('p', { class: 'muted' }, 'Pick a campaign to see each condition with its actual value and verdict, the caps, and recent decisions.'));
}

function kvTable(rows: Array<[string, Node | string]>): HTMLElement {
  return h('table', { class: 'table kv' }, h('tbody', null, rows.map(([k, v]) => h('tr', null, h('th', null, k), h('td', { class: 'mono' }, v)))));
}

export function renderExplain(box: HTMLElement, x: Obj) {
  const reasons = (x.reasons ?? []) as string[];
  const caps = (x.caps ?? {}) as Record<string, Obj>;
  const sched = (x.schedule ?? {}) as Obj;
  const variant = (x.variant ?? {}) as Obj;
  const trigger = (x.trigger ?? {}) as Obj;
  const audience = (x.audience ?? {}) as Obj;
  const decisions = (x.decisions ?? []) as Obj[];
  const outstanding = ((caps.outstanding ?? []) as unknown as Obj[]);
  const triggerRows: Array<[string, string]> = Object.entries(trigger).filter(([k]) => k !== 'conditions').map(([k, v]) => [k, val(v)]);
  clear(box,
    h('div', { class: `verdict-banner ${x.eligible ? 'ok' : 'no'}`, 'data-eligible': String(!!x.eligible) },
      h('b', null, x.eligible ? 'Eligible now' : 'Not eligible now'),
      reasons.length ? h('span', null, ': ', reasons.join('; ')) : h('span', null, ' — the next trigger firing would deliver (subject to priority).'),
      trigger.type === 'goal' && trigger.fired ? h('div', { class: 'small' }, 'Note: this goal trigger already fired for this user, and a goal fires once per user ever.') : null),
    h('div', { class: 'explain-grid' },
      h('div', null, h('h3', null, 'Campaign'), kvTable([
        ['status', val(x.status)],
        ['schedule', `${sched.start ? fmtTime(sched.start as string) : 'any time'} → ${sched.end ? fmtTime(sched.end as string) : 'open'}`],
        ['in schedule', verdict(sched.in_schedule as boolean)],
        ['variant', `${val(variant.id)}${variant.control ? ' (control: sent nothing)' : ''}`],
        ['evaluated at', fmtTime(x.now as string)],
      ])),
      h('div', null, h('h3', null, `Trigger · ${describeTrigger(trigger)}`), kvTable(triggerRows),
        trigger.conditions ? condTree(trigger.conditions as Obj) : null),
    ),
    h('h3', null, 'Audience ', verdict(audience.verdict as boolean), ' ',
      h('span', { class: 'muted small' }, audience.kind === 'segment' ? `segment ${val(audience.segment)}${audience.member ? ' (member)' : ' (not a member)'}` : audience.kind === 'everyone' ? 'everyone' : `conditions${audience.page ? ` · page ${val(audience.page)}` : ''}`)),
    audience.conditions ? condTree(audience.conditions as Obj) : null,
    h('h3', null, 'Caps'),
    h('table', { class: 'table', 'data-table': 'caps' },
      h('thead', null, h('tr', null, h('th', null, 'Cap'), h('th', null, 'Limit'), h('th', null, 'Now'), h('th', null, 'OK'))),
      h('tbody', null,
        h('tr', null, h('td', null, 'max per user'), h('td', null, val(caps.max_per_user?.limit ?? 'none')), h('td', null, `${val(caps.max_per_user?.seen)} seen · ${val(caps.max_per_user?.reserved)} reserved`), h('td', null, verdict(caps.max_per_user?.ok as boolean))),
        h('tr', null, h('td', null, 'min interval'), h('td', null, val(caps.min_interval?.interval ?? 'none')), h('td', null, `last ${caps.min_interval?.last_delivery ? ago(caps.min_interval.last_delivery as string) : 'never'}${caps.min_interval?.next_allowed ? ` · next ${ago(caps.min_interval.next_allowed as string)}` : ''}`), h('td', null, verdict(caps.min_interval?.ok as boolean))),
        h('tr', null, h('td', null, 'max per session'), h('td', null, val(caps.max_per_session?.limit ?? 'none')), h('td', null, caps.max_per_session?.current_session ? `${val(caps.max_per_session.count ?? 0)} in ${val(caps.max_per_session.current_session)}` : 'no live session'), h('td', null, verdict(caps.max_per_session?.ok as boolean))),
      )),
    outstanding.length ? h('p', { class: 'muted small' }, `Outstanding (reserved, unseen): ${outstanding.map((o) => `${val(o.delivery)} until ${fmtTime(o.expires_at as string)}`).join(', ')}`) : null,
    h('h3', null, `Recent decisions (${decisions.length})`),
    decisions.length ? h('table', { class: 'table', 'data-table': 'decisions' },
      h('thead', null, h('tr', null, ['When', 'Outcome', 'Cause', 'Detail', 'Variant', 'Delivery'].map((t) => h('th', null, t)))),
      h('tbody', null, decisions.map((d) => h('tr', null,
        h('td', { title: fmtTime(d.at as string) }, ago(d.at as string), d.repeats ? h('div', { class: 'muted small' }, `×${Number(d.repeats) + 1} since ${ago(d.first_at as string)}`) : null),
        h('td', null, h('span', { class: `pill o-${val(d.outcome)}` }, val(d.outcome).replace(/_/g, ' '))),
        h('td', null, val(d.cause ?? '—')), h('td', null, val(d.detail ?? '—')), h('td', null, val(d.variant ?? '—')), h('td', { class: 'mono small' }, val(d.delivery ?? '—'))))))
      : empty('No decisions recorded for this campaign and user.'),
  );
}

/** A condition trace ({all|any:[…],verdict} / {not, verdict} / {condition, value, verdict}) as a nested list. */
function condTree(n: Obj): HTMLElement {
  const li = (node: Obj): HTMLElement => {
    if (Array.isArray(node.all) || Array.isArray(node.any)) {
      const key = Array.isArray(node.all) ? 'all' : 'any';
      return h('li', null, verdict(node.verdict as boolean), ' ', h('b', null, key === 'all' ? 'all of' : 'any of'),
        h('ul', { class: 'tree' }, (node[key] as Obj[]).map(li)));
    }
    if (node.not) return h('li', null, verdict(node.verdict as boolean), ' ', h('b', null, 'not'), h('ul', { class: 'tree' }, li(node.not as Obj)));
    return h('li', null, verdict(node.verdict as boolean), ' ', h('span', { class: 'cond' }, describeCondition(node.condition)),
      h('span', { class: 'actual' }, ` actual: ${val(node.value)}`));
  };
  return h('ul', { class: 'tree root', 'data-tree': '' }, li(n));
}

// ---------------------------------------------------------------- start
$('#gw').textContent = location.host;
route();
