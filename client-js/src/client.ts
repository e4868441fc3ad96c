/**
 * The Beckon client: owns the one WebSocket session (hello, resume, reconnect,
 * token refresh), routes server frames, and exposes the public API (track,
 * page, identify, on, shutdown). Decisions live elsewhere and are pure:
 * close codes in `codes.ts`, delays in `backoff.ts`, reliable events in
 * `outbox.ts`, acks and dedup in `inbox.ts`. Drawing lives in `render/`.
 */

import { backoffDelay, paceDelay, type BackoffOptions } from './backoff.js';
import { autoCapture, watchActivity, type AutoCaptureOptions } from './capture.js';
import { CloseCode, closePolicy, isRetryableError, type Pace } from './codes.js';
import { Emitter } from './emitter.js';
import { LruSet, SeqTracker } from './inbox.js';
import { Outbox, type StorageLike } from './outbox.js';
import { decodeFrames, newId, tokenExpiry, wsUrl, type EventFrame, type MessageFrame, type Props, type ServerFrame } from './protocol.js';
import { createRenderer } from './render/dom.js';
import type { MessageContext, Renderer } from './render/types.js';
import { TabGuard } from './tabs.js';
import { listen, safe } from './util.js';

/** SDK identifier sent in `hello`. */
export const SDK = 'beckon-js/0.1.0';

/** The parts of a WebSocket the client uses (browser `WebSocket` and the `ws` package both fit). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason?: string }) => void) | null;
  onerror: ((ev: any) => void) | null;
}

/** A WebSocket constructor: `globalThis.WebSocket`, or `require('ws')` under Node. */
export type WebSocketCtor = new (url: string) => WebSocketLike;

/** Options of {@link init}. */
export interface BeckonOptions {
  /** Gateway address: `https://beckon.example.com` (→ `wss://…/v1/ws`) or a full `ws(s)://…/v1/ws` URL. */
  url: string;
  /** A JWT for the user. Use `getToken` instead to let the SDK refresh it. */
  token?: string;
  /** Returns a fresh JWT; called at start, before `exp`, and after close 4001/4002. */
  getToken?: () => string | Promise<string>;
  /** WebSocket constructor; defaults to the global one. Pass `ws`'s under Node. */
  WebSocket?: WebSocketCtor;
  /** Replaces the built-in renderer (headless mode); `null` renders nothing. */
  renderer?: Renderer | null;
  /** Automatic events; `false` turns all off. Default: all on when there is a DOM. */
  autoCapture?: boolean | AutoCaptureOptions;
  /** Where unacked events and the session survive a reload; default sessionStorage, `null` = memory only. */
  storage?: StorageLike | null;
  /** Prefix of the storage keys. Default `beckon`. */
  storageKey?: string;
  /** Minimum time between `activity` frames. Default 5000 ms. */
  activityThrottleMs?: number;
  /** Most unacked events kept; the oldest is dropped (with an error) past it. Default 500. */
  maxBuffer?: number;
  /** Frames larger than this are refused locally (`too_large`). Default 65536 (the gateway's default). */
  maxFrameBytes?: number;
  /** Reconnect backoff (ms): `{base: 500, cap: 30000}` by default. */
  backoff?: BackoffOptions;
  /** Show each delivery in one tab only (BroadcastChannel). Default true. */
  crossTab?: boolean;
  /** Built-in renderer: how long a tooltip waits for its anchor. Default 5000 ms. */
  tooltipTimeoutMs?: number;
  /** Refresh the token this long before its `exp`. Default 30000 ms. */
  refreshBeforeMs?: number;
  /** Close and retry when no `welcome` arrives this long after open. Default 10000 ms. */
  helloTimeoutMs?: number;
}

/** Connection states reported by the `state` event. */
export type ConnectionState = 'connecting' | 'open' | 'reconnecting' | 'stopped';

/** Payload of the `state` event. */
export interface StateChange {
  state: ConnectionState;
  /** Session id, once welcomed. */
  session?: string;
  /** Close code that caused a reconnect or stop. */
  code?: number;
  /** Milliseconds until the next attempt (`reconnecting`). */
  delay?: number;
}

/**
 * Payload of the `error` event: a server `error` frame (`invalid_frame`,
 * `rate_limited`, …, with the `id` it names) or a local one: `buffer_overflow`,
 * `too_large`, `token`, `unauthorized`, `token_expired`, `user_changed`.
 */
