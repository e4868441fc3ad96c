/**
 * URL policy for anything a message makes the browser load or open (button
 * URLs, images): only `http:`, `https:` and relative URLs. Everything else
 * (`javascript:`, `data:`, `vbscript:`, `blob:`, `file:` …) is refused.
 */

const FALLBACK = 'https://relative.invalid/';

/**
 * The resolved URL if it is http(s) or relative, else `undefined`.
 * Resolution uses the WHATWG URL parser, the same one the browser navigates
 * with, so tricks like `java\tscript:`, leading control characters or
 * `JaVaScRiPt:` are judged exactly as the browser would read them.
 */
export function safeUrl(url: unknown, base?: string): string | undefined {
  if (typeof url !== 'string' || !url.trim()) return undefined;
  const page = base ?? (typeof location !== 'undefined' && /^https?:/.test(location.href) ? location.href : undefined);
  let u: URL;
  try {
    u = new URL(url, page ?? FALLBACK);
  } catch {
    return undefined;
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return undefined;
  // Without an http(s) page to resolve against, keep a relative URL relative.
  return page || u.origin + '/' !== FALLBACK ? u.href : url.trim();
}
