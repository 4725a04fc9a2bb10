// Small DOM helpers: elements built from data (never from HTML strings), form fields with their
// label, hint and error beside them, and the page's status line.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

let fieldCounter = 0;
function nextId(prefix) {
  fieldCounter += 1;
  return `${prefix}-${fieldCounter}`;
}

// A labelled control. `name` is the API field it fills; the error element is found by it.
export function field(label, control, { hint, name } = {}) {
  const id = control.id || nextId('f');
  control.id = id;
  if (name) control.dataset.field = name;
  const errorId = `${id}-error`;
  const hintId = hint ? `${id}-hint` : null;
  control.setAttribute('aria-describedby', [hintId, errorId].filter(Boolean).join(' '));
  return h('div', { class: 'field', 'data-field-box': name || '' },
    h('label', { for: id }, label),
    hint ? h('div', { class: 'hint', id: hintId }, hint) : null,
    control,
    h('div', { class: 'error', id: errorId, 'data-error-for': name || '' }));
}

export function input(name, attrs = {}) {
  return h('input', { name, type: 'text', ...attrs });
}

export function select(name, options, attrs = {}) {
  return h('select', { name, ...attrs },
    options.map(([value, text]) => h('option', { value }, text)));
}

// A group of radio buttons or checkboxes with a legend and its own error line.
export function choices(legend, name, options, { type = 'radio', required = false, hint } = {}) {
  const errorId = nextId('err');
  const set = h('fieldset', { 'data-field-box': name, 'aria-describedby': errorId },
    h('legend', {}, legend),
    hint ? h('div', { class: 'hint small muted' }, hint) : null,
    options.map(([value, text], i) => {
      const id = nextId('c');
      return h('label', { class: 'choice', for: id },
        h('input', { type, id, name, value, 'data-field': name, required: required && type === 'radio' && i === 0 }),
        text);
    }),
    h('div', { class: 'error', id: errorId, 'data-error-for': name }));
  return set;
}

export function clearErrors(form) {
  for (const e of form.querySelectorAll('[data-error-for]')) e.textContent = '';
  for (const e of form.querySelectorAll('[aria-invalid]')) e.removeAttribute('aria-invalid');
}

// Shows an error beside the field it names (a problem's `field`, e.g. "events[0].kg" -> "kg").
// Returns false when no field of the form matches (the caller shows it elsewhere).
export function showFieldError(form, fieldPath, message) {
  const candidates = [fieldPath, fieldPath.replace(/^events\[\d+\]\./, ''),
    fieldPath.replace(/\[\d+\]$/, ''), fieldPath.replace(/^events\[\d+\]\./, '').replace(/\[\d+\]$/, '')];
  for (const name of candidates) {
    if (!name) continue;
    const box = form.querySelector(`[data-error-for="${CSS.escape(name)}"]`);
    if (!box) continue;
    box.textContent = message;
    const control = form.querySelector(`[data-field="${CSS.escape(name)}"]`);
    if (control) {
      control.setAttribute('aria-invalid', 'true');
      control.focus();
    }
    return true;
  }
  return false;
}

// Runs `submit` for a form: errors of the API go beside their field, or into the form's
// general error line; the button is disabled while it runs.
export function wireForm(form, submit) {
  const general = h('div', { class: 'error', role: 'alert', 'data-error-for': '_form' });
  form.append(general);
  form.noValidate = true;
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors(form);
    const buttons = form.querySelectorAll('button[type=submit]');
    buttons.forEach((b) => { b.disabled = true; });
    try {
      await submit(new FormData(form));
    } catch (e) {
      if (e.field !== undefined && e.field && showFieldError(form, e.field, e.message)) return;
      general.textContent = e.field ? `${e.field}: ${e.message}` : e.message;
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
  });
  return form;
}

// A client-side check failed: thrown like an API error naming the field.
export class FieldError extends Error {
  constructor(field, message) {
    super(message);
    this.field = field;
  }
}

export function status(message) {
  const el = document.getElementById('status');
  el.textContent = message || '';
}

// A message for the page the app goes to next (the status line is cleared on navigation).
let flashed = '';
export function flash(message) {
  flashed = message;
}
export function takeFlash() {
  const m = flashed;
  flashed = '';
  return m;
}

// replaceChildren without the null and false of optional parts.
export function fill(el, ...children) {
  el.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

export function severityBadge(severity) {
  return h('span', { class: `badge sev-${severity}` }, severity);
}

export function formatDate(iso) {
  if (!iso) return '';
  const d = /^\d{4}-\d{2}-\d{2}$/.test(iso) ? new Date(`${iso}T12:00:00Z`) : new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return d.toLocaleDateString(undefined, { year: 'numeric', month: 'short', day: 'numeric', timeZone: /^\d{4}-\d{2}-\d{2}$/.test(iso) ? 'UTC' : undefined });
}

export function formatDateTime(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return d.toLocaleString(undefined, { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
}

// A time with an offset as written (the program's or the patient's zone), not the browser's:
// "2026-11-30T23:59:59-05:00" -> "Nov 30, 2026, 23:59:59 (UTC-05:00)"; a UTC ("Z") time in the
// browser's zone.
export function formatOffsetTime(iso) {
  const m = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})(?:\.\d+)?(Z|[+-]\d{2}:\d{2})$/.exec(iso || '');
  if (!m) return iso || '';
  // A UTC time carries no zone of its own: shown in the browser's.
  if (m[3] === 'Z') return formatDateTime(iso);
  return `${formatDate(m[1])}, ${m[2]} (UTC${m[3]})`;
}

export function todayIso() {
  const d = new Date();
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

// Now as a time with the browser's offset, as the record format wants.
export function nowWithOffset(date = new Date()) {
  const pad = (n) => String(Math.trunc(Math.abs(n))).padStart(2, '0');
  const off = -date.getTimezoneOffset();
  const sign = off >= 0 ? '+' : '-';
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:` +
    `${pad(date.getMinutes())}:${pad(date.getSeconds())}${sign}${pad(off / 60)}:${pad(off % 60)}`;
}

// A datetime-local value (no offset) as a time with the browser's offset.
export function localInputToOffset(value) {
  if (!value) return nowWithOffset();
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return value;
  return nowWithOffset(d);
}

export function localInputNow() {
  return nowWithOffset().slice(0, 16);
}

export function loading(text = 'Loading…') {
  return h('p', { class: 'muted', 'aria-busy': 'true' }, text);
}

export function errorCard(e) {
  return h('div', { class: 'card', role: 'alert' },
    h('h2', {}, e.status === 403 ? 'Not allowed' : e.status === 404 ? 'Not found' : 'Something went wrong'),
    h('p', {}, e.message));
}
