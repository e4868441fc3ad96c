// A small stand-in for `beckon serve --dev`, used to develop and check the web pages while
// the gateway's routes are being written (BECKON_URL=stub). It serves the built assets and
// plays a tiny subset of the gateway: /demo/token, /demo/plan, the WebSocket protocol's
// happy path, six seeded campaigns, and the admin read API the dashboard uses. It is not a
// gateway and checks only the pages and the test harness; the real tests run against beckon.
//   node test/support/stub.mjs [port]    (serves http://127.0.0.1:<port>)
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { WebSocketServer } from 'ws';

const ASSETS = fileURLToPath(new URL('../../../src/http/assets/', import.meta.url));
const ADMIN = 'beckon-dev-admin';
const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.css': 'text/css', '.map': 'application/json', '.md': 'text/markdown' };

const msg = (kind, extra) => ({ kind, ...extra });
export const CAMPAIGNS = [
  { id: 'demo-first-export', name: 'Celebrate the first export', status: 'active', trigger: { type: 'goal', event: 'export_completed', count: 1 },
    variants: [{ id: 'a', message: msg('banner', { body: 'Your first export is done! Schedule it to arrive every Monday.', position: 'top', buttons: [{ id: 'schedule', label: 'Schedule it' }, { id: 'later', label: 'Not now', action: 'dismiss' }] }) }],
    goal: { event: 'report_scheduled', within: '1d' }, priority: 40 },
  { id: 'demo-upgrade', name: 'Upgrade offer', status: 'active', trigger: { type: 'event', event: 'clicked_upgrade' },
    variants: [{ id: 'a', weight: 50, message: msg('slideout', { title: 'Go Pro for 20% off', body: 'Annual plans include SSO and unlimited exports.', buttons: [{ id: 'go', label: 'See plans' }] }) }, { id: 'control', weight: 50, control: true }],
    goal: { event: 'plan_upgraded', within: '3d' }, priority: 50 },
  { id: 'demo-pro-welcome', name: 'Welcome to Professional', status: 'active', trigger: { type: 'segment_entry', segment: 'professional' }, audience: { segment: 'professional' },
    variants: [{ id: 'a', message: msg('modal', { title: 'Welcome to Professional', body: 'Connect an integration to get the most out of it.', buttons: [{ id: 'go', label: 'Connect now' }, { id: 'later', label: 'Later', action: 'dismiss' }] }) }],
    goal: { event: 'integration_connected', within: '3d' }, priority: 60 },
  { id: 'demo-setup-idle', name: 'Stuck on setup?', status: 'active', trigger: { type: 'inactivity', duration: '30s', page: '/demo/setup*' },
    variants: [{ id: 'a', message: msg('slideout', { title: 'Need a hand?', body: 'Most teams connect Postgres first.', buttons: [{ id: 'help', label: 'Show me' }] }) }], priority: 30 },
  { id: 'demo-long-session', name: 'Two minutes in', status: 'active', trigger: { type: 'session_duration', duration: '2m' },
    variants: [{ id: 'a', message: msg('banner', { body: 'Enjoying Acme? Tell us what to build next.', position: 'bottom', buttons: [{ id: 'feedback', label: 'Give feedback' }] }) }], priority: 10 },
  { id: 'demo-export-tip', name: 'Export tip', status: 'active', trigger: { type: 'event', event: 'feature_viewed' },
    variants: [{ id: 'a', message: msg('tooltip', { anchor: '#export-button', body: 'Export any report as CSV.', placement: 'bottom', buttons: [{ id: 'ok', label: 'Got it', action: 'dismiss' }] }) }], priority: 20 },
];
const SEGMENTS = [
  { id: 'professional', name: 'Professional plan', conditions: { attr: 'plan', op: 'eq', value: 'professional' } },
  { id: 'exporters', name: 'Exported at least once', conditions: { event: 'export_completed', count: { op: 'gte', value: 1 } } },
];

