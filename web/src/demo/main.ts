// Acme Analytics: a tiny SaaS app wired to Beckon through the browser SDK
// (window.Beckon, from /demo/beckon.global.js). Client-side routes under /demo/.
import { describeTrigger, messageKinds, type Campaign, type Obj } from '../shared/describe';

interface Ctx { impression(): void; click(button: string): void; dismiss(): void }
interface Client {
  track(event: string, props?: Record<string, unknown>): string;
  page(path?: string, title?: string): string;
  on(type: 'message', fn: (frame: MessageFrame, ctx: Ctx) => void): () => void;
  on(type: 'revoke', fn: (delivery: string) => void): () => void;
  on(type: 'state', fn: (s: { state: string; session?: string; code?: number; delay?: number }) => void): () => void;
  on(type: 'error', fn: (e: { code: string; message?: string; id?: string }) => void): () => void;
  shutdown(): void;
  readonly state: string;
}
interface MessageFrame { delivery: string; campaign: string; variant: string; seq: number; message: Obj }
declare global {
  interface Window {
    Beckon?: { init(o: Record<string, unknown>): Client };
    acme?: { client?: Client; user: string; log: LogEntry[]; messages: MessageFrame[] };
  }
}

type LogEntry = { at: number; dir: 'up' | 'down' | 'info'; type: string; text: string };

const DEV_ADMIN = 'beckon-dev-admin';
const USER_KEY = 'acme.demo.user';
const $ = <T extends HTMLElement = HTMLElement>(sel: string) => document.querySelector(sel) as T;

// ---------- user ----------
function newUserId(): string {
  const a = new Uint8Array(4);
  crypto.getRandomValues(a);
  return 'demo-' + [...a].map((b) => b.toString(36).padStart(2, '0')).join('').slice(0, 6);
}
let user = localStorage.getItem(USER_KEY) ?? '';
if (!/^demo-[a-z0-9]+$/.test(user)) {
  user = newUserId();
  localStorage.setItem(USER_KEY, user);
}
const planKey = () => `acme.demo.plan.${user}`;
const state = { user, log: [] as LogEntry[], messages: [] as MessageFrame[], client: undefined as Client | undefined };
window.acme = state;

$('#user-id').textContent = user;
$('#avatar').textContent = user.slice(5, 6).toUpperCase();
$('#new-user').addEventListener('click', () => {
  state.client?.shutdown();
  localStorage.setItem(USER_KEY, newUserId());
  for (const k of Object.keys(sessionStorage)) if (k.startsWith('beckon')) sessionStorage.removeItem(k);
  location.assign('/demo/setup');
});

// ---------- log ----------
const logEl = $('#log');
function log(dir: LogEntry['dir'], type: string, text = '') {
  const e: LogEntry = { at: Date.now(), dir, type, text };
  state.log.push(e);
  if (state.log.length > 300) state.log.shift();
  const li = document.createElement('li');
  li.className = `log-${dir} log-t-${type.replace(/[^a-z_]/gi, '')}`;
  const time = document.createElement('time');
  time.textContent = new Date(e.at).toLocaleTimeString([], { hour12: false });
  const arrow = document.createElement('span');
  arrow.className = 'arrow';
  arrow.textContent = dir === 'up' ? '↑' : dir === 'down' ? '↓' : '•';
  arrow.title = dir === 'up' ? 'sent by the SDK' : dir === 'down' ? 'received from Beckon' : 'local';
  const t = document.createElement('b');
  t.textContent = type;
  const body = document.createElement('span');
  body.className = 'log-text';
  body.textContent = text;
  li.append(time, arrow, t, body);
  logEl.prepend(li);
  while (logEl.childElementCount > 120) logEl.lastElementChild?.remove();
}
$('#clear-log').addEventListener('click', () => (logEl.textContent = ''));