export interface BeckonError {
  code: string;
  message?: string;
  id?: string;
}

/** Events of {@link BeckonClient.on}. */
export interface ClientEvents {
  message: [MessageFrame, MessageContext];
  revoke: [string];
  state: [StateChange];
  error: [BeckonError];
}

/** What survives a reload besides the events: the session to resume and deliveries already handled. */
interface SavedSession {
  s?: string;
  n: number;
  d: string[];
}

type TimerName = 'retry' | 'hello' | 'refresh' | 'flush' | 'gap';

const MAX_TIMER = 2 ** 31 - 1;
const FLUSH_BATCH = 50;

/** A connected Beckon client. Create with {@link init}. */
export class BeckonClient {
  /** Current connection state. */
  state: ConnectionState = 'connecting';
  /** Session id once welcomed (kept across reconnects when resumed). */
  session: string | undefined;
  /** User id the gateway read from the token. */
  user: string | undefined;

  private readonly opts: BeckonOptions;
  private readonly Ctor: WebSocketCtor;
  private readonly emitter = new Emitter<ClientEvents>();
  private readonly storage: StorageLike | undefined;
  private readonly outbox: Outbox;
  private readonly seq = new SeqTracker();
  private readonly seen: LruSet;
  private readonly revoked = new LruSet(200);
  private readonly renderer: Renderer | undefined;
  private readonly tabs: TabGuard | undefined;
  private readonly timers: Record<TimerName, ReturnType<typeof setTimeout> | undefined> = {
    retry: undefined,
    hello: undefined,
    refresh: undefined,
    flush: undefined,
    gap: undefined,
  };
  private readonly expiry = new Map<string, ReturnType<typeof setTimeout>>();
  private readonly cleanups: (() => void)[] = [];
  private ws: WebSocketLike | undefined;
  private token: string | undefined;
  private welcomed = false;
  /** No more reconnects (auth failure or shutdown). */
  private stopped = false;
  /** `shutdown()` ran. */
  private shut = false;
  private attempt = 0;
  /** Consecutive 4001/4002 closes without a welcome in between. */
  private authFailures = 0;

  constructor(opts: BeckonOptions) {
    this.opts = opts;
    const Ctor = opts.WebSocket ?? (globalThis as { WebSocket?: WebSocketCtor }).WebSocket;
    if (!Ctor) throw new Error('Beckon: no WebSocket; pass the `WebSocket` option');
    if (!opts.url) throw new Error('Beckon: `url` is required');
    if (!opts.token && !opts.getToken) throw new Error('Beckon: `token` or `getToken` is required');
    this.Ctor = Ctor;
    this.token = opts.token;
    const hasDom = typeof document !== 'undefined';
    this.storage = opts.storage === undefined ? safe(() => sessionStorage) : opts.storage ?? undefined;
    const key = opts.storageKey ?? 'beckon';
    this.outbox = new Outbox(this.storage, key + '.q', opts.maxBuffer ?? 500);
    const saved = safe(() => JSON.parse(this.storage?.getItem(key + '.s') ?? 'null') as SavedSession | null);
    this.seen = new LruSet(500, saved?.d ?? []);
    if (saved?.s) {
      this.session = saved.s;
      this.seq.reset(saved.n || 0);
    }
    this.renderer = opts.renderer === undefined ? (hasDom ? createRenderer({ tooltipTimeoutMs: opts.tooltipTimeoutMs }) : undefined) : opts.renderer ?? undefined;
    if (opts.crossTab !== false && typeof BroadcastChannel !== 'undefined') this.tabs = new TabGuard(key + ':' + opts.url);

    if (hasDom && typeof window !== 'undefined') {
      const ac = opts.autoCapture ?? true;
      if (ac) this.cleanups.push(autoCapture(ac === true ? {} : ac, { page: () => this.page(), track: (e, p) => this.track(e, p) }));
      this.cleanups.push(
        watchActivity(opts.activityThrottleMs ?? 5000, () => this.welcomed && this.send({ type: 'activity' })),
        // Back online: skip the rest of the backoff.
        listen(window, 'online', () => this.timers.retry && (this.clear('retry'), this.open())),
      );
    }
    void this.open();
  }

