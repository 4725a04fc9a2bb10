// The pharmacist's pages: find a patient (by id or by the QR code of the patient's app), ask for
// an authorization, dispense against it with a lot, reverse it; and stock and storage.
import { api, paths, knowledge } from './api.js';
import {
  h, field, input, select, wireForm, FieldError, status, fill, formatDate, formatDateTime, todayIso, errorCard,
} from './ui.js';
import { CATEGORY, PRODUCTS } from './labels.js';
import { authorizationPanel } from './prescriber.js';
import { QR_PREFIX } from './qr.js';

function patientIdFromCode(text) {
  const t = String(text || '').trim();
  if (t.startsWith(QR_PREFIX)) return t.slice(QR_PREFIX.length);
  return null;
}

function openPatient(id) {
  location.hash = `#/pharmacy/patient/${encodeURIComponent(id)}`;
}

// The QR code reader (vendor/jsQR.js, a classic script defining window.jsQR), loaded the first
// time the pharmacy's page needs it: other roles never download it.
let jsQrLoading = null;
function loadJsQR() {
  if (!jsQrLoading) {
    jsQrLoading = new Promise((resolve, reject) => {
      const script = document.createElement('script');
      script.src = 'vendor/jsQR.js';
      script.onload = () => resolve();
      script.onerror = () => {
        jsQrLoading = null;
        reject(new Error('The QR code reader did not load.'));
      };
      document.head.append(script);
    });
  }
  return jsQrLoading;
}

// Decodes a QR code from image data with jsQR.
function decodeImageData(imageData) {
  if (typeof window.jsQR !== 'function') throw new Error('The QR code reader did not load.');
  const code = window.jsQR(imageData.data, imageData.width, imageData.height, { inversionAttempts: 'attemptBoth' });
  return code ? code.data : null;
}

function scanner() {
  const out = h('p', { 'aria-live': 'polite', id: 'scan-result' });
  const ready = loadJsQR().catch((e) => { out.textContent = e.message; });
  const video = h('video', { class: 'scanner', playsinline: true, muted: true, hidden: true, 'aria-label': 'Camera preview' });
  let stream = null;
  const stop = () => {
    if (stream) stream.getTracks().forEach((t) => t.stop());
    stream = null;
    video.hidden = true;
  };
  const found = (text) => {
    const id = patientIdFromCode(text);
    if (!id) {
      out.textContent = 'This QR code is not an isoguard patient code.';
      return false;
    }
    stop();
    out.textContent = `Patient ${id} found.`;
    openPatient(id);
    return true;
  };
  const camera = h('button', { type: 'button', class: 'secondary', onclick: async () => {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      out.textContent = 'No camera is available here; read a picture of the code instead.';
      return;
    }
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: 'environment' } });
    } catch (e) {
      out.textContent = `The camera could not be opened (${e.message}); read a picture of the code instead.`;
      return;
    }
    await ready;
    video.srcObject = stream;
    video.hidden = false;
    await video.play();
    const canvas = document.createElement('canvas');
    const ctx = canvas.getContext('2d', { willReadFrequently: true });
    const tick = () => {
      if (!stream || !video.isConnected) { stop(); return; }
      if (video.videoWidth) {
        canvas.width = video.videoWidth;
        canvas.height = video.videoHeight;
        ctx.drawImage(video, 0, 0);
        const text = decodeImageData(ctx.getImageData(0, 0, canvas.width, canvas.height));
        if (text && found(text)) return;
      }
      requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  } }, 'Scan with the camera');
  const file = h('input', { type: 'file', accept: 'image/*', id: 'qr-file' });
  file.addEventListener('change', async () => {
    const f = file.files[0];
    if (!f) return;
    if (f.size > 10 * 1024 * 1024) { out.textContent = 'The picture is larger than 10 MB.'; return; }
    await ready;
    const bitmap = await createImageBitmap(f);
    const canvas = document.createElement('canvas');
    canvas.width = bitmap.width;
    canvas.height = bitmap.height;
    const ctx = canvas.getContext('2d');
    ctx.drawImage(bitmap, 0, 0);
    const text = decodeImageData(ctx.getImageData(0, 0, canvas.width, canvas.height));
    if (!text) { out.textContent = 'No QR code found in this picture.'; return; }
    found(text);
  });
  return h('div', {}, h('div', { class: 'row' }, camera, field('Or read a picture of the code', file)), video, out);
}