const now = () => new Date().toISOString().replace(/\.\d+Z$/, 'Z');
const hourStart = (t = Date.now()) => new Date(Math.floor(t / 3.6e6) * 3.6e6).toISOString().replace(/\.\d+Z$/, 'Z');
const dur = (d) => { const m = /^(\d+)(ms|s|m|h|d)$/.exec(d); return m ? Number(m[1]) * { ms: 1, s: 1e3, m: 6e4, h: 3.6e6, d: 8.64e7 }[m[2]] : 0; };

export function startStub(port = 0, opts = {}) {
  const scale = opts.timeScale ?? 1; // shrink inactivity/session timers in tests
  const users = new Map();
  const stats = new Map(); // campaign -> variant -> counters
  const series = new Map(); // `${campaign}|${variant}|${hour}` -> counters
  const deliveries = new Map();
  const sockets = new Set();
  let eventsTotal = 0, seq = 0;
  const decisions = {};

  const user = (id) => {
    if (!users.has(id)) users.set(id, { attributes: {}, aggregates: {}, engagement: {}, goals: new Set(), segments: new Set(), sessions: new Set(), decisions: [] });
    return users.get(id);
  };
  const bump = (c, v, k, n = 1, uid) => {
    const s = stats.get(c) ?? new Map(); stats.set(c, s);
    const row = s.get(v) ?? { delivered: 0, impressions: 0, clicks: 0, dismissals: 0, conversions: 0, clicks_by_button: {}, users: {} }; s.set(v, row);
    row[k] += n;
    if (uid) (row.users[k] ??= new Set()).add(uid);
    const key = `${c}|${v}|${hourStart()}`;
    const p = series.get(key) ?? { delivered: 0, impressions: 0, clicks: 0, dismissals: 0, conversions: 0 }; series.set(key, p);
    p[k] += n;
    return row;
  };
  const record = (u, outcome, c, extra = {}) => {
    decisions[outcome] = (decisions[outcome] ?? 0) + 1;
    u.decisions.push({ at: now(), campaign: c.id, outcome, ...extra });
  };

  const deliver = (sess, c) => {
    const u = user(sess.user);
    const v = c.variants[0];
    if (v.control) { record(u, 'control', c); return; }
    const d = `d_${++seq}_${Math.random().toString(36).slice(2, 8)}`;
    deliveries.set(d, { user: sess.user, campaign: c.id, variant: v.id, seen: false });
    bump(c.id, v.id, 'delivered', 1, sess.user);
    (u.engagement[c.id] ??= {}).delivered = (u.engagement[c.id].delivered ?? 0) + 1;
    record(u, 'delivered', c, { variant: v.id, delivery: d });
    sess.seq += 1;
    sess.ws.send(JSON.stringify({ type: 'message', seq: sess.seq, delivery: d, campaign: c.id, variant: v.id, message: v.message, expires_at: new Date(Date.now() + 1.8e6).toISOString() }));
  };
  const fire = (sess, pred) => {
    const c = CAMPAIGNS.filter((c) => c.status === 'active' && pred(c)).sort((a, b) => b.priority - a.priority)[0];
    if (c) deliver(sess, c);
  };
  const onEvent = (sess, event, props) => {
    const u = user(sess.user);
    eventsTotal++;
    const a = (u.aggregates[event] ??= { count: 0, first_seen: now(), last_seen: now() });
    a.count++; a.last_seen = now();
    for (const [id, dd] of deliveries) {
      const c = CAMPAIGNS.find((c) => c.id === dd.campaign);
      if (dd.user === sess.user && dd.seen && !dd.converted && c.goal?.event === event) { dd.converted = true; bump(c.id, dd.variant, 'conversions', 1, sess.user); (u.engagement[c.id] ??= {}).convert = (u.engagement[c.id].convert ?? 0) + 1; }
    }
    fire(sess, (c) => (c.trigger.type === 'event' && c.trigger.event === event)
      || (c.trigger.type === 'goal' && c.trigger.event === event && a.count === (c.trigger.count ?? 1) && !u.goals.has(c.id) && (u.goals.add(c.id), true)));
    if (event === 'export_completed') u.segments.add('exporters');
  };
  const setPlan = (id, plan) => {
    const u = user(id);
    u.attributes.plan = plan;
    const was = u.segments.has('professional');
    if (plan === 'professional') u.segments.add('professional'); else u.segments.delete('professional');
    if (!was && plan === 'professional') {
      const sess = [...sockets].filter((s) => s.user === id).pop();
      if (sess) fire(sess, (c) => c.trigger.type === 'segment_entry' && c.trigger.segment === 'professional');
    }
  };
  const armIdle = (sess) => {
    clearTimeout(sess.idle);
    const c = CAMPAIGNS.find((c) => c.trigger.type === 'inactivity');
    const glob = new RegExp('^' + c.trigger.page.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*') + '$');
    if (sess.page && glob.test(sess.page)) sess.idle = setTimeout(() => deliver(sess, c), dur(c.trigger.duration) * scale);
  };

  const json = (res, status, body) => res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
  const statsView = (id, q) => {
    const c = CAMPAIGNS.find((c) => c.id === id);
    const s = stats.get(id) ?? new Map();
    const to = q.get('to') ?? now();
    const from = q.get('from') ?? new Date(Date.parse(to) - 7 * 8.64e7).toISOString().replace(/\.\d+Z$/, 'Z');
    const interval = q.get('interval') ?? 'day';
    const r = (n, d) => (d ? n / d : null);
    const variants = c.variants.filter((v) => !v.control).map((v) => {
      const row = s.get(v.id) ?? { delivered: 0, impressions: 0, clicks: 0, dismissals: 0, conversions: 0, clicks_by_button: {}, users: {} };
      const uu = Object.fromEntries(['delivered', 'impressions', 'clicks', 'dismissals', 'conversions'].map((k) => [k, row.users[k]?.size ?? 0]));
      return { variant: v.id, control: false, delivered: row.delivered, impressions: row.impressions, clicks: row.clicks, clicks_by_button: row.clicks_by_button, dismissals: row.dismissals, conversions: row.conversions,
        unique_users: uu, click_through_rate: r(row.clicks, row.impressions), dismissal_rate: r(row.dismissals, row.impressions), conversion_rate: r(row.conversions, row.impressions),
        lift: c.variants.some((x) => x.control) ? 0.25 : null, lift_ci95: c.variants.some((x) => x.control) ? [-0.12, 0.62] : null };
    });
    const buckets = new Map();
    for (const [key, p] of series) {
      const [cid, vid, hour] = key.split('|');
      if (cid !== id) continue;
      const start = interval === 'hour' ? hour : hour.slice(0, 10) + 'T00:00:00Z';
      const b = buckets.get(start + vid) ?? { start, variant: vid, delivered: 0, impressions: 0, clicks: 0, dismissals: 0, conversions: 0, control_exposures: 0, control_conversions: 0 };
      for (const k of ['delivered', 'impressions', 'clicks', 'dismissals', 'conversions']) b[k] += p[k];
      buckets.set(start + vid, b);
    }
    return { campaign: id, from, to, interval, variants, control: { exposures: 0, conversions: 0, unique_users: { exposures: 0, conversions: 0 }, conversion_rate: null }, series: [...buckets.values()] };
  };

  const server = createServer(async (req, res) => {
    const url = new URL(req.url, 'http://x');
    const p = url.pathname;
    let body = '';
    for await (const chunk of req) body += chunk;
    if (p === '/demo/token') {
      const sub = url.searchParams.get('user') ?? 'demo-anon';
      const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
      return json(res, 200, { token: `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub, exp: Math.floor(Date.now() / 1000) + 3600 })}.stub` });
    }
    if (p === '/demo/plan' && req.method === 'POST') {
      const { user: id, plan } = JSON.parse(body || '{}');
      setPlan(id, plan);
      return json(res, 200, { user: id, plan });
    }
    if (p.startsWith('/v1/')) {
      if (req.headers.authorization !== `Bearer ${ADMIN}`) return json(res, 401, { error: { code: 'unauthorized', message: 'admin token required' } });
      let m;
      if (p === '/v1/overview') return json(res, 200, { sessions: new Set([...sockets].map((s) => s.user)).size, connections: sockets.size, events_total: eventsTotal, decisions, server_time: new Date().toISOString() });
      if (p === '/v1/campaigns') return json(res, 200, { campaigns: CAMPAIGNS });
      if ((m = /^\/v1\/campaigns\/([^/]+)\/stats$/.exec(p))) {
        if (!CAMPAIGNS.some((c) => c.id === decodeURIComponent(m[1]))) return json(res, 404, { error: { code: 'not_found', message: 'no campaign' } });
        const s = statsView(decodeURIComponent(m[1]), url.searchParams);
        if (url.searchParams.get('format') === 'csv' || req.headers.accept === 'text/csv') {
          const rows = s.variants.map((v) => [v.variant, v.delivered, v.impressions, v.clicks, v.dismissals, v.conversions].join(','));
          return res.writeHead(200, { 'content-type': 'text/csv' }).end(['variant,delivered,impressions,clicks,dismissals,conversions', ...rows].join('\n') + '\n');
        }
        return json(res, 200, s);
      }
      if ((m = /^\/v1\/campaigns\/([^/]+)$/.exec(p))) {
        const c = CAMPAIGNS.find((c) => c.id === decodeURIComponent(m[1]));
        return c ? json(res, 200, c) : json(res, 404, { error: { code: 'not_found', message: 'no campaign' } });
      }
      const live = (sid) => new Set([...sockets].filter((s) => user(s.user).segments.has(sid)).map((s) => s.user)).size;
      if (p === '/v1/segments') return json(res, 200, { segments: SEGMENTS.map((s) => ({ ...s, live_members: live(s.id) })) });
      if ((m = /^\/v1\/users\/([^/]+)\/explain$/.exec(p))) {
        const id = decodeURIComponent(m[1]);
        const c = CAMPAIGNS.find((c) => c.id === url.searchParams.get('campaign'));
        if (!users.has(id) || !c) return json(res, 404, { error: { code: 'not_found', message: 'no such user or campaign' } });
        const u = user(id);
        return json(res, 200, { user: id, campaign: c.id, status: c.status, now: now(), eligible: true, reasons: [], schedule: { start: null, end: null, in_schedule: true },
          trigger: c.trigger, audience: c.audience?.segment ? { kind: 'segment', segment: c.audience.segment, member: u.segments.has(c.audience.segment), verdict: u.segments.has(c.audience.segment),
            conditions: { condition: SEGMENTS[0].conditions, value: u.attributes.plan ?? null, verdict: u.attributes.plan === 'professional' } } : { kind: 'everyone', verdict: true },
          caps: { max_per_user: { limit: null, seen: 0, reserved: 0, ok: true }, min_interval: { interval: null, last_delivery: null, next_allowed: null, ok: true }, max_per_session: { limit: null, current_session: null, count: null, ok: true }, outstanding: [] },
          variant: { id: c.variants[0].id, control: !!c.variants[0].control }, decisions: u.decisions.filter((d) => d.campaign === c.id).reverse() });
      }
      if ((m = /^\/v1\/users\/([^/]+)$/.exec(p))) {
        const id = decodeURIComponent(m[1]);
        if (!users.has(id)) return json(res, 404, { error: { code: 'not_found', message: `no user \`${id}\`` } });
        const u = user(id);
        return json(res, 200, { id, attributes: u.attributes, aggregates: u.aggregates, segments: [...u.segments], engagement: u.engagement, activity: 3.2,
          sessions: [...sockets].filter((s) => s.user === id).map((s) => ({ session: s.id, started_at: s.started, last_active: now(), page: s.page })) });
      }
      return json(res, 404, { error: { code: 'not_found', message: 'stub: not implemented' } });
    }
    // Static assets, with the demo's client-side routes falling back to its index.html.
    let file = p.endsWith('/') ? p + 'index.html' : p;
    if (/^\/demo\/[a-z]+$/.test(p)) file = '/demo/index.html';
    if (p === '/dashboard') return res.writeHead(308, { location: '/dashboard/' }).end();
    const full = normalize(join(ASSETS, file));
    if (!full.startsWith(ASSETS) || !existsSync(full)) return res.writeHead(404).end('not found');
    res.writeHead(200, { 'content-type': TYPES[extname(full)] ?? 'application/octet-stream', 'cache-control': 'no-cache' }).end(readFileSync(full));
  });

  const wss = new WebSocketServer({ server, path: '/v1/ws' });
  wss.on('connection', (ws) => {
    const sess = { ws, id: `s_${Math.random().toString(36).slice(2, 10)}`, user: null, seq: 0, page: null, started: now() };
    ws.on('message', (raw) => {
      let frames;
      try { frames = JSON.parse(String(raw)); } catch { return ws.send(JSON.stringify({ type: 'error', code: 'invalid_json', message: 'bad json' })); }
      for (const f of Array.isArray(frames) ? frames : [frames]) {
        if (!sess.user) {
          if (f.type !== 'hello') return ws.close(4000);
          try { sess.user = JSON.parse(Buffer.from(f.token.split('.')[1], 'base64url').toString()).sub; } catch { return ws.close(4001); }
          sockets.add(sess);
          user(sess.user).sessions.add(sess.id);
          sess.page = f.page?.path ?? null;
          ws.send(JSON.stringify({ type: 'welcome', session: sess.id, user: sess.user, resumed: false, heartbeat_ms: 25000, server_time: now() }));
          armIdle(sess);
          const sd = CAMPAIGNS.find((c) => c.trigger.type === 'session_duration');
          sess.long = setTimeout(() => deliver(sess, sd), dur(sd.trigger.duration) * scale);
          continue;
        }
        if (f.type === 'track') onEvent(sess, f.event, f.properties);
        if (f.type === 'page') { sess.page = f.path; onEvent(sess, '$page_view', { path: f.path }); }
        if (f.type === 'engage') {
          const d = deliveries.get(f.delivery);
          if (!d || d.user !== sess.user) { ws.send(JSON.stringify({ type: 'error', code: 'unknown_delivery', id: f.id })); continue; }
          const u = user(sess.user);
          const e = (u.engagement[d.campaign] ??= {});
          const act = { impression: 'impressions', click: 'clicks', dismiss: 'dismissals' }[f.action];
          if (f.action === 'impression' && d.seen) { /* once */ } else if (act) {
            if (f.action === 'impression') d.seen = true;
            const row = bump(d.campaign, d.variant, act, 1, sess.user);
            if (f.action === 'click') row.clicks_by_button[f.button] = (row.clicks_by_button[f.button] ?? 0) + 1;
            e[f.action] = (e[f.action] ?? 0) + 1;
          }
        }
        if (f.type === 'track' || f.type === 'page' || f.type === 'activity') armIdle(sess);
        if (f.id) ws.send(JSON.stringify({ type: 'ok', ids: [f.id] }));
      }
    });
    ws.on('close', () => { clearTimeout(sess.idle); clearTimeout(sess.long); sockets.delete(sess); });
  });

  return new Promise((resolve) => server.listen(port, '127.0.0.1', () => {
    const url = `http://127.0.0.1:${server.address().port}`;
    resolve({ url, close: () => new Promise((r) => { for (const s of sockets) s.ws.terminate(); wss.close(); server.close(() => r()); }) });
  }));
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const s = await startStub(Number(process.argv[2] ?? 8090));
  console.log(`stub gateway on ${s.url} (dashboard: ${s.url}/dashboard/?token=${ADMIN}, demo: ${s.url}/demo/)`);
}