  /** Subscribe to `message`, `revoke`, `state` or `error`; returns the unsubscribe function. */
  on<K extends keyof ClientEvents>(type: K, fn: (...args: ClientEvents[K]) => void): () => void {
    return this.emitter.on(type, fn);
  }

  /** Record a custom event. Returns its frame id (or undefined if refused locally). */
  track(event: string, properties: Props = {}): string | undefined {
    if (typeof event !== 'string' || !event) return void this.error({ code: 'invalid_frame', message: 'event name required' });
    return this.enqueue({ type: 'track', id: newId(), event, properties });
  }

  /** Record a `$page_view` and set the session's current page. Defaults to the current location. */
  page(path?: string, title?: string): string | undefined {
    const hasLoc = typeof location !== 'undefined';
    const f: EventFrame = {
      type: 'page',
      id: newId(),
      path: path ?? (hasLoc ? location.pathname : '/'),
      title: title ?? (typeof document !== 'undefined' ? document.title : ''),
    };
    const ref = typeof document !== 'undefined' && document.referrer;
    if (ref) f.referrer = ref;
    return this.enqueue(f);
  }

  /** Set client-writable attributes of the user. */
  identify(attributes: Props): string | undefined {
    return this.enqueue({ type: 'identify', id: newId(), attributes });
  }

  /**
   * Stop for good: close the socket (1000), remove listeners and rendered
   * messages. Unacked events stay in storage for the next `init`.
   */
  shutdown(): void {
    if (this.shut) return;
    this.shut = this.stopped = true;
    for (const k of Object.keys(this.timers) as TimerName[]) this.clear(k);
    this.expiry.forEach(clearTimeout);
    const ws = this.ws;
    this.ws = undefined;
    safe(() => ws?.close(CloseCode.Normal, 'shutdown'));
    this.cleanups.splice(0).forEach((f) => f());
    this.renderer?.destroy();
    this.tabs?.close();
    this.setState({ state: 'stopped' });
    this.emitter.clear();
  }

  // ---- connection -------------------------------------------------------

  private async open(): Promise<void> {
    if (this.stopped) return;
    this.setState({ state: 'connecting' });
    let token: string | undefined;
    try {
      token = await this.currentToken();
    } catch (e) {
      this.error({ code: 'token', message: String(e) });
      return this.retry(0, 'normal');
    }
    if (this.stopped) return;
    let ws: WebSocketLike;
    try {
      ws = new this.Ctor(wsUrl(this.opts.url));
    } catch (e) {
      this.error({ code: 'connect', message: String(e) });
      return this.retry(0, 'normal');
    }
    this.ws = ws;
    ws.onopen = () => {
      const hello: Record<string, unknown> = { type: 'hello', token, sdk: SDK };
      if (this.session) hello.resume = { session: this.session, last_seq: this.seq.last };
      if (typeof location !== 'undefined') hello.page = { path: location.pathname, title: typeof document !== 'undefined' ? document.title : '' };
      this.send(hello);
      this.timers.hello = setTimeout(() => safe(() => ws.close(CloseCode.Protocol, 'no welcome')), this.opts.helloTimeoutMs ?? 10_000);
    };
    ws.onmessage = (e) => ws === this.ws && this.receive(String(e.data));
    ws.onclose = (e) => this.closed(ws, e.code);
    ws.onerror = () => {
      /* a close event follows */
    };
  }

  private async currentToken(): Promise<string | undefined> {
    const exp = this.token && tokenExpiry(this.token);
    // A static token is used as is (the server says 4002 if it is stale); a getter refreshes early.
    if (this.opts.getToken && (!this.token || (exp && exp * 1000 - Date.now() < 5000))) this.token = await this.opts.getToken();
    return this.token;
  }

