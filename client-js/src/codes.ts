/**
 * Close and error codes of the Beckon wire protocol (contract §2), and the one
 * place that decides what the SDK does about each. Mirrors the gateway's codes;
 * nothing else in the SDK switches on a numeric close code.
 *
 * Pure: no timers, no sockets. The connection loop asks `closePolicy(code)` and
 * acts on the answer.
 */

/** WebSocket close codes the gateway uses (4010 is a server extension). */
export const CloseCode = {
  Normal: 1000,
  GoingAway: 1001,
  TooBig: 1009,
  Protocol: 4000,
  Unauthorized: 4001,
  TokenExpired: 4002,
  RateLimited: 4008,
  TooManySessions: 4009,
  SlowConsumer: 4010,
} as const;

/**
 * How long to wait before the next attempt:
 * - `prompt`: a short random spread (server is draining; spread the herd),
 * - `normal`: exponential backoff with full jitter,
 * - `long`: backoff with a raised floor (the server asked us to slow down),
 * - `longest`: minutes (the user has too many sessions open).
 */
export type Pace = 'prompt' | 'normal' | 'long' | 'longest';

/** What to do after the socket closed with a given code. */
export interface ClosePolicy {
  /** `reconnect`: try again; `refresh`: get a new token, then reconnect; `stop`: give up. */
  action: 'reconnect' | 'refresh' | 'stop';
  pace: Pace;
  /** Drop the in-flight frame that most likely made the server close (1009). */
  dropLargest?: boolean;
  /** Forget the session: the next hello starts a new one instead of resuming (1000). */
  newSession?: boolean;
}

/** The decision table for every close code of the contract. */
export function closePolicy(code: number, canRefresh: boolean): ClosePolicy {
  switch (code) {
    case CloseCode.Normal:
      // The gateway closes 1000 when another connection resumed this session (a
      // duplicated tab copies sessionStorage). Resuming it back would take it over
      // in turn, forever: start a session of our own instead.
      return { action: 'reconnect', pace: 'normal', newSession: true };
    case CloseCode.GoingAway:
      return { action: 'reconnect', pace: 'prompt' };
    case CloseCode.TooBig:
      return { action: 'reconnect', pace: 'normal', dropLargest: true };
    case CloseCode.Unauthorized:
      // The token is wrong, not just old: only a fresh one from the app can help.
      return canRefresh ? { action: 'refresh', pace: 'normal' } : { action: 'stop', pace: 'normal' };
    case CloseCode.TokenExpired:
      return canRefresh ? { action: 'refresh', pace: 'prompt' } : { action: 'stop', pace: 'normal' };
    case CloseCode.RateLimited:
      return { action: 'reconnect', pace: 'long' };
    case CloseCode.TooManySessions:
      // Other tabs may close; retry rarely rather than never.
      return { action: 'reconnect', pace: 'longest' };
    case CloseCode.SlowConsumer:
    case CloseCode.Protocol:
    default:
      // 4000, 4010, 1006 (network), 1011, anything unknown: back off and resume.
      return { action: 'reconnect', pace: 'normal' };
  }
}

/** Server error codes (contract §2), plus `unavailable` for a node that cannot make events durable. */
export type ServerErrorCode =
  | 'invalid_json'
  | 'unknown_type'
  | 'invalid_frame'
  | 'too_large'
  | 'rate_limited'
  | 'forbidden_attribute'
  | 'unknown_delivery'
  | 'unavailable';

/**
 * Whether an `error` naming one of our buffered ids means "try again later"
 * (keep it for resend) rather than "this frame will never be accepted" (drop it).
 */
export function isRetryableError(code: string): boolean {
  return code === 'rate_limited' || code === 'unavailable';
}
