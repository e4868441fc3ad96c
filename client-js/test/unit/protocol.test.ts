import { describe, expect, it } from 'vitest';
import { decodeFrames, newId, tokenExpiry, wsUrl } from '../../src/protocol';
import { fakeToken } from './fake-ws';

describe('decodeFrames', () => {
  it('reads one frame or a batch', () => {
    expect(decodeFrames('{"type":"ok","ids":["a"]}')).toEqual([{ type: 'ok', ids: ['a'] }]);
    expect(decodeFrames('[{"type":"ok","ids":[]},{"type":"revoke","delivery":"d"}]')).toHaveLength(2);
  });
  it('refuses non-JSON and objects without a type', () => {
    expect(decodeFrames('nope')).toBeNull();
    expect(decodeFrames('{"x":1}')).toBeNull();
    expect(decodeFrames('[1]')).toBeNull();
    expect(decodeFrames('null')).toBeNull();
  });
  it('passes unknown types through', () => {
    expect(decodeFrames('{"type":"future"}')).toEqual([{ type: 'future' }]);
  });
});

describe('tokenExpiry', () => {
  it('reads exp from a JWT payload', () => {
    expect(tokenExpiry(fakeToken('u1', 1_900_000_000))).toBe(1_900_000_000);
  });
  it('is undefined for anything else', () => {
    expect(tokenExpiry('opaque')).toBeUndefined();
    expect(tokenExpiry('a.b.c')).toBeUndefined();
  });
});

describe('wsUrl', () => {
  it('maps an http base to the WebSocket endpoint', () => {
    expect(wsUrl('https://beckon.example.com')).toBe('wss://beckon.example.com/v1/ws');
    expect(wsUrl('http://127.0.0.1:8080/')).toBe('ws://127.0.0.1:8080/v1/ws');
  });
  it('keeps a full URL', () => {
    expect(wsUrl('wss://x.example/v1/ws')).toBe('wss://x.example/v1/ws');
    expect(wsUrl('https://x.example/beckon/v1/ws')).toBe('wss://x.example/beckon/v1/ws');
  });
});

describe('newId', () => {
  it('is unique', () => {
    const ids = new Set(Array.from({ length: 1000 }, newId));
    expect(ids.size).toBe(1000);
  });
});
