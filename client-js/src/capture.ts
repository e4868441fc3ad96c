/**
 * Browser listeners that turn what the user does into SDK calls: automatic
 * page views, form submits and feature clicks (each can be turned off), and
 * the throttled `activity` signal. Every function returns its own undo; none
 * of them knows about the socket.
 */

import { listen } from './util.js';

/** Which automatic events to record. All on by default in a browser. */
export interface AutoCaptureOptions {
  /** `$page_view` on load and on SPA navigation (history.pushState/replaceState, popstate). */
  pageViews?: boolean;
  /** `$form_submit` with `{form: <form id or name>}` on every form submit. */
  forms?: boolean;
  /** A `track(name)` event on clicks inside `[data-beckon-track="name"]`. */
  featureClicks?: boolean;
}

/** What the capture listeners call. */
export interface CaptureSink {
  page(): void;
  track(event: string, props?: Record<string, unknown>): void;
}

/** Install the enabled auto-capture listeners; returns the function that removes them. */
export function autoCapture(opts: AutoCaptureOptions, sink: CaptureSink): () => void {
  const off: (() => void)[] = [];
  if (opts.pageViews !== false) {
    let last = location.pathname;
    let live = true;
    // Deferred a tick: SPA routers usually set document.title just after pushState.
    const changed = () =>
      setTimeout(() => {
        if (live && location.pathname !== last) {
          last = location.pathname;
          sink.page();
        }
      });
    for (const name of ['pushState', 'replaceState'] as const) {
      const orig = history[name];
      const wrapped = function (this: History, ...args: Parameters<History['pushState']>) {
        const r = orig.apply(this, args);
        changed();
        return r;
      };
      history[name] = wrapped;
      // Only unwrap if nobody wrapped on top of us; otherwise `live` keeps ours inert.
      off.push(() => {
        if (history[name] === wrapped) history[name] = orig;
      });
    }
    off.push(listen(window, 'popstate', changed), () => (live = false));
    sink.page();
  }
  if (opts.forms !== false) {
    off.push(
      listen(document, 'submit', (e: Event) => {
        const f = e.target as HTMLFormElement | null;
        if (f && f.tagName === 'FORM') sink.track('$form_submit', { form: f.id || f.getAttribute('name') || '' });
      }),
    );
  }
  if (opts.featureClicks !== false) {
    off.push(
      listen(document, 'click', (e: Event) => {
        const t = e.target as Element | null;
        const name = t && t.closest ? t.closest('[data-beckon-track]')?.getAttribute('data-beckon-track')?.trim() : '';
        // `$` names are reserved for the SDK's own events.
        if (name && name[0] !== '$') sink.track(name.slice(0, 128));
      }),
    );
  }
  return () => off.forEach((f) => f());
}

/**
 * Call `send` on user interaction (pointerdown, keydown, scroll, the tab
 * becoming visible), at most once per `throttleMs`. `send` returns false when
 * nothing was sent (offline), so the next interaction tries again.
 */
export function watchActivity(throttleMs: number, send: () => boolean): () => void {
  let last = -Infinity;
  const on = (e: Event) => {
    if (e.type === 'visibilitychange' && document.visibilityState !== 'visible') return;
    const now = Date.now();
    if (now - last >= throttleMs && send()) last = now;
  };
  const off = [
    listen(window, 'pointerdown', on),
    listen(window, 'keydown', on),
    listen(window, 'scroll', on, { capture: true, passive: true }),
    listen(document, 'visibilitychange', on),
  ];
  return () => off.forEach((f) => f());
}
