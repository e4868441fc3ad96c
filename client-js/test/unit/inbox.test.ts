import { describe, expect, it } from 'vitest';
import { LruSet, SeqTracker } from '../../src/inbox';

describe('SeqTracker', () => {
  it('acks the highest contiguous seq', () => {
    const t = new SeqTracker();
    expect(t.receive(1)).toBe(true);
    expect(t.receive(2)).toBe(true);
    expect(t.last).toBe(2);
    expect(t.receive(4)).toBe(false);
    expect(t.last).toBe(2);
    expect(t.hasGap).toBe(true);
    expect(t.receive(3)).toBe(true);
    expect(t.last).toBe(4);
    expect(t.hasGap).toBe(false);
  });

  it('ignores repeats and junk', () => {
    const t = new SeqTracker();
    t.receive(1);
    expect(t.receive(1)).toBe(false);
    expect(t.receive(0)).toBe(false);
    expect(t.receive(1.5)).toBe(false);
    expect(t.last).toBe(1);
  });

  it('skips a gap the server will never fill', () => {
    const t = new SeqTracker();
    t.receive(1);
    t.receive(3);
    t.receive(4);
    t.receive(7);
    expect(t.skipGap()).toBe(true);
    expect(t.last).toBe(4);
    expect(t.skipGap()).toBe(true);
    expect(t.last).toBe(7);
    expect(t.skipGap()).toBe(false);
  });

  it('resets for a new session, or restores a saved position', () => {
    const t = new SeqTracker();
    t.receive(1);
    t.receive(5);
    t.reset();
    expect(t.last).toBe(0);
    expect(t.hasGap).toBe(false);
    t.reset(12);
    expect(t.receive(13)).toBe(true);
  });
});

describe('LruSet', () => {
  it('is bounded and forgets the oldest first', () => {
    const s = new LruSet(3);
    expect(s.add('a')).toBe(true);
    s.add('b');
    s.add('c');
    expect(s.add('a')).toBe(false); // refreshes a
    s.add('d'); // evicts b
    expect(s.has('b')).toBe(false);
    expect(s.toArray()).toEqual(['c', 'a', 'd']);
  });

  it('starts from saved entries', () => {
    const s = new LruSet(2, ['x', 'y', 'z']);
    expect(s.toArray()).toEqual(['y', 'z']);
  });
});
