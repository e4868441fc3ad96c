/**
 * The receiving side of deliveries: which `seq` to acknowledge, and which
 * `delivery` ids were already handled (the gateway delivers at least once).
 * Pure data structures; the client owns the timers and the socket.
 */

/**
 * Tracks the highest contiguous `seq` received in a session. Seqs above a
 * gap are held until the gap fills; `skipGap()` gives up on a gap (the server
 * may skip a seq whose delivery expired or was revoked before a resend).
 */
export class SeqTracker {
  /** Highest seq such that every seq in 1..=last was received (or skipped). */
  last = 0;
  private above = new Set<number>();

  /** Record a received seq. Returns true when `last` advanced. */
  receive(seq: number): boolean {
    if (!Number.isInteger(seq) || seq <= this.last) return false;
    this.above.add(seq);
    const before = this.last;
    while (this.above.delete(this.last + 1)) this.last++;
    return this.last !== before;
  }

  /** Whether seqs are held above a gap. */
  get hasGap(): boolean {
    return this.above.size > 0;
  }

  /** Treat the lowest gap as skipped and advance over the held seqs after it. */
  skipGap(): boolean {
    if (!this.above.size) return false;
    this.last = Math.min(...this.above) - 1;
    return this.receive(this.last + 1);
  }

  /** Start over (a new, not resumed, session). */
  reset(last = 0): void {
    this.last = last;
    this.above.clear();
  }
}

/** A bounded set of strings that forgets the oldest entry first. */
export class LruSet {
  private items = new Map<string, true>();

  constructor(
    private readonly max: number,
    initial: readonly string[] = [],
  ) {
    for (const k of initial) this.add(k);
  }

  has(key: string): boolean {
    return this.items.has(key);
  }

  /** Add (or refresh) a key. Returns false if it was already present. */
  add(key: string): boolean {
    const had = this.items.delete(key);
    this.items.set(key, true);
    if (this.items.size > this.max) this.items.delete(this.items.keys().next().value as string);
    return !had;
  }

  /** Oldest first. */
  toArray(): string[] {
    return [...this.items.keys()];
  }
}
