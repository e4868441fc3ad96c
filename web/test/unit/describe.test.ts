import { describe, expect, it } from 'vitest';
import { describeCondition, describeTrigger, messageKinds } from '../../src/shared/describe';

describe('describeTrigger', () => {
  it('covers the trigger kinds', () => {
    expect(describeTrigger({ type: 'event', event: 'clicked_upgrade' })).toBe('event clicked_upgrade');
    expect(describeTrigger({ type: 'inactivity', duration: '30s', page: '/demo/setup*' })).toBe('inactive 30s on /demo/setup*');
    expect(describeTrigger({ type: 'session_duration', duration: '2m' })).toBe('session open 2m');
    expect(describeTrigger({ type: 'segment_entry', segment: 'pro' })).toBe('enters segment pro');
    expect(describeTrigger({ type: 'goal', event: 'export_completed', count: 1 })).toBe('first export_completed');
    expect(describeTrigger({ type: 'goal', event: 'export_completed', count: 3 })).toBe('export_completed reaches 3');
    expect(describeTrigger(undefined)).toBe('no trigger');
  });
});

describe('describeCondition', () => {
  it('reads like the contract example', () => {
    expect(describeCondition({ all: [
      { attr: 'plan', op: 'eq', value: 'professional' },
      { since: 'signed_up_at', op: 'gte', value: '5d' },
      { event: 'integration_connected', count: { op: 'eq', value: 0 } },
    ] })).toBe('plan = professional and time since signed_up_at ≥ 5d and count(integration_connected) = 0');
    expect(describeCondition({ any: [{ attr: 'x', op: 'exists' }, { not: { campaign: 'c', did: 'dismiss', count: { op: 'gte', value: 2 } } }] }))
      .toBe('x exists or not dismiss(c) ≥ 2');
    expect(describeCondition({ event: 'login', last_seen: { op: 'gte', value: '14d' } })).toBe('time since last login ≥ 14d');
    expect(describeCondition({ event: 'feature_used', where: { prop: 'feature', op: 'eq', value: 'reporting' }, within: '30d' })).toBe('did feature_used [prop feature = reporting] within 30d');
  });
});

it('lists message kinds without the control', () => {
  expect(messageKinds({ id: 'c', variants: [{ id: 'a', message: { kind: 'modal' } }, { id: 'b', message: { kind: 'banner' } }, { id: 'k', control: true }] })).toBe('modal / banner');
});
