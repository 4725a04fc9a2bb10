// The patient's pages, made for a phone: what is due (and a calendar file), notifications, the
// QR code for the pharmacy, the monthly questions, the PHQ-9 (with crisis resources at once when
// the answers call for them), side effects, and the program's safety rules in plain words.
import { api, apiBlob, paths, knowledge } from './api.js';
import { h, wireForm, FieldError, status, formatDate, formatDateTime, formatOffsetTime, todayIso, nowWithOffset, choices, field, input, errorCard } from './ui.js';
import { dueLabel, isUntil, METHODS, PHQ9_ITEMS, PHQ9_ANSWERS, COMPREHENSION } from './labels.js';
import { patientQr } from './qr.js';

function myId(session) {
  return session.account.patient_id;
}

async function myRecord(session) {
  return api(paths.patient(myId(session)));
}

function crisisBox(crisis) {
  return h('section', { class: 'alert-box', role: 'alert', id: 'crisis', tabindex: '-1', 'aria-labelledby': 'crisis-title' },
    h('h2', { id: 'crisis-title' }, 'You do not have to face this alone'),
    h('p', {}, 'You told us you have had thoughts of being better off dead or of hurting yourself. Please reach out now:'),
    h('p', {}, h('strong', {}, crisis.service)),
    h('p', { class: 'phone' }, h('a', { href: `tel:${crisis.phone.replace(/\s+/g, '')}` }, crisis.phone)),
    h('p', {}, crisis.how),
    h('p', {}, 'Your prescriber has been told and will contact you.'));
}

