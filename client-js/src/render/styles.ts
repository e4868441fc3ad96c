/**
 * Default theme of the built-in renderer. Lives inside a shadow root, so host
 * page CSS cannot reach it and it cannot reach the page; the page themes it
 * only through the `--beckon-*` custom properties (which do inherit into the
 * shadow tree), e.g. `:root { --beckon-accent: #e8590c }`.
 */
export const CSS = `:host{all:initial}
*{box-sizing:border-box}
.c{position:fixed;z-index:var(--beckon-z,2147483000);font:15px/1.45 var(--beckon-font,system-ui,-apple-system,"Segoe UI",Roboto,sans-serif);color:var(--beckon-fg,#1d2330);background:var(--beckon-bg,#fff);border-radius:var(--beckon-radius,10px);box-shadow:var(--beckon-shadow,0 10px 40px rgba(0,0,0,.22));padding:20px 40px 20px 20px;max-width:min(440px,calc(100vw - 24px))}
.o{position:fixed;inset:0;z-index:var(--beckon-z,2147483000);background:var(--beckon-backdrop,rgba(15,20,30,.5));display:flex;align-items:center;justify-content:center}
.o .c{position:relative}
.b{left:0;right:0;max-width:none;border-radius:0;display:flex;flex-wrap:wrap;gap:12px;align-items:center;padding:12px 44px 12px 16px}
.top{top:0}.bottom{bottom:0}
.s{right:16px;bottom:16px;width:360px}
.t{max-width:300px;padding:14px 36px 14px 18px}
h2{margin:0 0 8px;font-size:1.15em}
p{margin:0}
img{display:block;max-width:100%;border-radius:6px;margin-bottom:12px}
.a{display:flex;flex-wrap:wrap;gap:8px;margin-top:14px}
.b .a,.b h2{margin:0}
button{font:inherit;cursor:pointer;border-radius:6px;padding:7px 14px;border:1px solid var(--beckon-accent,#3b5bdb);background:var(--beckon-accent,#3b5bdb);color:var(--beckon-accent-fg,#fff)}
.a button+button{background:none;color:var(--beckon-accent,#3b5bdb)}
.x{position:absolute;top:6px;right:6px;border:0;background:none;color:inherit;opacity:.6;padding:2px 8px;font-size:20px;line-height:1}
button:focus-visible{outline:2px solid var(--beckon-focus,#74c0fc);outline-offset:2px}`;
