// The end-to-end harness: a throwaway SQLite store made with the real isoguard binary (synth,
// import, admin), a real `isoguard serve` on a free port, and Debian's chromium driven by
// playwright-core. Nothing here is mocked: the browser talks to the server the demo runs.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
export const sourceDir = resolve(here, '..', '..');
export const binary = process.env.ISOGUARD_BINARY || join(sourceDir, 'build', 'release', 'isoguard');
export const artifacts = process.env.ISOGUARD_E2E_ARTIFACTS || join(sourceDir, 'build', 'e2e-artifacts');

// The patient whose code the pharmacy's fake camera shows.
export const CAMERA_PATIENT = 'e2e-rev';

export const PASSWORDS = {
  'dr-e2e': 'e2e-password-prescriber',
  'pharm-e2e': 'e2e-password-pharmacist',
  'patient-e2e': 'e2e-password-patient',
  'patient-ok-e2e': 'e2e-password-patient-ok',
};

function run(args, input) {
  return execFileSync(binary, args, { input, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
}

function chromiumPath() {
  const path = process.env.CHROMIUM || execFileSync('sh', ['-c', 'command -v chromium'], { encoding: 'utf8' }).trim();
  if (!path) throw new Error('chromium is not installed (scripts/bootstrap installs it)');
  return path;
}

// A patient with four months of treatment, imported beside the cohort: the charts' data, known
// to the test (HISTORY).
export const HISTORY = {
  id: 'e2e-history',
  tg_mg_dl: [150, 560, 420],
  alt_u_l: [20, 140],
  phq9_totals: [0, 12, 5],
};
function historyRecord() {
  const day = (n) => new Date(Date.now() - n * 86400000).toISOString().replace(/\.\d+Z$/, 'Z');
  const events = [
    { type: 'enrollment', at: day(121) },
    { type: 'visit', at: day(121), counseled: true },
    { type: 'weight', at: day(120), kg: 60 },
    { type: 'lab', at: day(110), test: 'TG', value: HISTORY.tg_mg_dl[0], unit: 'mg/dL' },
    { type: 'lab', at: day(110), test: 'ALT', value: HISTORY.alt_u_l[0], unit: 'U/L', uln: 40 },
    { type: 'phq9', at: day(90), items: [0, 0, 0, 0, 0, 0, 0, 0, 0] },
    { type: 'phq9', at: day(60), items: [2, 2, 2, 2, 1, 1, 1, 1, 0] },
    { type: 'lab', at: day(40), test: 'TG', value: HISTORY.tg_mg_dl[1], unit: 'mg/dL' },
    { type: 'lab', at: day(40), test: 'ALT', value: HISTORY.alt_u_l[1], unit: 'U/L', uln: 40 },
    { type: 'phq9', at: day(30), items: [1, 1, 1, 1, 1, 0, 0, 0, 0] },
    { type: 'lab', at: day(10), test: 'TG', value: HISTORY.tg_mg_dl[2] / 88.57, unit: 'mmol/L' },
  ];
  [100, 70, 40, 10].forEach((n, i) => {
    events.push({ type: 'visit', at: day(n + 1), counseled: false });
    events.push({ type: 'prescription', at: day(n), id: `rx-${i + 1}`, product: 'generic', doses_mg: [30, 30], days_supply: 30, refills: 0 });
    events.push({ type: 'dispense', at: day(n), prescription: `rx-${i + 1}` });
  });
  // The next prescription, written an hour ago: the one a pharmacy would be asked about now.
  events.push({ type: 'visit', at: day(1 / 12), counseled: false });
  events.push({ type: 'prescription', at: day(1 / 24), id: 'rx-5', product: 'generic', doses_mg: [30, 30], days_supply: 30, refills: 0 });
  events.sort((a, b) => a.at.localeCompare(b.at));
  return { patient: { id: HISTORY.id, birth_date: '1998-02-03', jurisdiction: 'US', category: 'cannot_get_pregnant' }, events };
}

// Makes the store: 150 synthetic patients through the import path, a clinic, a pharmacy, a
// prescriber and a pharmacist with passwords (patients' accounts are added by the tests).
export function makeStore(dir) {
  const db = `sqlite:${join(dir, 'e2e.db')}`;
  const today = new Date().toISOString().slice(0, 10);
  const cohort = run(['synth', '--patients', '150', '--seed', '11', '--as-of', today]);
  writeFileSync(join(dir, 'cohort.ndjson'), `${cohort}${JSON.stringify(historyRecord())}\n`);
  run(['import', join(dir, 'cohort.ndjson'), '--db', db]);
  const admin = (...args) => run(['admin', '--db', db, ...args]);
  admin('create-org', '--id', 'clinic-e2e', '--kind', 'clinic', '--name', 'E2E Clinic', '--jurisdiction', 'US');
  admin('create-org', '--id', 'pharmacy-e2e', '--kind', 'pharmacy', '--name', 'E2E Pharmacy', '--jurisdiction', 'US');
  run(['admin', '--db', db, 'create-user', '--id', 'dr-e2e', '--org', 'clinic-e2e', '--role', 'prescriber', '--name', 'Dr E2E', '--password-stdin'], `${PASSWORDS['dr-e2e']}\n`);
  run(['admin', '--db', db, 'create-user', '--id', 'pharm-e2e', '--org', 'pharmacy-e2e', '--role', 'pharmacist', '--name', 'E2E Pharmacist', '--password-stdin'], `${PASSWORDS['pharm-e2e']}\n`);
  admin('link-patients', '--org', 'clinic-e2e', '--prescriber', 'dr-e2e');
  return { db };
}

export function addPatientAccount(db, id, patientId) {
  run(['admin', '--db', db, 'create-user', '--id', id, '--org', 'clinic-e2e', '--role', 'patient', '--name', `Patient ${patientId}`, '--password-stdin', '--patient', patientId], `${PASSWORDS[id]}\n`);
}

export function exportStore(db) {
  return run(['export', '--db', db]).split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

// Starts `isoguard serve` on a free port; resolves once /healthz answers.
export async function startServer(db) {
  const child = spawn(binary, ['serve', '--db', db, '--listen', '127.0.0.1:0', '--quiet'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr.on('data', (d) => { err += d; });
  const base = await new Promise((resolveBase, reject) => {
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/serving on (http:\/\/[^ ]+)/);
      if (m) resolveBase(m[1]);
    });
    child.on('exit', (code) => reject(new Error(`isoguard serve exited (${code}): ${err}`)));
  });
  for (;;) {
    try {
      const r = await fetch(`${base}/healthz`);
      if (r.ok) break;
    } catch { /* not answering yet */ }
    await new Promise((r) => setImmediate(r));
  }
  return {
    base,
    // SIGTERM stops the server gracefully; anything but a clean exit (a crash, a sanitizer's
    // report) fails the suite.
    async stop() {
      const code = child.exitCode !== null ? child.exitCode : await new Promise((r) => {
        child.on('exit', (c, signal) => r(signal || c));
        child.kill('SIGTERM');
      });
      if (code !== 0) throw new Error(`isoguard serve ended with ${code}: ${err}`);
    },
  };
}

// The QR code the camera sees: the patient code of `patientId`, drawn with the app's own QR
// library into a Y4M video (one 640x480 frame) that chromium's fake camera plays.
export async function writeQrVideo(path, patientId) {
  const lib = pathToFileURL(join(sourceDir, 'web', 'node_modules', 'qrcode-generator', 'dist', 'qrcode.mjs'));
  const { default: qrcode } = await import(lib.href);
  const qr = qrcode(0, 'M');
  qr.addData(`isoguard:patient:${patientId}`, 'Byte');
  qr.make();
  const W = 640, H = 480, n = qr.getModuleCount(), scale = Math.floor(400 / (n + 8));
  const x0 = Math.floor((W - n * scale) / 2), y0 = Math.floor((H - n * scale) / 2);
  const y = Buffer.alloc(W * H, 235);
  for (let r = 0; r < n; r++) {
    for (let c = 0; c < n; c++) {
      if (!qr.isDark(r, c)) continue;
      for (let dy = 0; dy < scale; dy++) y.fill(16, (y0 + r * scale + dy) * W + x0 + c * scale, (y0 + r * scale + dy) * W + x0 + (c + 1) * scale);
    }
  }
  const chroma = Buffer.alloc((W / 2) * (H / 2) * 2, 128);
  writeFileSync(path, Buffer.concat([Buffer.from(`YUV4MPEG2 W${W} H${H} F30:1 Ip A1:1 C420jpeg\nFRAME\n`), y, chroma]));
}

// Chromium as the issue asks, plus a fake camera playing `cameraVideo` when given.
export async function launchBrowser({ cameraVideo } = {}) {
  const camera = cameraVideo
    ? ['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream', `--use-file-for-fake-video-capture=${cameraVideo}`]
    : [];
  return chromium.launch({
    executablePath: chromiumPath(),
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', ...camera],
  });
}

// The API as a test checks the store through it.
export function apiClient(base) {
  const call = async (method, path, { token, body } = {}) => {
    const headers = {};
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const r = await fetch(`${base}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await r.text();
    const json = text && (r.headers.get('content-type') || '').includes('json') ? JSON.parse(text) : text;
    return { status: r.status, json };
  };
  return {
    call,
    async token(account) {
      const r = await call('POST', '/v1/sessions', { body: { account_id: account, password: PASSWORDS[account] } });
      if (r.status !== 201) throw new Error(`sign-in of ${account}: ${r.status} ${JSON.stringify(r.json)}`);
      return r.json.token;
    },
  };
}

export async function withEnvironment() {
  mkdirSync(artifacts, { recursive: true });
  if (!existsSync(join(sourceDir, 'web', 'dist', 'index.html'))) {
    throw new Error('web/dist is not built: run `node web/build.mjs` (make build does)');
  }
  const dir = mkdtempSync(join(tmpdir(), 'isoguard-e2e-'));
  const store = makeStore(dir);
  const server = await startServer(store.db);
  const cameraVideo = join(dir, 'camera.y4m');
  await writeQrVideo(cameraVideo, CAMERA_PATIENT);
  const browser = await launchBrowser({ cameraVideo });
  return {
    ...store,
    dir,
    server,
    browser,
    api: apiClient(server.base),
    async close() {
      await browser.close();
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

// A new page of its own browser context, failing the test on any page error.
export async function newPage(env, { mobile = false } = {}) {
  const context = await env.browser.newContext(mobile
    ? { viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true, acceptDownloads: true }
    : { viewport: { width: 1280, height: 900 }, acceptDownloads: true });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  // Chromium logs every 4xx answer as a console error; the tests cause some on purpose (a form
  // refused by the service), so only script errors count.
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) errors.push(m.text());
  });
  page.errors = errors;
  return page;
}

export async function signIn(page, base, account) {
  await page.goto(`${base}/`);
  await page.getByLabel('Account').fill(account);
  await page.getByLabel('Password', { exact: true }).fill(PASSWORDS[account]);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
}

// A screenshot of the whole page, of the viewport, or of the top `height` pixels.
export async function screenshot(page, name, { fullPage = true, height } = {}) {
  const path = join(artifacts, `${name}.png`);
  if (height) {
    const { width } = page.viewportSize();
    await page.screenshot({ path, fullPage: true, clip: { x: 0, y: 0, width, height } });
    return;
  }
  await page.screenshot({ path, fullPage });
}

export function nowUtc() {
  return new Date().toISOString().replace(/\.\d+Z$/, 'Z');
}
