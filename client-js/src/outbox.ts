/**
 * The unacknowledged-event buffer: every id-carrying frame (track, page,
 * identify, engage) stays here from creation until the server's `ok` names its
 * id or an `error` rejects it for good. Mirrored into `storage` (sessionStorage
 * by default) on every change, so a page reload loses nothing: the next `init`
 * restores and resends with the same ids, which the server counts once.
 *
 * Owns no socket: the client asks `pending()` for what to send and marks it sent.
 */

import type { EventFrame } from './protocol.js';
import { safe } from './util.js';

/** The subset of the Web Storage API the SDK uses. */
export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

interface Entry {
  frame: EventFrame;
  /** Sent on the current connection and not yet answered. */
  sent: boolean;
  /** Came from storage (an earlier page load, maybe another user). */
  restored?: boolean;
}

/** Persisted shape: the frames plus the user they were recorded for. */
interface Saved {
  u?: string;
  f: EventFrame[];
}

/** Bounded FIFO of unacked event frames. */
export class Outbox {
  private entries = new Map<string, Entry>();
  /** User the buffered events belong to, once a `welcome` told us. */
  user: string | undefined;

  constructor(
    private readonly storage: StorageLike | undefined,
    private readonly key: string,
    private readonly max: number,
  ) {
    const raw = safe(() => storage?.getItem(key));
    if (raw) {
      const saved = safe(() => JSON.parse(raw) as Saved);
      if (saved && Array.isArray(saved.f)) {
        this.user = saved.u;
        for (const frame of saved.f) {
          if (frame && typeof frame.id === 'string') this.entries.set(frame.id, { frame, sent: false, restored: true });
        }
      }
    }
  }

  /** Number of buffered frames. */
  get size(): number {
    return this.entries.size;
  }

  /**
   * Add a frame. Returns the frame evicted to make room (the oldest), if any,
   * so the caller can report the loss.
   */
  add(frame: EventFrame): EventFrame | undefined {
    let evicted: EventFrame | undefined;
    if (this.entries.size >= this.max) {
      const oldest = this.entries.keys().next().value as string;
      evicted = this.entries.get(oldest)!.frame;
      this.entries.delete(oldest);
    }
    this.entries.set(frame.id, { frame, sent: false });
    this.save();
    return evicted;
  }

  /** Forget ids (acknowledged by `ok`, or rejected for good). */
  remove(ids: readonly string[]): void {
    let changed = false;
    for (const id of ids) changed = this.entries.delete(id) || changed;
    if (changed) this.save();
  }

  /** Frames not yet sent on this connection, oldest first, at most `limit`. */
  pending(limit: number): EventFrame[] {
    const out: EventFrame[] = [];
    for (const e of this.entries.values()) {
      if (out.length >= limit) break;
      if (!e.sent) out.push(e.frame);
    }
    return out;
  }

  /** Mark frames as written to the socket. */
  markSent(ids: readonly string[]): void {
    for (const id of ids) {
      const e = this.entries.get(id);
      if (e) e.sent = true;
    }
  }

  /** Mark one frame (or, without an id, all frames) for sending again. */
  unsend(id?: string): void {
    for (const [k, e] of this.entries) if (id === undefined || k === id) e.sent = false;
  }

  /** The largest frame sent on this connection (the likely cause of a 1009 close). */
  largestSent(): string | undefined {
    let best: string | undefined;
    let size = -1;
    for (const [k, e] of this.entries) {
      if (!e.sent) continue;
      const n = JSON.stringify(e.frame).length;
      if (n > size) (size = n), (best = k);
    }
    return best;
  }

  /**
   * The server told us who we are. Frames restored from an earlier page load
   * of a *different* user must not be sent as this one: they are dropped and
   * returned. Frames created on this page are kept (they are this user's).
   */
  setUser(user: string): EventFrame[] {
    const dropped: EventFrame[] = [];
    if (this.user !== undefined && this.user !== user) {
      for (const [k, e] of this.entries) {
        if (e.restored) dropped.push(e.frame), this.entries.delete(k);
      }
    }
    for (const e of this.entries.values()) e.restored = false;
    this.user = user;
    this.save();
    return dropped;
  }

  private save(): void {
    if (!this.storage) return;
    const f = [...this.entries.values()].map((e) => e.frame);
    safe(() =>
      f.length || this.user ? this.storage!.setItem(this.key, JSON.stringify({ u: this.user, f } as Saved)) : this.storage!.removeItem(this.key),
    );
  }
}

