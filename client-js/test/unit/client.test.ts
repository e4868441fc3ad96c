import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { init, type BeckonClient, type BeckonOptions } from '../../src/client';
import type { Renderer } from '../../src/render/types';
import { FakeWS, MemoryStorage, fakeToken } from './fake-ws';

const welcome = (session = 's_1', resumed = false, user = 'u_1') => ({ type: 'welcome', session, user, resumed, heartbeat_ms: 25000 });
const msg = (seq: number, delivery: string, extra: object = {}) => ({
  type: 'message',
  seq,
  delivery,
  campaign: 'c',
  variant: 'a',
  message: { kind: 'modal', title: 'Hi', body: 'Body' },
  ...extra,
});

let clients: BeckonClient[] = [];

function start(opts: Partial<BeckonOptions> = {}): BeckonClient {
  const c = init({ url: 'http://gw.test', token: 't', WebSocket: FakeWS as any, crossTab: false, storage: null, ...opts });
  clients.push(c);
  return c;
}

/** Let the client's async open() reach `new WebSocket`. */
const tick = () => vi.advanceTimersByTimeAsync(0);

async function connect(opts: Partial<BeckonOptions> = {}, w = welcome()): Promise<{ c: BeckonClient; ws: FakeWS }> {
  const c = start(opts);
  await tick();
  const ws = FakeWS.last();
  ws.accept();
  ws.recv(w);
  return { c, ws };
}

beforeEach(() => {
  vi.useFakeTimers();
  FakeWS.all = [];
});
afterEach(() => {
  clients.forEach((c) => c.shutdown());
  clients = [];
  vi.useRealTimers();
});

describe('opening', () => {
  it('connects to /v1/ws and says hello with the token and sdk', async () => {
    start();
    await tick();
    const ws = FakeWS.last();
    expect(ws.url).toBe('ws://gw.test/v1/ws');
    ws.accept();
    expect(ws.sent[0]).toMatchObject({ type: 'hello', token: 't', sdk: 'beckon-js/0.1.0' });
    expect(ws.sent[0].resume).toBeUndefined();
  });

  it('closes with 4000 and retries when no welcome comes', async () => {
    start({ helloTimeoutMs: 1000 });
    await tick();
    FakeWS.last().accept();
    await vi.advanceTimersByTimeAsync(1000);
    expect(FakeWS.last().closedWith).toBe(4000);
    await vi.advanceTimersByTimeAsync(1000);
    expect(FakeWS.all).toHaveLength(2);
  });

  it('reports state changes', async () => {
    const states: string[] = [];
    const c = start();
    c.on('state', (s) => states.push(s.state));
    await tick();
    FakeWS.last().accept();
    FakeWS.last().recv(welcome());
    expect(states).toEqual(['open']);
    expect(c.session).toBe('s_1');
    expect(c.user).toBe('u_1');
  });
});

