import { describe, expect, it } from 'vitest';
import { ago, bestLift, buckets, eventRate, funnel, liftText, pct, seriesColumns, significance, totals, type Stats, type VariantStats } from '../../src/dashboard/stats';

const v = (o: Partial<VariantStats>): VariantStats => ({ variant: 'a', control: false, delivered: 0, impressions: 0, clicks: 0, dismissals: 0, conversions: 0,
  click_through_rate: null, dismissal_rate: null, conversion_rate: null, lift: null, lift_ci95: null, ...o });

describe('totals and rates', () => {
  it('sums treatment variants only and divides by impressions', () => {
    const t = totals([v({ delivered: 10, impressions: 8, clicks: 2, dismissals: 4, conversions: 1 }), v({ variant: 'b', delivered: 5, impressions: 2, clicks: 1 }), v({ variant: 'c', control: true, delivered: 99 })]);
    expect(t).toMatchObject({ delivered: 15, impressions: 10, clicks: 3, dismissals: 4, conversions: 1, click_through_rate: 0.3, dismissal_rate: 0.4, conversion_rate: 0.1 });
  });
  it('has no rate without impressions', () => {
    expect(totals([]).click_through_rate).toBeNull();
    expect(pct(null)).toBe('—');
  });
  it('formats percentages, lifts and their intervals', () => {
    expect(pct(0.1234)).toBe('12.3%');
    expect(pct(0.004)).toBe('0.40%');
    expect(liftText(0.12, [-0.031, 0.274])).toBe('+12.0% [−3.1%, +27.4%]');
    expect(liftText(null, null)).toBe('—');
    expect(significance([0.01, 0.2])).toBe('up');
    expect(significance([-0.2, -0.01])).toBe('down');
    expect(significance([-0.1, 0.2])).toBeNull();
  });
  it('picks the best lift', () => {
    expect(bestLift([v({ variant: 'a', lift: 0.1 }), v({ variant: 'b', lift: 0.3 }), v({ variant: 'c', lift: null })])?.variant).toBe('b');
    expect(bestLift([v({})])).toBeNull();
  });
  it('builds a funnel with step ratios', () => {
    const f = funnel({ delivered: 10, impressions: 8, clicks: 2, conversions: 1 });
    expect(f.map((s) => s.n)).toEqual([10, 8, 2, 1]);
    expect(f[1].ofPrev).toBe(0.8);
    expect(f[3].ofFirst).toBe(0.1);
    expect(funnel({ delivered: 0, impressions: 0, clicks: 0, conversions: 0 })[1].ofPrev).toBeNull();
  });
});

describe('event rate', () => {
  it('is the delta of events_total over the window', () => {
    expect(eventRate([{ t: 0, total: 100 }])).toBeNull();
    expect(eventRate([{ t: 0, total: 100 }, { t: 2000, total: 120 }])).toBe(10);
    // Only samples within 10 s of the newest count.
    expect(eventRate([{ t: 0, total: 0 }, { t: 20_000, total: 1000 }, { t: 22_000, total: 1010 }, { t: 24_000, total: 1030 }])).toBe(7.5);
  });
  it('never goes negative when the gateway restarts', () => {
    expect(eventRate([{ t: 0, total: 500 }, { t: 2000, total: 3 }])).toBe(0);
  });
});

describe('time buckets', () => {
  it('covers the range by hour or day, aligned to UTC', () => {
    expect(buckets('2026-11-01T00:30:00Z', '2026-11-01T03:00:00Z', 'hour').map((t) => new Date(t).toISOString())).toEqual([
      '2026-11-01T00:00:00.000Z', '2026-11-01T01:00:00.000Z', '2026-11-01T02:00:00.000Z']);
    expect(buckets('2026-11-01T00:00:00Z', '2026-11-08T00:00:00Z', 'day')).toHaveLength(7);
  });
  it('sums series points per bucket, for one variant or all', () => {
    const s: Stats = { campaign: 'c', from: '2026-11-01T00:00:00Z', to: '2026-11-03T00:00:00Z', interval: 'day', variants: [], series: [
      { start: '2026-11-01T00:00:00Z', variant: 'a', delivered: 3, impressions: 2, clicks: 1, dismissals: 0, conversions: 0 },
      { start: '2026-11-01T00:00:00Z', variant: 'b', delivered: 1, impressions: 1, clicks: 0, dismissals: 1, conversions: 0 },
      { start: '2026-11-02T00:00:00Z', variant: 'a', delivered: 5, impressions: 5, clicks: 2, dismissals: 0, conversions: 1 }] };
    const all = seriesColumns(s, ['delivered', 'clicks'], null);
    expect(all.x).toEqual([Date.parse('2026-11-01T00:00:00Z') / 1000, Date.parse('2026-11-02T00:00:00Z') / 1000]);
    expect(all.ys).toEqual([[4, 5], [1, 2]]);
    expect(seriesColumns(s, ['delivered'], 'b').ys).toEqual([[1, 0]]);
  });
  it('says how long ago', () => {
    expect(ago('2026-11-01T00:00:00Z', Date.parse('2026-11-01T00:00:30Z'))).toBe('30s ago');
    expect(ago('2026-11-01T02:00:00Z', Date.parse('2026-11-01T00:00:00Z'))).toBe('in 2h');
    expect(ago(null)).toBe('—');
  });
});