function summarize(f: Obj): [string, string] {
  const type = String(f.type ?? '?');
  const s = (v: unknown) => (v === undefined ? '' : typeof v === 'string' ? v : JSON.stringify(v));
  switch (type) {
    case 'hello': return [type, `page ${s((f.page as Obj | undefined)?.path)}${f.resume ? ' · resume ' + s((f.resume as Obj).session) : ''}`];
    case 'welcome': return [type, `${s(f.session)}${f.resumed ? ' (resumed)' : ''}`];
    case 'track': return [type, `${s(f.event)}${f.properties && Object.keys(f.properties as Obj).length ? ' ' + s(f.properties) : ''}`];
    case 'page': return [type, s(f.path)];
    case 'identify': return [type, s(f.attributes)];
    case 'ack': return [type, `seq ≤ ${s(f.seq)}`];
    case 'engage': return [type, `${s(f.action)}${f.button ? ' ' + s(f.button) : ''} · ${s(f.delivery)}`];
    case 'ok': return [type, (f.ids as string[] | undefined)?.length + ' event(s) durable'];
    case 'message': return [type, `${s(f.campaign)}/${s(f.variant)} · ${s((f.message as Obj | undefined)?.kind)} · seq ${s(f.seq)}`];
    case 'revoke': return [type, s(f.delivery)];
    case 'error': return [type, `${s(f.code)}${f.message ? ': ' + s(f.message) : ''}`];
    case 'auth': return [type, 'token refreshed'];
    default: return [type, ''];
  }
}

/** A WebSocket that logs every frame (the token is never shown). `activity` frames are counted, not listed. */
const NativeWS = window.WebSocket;
class LoggingWebSocket extends NativeWS {
  constructor(url: string | URL, protocols?: string | string[]) {
    super(url, protocols);
    this.addEventListener('message', (ev) => {
      for (const f of frames(ev.data)) {
        const [t, text] = summarize(f);
        log('down', t, text);
      }
    });
  }
  send(data: Parameters<WebSocket['send']>[0]) {
    if (typeof data === 'string') {
      for (const f of frames(data)) {
        if (f.type === 'activity') { markActive(); continue; }
        if (f.type === 'track' || f.type === 'page') markActive();
        const [t, text] = summarize(f);
        log('up', t, text);
      }
    }
    super.send(data);
  }
}
function frames(data: unknown): Obj[] {
  if (typeof data !== 'string') return [];
  try {
    const v = JSON.parse(data);
    return (Array.isArray(v) ? v : [v]).filter((x) => x && typeof x === 'object');
  } catch { return []; }
}

// ---------- idle timer (for the inactivity campaign) ----------
let lastActive = Date.now();
function markActive() { lastActive = Date.now(); }
setInterval(() => {
  const el = $('#idle-s');
  if (el) el.textContent = String(Math.floor((Date.now() - lastActive) / 1000));
  const sd = document.querySelector<HTMLElement>('[data-countdown]');
  if (sd && sessionStart) {
    const left = Math.max(0, Math.ceil((sessionStart + Number(sd.dataset.countdown) - Date.now()) / 1000));
    sd.textContent = left > 0 ? `${left} s to go` : 'any moment';
  }
}, 500);

// ---------- routing ----------
const routes: Record<string, string> = { setup: 'Setup · Acme Analytics', dashboard: 'Dashboard · Acme Analytics' };
function currentView(): string {
  const m = /^\/demo\/([a-z]+)/.exec(location.pathname);
  return m && routes[m[1]] ? m[1] : 'setup';
}
function render() {
  const v = currentView();
  document.title = routes[v];
  for (const s of document.querySelectorAll<HTMLElement>('[data-view]')) s.hidden = s.dataset.view !== v;
  for (const a of document.querySelectorAll<HTMLElement>('[data-page]')) a.setAttribute('aria-current', String(a.dataset.page === v ? 'page' : false));
}
document.addEventListener('click', (ev) => {
  const a = (ev.target as Element).closest<HTMLAnchorElement>('a[data-route]');
  if (!a || ev.metaKey || ev.ctrlKey || ev.shiftKey) return;
  ev.preventDefault();
  if (a.pathname !== location.pathname) history.pushState(null, '', a.pathname);
  render();
  $('#main').focus({ preventScroll: true });
});
addEventListener('popstate', render);
if (location.pathname === '/demo/' || location.pathname === '/demo' || location.pathname === '/demo/index.html') history.replaceState(null, '', '/demo/setup');
render();

