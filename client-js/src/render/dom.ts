/**
 * The built-in renderer: modal, banner, tooltip and slideout, drawn inside a
 * shadow root so page CSS and ours never meet. Message text is only ever set
 * with `textContent` (the contract says texts are never HTML), and URLs pass
 * `safeUrl` first. Reports impressions through the context it is given; it
 * never talks to the socket.
 */

import type { MessageButton, MessageContent, MessageFrame } from '../protocol.js';
import { safeUrl } from './sanitize.js';
import { CSS } from './styles.js';
import { listen } from '../util.js';
import type { MessageContext, Renderer } from './types.js';

/** Options of the built-in renderer. */
export interface DomRendererOptions {
  /** How long a tooltip waits for its anchor to appear before falling back to a slideout. Default 5000 ms. */
  tooltipTimeoutMs?: number;
  /** Opens a button's URL. Default `location.assign`. */
  navigate?: (url: string) => void;
}

interface Shown {
  el?: HTMLElement;
  /** Undo listeners, observers and timers; restore focus. */
  off: (() => void)[];
}

const FOCUSABLE = 'button,[href],input,select,textarea,[tabindex]:not([tabindex="-1"])';

/** Create an element with an optional class and text (text via textContent only). */
function el<K extends keyof HTMLElementTagNameMap>(tag: K, cls?: string, text?: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text) e.textContent = text;
  return e;
}

