// Writes dist/, the files `isoguard serve` serves: the app's own files from src/ and the two
// libraries it uses from node_modules (installed exactly from package-lock.json by
// scripts/npm-deps). No bundler: the browser loads the ES modules as they are.
import { cpSync, mkdirSync, rmSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, 'dist');
rmSync(dist, { recursive: true, force: true });
mkdirSync(join(dist, 'vendor'), { recursive: true });
cpSync(join(here, 'src'), dist, { recursive: true });

const vendor = [
  // QR code generator (MIT, Kazuhiko Arase): an ES module.
  ['qrcode-generator/dist/qrcode.mjs', 'qrcode.mjs'],
  // QR code reader (Apache-2.0, Cosmo Wolfe): a classic script defining self.jsQR.
  ['jsqr/dist/jsQR.js', 'jsQR.js'],
];
for (const [from, to] of vendor) {
  const text = readFileSync(join(here, 'node_modules', from), 'utf8');
  writeFileSync(join(dist, 'vendor', to), text);
}
console.log(`web: built ${dist}`);
