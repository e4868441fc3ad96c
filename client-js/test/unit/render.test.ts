// @vitest-environment happy-dom
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { MessageFrame } from '../../src/protocol';
import { createRenderer } from '../../src/render/dom';
import type { MessageContext, Renderer } from '../../src/render/types';

function frame(delivery: string, message: MessageFrame['message']): MessageFrame {
  return { type: 'message', seq: 1, delivery, campaign: 'c', variant: 'a', message };
}

function ctx() {
  const calls: string[] = [];
  const c: MessageContext = {
    impression: () => calls.push('impression'),
    click: (b) => calls.push('click:' + b),
    dismiss: () => calls.push('dismiss'),
  };
  return { c, calls };
}

/** IntersectionObserver that reports every observed element as visible. */
class VisibleIO {
  constructor(private cb: (e: { isIntersecting: boolean }[]) => void) {}
  observe() {
    queueMicrotask(() => this.cb([{ isIntersecting: true }]));
  }
  disconnect() {}
}

const shadow = () => document.querySelector('[data-beckon]')!.shadowRoot!;
const flush = () => new Promise((r) => setTimeout(r, 30));

let r: Renderer;
let navigated: string[];
beforeEach(() => {
  (globalThis as any).IntersectionObserver = VisibleIO;
  navigated = [];
  r = createRenderer({ navigate: (u) => navigated.push(u), tooltipTimeoutMs: 100 });
  document.body.innerHTML = '<button id="opener">open</button>';
});
afterEach(() => {
  r.destroy();
  delete (globalThis as any).IntersectionObserver;
});

describe('modal', () => {
  it('renders an accessible dialog inside a shadow root and reports the impression', async () => {
    const { c, calls } = ctx();
    r.show(frame('d1', { kind: 'modal', title: 'Connect', body: 'Two minutes.', buttons: [{ id: 'go', label: 'Go', url: '/integrations' }] }), c);
    const dialog = shadow().querySelector('[role=dialog]')!;
    expect(dialog.getAttribute('aria-modal')).toBe('true');
    expect(shadow().getElementById(dialog.getAttribute('aria-labelledby')!)!.textContent).toBe('Connect');
    expect(shadow().querySelector('p')!.textContent).toBe('Two minutes.');
    // Nothing leaks into the light DOM beyond the host.
    expect(document.body.querySelector('h2')).toBeNull();
    await flush();
    expect(calls).toEqual(['impression']);
  });

  it('inserts message text as text, never as HTML', () => {
    const evil = '<img src=x onerror="window.__pwned=1"><b>bold</b>';
    r.show(frame('d1', { kind: 'modal', title: evil, body: evil, buttons: [{ id: 'x', label: evil }] }), ctx().c);
    const root = shadow();
    expect(root.querySelector('img')).toBeNull();
    expect(root.querySelector('b')).toBeNull();
    expect(root.querySelector('h2')!.textContent).toBe(evil);
    expect(root.querySelector('p')!.textContent).toBe(evil);
    expect(root.querySelector('.a button')!.textContent).toBe(evil);
    expect((window as any).__pwned).toBeUndefined();
  });

  it('clicks report the button and navigate only to safe URLs', () => {
    const { c, calls } = ctx();
    r.show(
      frame('d1', {
        kind: 'modal',
        title: 't',
        buttons: [
          { id: 'go', label: 'Go', url: '/integrations' },
          { id: 'evil', label: 'Evil', url: 'javascript:alert(1)' },
          { id: 'later', label: 'Later', action: 'dismiss' },
        ],
      }),
      c,
    );
    const [go, evil, later] = [...shadow().querySelectorAll<HTMLButtonElement>('.a button')];
    go!.click();
    evil!.click();
    later!.click();
    expect(calls).toEqual(['click:go', 'click:evil', 'dismiss']);
    expect(navigated).toEqual([new URL('/integrations', location.href).href]);
  });

  it('renders only safe images', () => {
    r.show(frame('d1', { kind: 'modal', title: 't', image_url: 'javascript:alert(1)' }), ctx().c);
    expect(shadow().querySelector('img')).toBeNull();
    r.show(frame('d2', { kind: 'modal', title: 't', image_url: 'https://cdn.example.com/a.png' }), ctx().c);
    expect(shadow().querySelector('img')!.getAttribute('src')).toBe('https://cdn.example.com/a.png');
  });

  it('Escape dismisses, and focus returns to the element focused before', async () => {
    const opener = document.getElementById('opener') as HTMLButtonElement;
    opener.focus();
    const { c, calls } = ctx();
    r.show(frame('d1', { kind: 'modal', title: 't', buttons: [{ id: 'a', label: 'A' }] }), c);
    await flush();
    document.dispatchEvent(new KeyboardEvent('keydown', { key: 'Escape', bubbles: true }));
    expect(calls).toContain('dismiss');
    r.remove('d1');
    expect(shadow().querySelector('[role=dialog]')).toBeNull();
    expect(document.activeElement).toBe(opener);
  });

  it('traps Tab focus inside the dialog', async () => {
    r.show(frame('d1', { kind: 'modal', title: 't', buttons: [{ id: 'a', label: 'A' }, { id: 'b', label: 'B' }] }), ctx().c);
    await flush();
    const [close, a, b] = [...shadow().querySelectorAll<HTMLButtonElement>('button')];
    expect(shadow().activeElement).toBe(a);
    const tab = (shiftKey = false) => document.dispatchEvent(new KeyboardEvent('keydown', { key: 'Tab', shiftKey, bubbles: true }));
    tab();
    expect(shadow().activeElement).toBe(b);
    tab();
    expect(shadow().activeElement).toBe(close);
    tab(true);
    expect(shadow().activeElement).toBe(b);
  });

  it('the close button dismisses', () => {
    const { c, calls } = ctx();
    r.show(frame('d1', { kind: 'modal', title: 't' }), c);
    shadow().querySelector<HTMLButtonElement>('.x')!.click();
    expect(calls).toEqual(['dismiss']);
  });
});