/** Create the built-in DOM renderer. */
export function createRenderer(opts: DomRendererOptions = {}): Renderer {
  const timeout = opts.tooltipTimeoutMs ?? 5000;
  const navigate = opts.navigate ?? ((u: string) => location.assign(u));
  const shown = new Map<string, Shown>();
  let root: ShadowRoot | undefined;
  let host: HTMLElement | undefined;

  const mount = (): ShadowRoot => {
    if (!root || !host!.isConnected) {
      host = el('div');
      host.setAttribute('data-beckon', '');
      root = host.attachShadow({ mode: 'open' });
      root.appendChild(el('style', '', CSS));
      (document.body ?? document.documentElement).appendChild(host);
    }
    return root;
  };

  /** Call `done` once the element is on screen while the page is visible. */
  const watchVisible = (target: Element, s: Shown, done: () => void): void => {
    let seen = typeof IntersectionObserver === 'undefined';
    let fired = false;
    const check = () => {
      if (!fired && seen && document.visibilityState !== 'hidden') {
        fired = true;
        done();
      }
    };
    if (!seen) {
      const io = new IntersectionObserver((es) => {
        seen = es.some((e) => e.isIntersecting);
        check();
      });
      io.observe(target);
      s.off.push(() => io.disconnect());
    }
    s.off.push(listen(document, 'visibilitychange', check));
    requestAnimationFrame(check);
  };

  const card = (d: string, m: MessageContent, ctx: MessageContext, cls: string): HTMLElement => {
    const c = el('div', 'c ' + cls);
    const titleId = 'bk-' + d.replace(/\W/g, '');
    const close = el('button', 'x', '\u00d7');
    close.setAttribute('aria-label', 'Close');
    close.onclick = () => ctx.dismiss();
    c.appendChild(close);
    if (m.title) {
      const h = el('h2', '', m.title);
      h.id = titleId;
      c.setAttribute('aria-labelledby', titleId);
      c.appendChild(h);
    } else {
      c.setAttribute('aria-label', 'Message');
    }
    const img = m.kind === 'modal' && safeUrl(m.image_url);
    if (img) {
      const i = el('img');
      i.alt = '';
      i.src = img;
      c.appendChild(i);
    }
    if (m.body) c.appendChild(el('p', '', m.body));
    const buttons = Array.isArray(m.buttons) ? m.buttons : [];
    if (buttons.length) {
      const a = el('div', 'a');
      for (const b of buttons) a.appendChild(button(b, ctx));
      c.appendChild(a);
    }
    return c;
  };

  const button = (b: MessageButton, ctx: MessageContext): HTMLButtonElement => {
    const btn = el('button', '', String(b.label ?? ''));
    btn.type = 'button';
    btn.onclick = () => {
      if (b.action === 'dismiss') return ctx.dismiss();
      ctx.click(String(b.id));
      const url = safeUrl(b.url);
      if (url) navigate(url);
    };
    return btn;
  };

  const modal = (c: HTMLElement, ctx: MessageContext, s: Shown): HTMLElement => {
    const overlay = el('div', 'o');
    c.setAttribute('role', 'dialog');
    c.setAttribute('aria-modal', 'true');
    c.tabIndex = -1;
    overlay.appendChild(c);
    overlay.onclick = (e) => e.target === overlay && ctx.dismiss();
    const previous = document.activeElement as HTMLElement | null;
    s.off.push(
      listen(document, 'keydown', (e: KeyboardEvent) => {
        if (e.key === 'Escape') {
          e.preventDefault();
          e.stopPropagation();
          ctx.dismiss();
        } else if (e.key === 'Tab') {
          // Focus trap: cycle within the dialog's focusable elements.
          const f = [...c.querySelectorAll<HTMLElement>(FOCUSABLE)];
          const active = root!.activeElement;
          const i = f.indexOf(active as HTMLElement);
          const next = e.shiftKey ? (i <= 0 ? f.length - 1 : i - 1) : i < 0 || i === f.length - 1 ? 0 : i + 1;
          e.preventDefault();
          f[next]?.focus();
        }
      }),
      () => {
        if (previous && previous.isConnected && typeof previous.focus === 'function') previous.focus();
      },
    );
    setTimeout(() => (c.querySelector<HTMLElement>('.a button') ?? c).focus());
    return overlay;
  };

  const tooltip = (c: HTMLElement, m: MessageContent, s: Shown, attach: (e: HTMLElement) => void): void => {
    const placement = ['top', 'bottom', 'left', 'right'].includes(m.placement!) ? m.placement! : 'bottom';
    const find = (): Element | null | undefined => {
      try {
        return document.querySelector(m.anchor || '');
      } catch {
        return undefined; // invalid selector: it will never appear
      }
    };
    let fell = false;
    const fallback = () => {
      if (fell) return;
      fell = true;
      c.className = 'c s';
      c.style.cssText = '';
      attach(c);
    };
    const place = (anchor: Element) => {
      if (fell) return;
      if (!anchor.isConnected) return fallback();
      const r = anchor.getBoundingClientRect();
      const w = c.offsetWidth;
      const h = c.offsetHeight;
      const gap = 10;
      let top = placement === 'top' ? r.top - h - gap : placement === 'bottom' ? r.bottom + gap : r.top + (r.height - h) / 2;
      let left = placement === 'left' ? r.left - w - gap : placement === 'right' ? r.right + gap : r.left + (r.width - w) / 2;
      top = Math.max(8, Math.min(top, innerHeight - h - 8));
      left = Math.max(8, Math.min(left, innerWidth - w - 8));
      c.style.top = top + 'px';
      c.style.left = left + 'px';
      // Hide while the anchor is scrolled out of view rather than point at nothing.
      c.style.visibility = r.bottom < 0 || r.top > innerHeight || r.right < 0 || r.left > innerWidth ? 'hidden' : '';
    };
    const show = (anchor: Element) => {
      c.setAttribute('role', 'dialog');
      attach(c);
      place(anchor);
      let frame = 0;
      const follow = () => {
        cancelAnimationFrame(frame);
        frame = requestAnimationFrame(() => place(anchor));
      };
      s.off.push(listen(window, 'scroll', follow, { capture: true, passive: true }), listen(window, 'resize', follow));
    };
    const found = find();
    if (found) return show(found);
    if (found === undefined) return fallback();
    const mo = new MutationObserver(() => {
      const a = find();
      if (a) stop(), show(a);
    });
    const timer = setTimeout(() => (stop(), fallback()), timeout);
    const stop = () => (mo.disconnect(), clearTimeout(timer));
    mo.observe(document.documentElement, { childList: true, subtree: true, attributes: true });
    s.off.push(stop);
  };

  return {
    show(frame: MessageFrame, ctx: MessageContext): void {
      const m = frame.message;
      const d = frame.delivery;
      if (!m || shown.has(d) || typeof document === 'undefined') return;
      const s: Shown = { off: [] };
      const attach = (e: HTMLElement) => {
        if (s.el && s.el !== e) s.el.remove();
        s.el = e;
        mount().appendChild(e);
        watchVisible(e.className === 'o' ? e.firstElementChild! : e, s, ctx.impression);
      };
      switch (m.kind) {
        case 'modal': {
          const c = card(d, m, ctx, '');
          shown.set(d, s);
          return attach(modal(c, ctx, s));
        }
        case 'banner': {
          const c = card(d, m, ctx, 'b ' + (m.position === 'bottom' ? 'bottom' : 'top'));
          c.setAttribute('role', 'region');
          shown.set(d, s);
          return attach(c);
        }
        case 'slideout': {
          const c = card(d, m, ctx, 's');
          c.setAttribute('role', 'dialog');
          shown.set(d, s);
          return attach(c);
        }
        case 'tooltip': {
          shown.set(d, s);
          return tooltip(card(d, m, ctx, 't'), m, s, attach);
        }
        // 'custom' and unknown kinds: not ours to draw.
      }
    },
    remove(delivery: string): void {
      const s = shown.get(delivery);
      if (!s) return;
      shown.delete(delivery);
      s.el?.remove();
      for (const f of s.off.splice(0)) f();
    },
    destroy(): void {
      for (const d of [...shown.keys()]) this.remove(d);
      host?.remove();
      root = host = undefined;
    },
  };
}
