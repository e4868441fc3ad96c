export function startStub(port?: number, opts?: { timeScale?: number }): Promise<{ url: string; close(): Promise<void> }>;
export const CAMPAIGNS: unknown[];