describe('banner, slideout, custom', () => {
  it('places a banner top or bottom', () => {
    r.show(frame('d1', { kind: 'banner', body: 'Hello', position: 'bottom' }), ctx().c);
    r.show(frame('d2', { kind: 'banner', body: 'Hello' }), ctx().c);
    const [b1, b2] = [...shadow().querySelectorAll('.b')];
    expect(b1!.classList.contains('bottom')).toBe(true);
    expect(b2!.classList.contains('top')).toBe(true);
  });

  it('renders a slideout', () => {
    r.show(frame('d1', { kind: 'slideout', title: 'News', body: 'x' }), ctx().c);
    expect(shadow().querySelector('.s h2')!.textContent).toBe('News');
  });

  it('never renders custom messages', () => {
    r.show(frame('d1', { kind: 'custom', data: { html: '<b>x</b>' } }), ctx().c);
    expect(document.querySelector('[data-beckon]')).toBeNull();
  });

  it('remove is idempotent and revokes what is on screen', () => {
    r.show(frame('d1', { kind: 'banner', body: 'x' }), ctx().c);
    r.remove('d1');
    r.remove('d1');
    expect(shadow().querySelector('.b')).toBeNull();
  });
});

describe('tooltip', () => {
  it('waits for its anchor to appear, then attaches next to it', async () => {
    const { c, calls } = ctx();
    r.show(frame('d1', { kind: 'tooltip', anchor: '#export', body: 'Try export', placement: 'bottom' }), c);
    expect(document.querySelector('[data-beckon]')).toBeNull();
    const target = document.createElement('button');
    target.id = 'export';
    document.body.appendChild(target);
    await flush();
    const tip = shadow().querySelector('.t') as HTMLElement;
    expect(tip.textContent).toContain('Try export');
    expect(tip.style.top).toMatch(/px$/);
    expect(calls).toEqual(['impression']);
  });

  it('falls back to a slideout when the anchor never appears', async () => {
    r.show(frame('d1', { kind: 'tooltip', anchor: '#missing', body: 'x' }), ctx().c);
    await new Promise((res) => setTimeout(res, 150));
    expect(shadow().querySelector('.s')!.textContent).toContain('x');
  });

  it('falls back at once for an invalid selector', () => {
    r.show(frame('d1', { kind: 'tooltip', anchor: '##!', body: 'x' }), ctx().c);
    expect(shadow().querySelector('.s')).not.toBeNull();
  });

  it('stops waiting when removed', async () => {
    r.show(frame('d1', { kind: 'tooltip', anchor: '#late', body: 'x' }), ctx().c);
    r.remove('d1');
    await new Promise((res) => setTimeout(res, 150));
    expect(document.querySelector('[data-beckon]')).toBeNull();
  });
});

describe('impressions', () => {
  it('waits until the page is visible', async () => {
    const state = vi.spyOn(document, 'visibilityState', 'get').mockReturnValue('hidden');
    const { c, calls } = ctx();
    r.show(frame('d1', { kind: 'banner', body: 'x' }), c);
    await flush();
    expect(calls).toEqual([]);
    state.mockReturnValue('visible');
    document.dispatchEvent(new Event('visibilitychange'));
    expect(calls).toEqual(['impression']);
    state.mockRestore();
  });
});
