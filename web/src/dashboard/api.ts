// The admin API client: bearer token kept in sessionStorage (pre-filled by ?token=).
export const TOKEN_KEY = 'beckon.admin';

export class Unauthorized extends Error {}
export class HttpError extends Error {
  constructor(public status: number, public code: string, message: string) { super(message); }
}

export function takeTokenFromUrl(): void {
  const u = new URL(location.href);
  const t = u.searchParams.get('token');
  if (t) {
    sessionStorage.setItem(TOKEN_KEY, t);
    u.searchParams.delete('token');
    history.replaceState(null, '', u.pathname + u.search + u.hash);
  }
}
export const getToken = () => sessionStorage.getItem(TOKEN_KEY) ?? '';
export const setToken = (t: string) => sessionStorage.setItem(TOKEN_KEY, t);
export const clearToken = () => sessionStorage.removeItem(TOKEN_KEY);

export async function api<T = any>(path: string, init: RequestInit & { raw?: boolean } = {}): Promise<T> {
  const token = getToken();
  if (!token) throw new Unauthorized('no token');
  const headers = new Headers(init.headers);
  headers.set('authorization', `Bearer ${token}`);
  const r = await fetch(path, { ...init, headers });
  if (r.status === 401) throw new Unauthorized('token refused');
  if (!r.ok) {
    let code = 'http', message = `HTTP ${r.status}`;
    try {
      const j = await r.json();
      if (j?.error) { code = j.error.code ?? code; message = j.error.message ?? message; }
    } catch { /* not JSON */ }
    throw new HttpError(r.status, code, message);
  }
  return (init.raw ? r : r.json()) as Promise<T>;
}