describe('resume and reconnect', () => {
  it('resumes with session and last_seq after a drop', async () => {
    const { ws } = await connect();
    ws.recv(msg(1, 'd1'));
    ws.recv(msg(2, 'd2'));
    ws.drop(1006);
    await vi.advanceTimersByTimeAsync(600); // attempt 0: < 500 ms
    const next = FakeWS.last();
    expect(next).not.toBe(ws);
    next.accept();
    expect(next.sent[0].resume).toEqual({ session: 's_1', last_seq: 2 });
  });

  it('starts a new session when another connection took this one over (1000), without dropping dedup', async () => {
    const { ws } = await connect();
    ws.recv(msg(1, 'd1'));
    ws.drop(1000); // "session resumed on another connection" (a duplicated tab)
    await vi.advanceTimersByTimeAsync(600);
    const next = FakeWS.last();
    expect(next).not.toBe(ws);
    next.accept();
    expect(next.sent[0].type).toBe('hello');
    expect(next.sent[0].resume).toBeUndefined();
  });

  it('starts seq over when the server could not resume', async () => {
    const { ws } = await connect();
    ws.recv(msg(5, 'd5'));
    ws.drop(1006);
    await vi.advanceTimersByTimeAsync(600);
    const next = FakeWS.last();
    next.accept();
    next.recv(welcome('s_2', false));
    next.recv(msg(1, 'dx'));
    expect(next.of('ack').at(-1)).toEqual({ type: 'ack', seq: 1 });
  });

  it('backs off exponentially between failed attempts', async () => {
    vi.spyOn(Math, 'random').mockReturnValue(0.99);
    const delays: number[] = [];
    const c = start();
    c.on('state', (s) => s.delay !== undefined && delays.push(s.delay));
    await tick();
    for (let i = 0; i < 5; i++) {
      FakeWS.last().drop(1006);
      await vi.advanceTimersByTimeAsync(40_000);
    }
    expect(delays).toEqual([495, 990, 1980, 3960, 7920]);
    vi.restoreAllMocks();
  });

  it('reconnects promptly on 1001 (draining node)', async () => {
    vi.spyOn(Math, 'random').mockReturnValue(0.99);
    const { c, ws } = await connect();
    const states: any[] = [];
    c.on('state', (s) => states.push(s));
    ws.drop(1001);
    expect(states[0]).toMatchObject({ state: 'reconnecting', code: 1001 });
    expect(states[0].delay).toBeLessThan(1000);
    vi.restoreAllMocks();
  });

  it('backs off longer on 4008 and much longer on 4009', async () => {
    const { c, ws } = await connect();
    const delays: number[] = [];
    c.on('state', (s) => s.delay !== undefined && delays.push(s.delay));
    ws.drop(4008);
    expect(delays[0]).toBeGreaterThanOrEqual(5000);
    await vi.advanceTimersByTimeAsync(70_000);
    FakeWS.last().accept();
    FakeWS.last().recv(welcome('s_1', true));
    FakeWS.last().drop(4009);
    expect(delays[1]).toBeGreaterThanOrEqual(60_000);
  });

  it('stops on 4001 without getToken', async () => {
    const { c, ws } = await connect();
    const errors: string[] = [];
    c.on('error', (e) => errors.push(e.code));
    ws.drop(4001);
    expect(c.state).toBe('stopped');
    expect(errors).toEqual(['unauthorized']);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(FakeWS.all).toHaveLength(1);
  });

  it('fetches a new token on 4001/4002 with getToken, and gives up after repeated failures', async () => {
    let n = 0;
    const getToken = vi.fn(() => 'tok' + ++n);
    const { c, ws } = await connect({ getToken, token: undefined });
    expect(ws.sent[0].token).toBe('tok1');
    ws.drop(4002);
    await vi.advanceTimersByTimeAsync(1000);
    FakeWS.last().accept();
    expect(FakeWS.last().sent[0].token).toBe('tok2');
    // 4002 above was the first auth failure; two more are still retried.
    for (let i = 0; i < 2; i++) {
      FakeWS.last().drop(4001);
      await vi.advanceTimersByTimeAsync(40_000);
      FakeWS.last().accept();
    }
    expect(c.state).not.toBe('stopped');
    FakeWS.last().drop(4001);
    expect(c.state).toBe('stopped');
  });

  it('sends auth with a fresh token before exp', async () => {
    const now = Date.now();
    let n = 0;
    const getToken = () => fakeToken('u_1', Math.floor(now / 1000) + 120 * ++n);
    const { ws } = await connect({ getToken, token: undefined });
    expect(ws.of('auth')).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(89_000); // exp 120 s, refresh 30 s before
    expect(ws.of('auth')).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(2_000);
    expect(ws.of('auth')).toHaveLength(1);
    expect(n).toBe(2);
    expect(ws.of('auth')[0].token).toBe(fakeToken('u_1', Math.floor(now / 1000) + 240));
  });

  it('does not reconnect after shutdown', async () => {
    const { c, ws } = await connect();
    c.shutdown();
    expect(ws.closedWith).toBe(1000);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(FakeWS.all).toHaveLength(1);
  });
});

