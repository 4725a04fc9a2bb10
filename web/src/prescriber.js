// The prescriber's pages (and the clinic staff's): the worklist, enrollment, and the patient page
// with its status, due list, alerts, charts, event forms, dose planner and prescription form.
import { api, paths, knowledge } from './api.js';
import {
  h, field, input, select, choices, wireForm, FieldError, status, flash, fill, severityBadge, formatDate,
  formatDateTime, formatOffsetTime, todayIso, localInputToOffset, localInputNow, errorCard,
} from './ui.js';
import { dueLabel, isUntil, EVENT_TYPES, METHODS, PRODUCTS, CATEGORY, PHQ9_ANSWERS, summarizeEvent } from './labels.js';
import { lineChart } from './charts.js';

const PAGE_SIZE = 50;
const TIMELINE_ROWS = 25;
const LB_TO_KG = 0.45359237;  // the international avoirdupois pound

// ---- Worklist

const WORKLIST_FILTERS = ['severity', 'status', 'q'];

export async function worklist({ query }) {
  const offset = Math.max(0, Number.parseInt(query.get('offset') || '0', 10) || 0);
  // The filter is the server's, before paging: it reaches every page of a large clinic.
  const filter = new URLSearchParams();
  for (const key of WORKLIST_FILTERS) {
    const v = (query.get(key) || '').trim();
    if (v) filter.set(key, v);
  }
  const filtered = filter.toString() !== '';
  const data = await api(`/v1/worklists/prescriber?limit=${PAGE_SIZE}&offset=${offset}${filtered ? `&${filter}` : ''}`);
  const severity = select('severity', [['', 'Any'], ['critical', 'Critical'], ['warning', 'Warning'], ['none', 'No alert']]);
  const statusSel = select('status', [['', 'Anything'], ['overdue', 'Something overdue'], ['due', 'Something due this week'], ['alerting', 'An alert']]);
  const text = input('q', { type: 'search', maxlength: 128, placeholder: 'patient id or code' });
  severity.value = filter.get('severity') || '';
  statusSel.value = filter.get('status') || '';
  text.value = filter.get('q') || '';
  const link = (at) => {
    const q = new URLSearchParams(filter);
    if (at > 0) q.set('offset', String(at));
    const qs = q.toString();
    return `#/worklist${qs ? `?${qs}` : ''}`;
  };
  const form = h('form', { class: 'row', id: 'worklist-filter', role: 'search', 'aria-label': 'Filter the worklist' },
    field('Worst alert', severity), field('Showing patients with', statusSel), field('Patient id or code', text),
    h('button', { type: 'submit' }, 'Filter'),
    filtered ? h('a', { class: 'button secondary', href: '#/worklist' }, 'Clear') : null);
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const q = new URLSearchParams();
    if (severity.value) q.set('severity', severity.value);
    if (statusSel.value) q.set('status', statusSel.value);
    if (text.value.trim()) q.set('q', text.value.trim());
    const qs = q.toString();
    location.hash = `#/worklist${qs ? `?${qs}` : ''}`;
  });
  const rows = data.items.map((it) => h('tr', {},
    h('td', {}, h('a', { href: `#/patient/${encodeURIComponent(it.patient_id)}` }, it.patient_id)),
    h('td', {}, it.worst_severity ? severityBadge(it.worst_severity) : h('span', { class: 'muted' }, '—')),
    h('td', {}, it.alerts.join(', ')),
    h('td', { class: it.overdue.length ? 'overdue' : '' }, it.overdue.map(dueLabel).join('; ')),
    h('td', {}, it.due.map(dueLabel).join('; ')),
    h('td', {}, formatDate(it.next_due_by))));
  const last = Math.min(data.total, offset + data.items.length);
  const none = filtered ? 'No patient matches this filter.' : 'No patient needs anything today.';
  return h('div', {},
    h('h1', {}, `Worklist for ${formatDate(data.as_of)}`),
    h('div', { class: 'card' },
      h('p', { class: 'muted small' }, 'Patients with something overdue, due or alerting; critical alerts first.'),
      form,
      h('p', { class: 'small muted', id: 'worklist-count', 'aria-live': 'polite' },
        filtered ? `${data.total} patients match the filter.` : `${data.total} patients on the worklist.`),
      h('div', { class: 'table-wrap' }, h('table', { id: 'worklist' },
        h('thead', {}, h('tr', {}, ['Patient', 'Worst alert', 'Alerts', 'Overdue', 'Due', 'Next due'].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, ...rows))),
      h('nav', { class: 'pager', 'aria-label': 'Worklist pages' },
        offset > 0 ? h('a', { class: 'button secondary', href: link(Math.max(0, offset - PAGE_SIZE)) }, 'Previous') : null,
        h('span', {}, data.total ? `Patients ${offset + 1}–${last} of ${data.total}` : none),
        last < data.total ? h('a', { class: 'button secondary', href: link(offset + PAGE_SIZE), rel: 'next' }, 'Next') : null)));
}