// ---------- UI ----------
function toast(text: string, ms = 2600) {
  const t = $('#toast');
  t.textContent = text;
  t.hidden = false;
  clearTimeout((t as any)._h);
  (t as any)._h = setTimeout(() => (t.hidden = true), ms);
}
const track = (event: string, props?: Record<string, unknown>) => {
  if (!state.client) return toast('Not connected to Beckon yet');
  state.client.track(event, props);
};

$('#export-button').addEventListener('click', () => {
  const rows = 1000 + Math.floor(Math.random() * 900);
  track('export_completed', { rows, format: 'csv' });
  toast(`Exported revenue.csv (${rows.toLocaleString()} rows)`);
});
$('#upgrade-button').addEventListener('click', () => {
  track('clicked_upgrade', { plan: 'pro' });
  // The upgrade campaign has a control group: tell the visitor when they are in it, or
  // they would wonder why nothing appears (explain, with the public dev admin token).
  const c = campaignsByEvent.get('clicked_upgrade');
  if (!c || !(c.variants ?? []).some((v) => v.control)) return;
  const before = state.messages.length;
  setTimeout(async () => {
    if (state.messages.length > before) return;
    try {
      const r = await fetch(`/v1/users/${encodeURIComponent(user)}/explain?campaign=${encodeURIComponent(c.id)}`, { headers: { authorization: `Bearer ${DEV_ADMIN}` } });
      const x = r.ok ? await r.json() : null;
      if (x?.variant?.control) {
        const text = `You are in the control group of “${c.name ?? c.id}”: it shows you nothing, which is how its lift is measured. Try “New user”.`;
        log('info', 'control', text);
        toast(text, 7000);
        const li = document.querySelector(`#try-list li[data-campaign="${CSS.escape(c.id)}"]`);
        if (li) { li.classList.add('done'); li.querySelector('.muted')!.textContent = 'you are in the control group: nothing is shown'; }
      }
    } catch { /* explain is a nicety */ }
  }, 1500);
});
for (const id of ['#connect-integration', '#connect-integration-2']) {
  $(id).addEventListener('click', () => {
    track('integration_connected', { source: 'postgres' });
    $('#integration-status').textContent = 'Postgres connected ✓';
    toast('Integration connected');
  });
}
$('#workspace-form').addEventListener('submit', (ev) => {
  ev.preventDefault(); // the SDK captured $form_submit already (capture phase)
  $('#ws-saved').hidden = false;
});

$('#feature-viewed').addEventListener('click', () => {
  track('feature_viewed', { feature: 'reports' });
  toast('Reports are coming soon to the demo');
});

// Where the seeded messages' buttons lead: /demo/<page>#schedule, #upgrade, … Each sheet
// completes the campaign's goal event, so conversions show up in the dashboard.
const sheets: Record<string, { title: string; body: string; ok: string; extra?: string; done(form: HTMLFormElement): void }> = {
  schedule: { title: 'Schedule this export', body: 'Send revenue.csv to your inbox every week.', ok: 'Save schedule',
    extra: '<label class="small" for="sched-day">Every</label><select id="sched-day" name="day"><option>Monday</option><option>Friday</option></select>',
    done: (f) => { track('export_scheduled', { day: (f.elements.namedItem('day') as HTMLSelectElement).value }); toast('Export scheduled'); } },
  upgrade: { title: 'Upgrade to Professional', body: 'Unlimited exports, integrations and priority support. (A demo: nothing is charged.)', ok: 'Upgrade now',
    done: () => { track('upgraded', { plan: 'professional' }); setPlan('professional'); toast('Welcome to Professional'); } },
  feedback: { title: 'What should we build next?', body: 'One sentence is plenty.', ok: 'Send feedback',
    extra: '<textarea name="feedback" rows="3" aria-label="Feedback"></textarea>', done: () => toast('Thanks for the feedback!') },
  guide: { title: 'Setup guide', body: 'Name the workspace, connect Postgres, invite one teammate. That is all.', ok: 'Got it', done: () => {} },
};
const sheet = $('#sheet') as HTMLDialogElement;
let sheetAction: string | null = null;
function onHash() {
  const key = location.hash.slice(1);
  if (key === 'integrations') {
    const b = currentView() === 'setup' ? $('#connect-integration') : $('#connect-integration-2');
    b.scrollIntoView({ block: 'center' });
    b.classList.remove('flash'); void b.offsetWidth; b.classList.add('flash');
    b.focus();
  } else if (sheets[key]) {
    const s = sheets[key];
    sheetAction = key;
    $('#sheet-title').textContent = s.title;
    $('#sheet-body').textContent = s.body;
    $('#sheet-extra').innerHTML = s.extra ?? ''; // static markup from this file only
    $('#sheet-ok').textContent = s.ok;
    if (!sheet.open) sheet.showModal();
  }
}
sheet.addEventListener('close', () => {
  if (sheet.returnValue === 'ok' && sheetAction) sheets[sheetAction].done($('#sheet-form') as HTMLFormElement);
  sheetAction = null;
  history.replaceState(null, '', location.pathname);
});
addEventListener('hashchange', onHash);

