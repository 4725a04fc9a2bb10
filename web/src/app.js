// The app's shell: sign-in, the navigation of the signed-in role, and the hash routes.
// Each role sees only its own pages, and a page fetches only what the role may read.
import { currentSession, signIn, signInWithToken, signOut, whenUnauthenticated, forgetKnowledge } from './api.js';
import { h, field, input, wireForm, status, flash, takeFlash } from './ui.js';
import * as prescriber from './prescriber.js';
import * as pharmacist from './pharmacist.js';
import * as patient from './patient.js';

const main = document.getElementById('main');

const ROLE_HOME = {
  prescriber: '#/worklist',
  clinic_staff: '#/worklist',
  pharmacist: '#/pharmacy',
  patient: '#/me',
  admin: '#/admin',
};

const NAV = {
  prescriber: [['#/worklist', 'Worklist'], ['#/enroll', 'Enroll a patient'], ['#/find', 'Find a patient'], ['#/notifications', 'Notifications']],
  clinic_staff: [['#/worklist', 'Worklist'], ['#/enroll', 'Enroll a patient'], ['#/find', 'Find a patient'], ['#/notifications', 'Notifications']],
  pharmacist: [['#/pharmacy', 'Dispensing'], ['#/stock', 'Stock and storage'], ['#/notifications', 'Notifications']],
  patient: [['#/me', 'My treatment'], ['#/me/monthly', 'Monthly questions'], ['#/me/phq9', 'Mood questionnaire'],
    ['#/me/side-effect', 'Report a side effect'], ['#/me/rules', 'Safety rules']],
  admin: [['#/admin', 'Administration'], ['#/notifications', 'Notifications']],
};

// Route table: [role list, pattern, view]. Patterns are matched against the hash's path.
const ROUTES = [
  [['prescriber', 'clinic_staff'], /^\/worklist$/, prescriber.worklist],
  [['prescriber', 'clinic_staff'], /^\/enroll$/, prescriber.enroll],
  [['prescriber', 'clinic_staff'], /^\/find$/, prescriber.find],
  [['prescriber', 'clinic_staff'], /^\/patient\/([^/]+)$/, prescriber.patientPage],
  [['pharmacist'], /^\/pharmacy$/, pharmacist.home],
  [['pharmacist'], /^\/pharmacy\/patient\/([^/]+)$/, pharmacist.patientPage],
  [['pharmacist'], /^\/stock$/, pharmacist.stock],
  [['patient'], /^\/me$/, patient.home],
  [['patient'], /^\/me\/monthly$/, patient.monthly],
  [['patient'], /^\/me\/phq9$/, patient.phq9],
  [['patient'], /^\/me\/side-effect$/, patient.sideEffect],
  [['patient'], /^\/me\/rules$/, patient.rules],
  [['prescriber', 'clinic_staff', 'pharmacist', 'admin'], /^\/notifications$/, patient.notifications],
  [['admin'], /^\/admin$/, adminPage],
];