describe('events', () => {
  it('sends track/page/identify with ids and forgets them on ok', async () => {
    const { c, ws } = await connect();
    const t = c.track('export_completed', { rows: 3 });
    const p = c.page('/setup', 'Setup');
    const i = c.identify({ first_name: 'Ada' });
    expect(ws.of('track')[0]).toEqual({ type: 'track', id: t, event: 'export_completed', properties: { rows: 3 } });
    expect(ws.of('page')[0]).toEqual({ type: 'page', id: p, path: '/setup', title: 'Setup' });
    expect(ws.of('identify')[0]).toEqual({ type: 'identify', id: i, attributes: { first_name: 'Ada' } });
    ws.recv({ type: 'ok', ids: [t, p] });
    ws.drop(1006);
    await vi.advanceTimersByTimeAsync(1000);
    const next = FakeWS.last();
    next.accept();
    next.recv(welcome('s_1', true));
    // Only the unacknowledged identify is resent, with the same id.
    expect(next.sent.filter((f) => f.id).map((f) => f.id)).toEqual([i]);
  });

  it('buffers events made before the welcome', async () => {
    const c = start();
    const id = c.track('early');
    await tick();
    const ws = FakeWS.last();
    ws.accept();
    expect(ws.of('track')).toHaveLength(0);
    ws.recv(welcome());
    expect(ws.of('track')[0].id).toBe(id);
  });

  it('keeps rate_limited ids for a later resend, drops rejected ones', async () => {
    const { c, ws } = await connect();
    const errors: any[] = [];
    c.on('error', (e) => errors.push(e));
    const a = c.track('a');
    const b = c.identify({ secret: 1 });
    ws.recv({ type: 'error', code: 'rate_limited', message: 'slow down', id: a });
    ws.recv({ type: 'error', code: 'forbidden_attribute', message: 'no', id: b });
    expect(errors.map((e) => [e.code, e.id])).toEqual([
      ['rate_limited', a],
      ['forbidden_attribute', b],
    ]);
    await vi.advanceTimersByTimeAsync(40_000);
    expect(ws.of('track').map((f) => f.id)).toEqual([a, a]);
    expect(ws.of('identify')).toHaveLength(1);
  });

  it('paces a long backlog', async () => {
    const c = start();
    for (let i = 0; i < 120; i++) c.track('e' + i);
    await tick();
    const ws = FakeWS.last();
    ws.accept();
    ws.recv(welcome());
    expect(ws.of('track')).toHaveLength(50);
    await vi.advanceTimersByTimeAsync(500);
    expect(ws.of('track')).toHaveLength(100);
    await vi.advanceTimersByTimeAsync(500);
    expect(ws.of('track')).toHaveLength(120);
  });

  it('refuses an oversized frame locally', async () => {
    const { c, ws } = await connect({ maxFrameBytes: 1000 });
    const errors: string[] = [];
    c.on('error', (e) => errors.push(e.code));
    expect(c.track('big', { x: 'y'.repeat(2000) })).toBeUndefined();
    expect(errors).toEqual(['too_large']);
    expect(ws.of('track')).toHaveLength(0);
  });

  it('drops the largest in-flight frame on 1009 and resends the rest', async () => {
    const { c, ws } = await connect();
    const small = c.track('small');
    const big = c.track('big', { x: 'y'.repeat(30_000) });
    const errors: any[] = [];
    c.on('error', (e) => errors.push(e));
    ws.drop(1009);
    expect(errors[0]).toMatchObject({ code: 'too_large', id: big });
    await vi.advanceTimersByTimeAsync(1000);
    const next = FakeWS.last();
    next.accept();
    next.recv(welcome('s_1', true));
    expect(next.of('track').map((f) => f.id)).toEqual([small]);
  });

  it('reports buffer overflow', async () => {
    const c = start({ maxBuffer: 2 });
    const errors: any[] = [];
    c.on('error', (e) => errors.push(e));
    const first = c.track('a');
    c.track('b');
    c.track('c');
    expect(errors).toEqual([expect.objectContaining({ code: 'buffer_overflow', id: first })]);
  });
});

