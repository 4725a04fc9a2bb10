// The web app end to end: one flow per role from sign-in to the final state in the store, in
// Debian's chromium against a real `isoguard serve` on a throwaway database.
//   node --test tests/e2e/   (ISOGUARD_BINARY=build/release/isoguard, ISOGUARD_E2E_ARTIFACTS=dir)
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import {
  withEnvironment, newPage, signIn, screenshot, artifacts, nowUtc, addPatientAccount, exportStore, binary, PASSWORDS, CAMERA_PATIENT, HISTORY,
} from './harness.mjs';

let env;
let drToken;
let k;
let patientOfFlow;

before(async () => {
  env = await withEnvironment();
  drToken = await env.api.token('dr-e2e');
  k = (await env.api.call('GET', '/v1/knowledge', { token: drToken })).json;
  // The patient of the patient's flow: one of the cohort in treatment, who can get pregnant,
  // with something due.
  const list = (await env.api.call('GET', '/v1/worklists/prescriber?limit=1000', { token: drToken })).json.items;
  for (const it of list) {
    if (!it.due.length) continue;
    const p = (await env.api.call('GET', `/v1/patients/${it.patient_id}`, { token: drToken })).json;
    if (p.record.patient.category === 'can_get_pregnant' && p.evaluation.treatment.state === 'in_treatment') {
      patientOfFlow = p;
      break;
    }
  }
  assert.ok(patientOfFlow, 'the cohort has a patient in treatment with something due');
  addPatientAccount(env.db, 'patient-e2e', patientOfFlow.patient_id);
});

after(async () => {
  if (env) await env.close();
});

const text = async (locator) => (await locator.textContent()).replace(/\s+/g, ' ').trim();

async function waitForText(page, selector, wanted) {
  await page.locator(selector).filter({ hasText: wanted }).first().waitFor();
}

// Every visible form control has a label (or an accessible name) on this page, and every text
// meets WCAG AA contrast against its background (4.5:1; 3:1 for large text).
async function assertLabelled(page) {
  const unlabelled = await page.evaluate(() => [...document.querySelectorAll('main input, main select, main textarea')]
    .filter((el) => el.type !== 'hidden' && !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
    .map((el) => el.outerHTML));
  assert.deepEqual(unlabelled, []);
  const lowContrast = await page.evaluate(() => {
    const rgb = (c) => (c.match(/[\d.]+/g) || []).map(Number);
    const lum = ([r, g, b]) => {
      const f = (v) => { const x = v / 255; return x <= 0.03928 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4; };
      return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
    };
    const background = (el) => {
      for (let e = el; e; e = e.parentElement) {
        const c = rgb(getComputedStyle(e).backgroundColor);
        if (c.length === 3 || (c.length === 4 && c[3] > 0)) return c.slice(0, 3);
      }
      return [255, 255, 255];
    };
    const bad = [];
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
      const el = n.parentElement;
      if (!n.textContent.trim() || !el || el.closest('.sr-only, svg, noscript, option')) continue;
      if (!el.getClientRects().length) continue;
      const st = getComputedStyle(el);
      const [l1, l2] = [lum(rgb(st.color).slice(0, 3)), lum(background(el))].sort((a, b) => b - a);
      const ratio = (l1 + 0.05) / (l2 + 0.05);
      const size = parseFloat(st.fontSize);
      const large = size >= 24 || (size >= 18.66 && Number(st.fontWeight) >= 700);
      if (ratio < (large ? 3 : 4.5) && !(el.closest('button:disabled'))) bad.push(`${ratio.toFixed(2)} ${n.textContent.trim().slice(0, 40)}`);
    }
    return bad;
  });
  assert.deepEqual(lowContrast, []);
}