export async function home({ session, rerender }) {
  let data, notes;
  try {
    [data, notes] = await Promise.all([myRecord(session), api('/v1/notifications?limit=50')]);
  } catch (e) {
    return errorCard(e);
  }
  const ev = data.evaluation;
  const today = todayIso();
  const due = (ev.due || []).map((d) => {
    const late = !isUntil(d.code) && d.due_by < today;
    return h('li', {}, h('strong', {}, dueLabel(d.code)), h('br'),
      isUntil(d.code) ? `Until ${formatDate(d.due_by)}` : `By ${formatDate(d.due_by)}`,
      late ? h('span', { class: 'overdue' }, ' — overdue') : null);
  });
  const download = h('button', { type: 'button', class: 'secondary', id: 'download-ics', onclick: async () => {
    try {
      const blob = await apiBlob(paths.calendar(myId(session)), 'text/calendar');
      const url = URL.createObjectURL(blob);
      const a = h('a', { href: url, download: 'isoguard-due.ics' });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (e) {
      status(e.message);
    }
  } }, 'Add to my calendar (.ics)');
  const noteItems = notificationItems(notes.items, rerender);
  const auth = ev.authorization;
  return h('div', {},
    h('h1', {}, 'My treatment'),
    h('section', { class: 'card', 'aria-labelledby': 'due-title' },
      h('h2', { id: 'due-title' }, 'What is due next'),
      due.length ? h('ul', { class: 'plain', id: 'due' }, due) : h('p', {}, 'Nothing is due.'),
      h('p', {}, download)),
    h('section', { class: 'card', 'aria-labelledby': 'pharmacy-title' },
      h('h2', { id: 'pharmacy-title' }, 'For the pharmacy'),
      auth && auth.decision === 'authorized'
        ? h('p', {}, `Your prescription can be filled until ${formatOffsetTime(auth.dispense_by)}.`)
        : h('div', {}, h('p', {}, 'Your prescription cannot be filled yet:'),
          h('ul', { id: 'not-yet' }, (auth ? auth.reasons : []).map((r) => h('li', {}, r.message)))),
      h('p', {}, 'Show this code at the pharmacy:'),
      h('div', { class: 'qr', id: 'patient-qr' }, patientQr(myId(session))),
      h('p', { class: 'small muted' }, `Your id: ${myId(session)}`)),
    h('section', { class: 'card', 'aria-labelledby': 'notes-title' },
      h('h2', { id: 'notes-title' }, 'Notifications and reminders'),
      noteItems.length ? h('ul', { class: 'plain', id: 'notifications' }, noteItems) : h('p', { class: 'muted' }, 'None.')));
}

// The inbox (GET /v1/notifications): newest first, each marked read on request.
export function notificationItems(items, rerender, patientHref = null) {
  return items.map((n) => h('li', { class: n.read_at ? 'muted' : '' },
    h('span', { class: `badge sev-${n.severity}` }, n.kind), ' ', n.message, h('br'),
    h('span', { class: 'small muted' }, formatDateTime(n.created_at)), ' ',
    n.patient_id && patientHref ? h('a', { href: patientHref(n.patient_id) }, `patient ${n.patient_id}`) : null, ' ',
    n.read_at ? null : h('button', { type: 'button', class: 'secondary small', onclick: async () => {
      await api(paths.notificationRead(n.id), { method: 'POST', body: {} });
      rerender();
    } }, 'Mark read')));
}

export async function notifications({ session, rerender }) {
  const notes = await api('/v1/notifications?limit=200');
  const role = session.account.role;
  const href = role === 'pharmacist' ? (id) => `#/pharmacy/patient/${encodeURIComponent(id)}`
    : role === 'prescriber' || role === 'clinic_staff' ? (id) => `#/patient/${encodeURIComponent(id)}` : null;
  const items = notificationItems(notes.items, rerender, href);
  return h('div', {}, h('h1', {}, 'Notifications'),
    h('section', { class: 'card' }, items.length ? h('ul', { class: 'plain', id: 'notifications' }, items) : h('p', { class: 'muted' }, 'None.')));
}

export async function monthly({ session }) {
  const data = await myRecord(session);
  const canGetPregnant = data.record.patient.category === 'can_get_pregnant';
  const contraception = h('form', { class: 'card', id: 'contraception-form', 'aria-labelledby': 'contra-title' },
    h('h2', { id: 'contra-title' }, 'Contraception this month'),
    choices('Which methods are you using?', 'methods', METHODS, { type: 'checkbox' }),
    field('Using this combination since', input('since', { type: 'date', min: '1900-01-01', max: todayIso(), required: true }), { name: 'since' }),
    h('button', { type: 'submit' }, 'Confirm'));
  wireForm(contraception, async (form) => {
    const methods = form.getAll('methods');
    if (!methods.length) throw new FieldError('methods', 'Choose the methods you are using.');
    const since = String(form.get('since') || '');
    if (!since) throw new FieldError('since', 'Enter the date you began this combination.');
    await api(paths.events(myId(session)), { method: 'POST', body: { type: 'contraception', at: nowWithOffset(), methods, since } });
    contraception.replaceChildren(h('div', { class: 'ok-box', role: 'status' }, h('h2', {}, 'Thank you'), h('p', {}, 'Your contraception is confirmed for this month.')));
  });
  const questions = h('form', { class: 'card', id: 'comprehension-form', 'aria-labelledby': 'comp-title' },
    h('h2', { id: 'comp-title' }, 'Questions about the safety rules'),
    COMPREHENSION.map((q, i) => choices(q.q, `q${i}`, q.options, { required: true })),
    h('button', { type: 'submit' }, 'Send my answers'));
  wireForm(questions, async (form) => {
    for (let i = 0; i < COMPREHENSION.length; i++) if (!form.get(`q${i}`)) throw new FieldError(`q${i}`, 'Choose an answer.');
    const wrong = COMPREHENSION.filter((q, i) => form.get(`q${i}`) !== q.right);
    await api(paths.events(myId(session)), { method: 'POST', body: { type: 'comprehension', at: nowWithOffset(), passed: wrong.length === 0 } });
    if (wrong.length) {
      throw new Error(`Not passed: ${wrong.length} answer${wrong.length > 1 ? 's are' : ' is'} not right. Read the questions again and try once more.`);
    }
    questions.replaceChildren(h('div', { class: 'ok-box', role: 'status' }, h('h2', {}, 'Passed'), h('p', {}, 'All your answers are right.')));
  });
  return h('div', {}, h('h1', {}, 'Monthly questions'),
    canGetPregnant ? contraception : h('p', { class: 'card' }, 'No contraception attestation is asked of you.'),
    questions);
}

export async function phq9({ session }) {
  const form = h('form', { class: 'card', id: 'phq9-form', 'aria-labelledby': 'phq9-title' },
    h('h2', { id: 'phq9-title' }, 'Over the last 2 weeks, how often have you been bothered by any of the following problems?'),
    PHQ9_ITEMS.map((text, i) => choices(`${i + 1}. ${text}`, `item${i}`, PHQ9_ANSWERS, { required: true })),
    h('button', { type: 'submit' }, 'Send'));
  const page = h('div', {}, h('h1', {}, 'Mood questionnaire (PHQ-9)'), form);
  wireForm(form, async (data) => {
    const items = [];
    for (let i = 0; i < 9; i++) {
      const v = data.get(`item${i}`);
      if (v === null) throw new FieldError(`item${i}`, 'Choose an answer.');
      items.push(Number(v));
    }
    const answer = await api(paths.events(myId(session)), { method: 'POST', body: { type: 'phq9', at: nowWithOffset(), items } });
    if (answer.crisis) {
      const box = crisisBox(answer.crisis);
      page.replaceChildren(h('h1', {}, 'Mood questionnaire (PHQ-9)'), box, h('p', { class: 'card' }, 'Your answers were sent to your prescriber.'));
      box.focus();
      return;
    }
    page.replaceChildren(h('h1', {}, 'Mood questionnaire (PHQ-9)'),
      h('div', { class: 'ok-box', role: 'status' }, h('h2', {}, 'Thank you'), h('p', {}, 'Your answers were sent to your prescriber. If you feel worse, contact them at any time.')));
  });
  return page;
}

export async function sideEffect({ session }) {
  const k = await knowledge();
  const serious = h('section', { class: 'alert-box', 'aria-labelledby': 'serious-title' },
    h('h2', { id: 'serious-title' }, 'Contact your prescriber now if you have'),
    h('ul', { id: 'serious-list' }, k.serious_effects.map((e) => h('li', {}, e.title))));
  const result = h('div', { 'aria-live': 'assertive' });
  const form = h('form', { class: 'card', id: 'side-effect-form', 'aria-labelledby': 'se-title' },
    h('h2', { id: 'se-title' }, 'Tell us what you notice'),
    field('What side effect?', input('term', { maxlength: 1000, required: true }), { name: 'term', hint: 'In your own words, for example "dry lips" or "headache that does not go away".' }),
    h('label', { class: 'choice' }, h('input', { type: 'checkbox', name: 'serious', value: 'true' }), 'It is severe or it frightens me'),
    h('button', { type: 'submit' }, 'Send'));
  wireForm(form, async (data) => {
    const term = String(data.get('term') || '').trim();
    if (!term) throw new FieldError('term', 'Describe the side effect.');
    const answer = await api(paths.events(myId(session)), { method: 'POST', body: { type: 'adverse_event', at: nowWithOffset(), term, serious: data.get('serious') === 'true' } });
    form.reset();
    const urgent = answer.contact_prescriber_now && answer.contact_prescriber_now.length;
    result.replaceChildren(urgent
      ? h('div', { class: 'alert-box', role: 'alert', id: 'contact-now' }, h('h2', {}, 'Contact your prescriber now'),
        h('p', {}, 'What you reported may be serious:'), h('ul', {}, answer.contact_prescriber_now.map((t) => h('li', {}, t))),
        h('p', {}, 'Your prescriber has been told. If you cannot reach them, go to urgent care.'))
      : h('div', { class: 'ok-box', role: 'status' }, h('p', {}, 'Thank you: your prescriber will see it at your next review.')));
  });
  return h('div', {}, h('h1', {}, 'Report a side effect'), serious, form, result);
}

export async function rules({ session }) {
  const [data, k] = await Promise.all([myRecord(session), knowledge()]);
  const program = k.programs.find((p) => p.id === data.evaluation.program);
  const canGetPregnant = data.record.patient.category === 'can_get_pregnant';
  const crisis = k.crisis.find((c) => c.jurisdiction === data.record.patient.jurisdiction);
  const li = (text) => h('li', {}, text);
  return h('div', {},
    h('h1', {}, 'The safety rules of your program'),
    h('section', { class: 'card' },
      h('h2', {}, program ? program.title : data.evaluation.program),
      h('ul', { id: 'rules' },
        canGetPregnant ? [
          li('Isotretinoin causes severe birth defects. You must not get pregnant while you take it, or soon after.'),
          program && program.contraception_lead_in_days ? li(`Use the contraception agreed with your prescriber for at least ${program.contraception_lead_in_days} days before your first prescription.`) : null,
          program ? li(`Keep using it for ${program.contraception_after_last_dose_days} days after your last dose.`) : null,
          li('You need a negative pregnancy test before each prescription.'),
          program && program.pregnancy_test_window_days ? li(`Your pharmacy can fill the prescription only within ${program.pregnancy_test_window_days} days of the test.`) : null,
          program ? li(`There is another pregnancy test ${program.post_treatment_test_days} days after your last dose.`) : null,
          li('Each month, confirm your contraception and answer the questions about these rules in this app.'),
        ] : [],
        program && program.max_days_supply_can_get_pregnant && canGetPregnant ? li(`Each prescription covers at most ${program.max_days_supply_can_get_pregnant} days${program.max_refills === 0 ? ', with no refills' : ''}.`) : null,
        program ? li(`Do not donate blood while you take isotretinoin and for ${program.no_blood_donation_days} days after.`) : null,
        li('Never share your capsules with anyone.'),
        li(`Store the capsules at ${k.storage.min_celsius}–${k.storage.max_celsius} °C, away from moisture and children.`),
        li('Tell your prescriber about every other medicine you take, including vitamin A supplements and antibiotics.'))),
    h('section', { class: 'alert-box', 'aria-labelledby': 'rules-serious' },
      h('h2', { id: 'rules-serious' }, 'Contact your prescriber now if you have'),
      h('ul', {}, k.serious_effects.map((e) => li(e.title)))),
    crisis ? h('section', { class: 'card', 'aria-labelledby': 'rules-crisis' },
      h('h2', { id: 'rules-crisis' }, 'If you have thoughts of hurting yourself'),
      h('p', {}, h('strong', {}, crisis.service), ': ', h('a', { href: `tel:${crisis.phone.replace(/\s+/g, '')}` }, crisis.phone)),
      h('p', {}, crisis.how)) : null);
}