describe('persistence across a reload', () => {
  it('restores unacked events and resends them with the same ids', async () => {
    const storage = new MemoryStorage();
    const { c, ws } = await connect({ storage });
    const a = c.track('a');
    const b = c.track('b');
    ws.recv({ type: 'ok', ids: [a] });
    c.shutdown(); // the page goes away

    const { ws: ws2 } = await connect({ storage }, welcome('s_1', true));
    expect(ws2.sent[0].resume).toEqual({ session: 's_1', last_seq: 0 });
    expect(ws2.of('track').map((f) => f.id)).toEqual([b]);
  });

  it('restores the session position and does not show a handled delivery again', async () => {
    const storage = new MemoryStorage();
    const shown: string[] = [];
    const { c, ws } = await connect({ storage });
    c.on('message', (m) => shown.push(m.delivery));
    ws.recv(msg(1, 'd1'));
    await tick();
    c.shutdown();

    const c2 = start({ storage });
    c2.on('message', (m) => shown.push(m.delivery));
    await tick();
    const ws2 = FakeWS.last();
    ws2.accept();
    expect(ws2.sent[0].resume).toEqual({ session: 's_1', last_seq: 1 });
    ws2.recv(welcome('s_1', true));
    ws2.recv(msg(1, 'd1')); // resent anyway
    ws2.recv(msg(2, 'd2'));
    await tick();
    expect(shown).toEqual(['d1', 'd2']);
  });

  it('drops stored events of a different user', async () => {
    const storage = new MemoryStorage();
    const { c } = await connect({ storage });
    c.track('mine');
    c.shutdown();
    const errors: string[] = [];
    const c2 = start({ storage });
    c2.on('error', (e) => errors.push(e.code));
    await tick();
    const ws = FakeWS.last();
    ws.accept();
    ws.recv(welcome('s_9', false, 'u_other'));
    expect(ws.of('track')).toHaveLength(0);
    expect(errors).toEqual(['user_changed']);
  });
});

