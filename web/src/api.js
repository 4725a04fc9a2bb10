// The service's REST API (/v1, api/openapi.json) as the app uses it: the session token, JSON in
// and out, and problem details (RFC 9457) turned into errors that name the field.

const SESSION_KEY = 'isoguard.session';

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
    this.field = problem.field || '';
  }
}

// The signed-in session: {token, expires_at, account}, kept for this tab only.
export function currentSession() {
  let s = null;
  try {
    s = JSON.parse(sessionStorage.getItem(SESSION_KEY) || 'null');
  } catch {
    s = null;
  }
  if (!s || !s.token || !s.account) return null;
  if (s.expires_at && Date.parse(s.expires_at) <= Date.now()) {
    sessionStorage.removeItem(SESSION_KEY);
    return null;
  }
  return s;
}

export function saveSession(s) {
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(s));
}

export function clearSession() {
  sessionStorage.removeItem(SESSION_KEY);
}

let onUnauthenticated = () => {};
export function whenUnauthenticated(fn) {
  onUnauthenticated = fn;
}

async function request(path, { method = 'GET', body, token, accept = 'application/json' } = {}) {
  const headers = { Accept: accept };
  const s = token ? { token } : currentSession();
  if (s) headers.Authorization = `Bearer ${s.token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
  } catch (e) {
    throw new ApiError(0, { title: 'No answer', detail: 'The server does not answer; try again.' });
  }
  if (response.status === 401 && !token && path !== '/v1/sessions') {
    clearSession();
    onUnauthenticated();
  }
  return response;
}

async function problemOf(response) {
  try {
    return await response.json();
  } catch {
    return { title: response.statusText, detail: `HTTP ${response.status}` };
  }
}

// JSON in, JSON out; throws ApiError for any status >= 400.
export async function api(path, options = {}) {
  const response = await request(path, options);
  if (response.status >= 400) throw new ApiError(response.status, await problemOf(response));
  if (response.status === 204) return null;
  return response.json();
}

// A text or file answer (the calendar), as a Blob.
export async function apiBlob(path, accept) {
  const response = await request(path, { accept });
  if (response.status >= 400) throw new ApiError(response.status, await problemOf(response));
  return response.blob();
}

export async function signIn(accountId, password) {
  const t = await api('/v1/sessions', { method: 'POST', body: { account_id: accountId, password } });
  const s = { token: t.token, expires_at: t.expires_at, account: t.account };
  saveSession(s);
  return s;
}

// Signing in with an API token the administration issued: the account is read with it.
export async function signInWithToken(token) {
  const account = await api('/v1/me', { token });
  const s = { token, expires_at: null, account };
  saveSession(s);
  return s;
}

export async function signOut() {
  try {
    await api('/v1/sessions/current', { method: 'DELETE' });
  } finally {
    clearSession();
  }
}

const enc = encodeURIComponent;
export const paths = {
  patient: (id, at) => `/v1/patients/${enc(id)}${at ? `?at=${enc(at)}` : ''}`,
  events: (id) => `/v1/patients/${enc(id)}/events`,
  correction: (id, eventId) => `/v1/patients/${enc(id)}/events/${enc(eventId)}/correction`,
  prescriptions: (id) => `/v1/patients/${enc(id)}/prescriptions`,
  calendar: (id) => `/v1/patients/${enc(id)}/calendar.ics`,
  pharmacyView: (id) => `/v1/patients/${enc(id)}/pharmacy-view`,
  reversal: (authId) => `/v1/authorizations/${enc(authId)}/reversal`,
  lotRelease: (lotId) => `/v1/stock/lots/${enc(lotId)}/release`,
  lotQuarantine: (lotId) => `/v1/stock/lots/${enc(lotId)}/quarantine-events`,
  notificationRead: (id) => `/v1/notifications/${enc(id)}/read`,
};

// The knowledge the charts and pages need (thresholds, bands, products...), read once.
let knowledgePromise = null;
export function knowledge() {
  if (!knowledgePromise) {
    knowledgePromise = api('/v1/knowledge').catch((e) => {
      knowledgePromise = null;
      throw e;
    });
  }
  return knowledgePromise;
}
export function forgetKnowledge() {
  knowledgePromise = null;
}