function parseHash() {
  const raw = location.hash.replace(/^#/, '') || '/';
  const [path, query = ''] = raw.split('?');
  return { path, query: new URLSearchParams(query) };
}

function renderChrome(session) {
  const nav = document.getElementById('nav');
  const who = document.getElementById('who');
  nav.replaceChildren();
  who.replaceChildren();
  if (!session) return;
  const here = `#${parseHash().path}`;
  for (const [href, text] of NAV[session.account.role] || []) {
    nav.append(h('a', { href, 'aria-current': here === href ? 'page' : false }, text));
  }
  who.append(
    h('span', {}, `${session.account.name || session.account.id} (${session.account.role.replace('_', ' ')})`),
    h('button', { type: 'button', id: 'sign-out', onclick: async () => {
      try { await signOut(); } catch { /* the token is dropped here anyway */ }
      forgetKnowledge();
      flash('You are signed out.');
      location.hash = '#/signin';
    } }, 'Sign out'));
}

function signInPage() {
  const account = input('account_id', { autocomplete: 'username', required: true, maxlength: 128 });
  const password = input('password', { type: 'password', autocomplete: 'current-password', maxlength: 1024 });
  const form = h('form', { class: 'card', 'aria-labelledby': 'signin-title' },
    h('h1', { id: 'signin-title' }, 'Sign in'),
    field('Account', account, { name: 'account_id' }),
    field('Password', password, { name: 'password' }),
    h('button', { type: 'submit' }, 'Sign in'));
  wireForm(form, async (data) => {
    await signIn(String(data.get('account_id')).trim(), String(data.get('password')));
    status('');
    go();
  });
  const token = input('token', { type: 'password', autocomplete: 'off', maxlength: 512 });
  const tokenForm = h('form', { class: 'card', 'aria-labelledby': 'token-title' },
    h('h2', { id: 'token-title' }, 'Or sign in with an API token'),
    field('API token', token, { name: 'token', hint: 'A token the program administration issued to your account.' }),
    h('button', { type: 'submit', class: 'secondary' }, 'Sign in with token'));
  wireForm(tokenForm, async (data) => {
    await signInWithToken(String(data.get('token')).trim());
    status('');
    go();
  });
  return h('div', { class: 'signin' }, form, tokenForm);
}

function adminPage() {
  return h('div', {},
    h('h1', {}, 'Administration'),
    h('div', { class: 'card' },
      h('p', {}, 'Organisations, accounts, tokens, the access audit and the pregnancy registry are managed with the API (/v1/organisations, /v1/accounts, /v1/audit, /v1/registry/pregnancies) and the isoguard admin command.')));
}

// When the session expires the app goes back to the sign-in page by itself.
let expiryTimer = null;
function scheduleExpiry(session) {
  clearTimeout(expiryTimer);
  if (!session.expires_at) return;
  const ms = Date.parse(session.expires_at) - Date.now();
  expiryTimer = setTimeout(() => {
    flash('Your session has ended; please sign in again.');
    go();
  }, Math.min(Math.max(ms, 0), 2 ** 31 - 1));
}

let renderToken = 0;
async function go() {
  const session = currentSession();
  const { path, query } = parseHash();
  if (!session) {
    renderChrome(null);
    if (path !== '/signin') {
      location.replace('#/signin');
    }
    main.replaceChildren(signInPage());
    document.title = 'Sign in · isoguard';
    return;
  }
  const role = session.account.role;
  scheduleExpiry(session);
  if (path === '/' || path === '/signin') {
    location.replace(ROLE_HOME[role] || '#/signin');
    return;
  }
  renderChrome(session);
  const mine = renderToken += 1;
  for (const [roles, pattern, view] of ROUTES) {
    const m = path.match(pattern);
    if (!m || !roles.includes(role)) continue;
    const params = m.slice(1).map(decodeURIComponent);
    main.replaceChildren(h('p', { class: 'muted', 'aria-busy': 'true' }, 'Loading…'));
    let page;
    try {
      page = await view({ params, query, session, rerender: go });
    } catch (e) {
      page = h('div', { class: 'card', role: 'alert' }, h('h1', {}, 'This page could not be shown'), h('p', {}, e.message));
    }
    if (mine !== renderToken) return;  // a newer navigation won
    main.replaceChildren(page);
    const heading = main.querySelector('h1');
    document.title = `${heading ? heading.textContent : 'isoguard'} · isoguard`;
    return;
  }
  main.replaceChildren(h('div', { class: 'card' }, h('h1', {}, 'Not here'),
    h('p', {}, 'This page does not exist or is not for your role. '), h('a', { href: ROLE_HOME[role] }, 'Go to your start page')));
}

whenUnauthenticated(() => {
  flash('Your session has ended; please sign in again.');
  location.hash = '#/signin';
});
window.addEventListener('hashchange', () => {
  status(takeFlash());
  go();
  main.focus({ preventScroll: true });
});
document.querySelector('[data-skip]').addEventListener('click', (e) => {
  e.preventDefault();
  main.focus();
});
go();
