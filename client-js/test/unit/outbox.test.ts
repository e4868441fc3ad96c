import { describe, expect, it } from 'vitest';
import { Outbox } from '../../src/outbox';
import type { EventFrame } from '../../src/protocol';
import { MemoryStorage } from './fake-ws';

const track = (id: string, event = 'e', properties = {}): EventFrame => ({ type: 'track', id, event, properties });

describe('Outbox', () => {
  it('keeps frames until removed, in order', () => {
    const o = new Outbox(undefined, 'k', 10);
    o.add(track('a'));
    o.add(track('b'));
    o.add(track('c'));
    o.remove(['b']);
    expect(o.pending(10).map((f) => f.id)).toEqual(['a', 'c']);
    expect(o.size).toBe(2);
  });

  it('is bounded: the oldest frame is evicted and returned', () => {
    const o = new Outbox(undefined, 'k', 2);
    expect(o.add(track('a'))).toBeUndefined();
    o.add(track('b'));
    expect(o.add(track('c'))?.id).toBe('a');
    expect(o.pending(10).map((f) => f.id)).toEqual(['b', 'c']);
  });

  it('tracks what was sent on this connection', () => {
    const o = new Outbox(undefined, 'k', 10);
    o.add(track('a'));
    o.add(track('b'));
    o.markSent(['a']);
    expect(o.pending(10).map((f) => f.id)).toEqual(['b']);
    o.unsend();
    expect(o.pending(1).map((f) => f.id)).toEqual(['a']);
    o.markSent(['a', 'b']);
    o.unsend('b');
    expect(o.pending(10).map((f) => f.id)).toEqual(['b']);
  });

  it('finds the largest in-flight frame', () => {
    const o = new Outbox(undefined, 'k', 10);
    o.add(track('small'));
    o.add(track('big', 'e', { blob: 'x'.repeat(1000) }));
    o.add(track('unsent', 'e', { blob: 'x'.repeat(5000) }));
    o.markSent(['small', 'big']);
    expect(o.largestSent()).toBe('big');
  });

  it('mirrors into storage and restores on a new page load', () => {
    const storage = new MemoryStorage();
    const o = new Outbox(storage, 'beckon.q', 10);
    o.add(track('a'));
    o.add(track('b'));
    o.setUser('u1');
    o.remove(['a']);
    const reloaded = new Outbox(storage, 'beckon.q', 10);
    expect(reloaded.pending(10)).toEqual([track('b')]);
    expect(reloaded.user).toBe('u1');
  });

  it('clears storage when empty and no user is known', () => {
    const storage = new MemoryStorage();
    const o = new Outbox(storage, 'k', 10);
    o.add(track('a'));
    o.remove(['a']);
    expect(storage.getItem('k')).toBeNull();
  });

  it('drops restored frames that belong to another user', () => {
    const storage = new MemoryStorage();
    const first = new Outbox(storage, 'k', 10);
    first.setUser('u1');
    first.add(track('old'));
    const next = new Outbox(storage, 'k', 10);
    next.add(track('new')); // made on this page: belongs to whoever connects
    expect(next.setUser('u2').map((f) => f.id)).toEqual(['old']);
    expect(next.pending(10).map((f) => f.id)).toEqual(['new']);
  });

  it('keeps restored frames for the same user', () => {
    const storage = new MemoryStorage();
    const first = new Outbox(storage, 'k', 10);
    first.setUser('u1');
    first.add(track('old'));
    const next = new Outbox(storage, 'k', 10);
    expect(next.setUser('u1')).toEqual([]);
    expect(next.size).toBe(1);
  });

  it('survives broken or throwing storage', () => {
    const storage = new MemoryStorage();
    storage.setItem('k', '{not json');
    const o = new Outbox(storage, 'k', 10);
    expect(o.size).toBe(0);
    const throwing = {
      getItem: () => {
        throw new Error('denied');
      },
      setItem: () => {
        throw new Error('quota');
      },
      removeItem: () => {},
    };
    const t = new Outbox(throwing, 'k', 10);
    t.add(track('a'));
    expect(t.size).toBe(1);
  });
});
