/**
 * Public entry of `@beckon/client`. The IIFE bundle exposes these as the
 * global `Beckon` (`Beckon.init({...})`).
 */

export { init, BeckonClient, SDK } from './client';
export type { BeckonOptions, BeckonError, ClientEvents, ConnectionState, StateChange, WebSocketCtor, WebSocketLike } from './client';
export type { AutoCaptureOptions } from './capture';
export type { StorageLike } from './outbox';
export type { MessageButton, MessageContent, MessageFrame, Props } from './protocol';
export type { MessageContext, Renderer } from './render/types';
export { createRenderer, type DomRendererOptions } from './render/dom';
export { safeUrl } from './render/sanitize';
export { CloseCode, closePolicy } from './codes';
export { backoffDelay } from './backoff';
