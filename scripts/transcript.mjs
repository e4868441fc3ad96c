// Records a real session with a dev gateway, for docs/protocol.md.
// Usage: node scripts/transcript.mjs http://127.0.0.1:8080   (a `beckon serve --dev`)
import { createRequire } from 'node:module';
const require = createRequire(import.meta.url);
const WebSocket = require('../client-js/node_modules/ws');

const base = process.argv[2] ?? 'http://127.0.0.1:8080';
const wsUrl = base.replace(/^http/, 'ws') + '/v1/ws';
const user = `mobile-${Date.now().toString(36)}`;
const { token } = await (await fetch(`${base}/demo/token?user=${user}`)).json();
const short = (t) => t.slice(0, 24) + '…';

function open() {
  const ws = new WebSocket(wsUrl);
  const queue = [];
  let waiter = null;
  ws.on('message', (m) => {
    const v = JSON.parse(String(m));
    console.log('S→C', JSON.stringify(v));
    queue.push(v);
    if (waiter) waiter();
  });
  const send = (v) => {
    const shown = v.token ? { ...v, token: short(v.token) } : v;
    console.log('C→S', JSON.stringify(shown));
    ws.send(JSON.stringify(v));
  };
  const next = (pred) =>
    new Promise((resolve) => {
      const check = () => {
        const i = queue.findIndex(pred);
        if (i >= 0) { waiter = null; resolve(queue.splice(i, 1)[0]); } else { waiter = check; }
      };
      check();
    });
  return new Promise((resolve) => ws.on('open', () => resolve({ ws, send, next })));
}

let c = await open();
c.send({ type: 'hello', token, page: { path: '/demo/dashboard', title: 'Dashboard' }, sdk: 'transcript/1' });
const welcome = await c.next((f) => f.type === 'welcome');
c.send({ type: 'page', id: 'e1', path: '/demo/dashboard', title: 'Dashboard' });
await c.next((f) => f.type === 'ok');
c.send({ type: 'track', id: 'e2', event: 'export_completed', properties: { rows: 120 } });
const msg = await c.next((f) => f.type === 'message');
await c.next((f) => f.type === 'ok');
c.send({ type: 'ack', seq: msg.seq });
c.send({ type: 'engage', id: 'e3', delivery: msg.delivery, action: 'impression' });
await c.next((f) => f.type === 'ok');
c.send({ type: 'identify', id: 'e4', attributes: { plan: 'enterprise' } });
await c.next((f) => f.type === 'error');
console.log('--- app goes to background: the socket closes; later it comes back ---');
c.ws.close(1000);
await new Promise((r) => setTimeout(r, 300));
c = await open();
c.send({ type: 'hello', token, resume: { session: welcome.session, last_seq: msg.seq } });
await c.next((f) => f.type === 'welcome');
c.send({ type: 'engage', id: 'e5', delivery: msg.delivery, action: 'click', button: 'schedule' });
await c.next((f) => f.type === 'ok');
c.ws.close(1000);