// Plan switch: plan is a trusted attribute, so the app asks its backend (here the gateway's
// dev-mode endpoint POST /demo/plan) instead of calling identify().
function showPlan(plan: string) {
  for (const b of document.querySelectorAll<HTMLElement>('[data-plan]')) b.setAttribute('aria-checked', String(b.dataset.plan === plan));
}
showPlan(localStorage.getItem(planKey()) ?? 'free');
for (const b of document.querySelectorAll<HTMLButtonElement>('[data-plan]')) {
  b.addEventListener('click', () => setPlan(b.dataset.plan!));
}
async function setPlan(plan: string) {
  {
    showPlan(plan);
    try {
      const r = await fetch('/demo/plan', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user, plan }) });
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      localStorage.setItem(planKey(), plan);
      log('info', 'plan', `POST /demo/plan → ${plan}`);
      $('#plan-status').textContent = `You are on the ${plan} plan.`;
    } catch (e) {
      log('info', 'plan', `POST /demo/plan failed: ${(e as Error).message}`);
      toast('Could not change the plan (is the gateway in --dev mode?)');
    }
  }
}

// Decorative revenue bars.
const bars = $('#bars');
[32, 38, 35, 44, 48, 47, 55, 61, 58, 66, 72, 80].forEach((h, i) => {
  const d = document.createElement('div');
  d.style.setProperty('--h', `${h}%`);
  d.title = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'][i];
  bars.append(d);
});

