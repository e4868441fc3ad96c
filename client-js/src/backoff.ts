/**
 * Reconnect delays: exponential backoff with full jitter and a cap.
 * Pure: the random source is a parameter so tests are exact.
 */

import type { Pace } from './codes.js';

/** Tunables for {@link backoffDelay}. All in milliseconds. */
export interface BackoffOptions {
  /** First ceiling (attempt 0). Default 500. */
  base?: number;
  /** Largest ceiling. Default 30 000. */
  cap?: number;
}

/**
 * Full-jitter backoff: a uniform draw in `[0, min(cap, base * 2^attempt))`.
 * Full jitter spreads a crowd of clients that lost the same node, unlike
 * "equal" jitter which keeps them bunched at the floor.
 */
export function backoffDelay(attempt: number, opts: BackoffOptions = {}, random: () => number = Math.random): number {
  const base = opts.base ?? 500;
  const cap = opts.cap ?? 30_000;
  const ceiling = Math.min(cap, base * 2 ** Math.min(Math.max(attempt, 0), 30));
  return Math.floor(random() * ceiling);
}

/**
 * The delay for a reconnect at a given pace (see `closePolicy`).
 * `long` and `longest` add a floor so a flood or a session limit is not
 * hammered even on the first retry.
 */
export function paceDelay(pace: Pace, attempt: number, opts: BackoffOptions = {}, random: () => number = Math.random): number {
  switch (pace) {
    case 'prompt':
      return Math.floor(random() * 1000);
    case 'long':
      return 5_000 + backoffDelay(attempt, { base: 5_000, cap: 60_000 }, random);
    case 'longest':
      return 60_000 + backoffDelay(attempt, { base: 60_000, cap: 240_000 }, random);
    default:
      return backoffDelay(attempt, opts, random);
  }
}