  private closed(ws: WebSocketLike, code: number): void {
    if (ws !== this.ws) return;
    this.ws = undefined;
    this.welcomed = false;
    for (const k of ['hello', 'refresh', 'flush', 'gap'] as const) this.clear(k);
    if (this.stopped) return;
    const canRefresh = !!this.opts.getToken;
    const p = closePolicy(code, canRefresh);
    if (p.dropLargest) {
      const id = this.outbox.largestSent();
      if (id) {
        this.outbox.remove([id]);
        this.error({ code: 'too_large', id, message: 'frame refused by the gateway (1009)' });
      }
    }
    if (p.newSession) {
      this.session = undefined;
      this.seq.reset();
      this.saveSession();
    }
    this.outbox.unsend();
    const authClose = code === CloseCode.Unauthorized || code === CloseCode.TokenExpired;
    if (authClose) {
      this.token = undefined;
      if (++this.authFailures > 3) p.action = 'stop';
    }
    if (p.action === 'stop') {
      this.error({ code: code === CloseCode.TokenExpired ? 'token_expired' : 'unauthorized', message: 'close ' + code });
      this.stopped = true;
      this.cleanups.splice(0).forEach((f) => f());
      return this.setState({ state: 'stopped', code });
    }
    // Repeated auth failures are not urgent: stop hurrying.
    this.retry(code, authClose && this.authFailures > 1 ? 'normal' : p.pace);
  }

  private retry(code: number, pace: Pace): void {
    if (this.stopped) return;
    const delay = paceDelay(pace, this.attempt++, this.opts.backoff);
    this.setState({ state: 'reconnecting', code, delay });
    this.timers.retry = setTimeout(() => {
      this.timers.retry = undefined;
      void this.open();
    }, delay);
  }

  /** Schedule the `auth` frame a little before the token's `exp`. */
  private scheduleRefresh(failures = 0): void {
    this.clear('refresh');
    const exp = this.token && tokenExpiry(this.token);
    if (!this.opts.getToken || !exp) return;
    const at = failures ? backoffDelay(failures, { base: 1000, cap: 10_000 }) : exp * 1000 - Date.now() - (this.opts.refreshBeforeMs ?? 30_000);
    this.timers.refresh = setTimeout(
      async () => {
        try {
          this.token = await this.opts.getToken!();
          if (this.welcomed) this.send({ type: 'auth', token: this.token });
          this.scheduleRefresh();
        } catch (e) {
          this.error({ code: 'token', message: String(e) });
          this.scheduleRefresh(failures + 1);
        }
      },
      Math.min(Math.max(at, 1000), MAX_TIMER),
    );
  }

  // ---- frames in --------------------------------------------------------

  private receive(text: string): void {
    const frames = decodeFrames(text);
    if (!frames) return this.error({ code: 'invalid_json', message: 'unreadable frame from gateway' });
    let ack = false;
    for (const f of frames) ack = this.handle(f) || ack;
    if (ack) this.sendAck();
  }

  /** Handle one server frame; returns true when an `ack` is due. */
  private handle(f: ServerFrame): boolean {
    switch (f.type) {
      case 'welcome': {
        this.clear('hello');
        if (!f.resumed || f.session !== this.session) this.seq.reset();
        this.session = f.session;
        this.user = f.user;
        this.welcomed = true;
        this.attempt = 0;
        this.authFailures = 0;
        const dropped = this.outbox.setUser(f.user);
        if (dropped.length) this.error({ code: 'user_changed', message: dropped.length + ' stored events of another user dropped' });
        this.saveSession();
        this.outbox.unsend();
        this.flush();
        this.scheduleRefresh();
        this.setState({ state: 'open', session: f.session });
        return false;
      }
      case 'ok':
        if (Array.isArray(f.ids)) this.outbox.remove(f.ids);
        return false;
      case 'error':
        if (f.id) {
          if (isRetryableError(f.code)) {
            this.outbox.unsend(f.id);
            this.scheduleFlush(backoffDelay(this.attempt + 2, { base: 1000, cap: 30_000 }) + 500);
          } else this.outbox.remove([f.id]);
        }
        this.error({ code: f.code, message: f.message, id: f.id });
        return false;
      case 'revoke':
        this.revoked.add(f.delivery);
        this.hide(f.delivery);
        this.emitter.emit('revoke', f.delivery);
        return false;
      case 'message':
        return this.message(f);
      default:
        return false; // unknown frame types are ignored: the protocol may grow
    }
  }

  private message(f: MessageFrame): boolean {
    if (typeof f.seq !== 'number' || typeof f.delivery !== 'string') return false;
    this.seq.receive(f.seq);
    if (this.seq.hasGap && !this.timers.gap) {
      // A gap on an ordered socket that is not filled soon was skipped by the server.
      this.timers.gap = setTimeout(() => {
        this.timers.gap = undefined;
        while (this.seq.hasGap) this.seq.skipGap();
        this.sendAck();
      }, 1000);
    }
    // Acked either way (the caller sends `ack`, which also persists `seen`); shown once.
    if (this.seen.add(f.delivery)) {
      const exp = f.expires_at ? Date.parse(f.expires_at) : NaN;
      if (!(exp <= Date.now())) void this.present(f, exp);
    }
    return true;
  }