async function enroll(id, category, events = [], prescription = null) {
  const c = env.api.call;
  let r = await c('POST', '/v1/patients', { token: drToken, body: { patient_id: id, birth_date: '1995-03-04', jurisdiction: 'US', category } });
  assert.equal(r.status, 201, JSON.stringify(r.json));
  if (events.length) {
    r = await c('POST', `/v1/patients/${id}/events`, { token: drToken, body: { events } });
    assert.equal(r.status, 201, JSON.stringify(r.json));
  }
  if (prescription) {
    r = await c('POST', `/v1/patients/${id}/prescriptions`, { token: drToken, body: prescription });
    assert.equal(r.status, 201, JSON.stringify(r.json));
    return r.json;
  }
  return null;
}

test('prescriber: paged worklist, enroll, forms that reject bad input, dose planner, prescription', async () => {
  const page = await newPage(env);
  const { base } = env.server;

  // A wrong password is refused on the sign-in form.
  await page.goto(`${base}/`);
  await page.getByLabel('Account').fill('dr-e2e');
  await page.getByLabel('Password', { exact: true }).fill('not-the-password');
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await page.locator('form [data-error-for="_form"]').filter({ hasText: /\S/ }).waitFor();

  await signIn(page, base, 'dr-e2e');
  await page.locator('#worklist tbody tr').first().waitFor();
  const pager = await text(page.locator('nav.pager span'));
  const total = Number(pager.match(/of (\d+)/)[1]);
  assert.ok(total > 50, `the worklist has more than one page (${pager})`);
  assert.equal(await page.locator('#worklist tbody tr').count(), 50);
  const firstRow = await text(page.locator('#worklist tbody tr').first());
  assert.match(firstRow, /critical/, 'critical alerts come first');
  await screenshot(page, 'prescriber-worklist', { fullPage: false });
  await page.getByRole('link', { name: 'Next' }).click();
  await waitForText(page, 'nav.pager span', 'Patients 51–');
  // The filter is the server's: it reaches every page, and its total is the server's count.
  await page.getByLabel('Worst alert').selectOption('warning');
  await page.getByLabel('Showing patients with').selectOption('overdue');
  await page.getByRole('button', { name: 'Filter', exact: true }).click();
  await waitForText(page, '#worklist-count', 'match the filter');
  const wanted = (await env.api.call('GET', '/v1/worklists/prescriber?severity=warning&status=overdue&limit=1000', { token: drToken })).json;
  assert.ok(wanted.total > 0, 'the cohort has warnings with something overdue');
  assert.equal(await text(page.locator('#worklist-count')), `${wanted.total} patients match the filter.`);
  assert.match(page.url(), /severity=warning/);
  const rows = await page.locator('#worklist tbody tr').all();
  assert.equal(rows.length, Math.min(50, wanted.total));
  for (const [i, row] of rows.entries()) {
    const row_text = await text(row);
    assert.ok(row_text.startsWith(wanted.items[i].patient_id), row_text);
    assert.match(row_text, /warning/i);
  }
  // A patient id typed in the text box finds that patient wherever they are in the list.
  const lastOfList = (await env.api.call('GET', '/v1/worklists/prescriber?limit=1000', { token: drToken })).json.items.at(-1);
  await page.getByRole('link', { name: 'Clear' }).click();
  await waitForText(page, '#worklist-count', 'on the worklist');
  await page.getByLabel('Patient id or code').fill(lastOfList.patient_id.toUpperCase());
  await page.getByRole('button', { name: 'Filter', exact: true }).click();
  await waitForText(page, '#worklist-count', 'match the filter');
  const found = await page.locator('#worklist tbody tr td:first-child').allTextContents();
  assert.ok(found.includes(lastOfList.patient_id), found.join(' '));
  for (const id of found) assert.ok(id.toLowerCase().includes(lastOfList.patient_id.toLowerCase()), id);
  await assertLabelled(page);

  // Enroll a patient.
  await page.getByRole('link', { name: 'Enroll a patient' }).click();
  await page.getByLabel("Patient's id (optional)").fill('e2e-new');
  await page.getByLabel('Date of birth').fill('2001-05-01');
  await page.getByLabel('Jurisdiction').selectOption('US');
  await page.getByRole('button', { name: 'Enroll' }).click();
  await waitForText(page, 'form [data-error-for="category"]', 'Choose the category');
  await page.getByLabel('Can get pregnant', { exact: true }).check();
  await page.getByRole('button', { name: 'Enroll' }).click();
  await page.getByRole('heading', { name: 'Patient e2e-new' }).waitFor();
  await waitForText(page, '#authorization-status', 'No: this prescription may not be dispensed now');
  await page.locator('#reasons li[data-code="NO_PRESCRIPTION"]').waitFor();

  // A weight of 0 is refused by the service; the message is beside the weight field.
  const eventForm = page.locator('#event-form');
  await eventForm.getByLabel('Event').selectOption('weight');
  await eventForm.getByLabel('Weight', { exact: true }).fill('0');
  await eventForm.getByRole('button', { name: 'Record' }).click();
  await waitForText(page, '#event-form [data-error-for="kg"]', 'must be in (0, 500] kg');
  assert.equal(await eventForm.getByLabel('Weight', { exact: true }).getAttribute('aria-invalid'), 'true');
  await screenshot(page, 'prescriber-form-error');

  // In pounds: stored in kg.
  await eventForm.getByLabel('Weight', { exact: true }).fill('143');
  await eventForm.getByLabel('Unit').selectOption('lb');
  await eventForm.getByRole('button', { name: 'Record' }).click();
  await waitForText(page, '#timeline', '64.86 kg');

  // Lipids must say whether the sample was fasting.
  await page.locator('#event-form').getByLabel('Event').selectOption('lab');
  await page.locator('#event-form').getByLabel('Test', { exact: true }).selectOption('TG');
  await page.locator('#event-form').getByLabel('Value', { exact: true }).fill('180');
  await page.locator('#event-form').getByLabel('Unit', { exact: true }).selectOption('mg/dL');
  await page.locator('#event-form').getByRole('button', { name: 'Record' }).click();
  await waitForText(page, '#event-form [data-error-for="fasting"]', 'fasting');
  await page.locator('#event-form').getByLabel('Fasting', { exact: true }).check();
  await page.locator('#event-form').getByRole('button', { name: 'Record' }).click();
  await waitForText(page, '#timeline', 'TG 180 mg/dL, fasting');
  await page.locator('#chart-tg svg').waitFor();

  // The dose planner's capsules, then the prescription written with them.
  assert.equal(await page.locator('#plan-weight').inputValue(), '64.86');
  await page.locator('#plan-rate').fill('0.5');
  await page.getByRole('button', { name: 'Plan the dose' }).click();
  await waitForText(page, '#dose-plan', 'capsule');
  const plan = (await env.api.call('GET', '/v1/dose-plan?product=generic&weight_kg=64.86&mg_per_kg_day=0.5', { token: drToken })).json;
  await waitForText(page, '#dose-plan', `${plan.daily_mg} mg/day`);
  await page.getByRole('button', { name: 'Use this plan' }).click();
  await page.getByRole('button', { name: 'Write prescription' }).click();
  await waitForText(page, '#timeline', `generic ${plan.doses_mg.join(' + ')} mg/day, 30 days`);
  await page.locator('#reasons li[data-code="PREGNANCY_TEST_MISSING"]').waitFor();
  await assertLabelled(page);

  // The store holds what the forms recorded.
  const events = (await env.api.call('GET', '/v1/patients/e2e-new/events', { token: drToken })).json.entries.map((e) => e.event);
  const weight = events.find((e) => e.type === 'weight');
  assert.equal(weight.kg, 64.86);
  assert.equal(events.filter((e) => e.type === 'weight').length, 1, 'the refused weight was not stored');
  const lab = events.find((e) => e.type === 'lab');
  assert.deepEqual([lab.test, lab.value, lab.unit, lab.fasting], ['TG', 180, 'mg/dL', true]);
  const rx = events.find((e) => e.type === 'prescription');
  assert.deepEqual(rx.doses_mg, plan.doses_mg);
  assert.equal(rx.days_supply, 30);
  assert.equal(rx.refills, 0);

  // A patient with a history: the charts with their bands and thresholds from the knowledge.
  const rich = { patient_id: HISTORY.id };
  const history = (await env.api.call('GET', `/v1/patients/${HISTORY.id}`, { token: drToken })).json.evaluation;
  await page.goto(`${base}/#/patient/${rich.patient_id}`);
  await page.locator('#timeline').waitFor();
  await page.locator('#chart-cumulative svg').waitFor();
  assert.equal(history.authorization.decision, 'authorized');
  await waitForText(page, '#authorization-status', 'Yes: this prescription may be dispensed');
  await waitForText(page, '#authorization-status', 'rx-5');
  const [low, high] = history.dose.target_mg_per_kg;
  assert.ok((await page.locator('#chart-cumulative svg text').allTextContents()).includes(`target ${low}–${high} mg/kg`));
  assert.equal(await page.locator('#chart-cumulative svg .band').count(), 1);
  assert.equal(await page.locator('#chart-cumulative svg .projection').count(), history.dose.projected_target_date > new Date().toISOString().slice(0, 10) ? 1 : 0);
  await waitForText(page, '#chart-cumulative figcaption', String(new Date(`${history.dose.projected_target_date}T12:00:00Z`).getUTCFullYear()));
  const tg = k.lab_families.find((f) => f.tests.includes('TG'));
  const tgText = await page.locator('#chart-tg svg text').allTextContents();
  assert.ok(tgText.some((t) => t === `critical ${tg.critical.compare === 'at_least' ? '≥' : '>'} ${tg.critical.value}`), tgText.join('|'));
  assert.ok(tgText.some((t) => t.includes(`warning`) && t.includes(String(tg.warning.value))));
  assert.equal(await page.locator('#chart-tg svg circle').count(), HISTORY.tg_mg_dl.length);
  const tgTable = (await page.locator('#chart-tg table td:nth-child(2)').allTextContents()).map(Number);
  assert.deepEqual(tgTable, HISTORY.tg_mg_dl, 'mmol/L shown in mg/dL');
  const alt = k.lab_families.find((f) => f.tests.includes('ALT'));
  const altText = await page.locator('#chart-alt svg text').allTextContents();
  assert.ok(altText.some((t) => t.startsWith('critical') && t.includes(`${alt.critical.value}× ULN`)));
  assert.equal(await page.locator('#chart-alt svg circle').count(), HISTORY.alt_u_l.length);
  assert.deepEqual((await page.locator('#chart-phq9 table td:nth-child(2)').allTextContents()).map(Number), HISTORY.phq9_totals);
  assert.ok((await page.locator('#chart-phq9 svg text').allTextContents()).includes(`severe ≥ ${k.phq9.severe_min_total}`));
  const entries = (await env.api.call('GET', `/v1/patients/${rich.patient_id}/events`, { token: drToken })).json.entries;
  if (entries.length > 25) {
    assert.equal(await page.locator('#timeline tbody tr').count(), 25);
    await page.getByRole('button', { name: `Show all ${entries.length} events` }).click();
  }
  assert.equal(await page.locator('#timeline tbody tr').count(), entries.length);
  await screenshot(page, 'prescriber-patient');
  await screenshot(page, 'prescriber-patient-top', { height: 1500 });
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('pharmacist: QR code lookup, authorization yes and no with reasons, dispense with lot, reversal, storage', async () => {
  const { base } = env.server;
  const now = nowUtc();
  const okPlan = { product: 'generic', doses_mg: [40, 30], days_supply: 30, refills: 0 };
  const counselled = [{ type: 'visit', at: now, counseled: true }, { type: 'weight', at: now, kg: 70 }];
  const okAnswer = await enroll('e2e-ok', 'cannot_get_pregnant', counselled, okPlan);
  assert.equal(okAnswer.evaluation.authorization.decision, 'authorized');
  const deniedAnswer = await enroll('e2e-denied', 'can_get_pregnant', [{ type: 'weight', at: now, kg: 60 }], okPlan);
  const deniedReasons = deniedAnswer.evaluation.authorization.reasons;
  assert.ok(deniedReasons.length >= 2);
  await enroll(CAMERA_PATIENT, 'cannot_get_pregnant', counselled, okPlan);
  addPatientAccount(env.db, 'patient-ok-e2e', 'e2e-ok');

  // The patient's app shows the code; a picture of it is what the pharmacist reads.
  const phone = await newPage(env, { mobile: true });
  await signIn(phone, base, 'patient-ok-e2e');
  await phone.locator('#patient-qr svg').waitFor();
  const qrPath = join(artifacts, 'patient-qr.png');
  await phone.locator('#patient-qr').screenshot({ path: qrPath });
  await phone.context().close();

  const page = await newPage(env);
  await signIn(page, base, 'pharm-e2e');
  await page.getByRole('heading', { name: 'Dispensing' }).waitFor();

  // Receive a lot to dispense from.
  await page.getByRole('link', { name: 'Stock and storage' }).click();
  const lotForm = page.locator('#lot-form');
  await lotForm.getByLabel('Product').selectOption('generic');
  await lotForm.getByLabel('Strength (mg)').fill('10');
  await lotForm.getByLabel('Lot number').fill('LOT-E2E-1');
  const nextYear = `${new Date().getUTCFullYear() + 1}-06-30`;
  await lotForm.getByLabel('Expiry').fill(nextYear);
  await lotForm.getByLabel('Location').fill('shelf-1');
  await lotForm.getByLabel('Capsules').fill('900');
  await lotForm.getByRole('button', { name: 'Receive' }).click();
  await waitForText(page, '#lots', 'LOT-E2E-1');

  // Find the patient by the QR code.
  await page.getByRole('link', { name: 'Dispensing' }).click();
  await page.locator('#qr-file').setInputFiles(qrPath);
  await page.getByRole('heading', { name: 'Patient e2e-ok' }).waitFor();
  await page.getByRole('button', { name: 'Ask for an authorization' }).click();
  await waitForText(page, '#authorization-result', 'Yes: this prescription may be dispensed');
  await page.locator('#authorization-result #dispense-by').waitFor();
  const authorizationId = await text(page.locator('#authorization-id'));
  await screenshot(page, 'pharmacist-authorized');

  // The dispense needs the Medication Guide handed over.
  const dispense = page.locator('#authorization-result #dispense-form');
  const lots = (await env.api.call('GET', '/v1/stock/lots', { token: await env.api.token('pharm-e2e') })).json.items;
  const lot = lots.find((l) => l.lot_number === 'LOT-E2E-1');
  await dispense.getByLabel('Lot').selectOption(lot.lot_id);
  await dispense.getByRole('button', { name: 'Record the dispense' }).click();
  await waitForText(page, '#authorization-result [data-error-for="medication_guide_given"]', 'Medication Guide');
  await dispense.getByLabel('I handed the Medication Guide to the patient').check();
  await dispense.getByRole('button', { name: 'Record the dispense' }).click();
  // 70 mg a day for 30 days from 10 mg capsules.
  await waitForText(page, '#status', `Dispensed: ${(70 * 30) / 10} capsules from lot ${lot.lot_id}`);

  // A denial shows every reason.
  await page.getByRole('link', { name: 'Dispensing' }).click();
  await page.getByLabel("Patient's id").fill('e2e-denied');
  await page.getByRole('button', { name: 'Find' }).click();
  await page.getByRole('heading', { name: 'Patient e2e-denied' }).waitFor();
  await page.getByRole('button', { name: 'Ask for an authorization' }).click();
  await waitForText(page, '#authorization-result', 'No: this prescription may not be dispensed now');
  const shown = await page.locator('#authorization-result #reasons li').allTextContents();
  assert.equal(shown.length, deniedReasons.length);
  for (const r of deniedReasons) assert.ok(shown.some((s) => s.includes(r.message) && s.includes(r.code)), r.code);
  await screenshot(page, 'pharmacist-denied');

  // Reverse an unused authorization; the patient found with the camera this time.
  await page.getByRole('link', { name: 'Dispensing' }).click();
  await page.getByRole('button', { name: 'Scan with the camera' }).click();
  await page.getByRole('heading', { name: `Patient ${CAMERA_PATIENT}` }).waitFor();
  await page.getByRole('button', { name: 'Ask for an authorization' }).click();
  const revId = await text(page.locator('#authorization-id'));
  await page.getByRole('button', { name: `Reverse ${revId}` }).first().click();
  await waitForText(page, '#status', `Authorization ${revId} reversed`);

  // An excursion quarantines the lot stored there.
  await page.getByRole('link', { name: 'Stock and storage' }).click();
  const temp = page.locator('#temperature-form');
  await temp.getByLabel('Location').fill('shelf-1');
  await temp.getByLabel('Temperature (°C)').fill(String(k.storage.max_celsius + 5));
  await temp.getByRole('button', { name: 'Record' }).click();
  await waitForText(page, '#temperatures', 'excursion');
  await waitForText(page, '#lots', 'quarantined');
  await assertLabelled(page);
  await screenshot(page, 'pharmacist-stock');

  // The quarantine's history, then the lot released after review.
  await page.getByRole('button', { name: 'History' }).first().click();
  await waitForText(page, '#lots', 'temperature excursion');
  const release = page.getByRole('form', { name: 'Release lot LOT-E2E-1' });
  await release.getByRole('button', { name: 'Release' }).click();
  await waitForText(page, '#lots [data-error-for="reason"]', 'Say why');
  await release.getByLabel('Reason for release').fill('Reviewed: 2 hours above range, within the manufacturer\'s allowance');
  await release.getByRole('button', { name: 'Release' }).click();
  await waitForText(page, '#status', 'Lot LOT-E2E-1 released');

  // The store: the dispense with its lot, the reversal, the quarantine.
  const pharm = await env.api.token('pharm-e2e');
  const used = (await env.api.call('GET', `/v1/authorizations/${authorizationId}`, { token: pharm })).json;
  assert.equal(used.status, 'dispensed');
  const reversed = (await env.api.call('GET', `/v1/authorizations/${revId}`, { token: pharm })).json;
  assert.equal(reversed.status, 'reversed');
  const exported = exportStore(env.db);
  const okRecord = exported.find((r) => r.patient.id === 'e2e-ok');
  const dispensed = okRecord.events.find((e) => e.type === 'dispense');
  assert.ok(dispensed, 'the dispense is in the patient stream');
  assert.equal(dispensed.prescription, okAnswer.prescription_id);
  const released = (await env.api.call('GET', '/v1/stock/lots', { token: pharm })).json.items.find((l) => l.lot_id === lot.lot_id);
  assert.equal(released.quarantined, false);
  assert.equal(released.quantity_capsules, 900 - (70 * 30) / 10);
  const history = (await env.api.call('GET', `/v1/stock/lots/${lot.lot_id}/quarantine-events`, { token: pharm })).json.items;
  assert.deepEqual(history.map((q) => q.action), ['quarantine', 'release']);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('patient: due list and calendar, PHQ-9 with crisis resources at once, side effect flagged, monthly questions, rules', async () => {
  const { base } = env.server;
  const page = await newPage(env, { mobile: true });
  await signIn(page, base, 'patient-e2e');
  await page.getByRole('heading', { name: 'My treatment' }).waitFor();
  await page.locator('#patient-qr svg').waitFor();
  assert.equal(await page.locator('#due li').count(), patientOfFlow.evaluation.due.length);
  await screenshot(page, 'patient-home');

  // The calendar file.
  const [download] = await Promise.all([page.waitForEvent('download'), page.locator('#download-ics').click()]);
  const ics = readFileSync(await download.path(), 'utf8');
  assert.match(ics, /^BEGIN:VCALENDAR/);
  assert.equal(download.suggestedFilename(), 'isoguard-due.ics');

  // The PHQ-9: a question left out is named beside it; item 9 above 0 shows crisis resources.
  await page.getByRole('link', { name: 'Mood questionnaire' }).click();
  const form = page.locator('#phq9-form');
  for (let i = 0; i < 8; i++) await form.locator('fieldset').nth(i).getByLabel('Not at all').check();
  await form.getByRole('button', { name: 'Send' }).click();
  await waitForText(page, '#phq9-form fieldset:nth-of-type(9) .error', 'Choose an answer');
  await form.locator('fieldset').nth(8).getByLabel('Several days').check();
  await form.getByRole('button', { name: 'Send' }).click();
  await page.locator('#crisis').waitFor();
  const patientId = patientOfFlow.patient_id;
  const { jurisdiction } = patientOfFlow.record.patient;
  const crisis = k.crisis.find((c) => c.jurisdiction === jurisdiction);
  await waitForText(page, '#crisis', crisis.phone);
  await waitForText(page, '#crisis', crisis.service);
  assert.equal(await page.evaluate(() => document.activeElement.id), 'crisis');
  await screenshot(page, 'patient-crisis');

  // A side effect: empty is refused; a serious symptom says "contact your prescriber now".
  await page.getByRole('link', { name: 'Report a side effect' }).click();
  await page.getByRole('button', { name: 'Send' }).click();
  await waitForText(page, '#side-effect-form [data-error-for="term"]', 'Describe');
  await page.getByLabel('What side effect?').fill('yellow skin');
  await page.getByRole('button', { name: 'Send' }).click();
  const liver = k.serious_effects.find((e) => e.code === 'liver');
  await waitForText(page, '#contact-now', liver.title);
  await screenshot(page, 'patient-side-effect');

  // The monthly contraception attestation (a method is required), then the questions, all right.
  await page.getByRole('link', { name: 'Monthly questions' }).click();
  const contraception = page.locator('#contraception-form');
  await contraception.getByLabel('Using this combination since').fill('2026-01-15');
  await contraception.getByRole('button', { name: 'Confirm' }).click();
  await waitForText(page, '#contraception-form [data-error-for="methods"]', 'Choose the methods');
  await contraception.getByLabel('Hormonal IUD').check();
  await contraception.getByLabel('Male condom').check();
  await contraception.getByRole('button', { name: 'Confirm' }).click();
  await waitForText(page, '#contraception-form', 'confirmed for this month');
  await page.getByLabel('No: it causes severe birth defects').check();
  await page.getByLabel('No, never').check();
  await page.getByLabel('Stop and tell your prescriber at once').check();
  await page.getByLabel('No, not during treatment and for a while after').check();
  await page.getByRole('button', { name: 'Send my answers' }).click();
  await page.getByRole('heading', { name: 'Passed' }).waitFor();

  // The safety rules, with the storage range of the knowledge files.
  await page.getByRole('link', { name: 'Safety rules' }).click();
  await waitForText(page, '#rules', `${k.storage.min_celsius}–${k.storage.max_celsius} °C`);
  await assertLabelled(page);
  await screenshot(page, 'patient-rules');

  // The store, and the prescriber told.
  const events = (await env.api.call('GET', `/v1/patients/${patientId}/events`, { token: drToken })).json.entries.map((e) => e.event);
  const phq9 = events.filter((e) => e.type === 'phq9').pop();
  assert.deepEqual(phq9.items, [0, 0, 0, 0, 0, 0, 0, 0, 1]);
  assert.ok(events.some((e) => e.type === 'adverse_event' && e.term === 'yellow skin'));
  assert.equal(events.filter((e) => e.type === 'comprehension').pop().passed, true);
  const attested = events.filter((e) => e.type === 'contraception').pop();
  assert.deepEqual([attested.methods, attested.since], [['iud_hormonal', 'male_condom'], '2026-01-15']);
  for (;;) {
    const inbox = (await env.api.call('GET', '/v1/notifications?unread=true&limit=1000', { token: drToken })).json.items;
    if (inbox.some((n) => n.patient_id === patientId && n.kind !== 'reminder' && /PHQ-9|self-harm|suicid/i.test(n.message))) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.deepEqual(page.errors, []);
  await page.context().close();

  // The prescriber reads it in the app's inbox and marks it read.
  const desk = await newPage(env);
  await signIn(desk, base, 'dr-e2e');
  await desk.getByRole('link', { name: 'Notifications' }).click();
  const note = desk.locator('#notifications li').filter({ hasText: patientId }).filter({ hasText: /self-harm|PHQ-9/i }).first();
  await note.waitFor();
  await note.getByRole('button', { name: 'Mark read' }).click();
  await desk.locator('#notifications li.muted').filter({ hasText: patientId }).first().waitFor();
  const inbox = (await env.api.call('GET', '/v1/notifications?limit=1000', { token: drToken })).json.items;
  assert.ok(inbox.some((n) => n.patient_id === patientId && n.read_at));
  assert.deepEqual(desk.errors, []);
  await desk.context().close();
});

test('sessions: keyboard sign-in, a role sees only its pages, sign-out revokes the token, expiry and API-token sign-in', async () => {
  const { base } = env.server;
  const page = await newPage(env, { mobile: true });
  const requests = [];
  page.on('request', (r) => requests.push(new URL(r.url()).pathname));
  // With the keyboard alone: the skip link first, then the form.
  await page.goto(`${base}/#/signin`);
  await page.getByLabel('Account').waitFor();
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Skip to content');
  await page.keyboard.press('Tab');
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.name), 'account_id');
  await page.keyboard.type('patient-e2e');
  await page.keyboard.press('Tab');
  await page.keyboard.type(PASSWORDS['patient-e2e']);
  await page.keyboard.press('Enter');
  await page.getByRole('heading', { name: 'My treatment' }).waitFor();
  assert.equal(await page.getByRole('link', { name: 'Worklist' }).count(), 0);
  await page.goto(`${base}/#/worklist`);
  await page.getByRole('heading', { name: 'Not here' }).waitFor();
  await page.goto(`${base}/#/stock`);
  await page.getByRole('heading', { name: 'Not here' }).waitFor();
  assert.ok(!requests.some((p) => p.startsWith('/v1/worklists') || p.startsWith('/v1/stock')), requests.join(' '));

  const token = await page.evaluate(() => JSON.parse(sessionStorage.getItem('isoguard.session')).token);
  assert.equal((await env.api.call('GET', '/v1/me', { token })).status, 200);
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByRole('heading', { name: 'Sign in', exact: true }).waitFor();
  assert.equal((await env.api.call('GET', '/v1/me', { token })).status, 401);

  // An expired session is gone at the next page load.
  await signIn(page, base, 'patient-e2e');
  await page.getByRole('heading', { name: 'My treatment' }).waitFor();
  await page.evaluate(() => {
    const s = JSON.parse(sessionStorage.getItem('isoguard.session'));
    s.expires_at = new Date(Date.now() - 1000).toISOString();
    sessionStorage.setItem('isoguard.session', JSON.stringify(s));
  });
  await page.reload();
  await page.getByRole('heading', { name: 'Sign in', exact: true }).waitFor();

  // And a session ending while the page is open returns to sign-in by itself.
  await signIn(page, base, 'patient-e2e');
  await page.getByRole('heading', { name: 'My treatment' }).waitFor();
  await page.evaluate(() => {
    const s = JSON.parse(sessionStorage.getItem('isoguard.session'));
    s.expires_at = new Date(Date.now() + 1500).toISOString();
    sessionStorage.setItem('isoguard.session', JSON.stringify(s));
    location.hash = '#/me/rules';
  });
  await page.getByRole('heading', { name: 'The safety rules of your program' }).waitFor();
  await page.getByRole('heading', { name: 'Sign in', exact: true }).waitFor();
  await waitForText(page, '#status', 'Your session has ended');

  // An API token issued by the administration signs in too.
  const issued = JSON.parse(execFileSync(binary, ['admin', '--db', env.db, 'token', '--id', 'pharm-e2e', '--label', 'e2e'], { encoding: 'utf8' }));
  await page.getByLabel('API token', { exact: true }).fill(issued.token);
  await page.getByRole('button', { name: 'Sign in with token' }).click();
  await page.getByRole('heading', { name: 'Dispensing' }).waitFor();
  assert.deepEqual(page.errors, []);
  await page.context().close();
});
