// Pure helpers for the dashboard: rates, totals, the event-rate meter, time buckets.
// Unit-tested in test/unit/stats.test.ts.

export interface UniqueUsers { delivered?: number; impressions?: number; clicks?: number; dismissals?: number; conversions?: number }
export interface VariantStats {
  variant: string;
  control: boolean;
  delivered: number;
  impressions: number;
  clicks: number;
  clicks_by_button?: Record<string, number>;
  dismissals: number;
  conversions: number;
  unique_users?: UniqueUsers;
  click_through_rate: number | null;
  dismissal_rate: number | null;
  conversion_rate: number | null;
  lift: number | null;
  lift_ci95: [number, number] | null;
}
export interface SeriesPoint {
  start: string; variant: string;
  delivered: number; impressions: number; clicks: number; dismissals: number; conversions: number;
  control_exposures?: number; control_conversions?: number;
}
export interface Stats {
  campaign: string; from: string; to: string; interval: 'hour' | 'day';
  variants: VariantStats[];
  control?: { exposures: number; conversions: number; unique_users?: { exposures?: number; conversions?: number }; conversion_rate: number | null } | null;
  series: SeriesPoint[];
}

export const COUNTS = ['delivered', 'impressions', 'clicks', 'dismissals', 'conversions'] as const;
export type Count = (typeof COUNTS)[number];

export const ratio = (n: number, d: number): number | null => (d > 0 ? n / d : null);

/** Sums of the treatment variants (control rows excluded), with the rates computed like the API's. */
export function totals(variants: VariantStats[] | undefined) {
  const t = { delivered: 0, impressions: 0, clicks: 0, dismissals: 0, conversions: 0 };
  for (const v of variants ?? []) {
    if (v.control) continue;
    for (const k of COUNTS) t[k] += Number(v[k]) || 0;
  }
  return {
    ...t,
    click_through_rate: ratio(t.clicks, t.impressions),
    dismissal_rate: ratio(t.dismissals, t.impressions),
    conversion_rate: ratio(t.conversions, t.impressions),
  };
}

/** The variant with the highest lift that has one, for the campaigns table. */
export function bestLift(variants: VariantStats[] | undefined): VariantStats | null {
  let best: VariantStats | null = null;
  for (const v of variants ?? []) if (!v.control && v.lift != null && (best == null || v.lift > (best.lift as number))) best = v;
  return best;
}

export function pct(x: number | null | undefined, digits = 1): string {
  if (x == null || !Number.isFinite(x)) return '—';
  const p = x * 100;
  return `${p.toFixed(Math.abs(p) > 0 && Math.abs(p) < 1 && digits < 2 ? 2 : digits)}%`;
}
export function signedPct(x: number | null | undefined, digits = 1): string {
  if (x == null || !Number.isFinite(x)) return '—';
  return `${x > 0 ? '+' : x < 0 ? '−' : '±'}${Math.abs(x * 100).toFixed(digits)}%`;
}
export function num(n: number | null | undefined): string {
  if (n == null || !Number.isFinite(n)) return '—';
  return n.toLocaleString('en-US');
}
/** "+12.0% [−3.1%, +27.4%]" */
export function liftText(lift: number | null, ci: [number, number] | null): string {
  if (lift == null) return '—';
  return ci ? `${signedPct(lift)} [${signedPct(ci[0])}, ${signedPct(ci[1])}]` : signedPct(lift);
}
/** Whether the 95% interval excludes zero: "up", "down", or null (not significant / unknown). */
export function significance(ci: [number, number] | null): 'up' | 'down' | null {
  if (!ci) return null;
  if (ci[0] > 0) return 'up';
  if (ci[1] < 0) return 'down';
  return null;
}

/** Event rate from overview samples: (Δ events_total) / (Δ seconds) over the samples within `windowMs` of the newest. */
export function eventRate(samples: Array<{ t: number; total: number }>, windowMs = 10_000): number | null {
  if (samples.length < 2) return null;
  const last = samples[samples.length - 1];
  let first = samples[samples.length - 2];
  for (let i = samples.length - 2; i >= 0; i--) {
    if (last.t - samples[i].t > windowMs) break;
    first = samples[i];
  }
  const dt = (last.t - first.t) / 1000;
  if (dt <= 0) return null;
  return Math.max(0, (last.total - first.total) / dt); // a restart resets the counter: never negative
}

const STEP = { hour: 3_600_000, day: 86_400_000 };
/** Bucket starts (ms) covering [from, to), aligned to UTC hours or days, plus any start the series names. */
export function buckets(from: string, to: string, interval: 'hour' | 'day', series: SeriesPoint[] = []): number[] {
  const step = STEP[interval] ?? STEP.day;
  const a = Date.parse(from), b = Date.parse(to);
  const set = new Set<number>();
  if (Number.isFinite(a) && Number.isFinite(b) && b > a && (b - a) / step <= 2000) {
    for (let t = Math.floor(a / step) * step; t < b; t += step) set.add(t);
  }
  for (const p of series) {
    const t = Date.parse(p.start);
    if (Number.isFinite(t)) set.add(t);
  }
  return [...set].sort((x, y) => x - y);
}

/** Columns for a time-series chart: x in seconds, then one array per count (summed over the chosen variants). */
export function seriesColumns(stats: Stats, keys: readonly string[], variant: string | null): { x: number[]; ys: number[][] } {
  const xs = buckets(stats.from, stats.to, stats.interval, stats.series);
  const idx = new Map(xs.map((t, i) => [t, i]));
  const ys = keys.map(() => xs.map(() => 0));
  for (const p of stats.series ?? []) {
    if (variant && p.variant !== variant) continue;
    const i = idx.get(Date.parse(p.start));
    if (i === undefined) continue;
    keys.forEach((k, j) => (ys[j][i] += Number((p as unknown as Record<string, number>)[k]) || 0));
  }
  return { x: xs.map((t) => t / 1000), ys };
}

/** Funnel steps with the share of the first step and of the previous one. */
export function funnel(t: { delivered: number; impressions: number; clicks: number; conversions: number }) {
  const steps: Array<[string, number]> = [['Delivered', t.delivered], ['Impressions', t.impressions], ['Clicks', t.clicks], ['Conversions', t.conversions]];
  return steps.map(([label, n], i) => ({
    label, n,
    ofFirst: ratio(n, steps[0][1]),
    ofPrev: i === 0 ? null : ratio(n, steps[i - 1][1]),
  }));
}

export function ago(iso: string | null | undefined, now = Date.now()): string {
  if (!iso) return '—';
  const t = Date.parse(iso);
  if (!Number.isFinite(t)) return iso;
  const s = Math.round((now - t) / 1000);
  const abs = Math.abs(s);
  const f = abs < 60 ? `${abs}s` : abs < 3600 ? `${Math.round(abs / 60)}m` : abs < 86400 ? `${Math.round(abs / 3600)}h` : `${Math.round(abs / 86400)}d`;
  return s >= 0 ? `${f} ago` : `in ${f}`;
}