  private async present(f: MessageFrame, exp: number): Promise<void> {
    const d = f.delivery;
    if (this.tabs && !(await this.tabs.claim(d))) return;
    if (this.stopped || this.revoked.has(d)) return;
    const ctx = this.context(d);
    this.emitter.emit('message', f, ctx);
    this.renderer?.show(f, ctx);
    if (exp > 0) this.expiry.set(d, setTimeout(() => this.hide(d), Math.min(exp - Date.now(), MAX_TIMER)));
  }

  private context(d: string): MessageContext {
    let seen = false;
    let done = false;
    const impression = () => {
      if (!seen && !done) (seen = true), this.engage(d, 'impression');
    };
    const finish = (action: 'click' | 'dismiss', button?: string) => {
      if (done) return;
      impression(); // a click or dismissal proves it was seen
      done = true;
      this.engage(d, action, button);
      this.hide(d);
    };
    return { impression, click: (b) => finish('click', b), dismiss: () => finish('dismiss') };
  }

  private hide(d: string): void {
    clearTimeout(this.expiry.get(d));
    this.expiry.delete(d);
    this.renderer?.remove(d);
  }

  // ---- frames out -------------------------------------------------------

  private engage(delivery: string, action: 'impression' | 'click' | 'dismiss', button?: string): void {
    const f: EventFrame = { type: 'engage', id: newId(), delivery, action };
    if (button !== undefined) f.button = button;
    this.enqueue(f);
  }

  private enqueue(f: EventFrame): string | undefined {
    if (this.stopped) return undefined;
    if (byteLength(JSON.stringify(f)) > (this.opts.maxFrameBytes ?? 65_536)) {
      return void this.error({ code: 'too_large', id: f.id, message: 'frame over the size limit; not sent' });
    }
    const evicted = this.outbox.add(f);
    if (evicted) this.error({ code: 'buffer_overflow', id: evicted.id, message: 'unacked buffer full; oldest event dropped' });
    this.flush();
    return f.id;
  }

  /** Send unsent buffered frames, paced so a long backlog does not trip the rate limit. */
  private flush(): void {
    if (!this.welcomed || this.timers.flush) return;
    const batch = this.outbox.pending(FLUSH_BATCH);
    const sent = batch.filter((f) => this.send(f)).map((f) => f.id);
    this.outbox.markSent(sent);
    if (sent.length === FLUSH_BATCH) this.scheduleFlush(500);
  }

  private scheduleFlush(ms: number): void {
    this.clear('flush');
    this.timers.flush = setTimeout(() => {
      this.timers.flush = undefined;
      this.flush();
    }, ms);
  }

  private sendAck(): void {
    if (this.seq.last > 0) this.send({ type: 'ack', seq: this.seq.last });
    this.saveSession();
  }

  private send(frame: object): boolean {
    const ws = this.ws;
    if (!ws || ws.readyState !== 1) return false;
    try {
      ws.send(JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  // ---- bookkeeping ------------------------------------------------------

  private saveSession(): void {
    const s: SavedSession = { s: this.session, n: this.seq.last, d: this.seen.toArray() };
    safe(() => this.storage?.setItem((this.opts.storageKey ?? 'beckon') + '.s', JSON.stringify(s)));
  }

  private setState(s: StateChange): void {
    this.state = s.state;
    this.emitter.emit('state', s);
  }

  private error(e: BeckonError): void {
    this.emitter.emit('error', e);
  }

  private clear(k: TimerName): void {
    clearTimeout(this.timers[k]);
    this.timers[k] = undefined;
  }
}

/** UTF-8 size of a string: the gateway's frame limit counts bytes, not UTF-16 units. */
function byteLength(s: string): number {
  return typeof TextEncoder !== 'undefined' ? new TextEncoder().encode(s).length : s.length * 3;
}

/** Create a client and start connecting. */
export function init(opts: BeckonOptions): BeckonClient {
  return new BeckonClient(opts);
}
