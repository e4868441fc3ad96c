import { describe, expect, it } from 'vitest';
import { CloseCode, closePolicy, isRetryableError } from '../../src/codes';

describe('closePolicy', () => {
  it.each([
    [CloseCode.Protocol, true, 'reconnect', 'normal'],
    [CloseCode.Unauthorized, true, 'refresh', 'normal'],
    [CloseCode.Unauthorized, false, 'stop', 'normal'],
    [CloseCode.TokenExpired, true, 'refresh', 'prompt'],
    [CloseCode.TokenExpired, false, 'stop', 'normal'],
    [CloseCode.RateLimited, true, 'reconnect', 'long'],
    [CloseCode.TooManySessions, true, 'reconnect', 'longest'],
    [CloseCode.SlowConsumer, true, 'reconnect', 'normal'],
    [CloseCode.GoingAway, true, 'reconnect', 'prompt'],
    [CloseCode.TooBig, true, 'reconnect', 'normal'],
    [1006, true, 'reconnect', 'normal'],
    [1011, false, 'reconnect', 'normal'],
  ])('code %i (getToken: %s) → %s at %s pace', (code, canRefresh, action, pace) => {
    const p = closePolicy(code, canRefresh);
    expect(p.action).toBe(action);
    expect(p.pace).toBe(pace);
  });

  it('only 1000 (session resumed on another connection) starts a new session', () => {
    expect(closePolicy(1000, true)).toEqual({ action: 'reconnect', pace: 'normal', newSession: true });
    for (const c of [1001, 1006, 1009, 4000, 4001, 4002, 4008, 4009, 4010]) expect(closePolicy(c, true).newSession).toBeFalsy();
  });

  it('only 1009 drops a frame', () => {
    expect(closePolicy(1009, true).dropLargest).toBe(true);
    for (const c of [1001, 4000, 4001, 4002, 4008, 4009, 4010]) expect(closePolicy(c, true).dropLargest).toBeFalsy();
  });
});

describe('isRetryableError', () => {
  it('keeps rate_limited and unavailable, drops the rest', () => {
    expect(isRetryableError('rate_limited')).toBe(true);
    expect(isRetryableError('unavailable')).toBe(true);
    for (const c of ['invalid_json', 'unknown_type', 'invalid_frame', 'too_large', 'forbidden_attribute', 'unknown_delivery']) {
      expect(isRetryableError(c)).toBe(false);
    }
  });
});
