// A scripted stand-in for a WebSocket: the test plays the server.
export class FakeWS {
  static all: FakeWS[] = [];
  static last(): FakeWS {
    return FakeWS.all[FakeWS.all.length - 1]!;
  }
  readyState = 0;
  sent: any[] = [];
  closedWith: number | undefined;
  onopen: ((e: any) => void) | null = null;
  onmessage: ((e: { data: unknown }) => void) | null = null;
  onclose: ((e: { code: number; reason?: string }) => void) | null = null;
  onerror: ((e: any) => void) | null = null;

  constructor(public url: string) {
    FakeWS.all.push(this);
  }
  send(data: string): void {
    if (this.readyState !== 1) throw new Error('not open');
    this.sent.push(JSON.parse(data));
  }
  close(code = 1000): void {
    this.closedWith = code;
    this.readyState = 3;
    this.onclose?.({ code });
  }
  // ---- server side ----
  accept(): void {
    this.readyState = 1;
    this.onopen?.({});
  }
  recv(frame: unknown): void {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
  drop(code: number): void {
    this.readyState = 3;
    this.onclose?.({ code });
  }
  /** Frames of a type the client sent. */
  of(type: string): any[] {
    return this.sent.filter((f) => f.type === type);
  }
}

export class MemoryStorage {
  data = new Map<string, string>();
  getItem(k: string): string | null {
    return this.data.has(k) ? this.data.get(k)! : null;
  }
  setItem(k: string, v: string): void {
    this.data.set(k, v);
  }
  removeItem(k: string): void {
    this.data.delete(k);
  }
}

/** A JWT-shaped token (unsigned) with the given exp. */
export function fakeToken(sub: string, exp: number): string {
  const b = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${b({ alg: 'HS256', typ: 'JWT' })}.${b({ sub, exp })}.sig`;
}