// ---- Find and enroll

export async function find() {
  const id = input('patient_id', { maxlength: 128, required: true, autocomplete: 'off' });
  const form = h('form', { class: 'card' }, field("Patient's id", id, { name: 'patient_id' }), h('button', { type: 'submit' }, 'Open'));
  wireForm(form, async (data) => {
    const pid = String(data.get('patient_id')).trim();
    if (!pid) throw new FieldError('patient_id', 'Enter the patient\'s id.');
    location.hash = `#/patient/${encodeURIComponent(pid)}`;
  });
  return h('div', {}, h('h1', {}, 'Find a patient'), form);
}

export async function enroll() {
  const k = await knowledge();
  const programs = [['', 'The program in force'], ...k.programs.map((p) => [p.id, `${p.title} (${p.jurisdiction})`])];
  const form = h('form', { class: 'card', id: 'enroll-form' },
    field("Patient's id (optional)", input('patient_id', { maxlength: 128 }), { name: 'patient_id', hint: 'A pseudonym; the service makes one when left empty.' }),
    field('Date of birth', input('birth_date', { type: 'date', required: true, min: '1900-01-01', max: todayIso() }), { name: 'birth_date' }),
    field('Jurisdiction', select('jurisdiction', [['US', 'United States'], ['EU', 'European Union'], ['UK', 'United Kingdom']]), { name: 'jurisdiction' }),
    choices('Category', 'category', [['can_get_pregnant', 'Can get pregnant'], ['cannot_get_pregnant', 'Cannot get pregnant']], { required: true }),
    field('Program', select('program', programs), { name: 'program' }),
    field('Time zone (optional)', input('time_zone', { maxlength: 64, placeholder: 'America/New_York' }), { name: 'time_zone', hint: 'Overrides the program\'s zone for day counting.' }),
    h('button', { type: 'submit' }, 'Enroll'));
  wireForm(form, async (data) => {
    const body = {
      birth_date: data.get('birth_date') || null,
      jurisdiction: data.get('jurisdiction'),
      category: data.get('category') || null,
    };
    if (!body.birth_date) throw new FieldError('birth_date', 'Enter the date of birth.');
    if (!body.category) throw new FieldError('category', 'Choose the category.');
    for (const key of ['patient_id', 'program', 'time_zone']) {
      const v = String(data.get(key) || '').trim();
      if (v) body[key] = v;
    }
    const answer = await api('/v1/patients', { method: 'POST', body });
    flash(`Patient ${answer.patient_id} enrolled.`);
    location.hash = `#/patient/${encodeURIComponent(answer.patient_id)}`;
  });
  return h('div', {}, h('h1', {}, 'Enroll a patient'), form);
}

// ---- The patient page

function withdrawnIds(events) {
  return new Set(events.filter((e) => e.type === 'entered_in_error').map((e) => e.target));
}

function eventDate(e) {
  return (e.collected_at || e.at || '').slice(0, 10);
}

export function authorizationPanel(auth) {
  if (!auth) return null;
  const yes = auth.decision === 'authorized' || auth.authorized === true;
  return h('div', { class: `decision ${yes ? 'yes' : 'no'}`, id: 'authorization-status' },
    h('p', { class: 'verdict' }, yes ? 'Yes: this prescription may be dispensed' : 'No: this prescription may not be dispensed now'),
    auth.prescription ? h('p', {}, `Prescription ${auth.prescription}.`) : null,
    yes && auth.dispense_by ? h('p', {}, 'Dispense by ', h('strong', { id: 'dispense-by' }, formatOffsetTime(auth.dispense_by)), '.') : null,
    !yes ? h('div', {}, h('p', {}, 'What is missing:'),
      h('ul', { id: 'reasons' }, (auth.reasons || []).map((r) => h('li', { 'data-code': r.code }, r.message, ' ', h('span', { class: 'muted small' }, `(${r.code})`))))) : null);
}

