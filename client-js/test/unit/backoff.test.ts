import { describe, expect, it } from 'vitest';
import { backoffDelay, paceDelay } from '../../src/backoff';

describe('backoffDelay (full jitter)', () => {
  it('draws uniformly below the exponential ceiling', () => {
    expect(backoffDelay(0, {}, () => 0)).toBe(0);
    expect(backoffDelay(0, {}, () => 0.5)).toBe(250);
    expect(backoffDelay(3, {}, () => 0.5)).toBe(2000); // 500 * 2^3 = 4000
    expect(backoffDelay(3, {}, () => 0.999999)).toBe(3999);
  });

  it('is capped', () => {
    expect(backoffDelay(20, {}, () => 0.999999)).toBeLessThan(30_000);
    expect(backoffDelay(1000, { base: 100, cap: 5000 }, () => 0.5)).toBe(2500);
  });

  it('never exceeds the ceiling over many draws', () => {
    for (let attempt = 0; attempt < 12; attempt++) {
      for (let i = 0; i < 50; i++) {
        const d = backoffDelay(attempt, { base: 500, cap: 30_000 });
        expect(d).toBeGreaterThanOrEqual(0);
        expect(d).toBeLessThan(Math.min(30_000, 500 * 2 ** attempt));
      }
    }
  });

  it('treats negative attempts as the first', () => {
    expect(backoffDelay(-5, {}, () => 0.5)).toBe(250);
  });
});

describe('paceDelay', () => {
  it('prompt stays under a second', () => {
    expect(paceDelay('prompt', 9, {}, () => 0.999)).toBeLessThan(1000);
  });
  it('long and longest have floors', () => {
    expect(paceDelay('long', 0, {}, () => 0)).toBe(5000);
    expect(paceDelay('longest', 0, {}, () => 0)).toBe(60_000);
    expect(paceDelay('longest', 10, {}, () => 0.999999)).toBeLessThan(300_000);
  });
  it('normal is plain backoff with the given options', () => {
    expect(paceDelay('normal', 2, { base: 100 }, () => 0.5)).toBe(200);
  });
});
