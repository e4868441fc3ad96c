/**
 * Cross-tab guard: a delivery is shown in one tab only. Before showing, a tab
 * broadcasts a claim for the delivery id and waits briefly; a tab that already
 * holds the id (or is claiming it and has the lower tab id) objects, and the
 * claimant stands down. Without BroadcastChannel every claim succeeds.
 */

import { LruSet } from './inbox.js';
import { newId } from './protocol.js';

type Msg = { c: string; t: string } | { x: string };

/** Claims delivery ids across the tabs of one origin. */
export class TabGuard {
  private readonly tab = newId();
  private readonly mine = new LruSet(200);
  private readonly claiming = new Map<string, { lost: boolean }>();
  private readonly ch: BroadcastChannel | undefined;

  constructor(
    name: string,
    private readonly waitMs = 60,
  ) {
    try {
      this.ch = new BroadcastChannel(name);
      this.ch.onmessage = (e: MessageEvent<Msg>) => this.onMessage(e.data);
    } catch {
      this.ch = undefined;
    }
  }

  /** Resolve true when this tab may show `delivery`. */
  claim(delivery: string): Promise<boolean> {
    if (this.mine.has(delivery)) return Promise.resolve(true);
    if (!this.ch) {
      this.mine.add(delivery);
      return Promise.resolve(true);
    }
    const state = { lost: false };
    this.claiming.set(delivery, state);
    this.post({ c: delivery, t: this.tab });
    return new Promise((resolve) =>
      setTimeout(() => {
        this.claiming.delete(delivery);
        if (!state.lost) this.mine.add(delivery);
        resolve(!state.lost);
      }, this.waitMs),
    );
  }

  close(): void {
    this.ch?.close();
  }

  private onMessage(m: Msg): void {
    if (!m) return;
    if ('x' in m) {
      const s = this.claiming.get(m.x);
      if (s) s.lost = true;
      return;
    }
    const pending = this.claiming.get(m.c);
    if (this.mine.has(m.c) || (pending && !pending.lost && this.tab < m.t)) this.post({ x: m.c });
    else if (pending) pending.lost = true;
  }

  private post(m: Msg): void {
    try {
      this.ch!.postMessage(m);
    } catch {
      /* closed channel: nothing to guard */
    }
  }
}
