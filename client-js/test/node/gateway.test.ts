// The SDK under Node against a real gateway, with the `ws` package as its
// WebSocket. Skips (with a message) when BECKON_URL is not set.
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { init, type BeckonClient, type BeckonError, type MessageContext, type MessageFrame } from '../../src/index';
import { ADMIN, GATEWAY, admin, eventCampaign, run, userToken, waitFor } from '../support/gateway';

/** `ws` with a record of every frame the gateway sent, so tests can see `ok`s and acks land. */
const sockets: Spy[] = [];
class Spy extends WebSocket {
  received: any[] = [];
  constructor(url: string) {
    super(url);
    sockets.push(this);
    this.on('message', (data) => {
      const v = JSON.parse(String(data));
      this.received.push(...(Array.isArray(v) ? v : [v]));
    });
  }
}
const last = () => sockets[sockets.length - 1]!;
const allReceived = () => sockets.flatMap((s) => s.received);

let clients: BeckonClient[] = [];
function client(user: string, extra: Record<string, unknown> = {}): BeckonClient {
  const c = init({ url: GATEWAY!, getToken: () => userToken(user), WebSocket: Spy as any, storage: null, crossTab: false, ...extra });
  clients.push(c);
  return c;
}
const opened = (c: BeckonClient) => waitFor(() => c.state === 'open', 5000, 'welcome');

afterEach(() => {
  clients.forEach((c) => c.shutdown());
  clients = [];
  sockets.length = 0;
});

describe.skipIf(!GATEWAY)('Node client against a real gateway', () => {
  it('is welcomed as the token user', async () => {
    const c = client(`u-welcome-${run}`);
    await opened(c);
    expect(c.user).toBe(`u-welcome-${run}`);
    expect(c.session).toMatch(/.+/);
  });

  it('gets ok for track, page and identify', async () => {
    const c = client(`u-ok-${run}`);
    const ids = [c.track('sdk_test', { n: 1 }), c.page('/sdk-test', 'SDK test')];
    await opened(c);
    await waitFor(() => ids.every((id) => allReceived().some((f) => f.type === 'ok' && f.ids.includes(id))), 5000, 'ok');
  });

  it('resumes its session after the socket dies, and resent ids count once', async () => {
    const c = client(`u-resume-${run}`);
    await opened(c);
    const session = c.session;
    last().terminate(); // abrupt: no close frame (code 1006)
    await waitFor(() => sockets.length === 2 && c.state === 'open', 10_000, 'reconnect');
    expect(c.session).toBe(session);
    expect(sockets[1]!.received.find((f) => f.type === 'welcome').resumed).toBe(true);
  });

  it('reports a rejected identify by id', async () => {
    const c = client(`u-forbidden-${run}`);
    const errors: BeckonError[] = [];
    c.on('error', (e) => errors.push(e));
    const id = c.identify({ definitely_not_client_writable: true });
    await waitFor(() => errors.find((e) => e.id === id), 5000, 'forbidden_attribute');
    expect(errors.find((e) => e.id === id)!.code).toBe('forbidden_attribute');
  });

  it('stops on a bad token (4001)', async () => {
    const c = init({ url: GATEWAY!, token: 'not-a-jwt', WebSocket: Spy as any, storage: null, crossTab: false });
    clients.push(c);
    const codes: number[] = [];
    c.on('state', (s) => s.code && codes.push(s.code));
    await waitFor(() => c.state === 'stopped', 5000, 'stop');
    expect(codes).toContain(4001);
  });

  describe.skipIf(!ADMIN)('with campaigns (BECKON_ADMIN_TOKEN)', () => {
    it('delivers a message for an event, acks it, and records engagement', async () => {
      const event = `sdk_deliver_${run}`;
      const campaign = await eventCampaign(event, { kind: 'custom', data: { hello: 'world' } });
      const c = client(`u-deliver-${run}`);
      const got: [MessageFrame, MessageContext][] = [];
      c.on('message', (f, ctx) => got.push([f, ctx]));
      await opened(c);
      c.track(event);
      const [frame, ctx] = await waitFor(() => got[0], 5000, 'message');
      expect(frame.campaign).toBe(campaign);
      expect(frame.message).toMatchObject({ kind: 'custom', data: { hello: 'world' } });
      ctx.impression();
      ctx.click('go');
      // track + impression + click, each answered by an ok naming its id
      const okIds = () => allReceived().flatMap((f) => (f.type === 'ok' ? f.ids : []));
      await waitFor(() => okIds().length >= 3, 5000, 'engage ok');
      await admin('DELETE', `/v1/campaigns/${campaign}`);
    });

    it('removes an unseen delivery when its campaign is paused (revoke)', async () => {
      const event = `sdk_revoke_${run}`;
      const campaign = await eventCampaign(event, { kind: 'custom', data: {} });
      const c = client(`u-revoke-${run}`, { renderer: null });
      const revoked: string[] = [];
      let delivery = '';
      c.on('message', (f) => (delivery = f.delivery));
      c.on('revoke', (d) => revoked.push(d));
      await opened(c);
      c.track(event);
      await waitFor(() => delivery, 5000, 'message');
      const def = await (await admin('GET', `/v1/campaigns/${campaign}`)).json();
      await admin('PUT', `/v1/campaigns/${campaign}`, { ...def, status: 'paused' });
      await waitFor(() => revoked.includes(delivery), 5000, 'revoke');
      await admin('DELETE', `/v1/campaigns/${campaign}`);
    });
  });
});