function alertsList(alerts) {
  if (!alerts.length) return h('p', { class: 'muted' }, 'No alerts.');
  return h('ul', { class: 'plain', id: 'alerts' }, alerts.map((a) => h('li', {}, severityBadge(a.severity), ' ', a.message)));
}

function dueList(due) {
  const today = todayIso();
  if (!due.length) return h('p', { class: 'muted' }, 'Nothing is due.');
  return h('ul', { class: 'plain', id: 'due' }, due.map((d) => {
    const late = !isUntil(d.code) && d.due_by < today;
    return h('li', {}, h('strong', {}, dueLabel(d.code)), ' — ',
      isUntil(d.code) ? `until ${formatDate(d.due_by)}` : `by ${formatDate(d.due_by)}`,
      late ? h('span', { class: 'overdue' }, ' (overdue)') : null);
  }));
}

function doseFacts(dose) {
  if (!dose) return h('p', { class: 'muted' }, 'No dose yet.');
  const fmt = (v, d = 2) => (v === null || v === undefined ? '—' : String(Number(Number(v).toFixed(d))));
  return h('dl', { class: 'facts', id: 'dose' },
    h('dt', {}, 'Daily dose'), h('dd', {}, dose.daily_mg ? `${dose.daily_mg} mg (${fmt(dose.mg_per_kg_day)} mg/kg/day)` : '—'),
    h('dt', {}, 'Cumulative'), h('dd', {}, `${fmt(dose.cumulative_mg, 0)} mg, ${fmt(dose.cumulative_mg_per_kg)} mg/kg`),
    h('dt', {}, 'Target'), h('dd', {}, `${dose.target_mg_per_kg[0]}–${dose.target_mg_per_kg[1]} mg/kg`),
    h('dt', {}, 'Projected to reach it'), h('dd', {}, dose.projected_target_date ? formatDate(dose.projected_target_date) : 'cannot be projected yet'));
}

async function cumulativeChart(patientId, record, evaluation) {
  const gone = withdrawnIds(record.events);
  const dispenses = record.events.filter((e) => e.type === 'dispense' && !gone.has(e.id)).map(eventDate).sort();
  const dose = evaluation.dose;
  const title = 'Cumulative dose (mg/kg)';
  if (!dispenses.length || !dose) return lineChart({ title, unit: 'mg/kg', points: [], id: 'chart-cumulative' });
  // The service computes each point (its engine, as of that day): up to 12 days from the first
  // dispense to today.
  const start = Date.parse(`${dispenses[0]}T12:00:00Z`);
  const end = Date.parse(`${todayIso()}T12:00:00Z`);
  const n = Math.min(12, Math.max(2, Math.round((end - start) / 86400000 / 7) + 1));
  const days = [];
  for (let i = 0; i < n; i++) days.push(new Date(start + ((end - start) * i) / (n - 1)).toISOString().slice(0, 10));
  const unique = [...new Set(days)];
  const answers = await Promise.all(unique.slice(0, -1).map((d) => api(paths.patient(patientId, `${d}T23:59:59Z`))));
  const points = answers.map((a, i) => ({ date: unique[i], value: a.evaluation.dose ? a.evaluation.dose.cumulative_mg_per_kg : 0 }));
  points.push({ date: todayIso(), value: dose.cumulative_mg_per_kg });
  const [low, high] = dose.target_mg_per_kg;
  const projection = dose.projected_target_date && dose.projected_target_date > todayIso()
    ? [{ date: dose.projected_target_date, value: low }] : [];
  return lineChart({
    title, unit: 'mg/kg', points, projection, id: 'chart-cumulative',
    band: { low, high, label: `target ${low}–${high} mg/kg` },
    description: !dose.projected_target_date ? 'No projection: no dose or no weight yet.'
      : projection.length ? `The dashed line runs to ${formatDate(dose.projected_target_date)}, when ${low} mg/kg is reached at the current dose.`
        : `${low} mg/kg, the lower end of the target band, is reached.`,
  });
}