// ---------- "Try this" list, from the live campaigns (dev admin token) ----------
let sessionStart = 0;
const campaignsByEvent = new Map<string, Campaign>();
const seenCampaigns = new Set<string>();
function hint(c: Campaign): { text: string; where?: string; countdown?: number } {
  const t = c.trigger ?? {};
  const ev = String(t.event ?? '');
  const known: Record<string, string> = {
    export_completed: 'Click Export CSV on the Dashboard',
    clicked_upgrade: 'Click Upgrade on the Dashboard',
    feature_viewed: 'Click “Take a look” on the Reports card, then watch Export CSV',
    integration_connected: 'Click Connect integration',
  };
  switch (t.type) {
    case 'event':
    case 'goal':
      return { text: known[ev] ?? `Send the event ${ev || '(conditions)'}`, where: ev in known ? '/demo/dashboard' : undefined };
    case 'inactivity':
      return { text: `Open Setup and don’t touch anything for ${t.duration}`, where: '/demo/setup' };
    case 'session_duration':
      return { text: `Keep this tab open for ${t.duration}`, countdown: durMs(String(t.duration)) };
    case 'segment_entry':
      return { text: /pro/i.test(String(t.segment)) ? 'Switch your plan to Professional' : `Enter the segment ${t.segment}` };
  }
  return { text: describeTrigger(t) };
}
function durMs(d: string): number {
  const m = /^(\d+)(ms|s|m|h|d)$/.exec(d);
  if (!m) return 0;
  return Number(m[1]) * { ms: 1, s: 1e3, m: 6e4, h: 3.6e6, d: 8.64e7 }[m[2] as 'ms']!;
}
async function loadTryList() {
  const ul = $('#try-list');
  let campaigns: Campaign[] = [];
  try {
    const r = await fetch('/v1/campaigns', { headers: { authorization: `Bearer ${DEV_ADMIN}` } });
    if (r.ok) campaigns = ((await r.json()).campaigns ?? []).filter((c: Campaign) => c.status === 'active');
  } catch { /* offline */ }
  ul.textContent = '';
  if (!campaigns.length) {
    for (const t of ['Click Export CSV on the Dashboard', 'Click Upgrade', 'Switch your plan to Professional', 'Click “Take a look”, then watch Export CSV', 'Idle 30 s on Setup']) {
      const li = document.createElement('li');
      li.textContent = t;
      ul.append(li);
    }
    return;
  }
  for (const c of campaigns) if (c.trigger?.type === 'event') campaignsByEvent.set(String(c.trigger.event), c);
  const order = ['goal', 'event', 'segment_entry', 'inactivity', 'session_duration'];
  campaigns.sort((a, b) => order.indexOf(String(a.trigger?.type)) - order.indexOf(String(b.trigger?.type)));
  for (const c of campaigns) {
    const h = hint(c);
    const li = document.createElement('li');
    li.dataset.campaign = c.id;
    const check = document.createElement('span');
    check.className = 'check';
    check.setAttribute('aria-hidden', 'true');
    const body = document.createElement('div');
    const title = document.createElement('span');
    title.textContent = h.text;
    const meta = document.createElement('span');
    meta.className = 'muted small';
    meta.textContent = `→ ${messageKinds(c)}${(c.variants ?? []).some((v) => v.control) ? ' (or nothing: control group)' : ''} · ${c.name ?? c.id}`;
    body.append(title, document.createElement('br'), meta);
    if (h.countdown) {
      const cd = document.createElement('span');
      cd.className = 'pill';
      cd.dataset.countdown = String(h.countdown);
      body.append(' ', cd);
    }
    li.append(check, body);
    if (h.where) {
      li.classList.add('clickable');
      li.addEventListener('click', () => { if (location.pathname !== h.where) { history.pushState(null, '', h.where); render(); } });
    }
    if (seenCampaigns.has(c.id)) li.classList.add('done');
    ul.append(li);
  }
  $('#try-count').textContent = `${seenCampaigns.size}/${campaigns.length} seen`;
}
function markSeen(campaign: string) {
  seenCampaigns.add(campaign);
  document.querySelector(`#try-list li[data-campaign="${CSS.escape(campaign)}"]`)?.classList.add('done');
  const total = document.querySelectorAll('#try-list li[data-campaign]').length;
  if (total) $('#try-count').textContent = `${seenCampaigns.size}/${total} seen`;
}

// ---------- Beckon ----------
async function getToken(): Promise<string> {
  const r = await fetch(`/demo/token?user=${encodeURIComponent(user)}`);
  if (!r.ok) throw new Error(`GET /demo/token: HTTP ${r.status}`);
  const j = await r.json();
  if (!j.token) throw new Error('GET /demo/token: no token');
  return j.token;
}
function fatal(text: string) {
  const f = $('#fatal');
  f.textContent = text;
  f.hidden = false;
}
function setConn(s: string) {
  const c = $('#conn');
  c.dataset.state = s;
  c.querySelector('span')!.textContent = s;
}

async function start() {
  if (!window.Beckon) return fatal('The Beckon SDK (/demo/beckon.global.js) did not load.');
  try {
    await getToken(); // fail early with a readable message when not in --dev mode
  } catch (e) {
    setConn('stopped');
    return fatal(`Could not get a demo token (${(e as Error).message}). The demo needs \`beckon serve --dev\`.`);
  }
  const client = window.Beckon.init({ url: location.origin, getToken, WebSocket: LoggingWebSocket });
  state.client = client;
  client.on('state', (s) => {
    setConn(s.state);
    if (s.state === 'open' && !sessionStart) sessionStart = Date.now();
    log('info', 'state', `${s.state}${s.code ? ' (close ' + s.code + ')' : ''}${s.delay ? ' retry in ' + Math.round(s.delay) + ' ms' : ''}`);
  });
  client.on('message', (frame) => {
    state.messages.push(frame);
    markSeen(frame.campaign);
  });
  client.on('revoke', (d) => log('info', 'revoked', d));
  client.on('error', (e) => log('info', 'error', `${e.code}${e.message ? ': ' + e.message : ''}`));
  loadTryList();
  if (location.hash) onHash();
}
start();
