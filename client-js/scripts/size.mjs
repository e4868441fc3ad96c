// Size budget: the whole browser bundle (client + built-in renderer),
// minified and gzipped, must stay within 12 KB (12 * 1024 bytes).
import { readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';

const BUDGET = 12 * 1024;
const file = 'dist/beckon.global.js';
const raw = readFileSync(file);
const gz = gzipSync(raw, { level: 9 }).length;
const kb = (n) => (n / 1024).toFixed(2) + ' KB';
console.log(`${file}: ${kb(raw.length)} min, ${kb(gz)} min+gzip (budget ${kb(BUDGET)})`);
if (gz > BUDGET) {
  console.error(`size budget exceeded by ${gz - BUDGET} bytes`);
  process.exit(1);
}
