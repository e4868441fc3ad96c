// Plain-language descriptions of campaign definitions, shared by the demo and the dashboard.
// Pure functions: unit-tested in test/unit.

export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
export type Obj = { [k: string]: Json };

export interface Campaign {
  id: string;
  name?: string;
  status?: string;
  trigger?: Obj;
  audience?: Obj;
  variants?: Array<{ id: string; weight?: number; control?: boolean; message?: Obj }>;
  priority?: number;
  goal?: Obj;
  frequency?: Obj;
  [k: string]: unknown;
}

const str = (v: unknown): string => (typeof v === 'string' ? v : v == null ? '' : JSON.stringify(v));

/** "Event clicked_upgrade", "Inactive 30s on /demo/setup*", … */
export function describeTrigger(t: Obj | undefined): string {
  if (!t || typeof t !== 'object') return 'no trigger';
  switch (t.type) {
    case 'event':
      return `event ${str(t.event)}${t.where ? ' (filtered)' : ''}`;
    case 'inactivity':
      return `inactive ${str(t.duration)}${t.page ? ` on ${str(t.page)}` : ''}`;
    case 'session_duration':
      return `session open ${str(t.duration)}`;
    case 'segment_entry':
      return `enters segment ${str(t.segment)}`;
    case 'goal':
      if (t.event) {
        const n = typeof t.count === 'number' ? t.count : 1;
        return n === 1 ? `first ${str(t.event)}` : `${str(t.event)} reaches ${n}`;
      }
      return 'goal conditions first hold';
    default:
      return str(t.type) || 'unknown trigger';
  }
}

/** The message kinds a campaign can show, e.g. "modal" or "banner / modal". */
export function messageKinds(c: Campaign): string {
  const kinds = new Set<string>();
  for (const v of c.variants ?? []) {
    if (v.control) continue;
    const k = v.message && typeof v.message === 'object' ? (v.message as Obj).kind : undefined;
    if (typeof k === 'string') kinds.add(k);
  }
  return [...kinds].join(' / ') || '—';
}

export function hasControl(c: Campaign): boolean {
  return (c.variants ?? []).some((v) => v.control);
}

/** A one-line summary of a condition tree (segments, audiences). */
export function describeCondition(c: Json | undefined, depth = 0): string {
  if (c == null || typeof c !== 'object' || Array.isArray(c)) return str(c);
  const o = c as Obj;
  const wrap = (s: string) => (depth > 0 ? `(${s})` : s);
  if (Array.isArray(o.all)) return wrap(o.all.map((x) => describeCondition(x, depth + 1)).join(' and '));
  if (Array.isArray(o.any)) return wrap(o.any.map((x) => describeCondition(x, depth + 1)).join(' or '));
  if (o.not !== undefined) return `not ${describeCondition(o.not, depth + 1)}`;
  const op = (x: Json | undefined) => OPS[str(x)] ?? str(x);
  const val = (v: Json | undefined) => (v === undefined ? '' : ` ${typeof v === 'string' ? v : JSON.stringify(v)}`);
  if (typeof o.attr === 'string') return `${o.attr} ${op(o.op)}${val(o.value)}`;
  if (typeof o.since === 'string') return `time since ${o.since} ${op(o.op)}${val(o.value)}`;
  if (typeof o.event === 'string') {
    let s = o.event;
    if (o.where) s += ` [${describeCondition(o.where, depth + 1)}]`;
    const m = (o.count ?? o.last_seen) as Obj | undefined;
    if (o.count && typeof o.count === 'object') s = `count(${s}) ${op(m!.op)}${val(m!.value)}`;
    else if (o.last_seen && typeof o.last_seen === 'object') s = `time since last ${s} ${op(m!.op)}${val(m!.value)}`;
    else s = `did ${s}`;
    if (o.within) s += ` within ${str(o.within)}`;
    return s;
  }
  if (typeof o.campaign === 'string') {
    const m = o.count as Obj | undefined;
    return m ? `${o.did ?? '?'}(${o.campaign}) ${op(m.op)}${val(m.value)}` : `${str(o.did)} ${o.campaign}`;
  }
  if (o.page && typeof o.page === 'object') return `page ${op((o.page as Obj).op)}${val((o.page as Obj).value)}`;
  if (typeof o.prop === 'string') return `prop ${o.prop} ${op(o.op)}${val(o.value)}`;
  return JSON.stringify(o);
}

const OPS: Record<string, string> = {
  eq: '=', ne: '≠', lt: '<', lte: '≤', gt: '>', gte: '≥', in: 'in', not_in: 'not in',
  exists: 'exists', not_exists: 'does not exist', contains: 'contains', starts_with: 'starts with',
};
