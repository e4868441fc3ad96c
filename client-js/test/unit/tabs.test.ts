import { afterEach, describe, expect, it } from 'vitest';
import { TabGuard } from '../../src/tabs';

// Node has BroadcastChannel: two guards in one process behave like two tabs.
const guards: TabGuard[] = [];
const tab = () => {
  const g = new TabGuard('beckon-test-' + name, 40);
  guards.push(g);
  return g;
};
let name = '';
afterEach(() => {
  guards.splice(0).forEach((g) => g.close());
});

describe('TabGuard', () => {
  it('lets exactly one of two simultaneous claimants show a delivery', async () => {
    name = 'sim';
    const a = tab();
    const b = tab();
    const wins = await Promise.all([a.claim('d1'), b.claim('d1')]);
    expect(wins.filter(Boolean)).toHaveLength(1);
  });

  it('a later claim loses to the tab that shows it', async () => {
    name = 'later';
    const a = tab();
    const b = tab();
    expect(await a.claim('d1')).toBe(true);
    expect(await b.claim('d1')).toBe(false);
    expect(await a.claim('d1')).toBe(true); // still ours
  });

  it('different deliveries do not interfere', async () => {
    name = 'diff';
    const a = tab();
    const b = tab();
    expect(await Promise.all([a.claim('x'), b.claim('y')])).toEqual([true, true]);
  });
});
