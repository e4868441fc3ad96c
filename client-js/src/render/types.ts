/**
 * The renderer contract: what the client hands a renderer, and what a
 * renderer (the built-in one, or an app's own = headless mode) must do.
 */

import type { MessageFrame } from '../protocol.js';

/**
 * Engagement reporting for one delivery. Each call sends an `engage` frame
 * through the reliable event buffer; `impression` is sent at most once per
 * delivery however often it is called. `click` and `dismiss` also close the
 * message in this tab.
 */
export interface MessageContext {
  /** The message is actually visible to the user now. */
  impression(): void;
  /** A button was pressed (its `id`). */
  click(button: string): void;
  /** The user closed the message (close button, Escape, a `dismiss` button). */
  dismiss(): void;
}

/**
 * Displays deliveries. `show` receives every kind, `custom` included; the
 * built-in renderer ignores `custom` (those are for the app, via the
 * `message` event or its own renderer).
 */
export interface Renderer {
  show(frame: MessageFrame, ctx: MessageContext): void;
  /** Take the delivery off screen (revoked, expired, clicked or dismissed). Idempotent. */
  remove(delivery: string): void;
  /** Remove everything and release listeners (on `shutdown`). */
  destroy(): void;
}