async function openAuthorizations() {
  const list = await api('/v1/worklists/pharmacy?limit=100');
  if (!list.items.length) return h('p', { class: 'muted' }, 'No open authorizations.');
  return h('div', { class: 'table-wrap' }, h('table', { id: 'open-authorizations' },
    h('thead', {}, h('tr', {}, ['Patient', 'Prescription', 'Authorization', 'Dispense by'].map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, list.items.map((a) => h('tr', {},
      h('td', {}, h('a', { href: `#/pharmacy/patient/${encodeURIComponent(a.patient_id)}` }, a.patient_id)),
      h('td', {}, a.prescription_id), h('td', {}, a.authorization_id), h('td', {}, formatDateTime(a.dispense_by)))))));
}

export async function home() {
  const id = input('patient_id', { maxlength: 128, autocomplete: 'off', id: 'find-patient' });
  const form = h('form', { class: 'card', 'aria-labelledby': 'find-title' },
    h('h2', { id: 'find-title' }, 'Find a patient'),
    field("Patient's id", id, { name: 'patient_id' }),
    h('button', { type: 'submit' }, 'Find'),
    h('h3', {}, 'Or scan the QR code of the patient\'s app'), scanner());
  wireForm(form, async (data) => {
    const text = String(data.get('patient_id') || '').trim();
    if (!text) throw new FieldError('patient_id', 'Enter the patient\'s id or scan the code.');
    openPatient(patientIdFromCode(text) || text);
  });
  return h('div', {}, h('h1', {}, 'Dispensing'), form,
    h('section', { class: 'card', 'aria-labelledby': 'open-title' }, h('h2', { id: 'open-title' }, 'Open authorizations of this pharmacy'), await openAuthorizations()));
}

function usableLots(lots, product) {
  const today = todayIso();
  return lots.filter((l) => !l.quarantined && l.expiry >= today && l.quantity_capsules > 0 && (!product || l.product === product));
}

function dispenseForm(authorizationId, lots, rerender) {
  const lot = select('lot_id', [['', 'Choose a lot'], ...lots.map((l) => [l.lot_id, `${l.lot_number} · ${l.product} ${l.strength_mg} mg · expires ${l.expiry} · ${l.quantity_capsules} capsules`])], { id: 'dispense-lot' });
  const guide = h('input', { type: 'checkbox', name: 'medication_guide_given', value: 'true', id: 'medication-guide', 'data-field': 'medication_guide_given' });
  const form = h('form', { id: 'dispense-form', 'aria-labelledby': 'dispense-title' },
    h('h3', { id: 'dispense-title' }, `Dispense against ${authorizationId}`),
    field('Lot', lot, { name: 'lot_id' }),
    h('div', { class: 'field' },
      h('label', { class: 'choice', for: 'medication-guide' }, guide, 'I handed the Medication Guide to the patient'),
      h('div', { class: 'error', 'data-error-for': 'medication_guide_given' })),
    h('button', { type: 'submit' }, 'Record the dispense'));
  wireForm(form, async (data) => {
    if (!data.get('lot_id')) throw new FieldError('lot_id', 'Choose the lot the capsules come from.');
    if (data.get('medication_guide_given') !== 'true') throw new FieldError('medication_guide_given', 'The Medication Guide must be handed over with every dispense.');
    const answer = await api('/v1/dispenses', { method: 'POST', body: { authorization_id: authorizationId, lot_id: data.get('lot_id'), medication_guide_given: true } });
    status(`Dispensed: ${answer.capsules} capsules from lot ${data.get('lot_id')}.`);
    rerender();
  });
  return form;
}

function reverseButton(authorizationId, rerender) {
  return h('button', { type: 'button', class: 'danger', id: `reverse-${authorizationId}`, onclick: async (ev) => {
    ev.target.disabled = true;
    try {
      await api(paths.reversal(authorizationId), { method: 'POST', body: {} });
      status(`Authorization ${authorizationId} reversed.`);
      rerender();
    } catch (e) {
      status(e.message);
      ev.target.disabled = false;
    }
  } }, `Reverse ${authorizationId}`);
}

export async function patientPage({ params, rerender }) {
  const [patientId] = params;
  let view, lots;
  try {
    [view, lots] = await Promise.all([api(paths.pharmacyView(patientId)), api('/v1/stock/lots')]);
  } catch (e) {
    return errorCard(e);
  }
  const p = view.patient;
  const result = h('div', { id: 'authorization-result', 'aria-live': 'polite' });
  const rx = input('prescription_id', { maxlength: 128, value: (view.authorization && view.authorization.prescription) || '', id: 'ask-prescription' });
  const ask = h('form', { id: 'ask-form' },
    field('Prescription', rx, { name: 'prescription_id' }),
    h('button', { type: 'submit' }, 'Ask for an authorization'));
  wireForm(ask, async (data) => {
    const prescription = String(data.get('prescription_id') || '').trim();
    if (!prescription) throw new FieldError('prescription_id', 'Enter the prescription\'s id.');
    const answer = await api('/v1/authorizations', { method: 'POST', body: { patient_id: patientId, prescription_id: prescription } });
    const yes = answer.decision === 'authorized';
    fill(result,
      authorizationPanel({ ...answer, prescription }),
      yes ? h('p', {}, 'Authorization ', h('strong', { id: 'authorization-id' }, answer.authorization_id), answer.existing ? ' (already open for this pharmacy).' : '.') : null,
      yes ? dispenseForm(answer.authorization_id, usableLots(lots.items), rerender) : null,
      yes ? h('p', {}, reverseButton(answer.authorization_id, rerender)) : null);
    result.querySelector('.verdict').setAttribute('tabindex', '-1');
    result.querySelector('.verdict').focus();
  });
  const open = view.open_authorizations || [];
  return h('div', {},
    h('h1', {}, `Patient ${p.id}`),
    h('p', { class: 'muted' }, `Born ${formatDate(p.birth_date)} · ${p.jurisdiction} · ${CATEGORY[p.category] || p.category} · program ${view.program}`),
    h('div', { class: 'grid' },
      h('section', { class: 'card', 'aria-labelledby': 'status-title' },
        h('h2', { id: 'status-title' }, 'Status now'),
        authorizationPanel({ ...view.authorization, decision: view.authorization && view.authorization.authorized ? 'authorized' : 'denied' })),
      h('section', { class: 'card', 'aria-labelledby': 'ask-title' },
        h('h2', { id: 'ask-title' }, 'Authorization to dispense'), ask, result)),
    h('section', { class: 'card', 'aria-labelledby': 'patient-open-title' },
      h('h2', { id: 'patient-open-title' }, 'Open authorizations for this patient'),
      open.length ? h('ul', { class: 'plain' }, open.map((a) => h('li', {},
        h('p', {}, `${a.authorization_id} for ${a.prescription_id}, dispense by ${formatDateTime(a.dispense_by)}`),
        dispenseForm(a.authorization_id, usableLots(lots.items), rerender),
        h('p', {}, reverseButton(a.authorization_id, rerender))))) : h('p', { class: 'muted' }, 'None.')));
}

// ---- Stock and storage

export async function stock({ rerender }) {
  const [lots, temps, k] = await Promise.all([api('/v1/stock/lots'), api('/v1/stock/temperatures?limit=200'), knowledge()]);
  const { min_celsius: lo, max_celsius: hi } = k.storage;
  const today = todayIso();
  const lotRows = lots.items.map((l) => {
    const expired = l.expiry < today;
    const release = h('form', { class: 'row', 'aria-label': `Release lot ${l.lot_number}` },
      field('Reason for release', input('reason', { maxlength: 1000, required: true }), { name: 'reason' }),
      h('button', { type: 'submit', class: 'secondary' }, 'Release'));
    wireForm(release, async (data) => {
      if (!String(data.get('reason') || '').trim()) throw new FieldError('reason', 'Say why the lot may be used again.');
      await api(paths.lotRelease(l.lot_id), { method: 'POST', body: { reason: String(data.get('reason')).trim() } });
      status(`Lot ${l.lot_number} released.`);
      rerender();
    });
    const history = h('div');
    const historyButton = h('button', { type: 'button', class: 'secondary', onclick: async () => {
      const ev = await api(paths.lotQuarantine(l.lot_id));
      history.replaceChildren(ev.items.length ? h('ul', {}, ev.items.map((q) => h('li', {}, `${formatDateTime(q.at)}: ${q.action}, ${q.reason} (${q.by})`))) : h('p', { class: 'muted' }, 'No quarantine.'));
    } }, 'History');
    return h('tr', {},
      h('td', {}, l.lot_number), h('td', {}, `${l.product} ${l.strength_mg} mg`),
      h('td', { class: expired ? 'overdue' : '' }, l.expiry, expired ? ' (expired)' : ''),
      h('td', {}, l.location), h('td', {}, String(l.quantity_capsules)),
      h('td', {}, l.quarantined ? h('span', { class: 'badge sev-critical' }, 'quarantined') : h('span', { class: 'badge sev-info' }, 'usable')),
      h('td', {}, l.quarantined ? release : null, historyButton, history));
  });
  const receive = h('form', { id: 'lot-form', 'aria-labelledby': 'receive-title' },
    h('h2', { id: 'receive-title' }, 'Receive a lot'),
    h('div', { class: 'row' },
      field('Product', select('product', PRODUCTS), { name: 'product' }),
      field('Strength (mg)', input('strength_mg', { type: 'number', min: 1, max: 200, step: 'any', required: true }), { name: 'strength_mg' }),
      field('Lot number', input('lot_number', { maxlength: 128, required: true }), { name: 'lot_number' }),
      field('Expiry', input('expiry', { type: 'date', required: true, min: '2000-01-01', max: '2100-12-31' }), { name: 'expiry' }),
      field('Location', input('location', { maxlength: 128, required: true }), { name: 'location' }),
      field('Capsules', input('quantity_capsules', { type: 'number', min: 1, max: 1000000, step: 1, required: true }), { name: 'quantity_capsules' })),
    h('button', { type: 'submit' }, 'Receive'));
  wireForm(receive, async (data) => {
    const body = {
      product: data.get('product'),
      strength_mg: Number(data.get('strength_mg')),
      lot_number: String(data.get('lot_number') || '').trim(),
      expiry: String(data.get('expiry') || ''),
      location: String(data.get('location') || '').trim(),
      quantity_capsules: Number(data.get('quantity_capsules')),
    };
    for (const [k2, v] of Object.entries(body)) if (v === '' || Number.isNaN(v)) throw new FieldError(k2, 'Required.');
    await api('/v1/stock/lots', { method: 'POST', body });
    status(`Lot ${body.lot_number} received.`);
    rerender();
  });
  const reading = h('form', { id: 'temperature-form', 'aria-labelledby': 'temp-title' },
    h('h2', { id: 'temp-title' }, 'Record a temperature'),
    h('p', { class: 'small muted' }, `Storage range ${lo}–${hi} °C; a reading outside it quarantines the lots stored there.`),
    h('div', { class: 'row' },
      field('Location', input('location', { maxlength: 128, required: true }), { name: 'location' }),
      field('Temperature (°C)', input('celsius', { type: 'number', step: 'any', min: -100, max: 100, required: true }), { name: 'celsius' })),
    h('button', { type: 'submit' }, 'Record'));
  wireForm(reading, async (data) => {
    const location = String(data.get('location') || '').trim();
    if (!location) throw new FieldError('location', 'Required.');
    if (String(data.get('celsius') || '') === '') throw new FieldError('celsius', 'Required.');
    const answer = await api('/v1/stock/temperatures', { method: 'POST', body: { location, celsius: Number(data.get('celsius')) } });
    status(answer.excursion ? `Excursion: ${answer.quarantined_lot_ids.length} lot(s) quarantined.` : 'Temperature recorded.');
    rerender();
  });
  const tempRows = [...temps.items].reverse().map((t) => {
    const out = t.celsius < lo || t.celsius > hi;
    return h('tr', { class: out ? 'overdue' : '' }, h('td', {}, formatDateTime(t.at)), h('td', {}, t.location),
      h('td', {}, `${t.celsius} °C`), h('td', {}, out ? 'excursion' : 'in range'), h('td', {}, t.recorded_by));
  });
  return h('div', {},
    h('h1', {}, 'Stock and storage'),
    h('section', { class: 'card', 'aria-labelledby': 'lots-title' },
      h('h2', { id: 'lots-title' }, 'Lots'),
      lots.items.length ? h('div', { class: 'table-wrap' }, h('table', { id: 'lots' },
        h('thead', {}, h('tr', {}, ['Lot', 'Product', 'Expiry', 'Location', 'Capsules', 'Status', ''].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, lotRows))) : h('p', { class: 'muted' }, 'No lots yet.')),
    h('div', { class: 'grid' }, h('section', { class: 'card' }, receive), h('section', { class: 'card' }, reading)),
    h('section', { class: 'card', 'aria-labelledby': 'log-title' },
      h('h2', { id: 'log-title' }, 'Temperature log'),
      tempRows.length ? h('div', { class: 'table-wrap' }, h('table', { id: 'temperatures' },
        h('thead', {}, h('tr', {}, ['When', 'Location', 'Reading', '', 'By'].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, tempRows))) : h('p', { class: 'muted' }, 'No readings yet.')));
}