function thresholdLabel(t, scale = 1, unit = '') {
  const sign = t.compare === 'at_least' ? '≥' : '>';
  return `${sign} ${Number((t.value * scale).toFixed(1))}${unit}`;
}

function labChart(record, k, test, id) {
  const family = k.lab_families.find((f) => f.tests.includes(test));
  const gone = withdrawnIds(record.events);
  const results = record.events.filter((e) => e.type === 'lab' && e.test === test && !gone.has(e.id))
    .sort((a, b) => eventDate(a).localeCompare(eventDate(b)));
  if (!family) return lineChart({ title: test, unit: '', points: [], id });
  if (family.relative_to_uln) {
    const latest = results[results.length - 1];
    const uln = latest && latest.uln ? latest.uln : family.default_uln;
    return lineChart({
      title: `${test} (${family.name})`, unit: 'U/L', id,
      points: results.map((e) => ({ date: eventDate(e), value: e.value })),
      lines: [
        { value: family.warning.value * uln, label: `warning ${thresholdLabel(family.warning)}× ULN`, kind: 'warn' },
        { value: family.critical.value * uln, label: `critical ${thresholdLabel(family.critical)}× ULN`, kind: 'crit' },
      ],
      description: `Thresholds drawn at the upper limit of normal of ${uln} U/L${latest && latest.uln ? ' (the latest result\'s)' : ' (the default)'}.`,
    });
  }
  const factor = family.mmol_to_mg_dl || 1;
  return lineChart({
    title: `${family.name[0].toUpperCase()}${family.name.slice(1)} (${test})`, unit: 'mg/dL', id,
    points: results.map((e) => ({ date: eventDate(e), value: e.unit === 'mmol/L' ? Number((e.value * factor).toFixed(1)) : e.value })),
    lines: [
      { value: family.warning.value, label: `warning ${thresholdLabel(family.warning)}`, kind: 'warn' },
      { value: family.critical.value, label: `critical ${thresholdLabel(family.critical)}`, kind: 'crit' },
    ],
    description: 'Results in mmol/L are shown converted to mg/dL.',
  });
}

function phq9Chart(record, k) {
  const gone = withdrawnIds(record.events);
  const points = record.events.filter((e) => e.type === 'phq9' && !gone.has(e.id))
    .map((e) => ({ date: eventDate(e), value: e.items.reduce((a, b) => a + b, 0) }))
    .sort((a, b) => a.date.localeCompare(b.date));
  return lineChart({
    title: 'PHQ-9 total', unit: 'score', points, id: 'chart-phq9',
    lines: [
      { value: k.phq9.moderate_min_total, label: `moderate ≥ ${k.phq9.moderate_min_total}`, kind: 'warn' },
      { value: k.phq9.severe_min_total, label: `severe ≥ ${k.phq9.severe_min_total}`, kind: 'crit' },
    ],
    description: `Any answer above 0 to item ${k.phq9.self_harm_item} raises a critical alert whatever the total.`,
  });
}

function timeline(patientId, entries, rerender) {
  const withdrawn = new Set(entries.filter((e) => e.type === 'entered_in_error').map((e) => e.event.target));
  const rows = [...entries].reverse().map((e) => {
    const canWithdraw = !['patient', 'entered_in_error', 'authorization', 'authorization_reversal', 'dispense'].includes(e.type) && !withdrawn.has(e.event_id);
    return h('tr', { class: withdrawn.has(e.event_id) ? 'muted' : '' },
      h('td', {}, formatDateTime(e.event.collected_at || e.event.at || e.recorded_at)),
      h('td', {}, EVENT_TYPES[e.type] || e.type, withdrawn.has(e.event_id) ? ' (withdrawn)' : ''),
      h('td', {}, summarizeEvent(e.event)),
      h('td', { class: 'small' }, `${e.actor.id} (${e.actor.role})`),
      h('td', {}, canWithdraw ? h('button', {
        type: 'button', class: 'secondary small', 'aria-label': `Withdraw ${EVENT_TYPES[e.type] || e.type} ${e.event_id} as entered in error`,
        onclick: async (ev) => {
          ev.target.disabled = true;
          try {
            await api(paths.correction(patientId, e.event_id), { method: 'POST', body: {} });
            status(`Event ${e.event_id} withdrawn.`);
            rerender();
          } catch (err) {
            status(err.message);
            ev.target.disabled = false;
          }
        },
      }, 'Withdraw') : null));
  });
  // The newest events first; a long record shows its first rows until asked for all.
  const tbody = h('tbody', {}, rows.slice(0, TIMELINE_ROWS));
  const more = rows.length > TIMELINE_ROWS ? h('button', { type: 'button', class: 'secondary', id: 'timeline-all', onclick: () => {
    tbody.replaceChildren(...rows);
    more.remove();
  } }, `Show all ${rows.length} events`) : null;
  return h('div', {}, h('div', { class: 'table-wrap' }, h('table', { id: 'timeline' },
    h('thead', {}, h('tr', {}, ['When', 'Event', 'Details', 'Recorded by', ''].map((t) => h('th', { scope: 'col' }, t)))),
    tbody)), more);
}