describe('deliveries', () => {
  it('acks the highest contiguous seq and drops duplicates by delivery id', async () => {
    const { c, ws } = await connect();
    const seen: string[] = [];
    c.on('message', (m) => seen.push(m.delivery));
    ws.recv(msg(1, 'd1'));
    ws.recv(msg(2, 'd2'));
    ws.recv(msg(3, 'd1')); // same delivery resent under a new seq
    await tick();
    expect(seen).toEqual(['d1', 'd2']);
    expect(ws.of('ack').map((f) => f.seq)).toEqual([1, 2, 3]);
  });

  it('processes a batch in order with one ack', async () => {
    const { ws } = await connect();
    ws.recv([msg(1, 'a'), msg(2, 'b'), { type: 'ok', ids: [] }]);
    expect(ws.of('ack')).toEqual([{ type: 'ack', seq: 2 }]);
  });

  it('holds the ack at a gap, then skips a gap that never fills', async () => {
    const { ws } = await connect();
    ws.recv(msg(1, 'a'));
    ws.recv(msg(3, 'c'));
    expect(ws.of('ack').map((f) => f.seq)).toEqual([1, 1]);
    await vi.advanceTimersByTimeAsync(1000);
    expect(ws.of('ack').at(-1)).toEqual({ type: 'ack', seq: 3 });
  });

  it('does not show expired deliveries', async () => {
    const { c, ws } = await connect();
    const seen: string[] = [];
    c.on('message', (m) => seen.push(m.delivery));
    ws.recv(msg(1, 'old', { expires_at: new Date(Date.now() - 1000).toISOString() }));
    await tick();
    expect(seen).toEqual([]);
    expect(ws.of('ack')).toHaveLength(1);
  });

  it('hands every kind to a custom renderer and reports engagement', async () => {
    const calls: string[] = [];
    let ctx: any;
    const renderer: Renderer = {
      show: (f, x) => {
        calls.push('show:' + f.message.kind);
        ctx = x;
      },
      remove: (d) => calls.push('remove:' + d),
      destroy: () => calls.push('destroy'),
    };
    const { ws } = await connect({ renderer });
    ws.recv(msg(1, 'd1', { message: { kind: 'custom', data: { a: 1 } } }));
    await tick();
    expect(calls).toEqual(['show:custom']);
    ctx.impression();
    ctx.impression();
    ctx.click('go');
    ctx.dismiss(); // already closed: ignored
    expect(ws.of('engage').map(({ id, ...f }) => (expect(id).toBeTruthy(), f))).toEqual([
      { type: 'engage', delivery: 'd1', action: 'impression' },
      { type: 'engage', delivery: 'd1', action: 'click', button: 'go' },
    ]);
    expect(calls).toEqual(['show:custom', 'remove:d1']);
  });

  it('sends an impression before a dismissal that skipped it', async () => {
    let ctx: any;
    const { ws } = await connect({ renderer: { show: (_f, x) => (ctx = x), remove() {}, destroy() {} } });
    ws.recv(msg(1, 'd1'));
    await tick();
    ctx.dismiss();
    expect(ws.of('engage').map((f) => f.action)).toEqual(['impression', 'dismiss']);
  });

  it('removes a message on revoke, and does not show a revoked one', async () => {
    const removed: string[] = [];
    const shown: string[] = [];
    const { c, ws } = await connect({ renderer: { show: (f) => shown.push(f.delivery), remove: (d) => removed.push(d), destroy() {} } });
    const revoked: string[] = [];
    c.on('revoke', (d) => revoked.push(d));
    ws.recv(msg(1, 'd1'));
    await tick();
    ws.recv({ type: 'revoke', delivery: 'd1' });
    expect(removed).toEqual(['d1']);
    expect(revoked).toEqual(['d1']);
  });

  it('removes a message when it expires on screen', async () => {
    const removed: string[] = [];
    const { ws } = await connect({ renderer: { show() {}, remove: (d) => removed.push(d), destroy() {} } });
    ws.recv(msg(1, 'd1', { expires_at: new Date(Date.now() + 5000).toISOString() }));
    await tick();
    await vi.advanceTimersByTimeAsync(5000);
    expect(removed).toEqual(['d1']);
  });

  it('unsubscribes', async () => {
    const { c, ws } = await connect();
    const seen: string[] = [];
    const off = c.on('message', (m) => seen.push(m.delivery));
    off();
    ws.recv(msg(1, 'd1'));
    await tick();
    expect(seen).toEqual([]);
  });

  it('a throwing listener does not break the client', async () => {
    const { c, ws } = await connect();
    const seen: string[] = [];
    c.on('message', () => {
      throw new Error('app bug');
    });
    c.on('message', (m) => seen.push(m.delivery));
    ws.recv(msg(1, 'd1'));
    expect(seen).toEqual(['d1']);
    // The error is rethrown asynchronously so it still reaches the console / error reporting.
    expect(() => vi.runOnlyPendingTimers()).toThrow('app bug');
  });
});

describe('init', () => {
  it('needs a url, a token source and a WebSocket', () => {
    expect(() => init({ url: '', token: 't', WebSocket: FakeWS as any })).toThrow(/url/);
    expect(() => init({ url: 'http://x', WebSocket: FakeWS as any })).toThrow(/token/);
    const g = globalThis as any;
    const saved = g.WebSocket;
    delete g.WebSocket;
    try {
      expect(() => init({ url: 'http://x', token: 't' })).toThrow(/WebSocket/);
    } finally {
      if (saved) g.WebSocket = saved;
    }
  });

  it('shutdown after an auth stop still releases the renderer', async () => {
    const calls: string[] = [];
    const { c, ws } = await connect({ renderer: { show() {}, remove() {}, destroy: () => calls.push('destroy') } });
    ws.drop(4001);
    expect(c.state).toBe('stopped');
    c.shutdown();
    expect(calls).toEqual(['destroy']);
  });
});
