/**
 * Wire frames of `GET /v1/ws` (contract §2) as types, and the pure functions
 * that read them. No sockets, no timers, no DOM.
 */

/** JSON-safe property bag. */
export type Props = Record<string, unknown>;

/** A button of a message. `url` navigates; `action: "dismiss"` closes as a dismissal. */
export interface MessageButton {
  id: string;
  label: string;
  url?: string;
  action?: 'dismiss' | string;
}

/** The `message` object of a delivery (contract §5, message kinds). */
export interface MessageContent {
  kind: 'modal' | 'banner' | 'tooltip' | 'slideout' | 'custom' | string;
  title?: string;
  body?: string;
  image_url?: string;
  buttons?: MessageButton[];
  /** banner: `top` (default) or `bottom`. */
  position?: 'top' | 'bottom';
  /** tooltip: CSS selector of the element to point at. */
  anchor?: string;
  /** tooltip: side of the anchor, default `bottom`. */
  placement?: 'top' | 'bottom' | 'left' | 'right';
  /** custom: free data for the app's own renderer. */
  data?: unknown;
}

/** Server → client `message` frame. */
export interface MessageFrame {
  type: 'message';
  seq: number;
  delivery: string;
  campaign: string;
  variant: string;
  message: MessageContent;
  expires_at?: string;
}

/** Server → client `welcome` frame. */
export interface WelcomeFrame {
  type: 'welcome';
  session: string;
  user: string;
  resumed: boolean;
  heartbeat_ms?: number;
  server_time?: string;
}

/** Server → client `error` frame. */
export interface ErrorFrame {
  type: 'error';
  code: string;
  message?: string;
  id?: string;
}

/** Every frame the server sends. Unknown types are ignored (forward compatibility). */
export type ServerFrame =
  | WelcomeFrame
  | MessageFrame
  | ErrorFrame
  | { type: 'ok'; ids: string[] }
  | { type: 'revoke'; delivery: string };

/** Client → server frames that carry an `id` and wait for `ok`. */
export type EventFrame =
  | { type: 'track'; id: string; event: string; properties: Props }
  | { type: 'page'; id: string; path: string; title: string; referrer?: string }
  | { type: 'identify'; id: string; attributes: Props }
  | { type: 'engage'; id: string; delivery: string; action: 'impression' | 'click' | 'dismiss'; button?: string };

/**
 * Parse one text frame into server frames (a frame may be a JSON array: a batch).
 * Returns `null` for anything that is not JSON objects with a string `type`;
 * unknown `type`s pass through for the caller to ignore.
 */
export function decodeFrames(text: string): ServerFrame[] | null {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return null;
  }
  const list = Array.isArray(v) ? v : [v];
  for (const f of list) {
    if (!f || typeof f !== 'object' || typeof (f as { type?: unknown }).type !== 'string') return null;
  }
  return list as ServerFrame[];
}

/**
 * Expiry (`exp`, seconds since epoch) of a JWT, or `undefined` when it has none
 * or cannot be read. The signature is not checked: the server does that.
 */
export function tokenExpiry(token: string): number | undefined {
  try {
    const part = token.split('.')[1]!.replace(/-/g, '+').replace(/_/g, '/');
    const exp = JSON.parse(atob(part + '==='.slice((part.length + 3) % 4))).exp;
    return typeof exp === 'number' ? exp : undefined;
  } catch {
    return undefined;
  }
}

/**
 * A client frame id: unique within the user's frames across tabs and reloads
 * (time prefix + 64 random bits), so resends after reconnect dedup server-side.
 */
export function newId(): string {
  const c = globalThis.crypto;
  let r = '';
  if (c && c.getRandomValues) {
    for (const n of c.getRandomValues(new Uint32Array(2))) r += n.toString(36);
  } else {
    r = Math.random().toString(36).slice(2) + Math.random().toString(36).slice(2);
  }
  return Date.now().toString(36) + r;
}

/**
 * The WebSocket URL for a gateway address: `https://host` → `wss://host/v1/ws`;
 * a `ws(s)://` URL or one with a path is used as given (scheme mapped).
 */
export function wsUrl(url: string): string {
  const u = url.replace(/^http/, 'ws');
  return /^wss?:\/\/[^/]+\/?$/.test(u) ? u.replace(/\/?$/, '/v1/ws') : u;
}
