// A tiny stand-in for the gateway's WebSocket protocol (contract §2), for
// checking the test harnesses and the browser bundle while the real gateway is
// being written. It trusts any JWT-shaped token (no signature check) and knows
// nothing of campaigns: tests push message frames to it by hand.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';

export interface StubSession {
  id: string;
  user: string;
  socket: WebSocket;
  frames: any[];
  seq: number;
  send(frame: object): void;
  /** Send a message frame with the next seq; returns it. */
  deliver(message: object, delivery?: string): any;
}

export interface Stub {
  url: string;
  sessions: StubSession[];
  server: Server;
  close(): Promise<void>;
}

export async function startStub(): Promise<Stub> {
  const server = createServer((_req, res) => res.writeHead(404).end());
  const wss = new WebSocketServer({ server, path: '/v1/ws' });
  const sessions: StubSession[] = [];
  const known = new Map<string, StubSession>();
  let n = 0;
  wss.on('connection', (socket) => {
    let s: StubSession | undefined;
    socket.on('message', (data) => {
      const f = JSON.parse(String(data));
      if (!s) {
        let user: string | undefined;
        try {
          user = JSON.parse(Buffer.from(String(f.token).split('.')[1]!, 'base64url').toString()).sub;
        } catch {
          /* not a JWT */
        }
        if (f.type !== 'hello' || !user) return socket.close(4001, 'unauthorized');
        const old = f.resume && known.get(f.resume.session);
        const resumed = !!old && old.user === user;
        s = {
          id: resumed ? old!.id : `s_${++n}`,
          user,
          socket,
          frames: [],
          seq: resumed ? old!.seq : 0,
          send: (frame) => socket.send(JSON.stringify(frame)),
          deliver(message, delivery = `d_${Math.random().toString(36).slice(2)}`) {
            const frame = { type: 'message', seq: ++this.seq, delivery, campaign: 'c', variant: 'a', message };
            this.send(frame);
            return frame;
          },
        };
        known.set(s.id, s);
        sessions.push(s);
        s.frames.push(f);
        return s.send({ type: 'welcome', session: s.id, user, resumed, heartbeat_ms: 25000, server_time: new Date().toISOString() });
      }
      s.frames.push(f);
      // Like the gateway's default: no attribute is client-writable.
      if (f.type === 'identify' && Object.keys(f.attributes ?? {}).length) {
        return s.send({ type: 'error', code: 'forbidden_attribute', message: 'not client-writable', id: f.id });
      }
      if (typeof f.id === 'string') s.send({ type: 'ok', ids: [f.id] });
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    sessions,
    server,
    close: () =>
      new Promise((r) => {
        for (const c of wss.clients) c.terminate();
        wss.close();
        server.close(() => r());
      }),
  };
}