// ---- Event forms

const at = () => field('When', input('at', { type: 'datetime-local', value: localInputNow(), required: true }), { name: 'at' });
const num = (name, attrs = {}) => input(name, { type: 'number', inputmode: 'decimal', step: 'any', ...attrs });
const date = (name) => input(name, { type: 'date', min: '1900-01-01', max: '2100-12-31', value: todayIso() });

function formFor(type, record, k) {
  switch (type) {
    case 'weight': {
      return [at(),
        h('div', { class: 'row' },
          field('Weight', num('weight_value', { min: 0, max: 1100, required: true }), { name: 'kg' }),
          field('Unit', select('weight_unit', [['kg', 'kg'], ['lb', 'lb']]), { name: 'weight_unit' }))];
    }
    case 'lab': return [at(),
      h('div', { class: 'row' },
        field('Test', select('test', [['TG', 'Triglycerides (TG)'], ['TC', 'Total cholesterol (TC)'], ['HDL', 'HDL'], ['LDL', 'LDL'], ['ALT', 'ALT'], ['AST', 'AST']]), { name: 'test' }),
        field('Value', num('value', { min: 0, max: 100000, required: true }), { name: 'value' }),
        field('Unit', select('unit', [['mg/dL', 'mg/dL'], ['mmol/L', 'mmol/L'], ['U/L', 'U/L']]), { name: 'unit' }),
        field('ULN (liver tests, optional)', num('uln', { min: 0, max: 100000 }), { name: 'uln' })),
      choices('Fasting sample? (lipids)', 'fasting', [['true', 'Fasting'], ['false', 'Not fasting']], { hint: 'Required for lipids (TG, TC, HDL, LDL).' })];
    case 'pregnancy_test': return [
      field('Collected at', input('collected_at', { type: 'datetime-local', value: localInputNow(), required: true }), { name: 'collected_at' }),
      h('div', { class: 'row' },
        field('Result', select('result', [['negative', 'Negative'], ['positive', 'Positive'], ['invalid', 'Invalid']]), { name: 'result' }),
        field('Setting', select('setting', [['lab', 'Laboratory'], ['office', 'Office'], ['home', 'Home']]), { name: 'setting' }),
        field('Specimen', select('specimen', [['urine', 'Urine'], ['serum', 'Serum']]), { name: 'specimen' }))];
    case 'visit': return [at(), h('label', { class: 'choice' }, h('input', { type: 'checkbox', name: 'counseled', value: 'true', 'data-field': 'counseled' }), 'Risk counselling given')];
    case 'contraception': return [at(),
      choices('Methods in use', 'methods', METHODS, { type: 'checkbox' }),
      field('In use since', date('since'), { name: 'since' })];
    case 'comprehension': return [at(), h('label', { class: 'choice' }, h('input', { type: 'checkbox', name: 'passed', value: 'true' }), 'Passed')];
    case 'phq9': return [at(), h('fieldset', {}, h('legend', {}, 'Item scores (0–3)'),
      h('div', { class: 'row' }, Array.from({ length: 9 }, (_, i) => field(`Item ${i + 1}`, select(`item${i}`, PHQ9_ANSWERS.map(([v, t]) => [v, `${v} ${t}`])), { name: `item${i}` }))),
      h('div', { class: 'error', 'data-error-for': 'items' }))];
    case 'medication': return [at(),
      field('Medication', input('name', { maxlength: 1000, required: true }), { name: 'name' }),
      field('ATC code (optional)', input('atc', { maxlength: 16 }), { name: 'atc' }),
      field('Action', select('action', [['start', 'Started'], ['stop', 'Stopped']]), { name: 'action' })];
    case 'adverse_event': return [at(),
      field('Side effect', input('term', { maxlength: 1000, required: true }), { name: 'term' }),
      h('label', { class: 'choice' }, h('input', { type: 'checkbox', name: 'serious', value: 'true' }), 'Serious')];
    case 'missed_dose': return [at(), field('Day missed', date('date'), { name: 'date' })];
    case 'treatment_end': return [at(), field('Last dose', date('last_dose'), { name: 'last_dose' })];
    case 'category_change': return [at(), field('New category', select('category', Object.entries(CATEGORY)), { name: 'category' })];
    case 'assessment': return [at(), field('Kind', select('kind', [['mental_health', 'Mental health'], ['sexual_function', 'Sexual function']]), { name: 'kind' })];
    case 'enrollment': return [at(), field('Program (optional)', select('program', [['', 'The program in force'], ...k.programs.map((p) => [p.id, p.title])]), { name: 'program' })];
    case 'prescription_cancel': {
      const rx = record.events.filter((e) => e.type === 'prescription').map((e) => [e.id, `${e.id} (${eventDate(e)})`]);
      return [field('Prescription', select('prescription', rx), { name: 'prescription' })];
    }
    default: return [at()];
  }
}

