// @vitest-environment happy-dom
// The whole client in a DOM: default renderer, sessionStorage, auto-capture.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { init, type BeckonClient } from '../../src/client';
import { FakeWS } from './fake-ws';

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));
let c: BeckonClient | undefined;

async function boot(): Promise<FakeWS> {
  c = init({ url: 'https://gw.example', token: 't', WebSocket: FakeWS as any });
  await tick();
  const ws = FakeWS.last();
  ws.accept();
  ws.recv({ type: 'welcome', session: 's_1', user: 'u_1', resumed: false, heartbeat_ms: 25000 });
  return ws;
}

beforeEach(() => {
  FakeWS.all = [];
  sessionStorage.clear();
  history.replaceState(null, '', '/setup');
  document.title = 'Setup';
  document.body.innerHTML = '';
});
afterEach(() => {
  c?.shutdown();
  c = undefined;
});

describe('client in a browser', () => {
  it('says hello with the current page and records the initial page view', async () => {
    const ws = await boot();
    expect(ws.url).toBe('wss://gw.example/v1/ws');
    expect(ws.sent[0].page).toEqual({ path: '/setup', title: 'Setup' });
    expect(ws.of('page')[0]).toMatchObject({ path: '/setup', title: 'Setup' });
  });

  it('renders a modal, and a click is reported and closes it', async () => {
    const ws = await boot();
    ws.recv({
      type: 'message',
      seq: 1,
      delivery: 'd_1',
      campaign: 'c',
      variant: 'a',
      message: { kind: 'modal', title: 'Connect', body: 'b', buttons: [{ id: 'later', label: 'Later' }] },
    });
    await tick(100); // cross-tab claim window
    const root = document.querySelector('[data-beckon]')!.shadowRoot!;
    root.querySelector<HTMLButtonElement>('.a button')!.click();
    expect(ws.of('engage').map((f) => [f.action, f.button])).toEqual([
      ['impression', undefined],
      ['click', 'later'],
    ]);
    expect(root.querySelector('[role=dialog]')).toBeNull();
  });

  it('keeps unacked events in sessionStorage across a reload', async () => {
    const ws = await boot();
    const id = c!.track('export_completed');
    ws.recv({ type: 'ok', ids: [ws.of('page')[0].id] });
    c!.shutdown();
    const ws2 = await boot();
    expect(ws2.sent[0].resume).toEqual({ session: 's_1', last_seq: 0 });
    expect(ws2.of('track').map((f) => f.id)).toEqual([id]);
  });

  it('sends throttled activity', async () => {
    const ws = await boot();
    window.dispatchEvent(new Event('pointerdown'));
    window.dispatchEvent(new Event('keydown'));
    expect(ws.of('activity')).toHaveLength(1);
  });
});
