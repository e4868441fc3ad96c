// Builds dist/: ESM + CJS for bundlers and Node, and the single-file browser
// bundle (IIFE, global `Beckon`). Declarations come from tsc (see package.json).
import { build } from 'esbuild';
import { rmSync } from 'node:fs';

rmSync('dist', { recursive: true, force: true });
const common = { entryPoints: ['src/index.ts'], bundle: true, target: 'es2020', sourcemap: true, logLevel: 'warning' };
await Promise.all([
  build({ ...common, format: 'esm', outfile: 'dist/index.js' }),
  build({ ...common, format: 'cjs', outfile: 'dist/index.cjs', platform: 'neutral' }),
  build({ ...common, format: 'iife', globalName: 'Beckon', minify: true, outfile: 'dist/beckon.global.js' }),
]);