const LIPIDS = new Set(['TG', 'TC', 'HDL', 'LDL']);

function eventFrom(type, data) {
  const e = { type, at: localInputToOffset(String(data.get('at') || '')) };
  const str = (n) => String(data.get(n) || '').trim();
  const number = (n, fieldName = n) => {
    const v = str(n);
    if (v === '') throw new FieldError(fieldName, 'Required.');
    const x = Number(v);
    if (!Number.isFinite(x)) throw new FieldError(fieldName, 'Must be a number.');
    return x;
  };
  switch (type) {
    case 'weight': {
      const v = number('weight_value', 'kg');
      e.kg = data.get('weight_unit') === 'lb' ? Number((v * LB_TO_KG).toFixed(2)) : v;
      break;
    }
    case 'lab':
      e.test = str('test');
      e.value = number('value');
      e.unit = str('unit');
      if (str('uln')) e.uln = number('uln');
      if (LIPIDS.has(e.test)) {
        if (!data.get('fasting')) throw new FieldError('fasting', 'Say whether the sample was taken fasting.');
        e.fasting = data.get('fasting') === 'true';
      }
      break;
    case 'pregnancy_test':
      delete e.at;
      e.collected_at = localInputToOffset(str('collected_at'));
      e.result = str('result');
      e.setting = str('setting');
      e.specimen = str('specimen');
      break;
    case 'visit': e.counseled = data.get('counseled') === 'true'; break;
    case 'contraception':
      e.methods = data.getAll('methods');
      if (!e.methods.length) throw new FieldError('methods', 'Choose at least one method.');
      e.since = str('since');
      break;
    case 'comprehension': e.passed = data.get('passed') === 'true'; break;
    case 'phq9': e.items = Array.from({ length: 9 }, (_, i) => Number(data.get(`item${i}`))); break;
    case 'medication':
      e.name = str('name');
      if (str('atc')) e.atc = str('atc');
      e.action = str('action');
      break;
    case 'adverse_event': e.term = str('term'); e.serious = data.get('serious') === 'true'; break;
    case 'missed_dose': e.date = str('date'); break;
    case 'treatment_end': e.last_dose = str('last_dose'); break;
    case 'category_change': e.category = str('category'); break;
    case 'assessment': e.kind = str('kind'); break;
    case 'enrollment': if (str('program')) e.program = str('program'); break;
    default: break;
  }
  return e;
}

const RECORDABLE = ['weight', 'lab', 'pregnancy_test', 'visit', 'contraception', 'comprehension', 'phq9', 'medication',
  'adverse_event', 'missed_dose', 'treatment_end', 'category_change', 'risk_acknowledgement', 'assessment',
  'second_prescriber', 'enrollment', 'prescription_cancel'];

