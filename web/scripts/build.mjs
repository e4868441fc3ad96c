// Builds the demo app and the dashboard into ../src/http/assets/{demo,dashboard}/
// (committed: the gateway embeds that folder with rust-embed) and copies the SDK bundle
// next to the demo (building client-js first when its dist/ is missing).
import { execSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const here = dirname(fileURLToPath(import.meta.url));
const web = join(here, '..');
const assets = join(web, '..', 'src', 'http', 'assets');
const sdkDir = join(web, '..', 'client-js');
const sdkBundle = join(sdkDir, 'dist', 'beckon.global.js');

const apps = ['demo', 'dashboard'];
for (const app of apps) {
  const out = join(assets, app);
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  await esbuild.build({
    entryPoints: { app: join(web, 'src', app, 'main.ts') },
    bundle: true,
    minify: true,
    format: 'iife',
    target: ['es2020', 'chrome100', 'firefox100', 'safari15'],
    outdir: out,
    loader: { '.css': 'css' },
    legalComments: 'none',
    logLevel: 'warning',
  });
  // CSS entry (the app's own styles plus any imported library CSS).
  await esbuild.build({
    entryPoints: { style: join(web, 'src', app, 'style.css') },
    bundle: true,
    minify: true,
    outdir: out,
    logLevel: 'warning',
  });
  writeFileSync(join(out, 'index.html'), readFileSync(join(web, 'src', app, 'index.html')));
  console.log(`built ${app} → ${out}`);
}

if (!existsSync(sdkBundle)) {
  console.log('client-js/dist missing: building the SDK first');
  execSync('npm ci && npm run build', { cwd: sdkDir, stdio: 'inherit' });
}
copyFileSync(sdkBundle, join(assets, 'demo', 'beckon.global.js'));
console.log('copied the SDK bundle → demo/beckon.global.js');
