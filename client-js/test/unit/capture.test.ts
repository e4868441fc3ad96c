// @vitest-environment happy-dom
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { autoCapture, watchActivity } from '../../src/capture';

let calls: [string, unknown?][];
let undo: (() => void) | undefined;
const sink = { page: () => calls.push(['page', location.pathname]), track: (e: string, p?: unknown) => calls.push([e, p]) };

beforeEach(() => {
  calls = [];
  history.replaceState(null, '', '/start');
  document.body.innerHTML = '';
});
afterEach(() => {
  undo?.();
  undo = undefined;
  vi.useRealTimers();
});

describe('page views', () => {
  it('records the initial page and SPA navigations, once per path change', async () => {
    undo = autoCapture({}, sink);
    expect(calls).toEqual([['page', '/start']]);
    history.pushState(null, '', '/setup');
    await new Promise((r) => setTimeout(r));
    history.replaceState({ tab: 2 }, '', '/setup'); // same path: not a new page
    await new Promise((r) => setTimeout(r));
    history.pushState(null, '', '/done');
    await new Promise((r) => setTimeout(r));
    expect(calls).toEqual([
      ['page', '/start'],
      ['page', '/setup'],
      ['page', '/done'],
    ]);
  });

  it('restores history methods on undo', () => {
    const push = history.pushState;
    undo = autoCapture({}, sink);
    expect(history.pushState).not.toBe(push);
    undo();
    undo = undefined;
    expect(history.pushState).toBe(push);
  });

  it('can be turned off', () => {
    undo = autoCapture({ pageViews: false }, sink);
    expect(calls).toEqual([]);
  });
});

describe('forms and feature clicks', () => {
  it('tracks $form_submit with the form id or name', () => {
    undo = autoCapture({ pageViews: false }, sink);
    document.body.innerHTML = '<form id="signup"></form><form name="search"></form>';
    for (const f of document.querySelectorAll('form')) f.dispatchEvent(new Event('submit', { bubbles: true, cancelable: true }));
    expect(calls).toEqual([
      ['$form_submit', { form: 'signup' }],
      ['$form_submit', { form: 'search' }],
    ]);
  });

  it('tracks clicks inside [data-beckon-track] as the named event', () => {
    undo = autoCapture({ pageViews: false }, sink);
    document.body.innerHTML =
      '<div data-beckon-track="export_csv"><span id="inner">Export</span></div><a id="plain">x</a><b id="res" data-beckon-track="$page_view">r</b>';
    (document.getElementById('inner') as HTMLElement).click();
    (document.getElementById('plain') as HTMLElement).click();
    (document.getElementById('res') as HTMLElement).click();
    expect(calls).toEqual([['export_csv', undefined]]);
  });

  it('each capture can be turned off', () => {
    undo = autoCapture({ pageViews: false, forms: false, featureClicks: false }, sink);
    document.body.innerHTML = '<form id="f"></form><i data-beckon-track="x"></i>';
    document.querySelector('form')!.dispatchEvent(new Event('submit', { bubbles: true }));
    (document.querySelector('i') as HTMLElement).click();
    expect(calls).toEqual([]);
  });
});

describe('activity', () => {
  it('is throttled and retried when nothing was sent', () => {
    vi.useFakeTimers();
    let online = false;
    let sent = 0;
    undo = watchActivity(5000, () => online && ++sent > 0);
    window.dispatchEvent(new Event('pointerdown'));
    expect(sent).toBe(0);
    online = true;
    window.dispatchEvent(new Event('keydown'));
    window.dispatchEvent(new Event('scroll'));
    expect(sent).toBe(1);
    vi.advanceTimersByTime(5000);
    document.dispatchEvent(new Event('visibilitychange'));
    expect(sent).toBe(2);
  });
});