function eventForm(patientId, record, k, rerender) {
  const type = select('type', RECORDABLE.map((t) => [t, EVENT_TYPES[t]]), { id: 'event-type' });
  const fields = h('div');
  const form = h('form', { id: 'event-form', 'aria-labelledby': 'event-form-title' },
    h('h2', { id: 'event-form-title' }, 'Record an event'),
    field('Event', type), fields, h('button', { type: 'submit' }, 'Record'));
  const show = () => fields.replaceChildren(...formFor(type.value, record, k));
  type.addEventListener('change', show);
  show();
  wireForm(form, async (data) => {
    const t = type.value;
    if (t === 'prescription_cancel') {
      const rx = String(data.get('prescription') || '');
      if (!rx) throw new FieldError('prescription', 'There is no prescription to cancel.');
      await api(`${paths.prescriptions(patientId)}/${encodeURIComponent(rx)}/cancel`, { method: 'POST', body: {} });
    } else {
      const answer = await api(paths.events(patientId), { method: 'POST', body: { events: [eventFrom(t, data)] } });
      if (answer.crisis) status(`Crisis resources were shown to the patient: ${answer.crisis.service}, ${answer.crisis.phone}.`);
    }
    status(`${EVENT_TYPES[t]} recorded.`);
    rerender();
  });
  return form;
}

// ---- Dose planner and prescription

function prescriptionForm(patientId, record, evaluation, k, rerender) {
  const gone = withdrawnIds(record.events);
  const weights = record.events.filter((e) => e.type === 'weight' && !gone.has(e.id));
  const latestWeight = weights.length ? weights[weights.length - 1].kg : '';
  const product = select('product', PRODUCTS, { id: 'rx-product' });
  const planWeight = num('plan_weight', { min: 0, max: 500, value: latestWeight, id: 'plan-weight' });
  const generic = k.products.find((p) => p.product === 'generic');
  const planRate = num('plan_rate', { min: 0, max: generic.max_mg_per_kg_day, value: generic.usual_min_mg_per_kg_day, id: 'plan-rate' });
  const planOut = h('div', { id: 'dose-plan', 'aria-live': 'polite' });
  const dose1 = num('dose1', { min: 0, max: 200, required: true, id: 'rx-dose1' });
  const dose2 = num('dose2', { min: 0, max: 200, id: 'rx-dose2' });
  const planner = h('form', { id: 'planner-form', 'aria-labelledby': 'planner-title' },
    h('h3', { id: 'planner-title' }, 'Dose planner'),
    h('div', { class: 'row' },
      field('Weight (kg)', planWeight, { name: 'weight_kg' }),
      field('Target mg/kg/day', planRate, { name: 'mg_per_kg_day' })),
    h('button', { type: 'submit', class: 'secondary' }, 'Plan the dose'), planOut);
  wireForm(planner, async (data) => {
    const q = new URLSearchParams({ product: product.value, weight_kg: String(data.get('plan_weight')), mg_per_kg_day: String(data.get('plan_rate')) });
    const plan = await api(`/v1/dose-plan?${q}`);
    const info = k.products.find((p) => p.product === plan.product);
    fill(planOut,
      h('p', {}, h('strong', {}, `${plan.daily_mg} mg/day`), ` (${plan.mg_per_kg_day} mg/kg/day) in ${plan.doses_mg.length} dose${plan.doses_mg.length > 1 ? 's' : ''}:`),
      h('ul', {}, plan.doses_mg.map((mg, i) => h('li', {}, `${mg} mg = ${plan.capsules[i].length} capsule${plan.capsules[i].length > 1 ? 's' : ''} (${plan.capsules[i].map((c) => `${c} mg`).join(' + ')})`))),
      h('p', { class: 'small' }, `${plan.take_with_food ? 'Take with a meal.' : 'With or without food.'} About ${plan.days_to_target} days to ${plan.target_mg_per_kg} mg/kg.`,
        info ? ` Usual range ${info.usual_min_mg_per_kg_day}–${info.usual_max_mg_per_kg_day} mg/kg/day.` : ''),
      h('button', { type: 'button', class: 'secondary', onclick: () => {
        dose1.value = plan.doses_mg[0];
        dose2.value = plan.doses_mg[1] || '';
        dose1.focus();
      } }, 'Use this plan'));
  });
  const max = k.programs.find((p) => p.id === evaluation.program);
  const form = h('form', { id: 'rx-form', 'aria-labelledby': 'rx-title' },
    h('h2', { id: 'rx-title' }, 'Write a prescription'),
    field('Product', product, { name: 'product' }),
    h('div', { class: 'row' },
      field('Morning dose (mg)', dose1, { name: 'doses_mg' }),
      field('Evening dose (mg, optional)', dose2, { name: 'dose2' })),
    h('div', { class: 'row' },
      field('Days supply', num('days_supply', { min: 1, max: 365, value: max && max.max_days_supply_can_get_pregnant ? max.max_days_supply_can_get_pregnant : 30, step: 1 }), { name: 'days_supply' }),
      field('Refills', num('refills', { min: 0, max: 12, value: max ? max.max_refills : 0, step: 1 }), { name: 'refills' })),
    h('button', { type: 'submit' }, 'Write prescription'),
    h('div', { id: 'rx-result', 'aria-live': 'polite' }));
  wireForm(form, async (data) => {
    const doses = [String(data.get('dose1') || '').trim(), String(data.get('dose2') || '').trim()].filter(Boolean).map(Number);
    if (!doses.length) throw new FieldError('doses_mg', 'Enter at least one dose.');
    const body = {
      product: product.value,
      doses_mg: doses,
      days_supply: Number(data.get('days_supply')),
      refills: Number(data.get('refills')),
    };
    const answer = await api(paths.prescriptions(patientId), { method: 'POST', body });
    status(`Prescription ${answer.prescription_id || ''} written.`);
    rerender();
  });
  return h('div', {}, form, planner);
}

