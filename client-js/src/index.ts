/**
 * Public entry of `@beckon/client`. The IIFE bundle exposes these as the
 * global `Beckon` (`Beckon.init({...})`).
 */

export { init, BeckonClient, SDK } from './client.js';
export type { BeckonOptions, BeckonError, ClientEvents, ConnectionState, StateChange, WebSocketCtor, WebSocketLike } from './client.js';
export type { AutoCaptureOptions } from './capture.js';
export type { StorageLike } from './outbox.js';
export type { MessageButton, MessageContent, MessageFrame, Props } from './protocol.js';
export type { MessageContext, Renderer } from './render/types.js';
export { createRenderer, type DomRendererOptions } from './render/dom.js';
export { safeUrl } from './render/sanitize.js';
export { CloseCode, closePolicy } from './codes.js';
export { backoffDelay } from './backoff.js';