export async function patientPage({ params, rerender }) {
  const [patientId] = params;
  let data, entries, k;
  try {
    [data, entries, k] = await Promise.all([api(paths.patient(patientId)), api(paths.events(patientId)), knowledge()]);
  } catch (e) {
    return errorCard(e);
  }
  const { record, evaluation } = data;
  const p = record.patient;
  const chart = await cumulativeChart(patientId, record, evaluation).catch((e) => h('p', { role: 'alert' }, e.message));
  return h('div', {},
    h('h1', {}, `Patient ${p.id}`),
    h('p', { class: 'muted' }, `Born ${formatDate(p.birth_date)} · ${p.jurisdiction} · ${CATEGORY[p.category] || p.category} · program ${evaluation.program}` +
      (evaluation.treatment ? ` · ${evaluation.treatment.state.replaceAll('_', ' ')}` : '')),
    h('div', { class: 'grid' },
      h('section', { class: 'card', 'aria-labelledby': 'auth-title' }, h('h2', { id: 'auth-title' }, 'May the current prescription be dispensed?'), authorizationPanel(evaluation.authorization)),
      h('section', { class: 'card', 'aria-labelledby': 'alerts-title' }, h('h2', { id: 'alerts-title' }, 'Alerts and what to do'), alertsList(evaluation.alerts || [])),
      h('section', { class: 'card', 'aria-labelledby': 'due-title' }, h('h2', { id: 'due-title' }, 'Due next'), dueList(evaluation.due || [])),
      h('section', { class: 'card', 'aria-labelledby': 'dose-title' }, h('h2', { id: 'dose-title' }, 'Dose'), doseFacts(evaluation.dose))),
    h('section', { class: 'card', 'aria-labelledby': 'charts-title' },
      h('h2', { id: 'charts-title' }, 'Charts'),
      h('div', { class: 'grid charts' }, chart, labChart(record, k, 'TG', 'chart-tg'), labChart(record, k, 'ALT', 'chart-alt'), phq9Chart(record, k))),
    h('div', { class: 'grid' },
      h('section', { class: 'card' }, eventForm(patientId, record, k, rerender)),
      h('section', { class: 'card' }, prescriptionForm(patientId, record, evaluation, k, rerender))),
    h('section', { class: 'card', 'aria-labelledby': 'timeline-title' },
      h('h2', { id: 'timeline-title' }, 'Timeline'), timeline(patientId, entries.entries, rerender)));
}
