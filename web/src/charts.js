// Line charts as SVG: a series of dated points, with optional bands (a target range) and
// horizontal threshold lines. Each chart also carries its data as a table for screen readers.
import { h, formatDate } from './ui.js';

const NS = 'http://www.w3.org/2000/svg';
function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) el.setAttribute(k, String(v));
  for (const c of children) if (c) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

function niceMax(v) {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

// points: [{date: 'YYYY-MM-DD' or ISO time, value}], lines: [{value, label, kind: 'warn'|'crit'}],
// band: {low, high, label}, projection: [{date, value}] drawn dashed.
export function lineChart({ title, unit, points, lines = [], band = null, projection = [], id, description }) {
  const W = 640, H = 270, L = 52, R = 16, T = 26, B = 34;
  const all = [...points, ...projection];
  const times = all.map((p) => Date.parse(p.date.length === 10 ? `${p.date}T12:00:00Z` : p.date));
  const fig = h('figure', { class: 'chart', id });
  const headingId = `${id}-title`;
  fig.append(h('h3', { id: headingId }, title));
  if (points.length === 0) {
    fig.append(h('p', { class: 'muted' }, 'No results recorded yet.'));
    return fig;
  }
  let t0 = Math.min(...times), t1 = Math.max(...times);
  if (t1 - t0 < 86400000 * 14) { t0 -= 86400000 * 7; t1 += 86400000 * 7; }
  const ymaxData = Math.max(...all.map((p) => p.value), ...lines.map((l) => l.value), band ? band.high : 0);
  const ymax = niceMax(ymaxData * 1.08);
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  const y = (v) => T + (1 - v / ymax) * (H - T - B);
  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-labelledby': headingId });
  for (let i = 0; i <= 4; i++) {
    const v = (ymax * i) / 4;
    svg.append(s('line', { class: 'gridline', x1: L, x2: W - R, y1: y(v), y2: y(v) }));
    svg.append(s('text', { x: L - 6, y: y(v) + 4, 'text-anchor': 'end' }, Number(v.toFixed(1)).toString()));
  }
  if (band) {
    svg.append(s('rect', { class: 'band', x: L, width: W - L - R, y: y(band.high), height: Math.max(1, y(band.low) - y(band.high)) }));
    svg.append(s('text', { x: L + 4, y: y(band.high) - 4 }, band.label));
  }
  for (const l of lines) {
    svg.append(s('line', { class: l.kind === 'crit' ? 'crit-line' : 'warn-line', x1: L, x2: W - R, y1: y(l.value), y2: y(l.value) }));
    svg.append(s('text', { class: l.kind === 'crit' ? 'lbl-crit' : 'lbl-warn', x: W - R - 4, y: y(l.value) - 4, 'text-anchor': 'end' }, l.label));
  }
  svg.append(s('line', { class: 'axis', x1: L, x2: W - R, y1: H - B, y2: H - B }));
  svg.append(s('line', { class: 'axis', x1: L, x2: L, y1: T, y2: H - B }));
  for (const t of [t0, (t0 + t1) / 2, t1]) {
    svg.append(s('text', { x: x(t), y: H - B + 18, 'text-anchor': t === t0 ? 'start' : t === t1 ? 'end' : 'middle' },
      formatDate(new Date(t).toISOString().slice(0, 10))));
  }
  svg.append(s('text', { x: 4, y: 12 }, unit));
  const pts = points.map((p, i) => [x(times[i]), y(p.value)]);
  svg.append(s('polyline', { class: 'series', points: pts.map((p) => p.join(',')).join(' ') }));
  for (const [px, py] of pts) svg.append(s('circle', { class: 'dot', cx: px, cy: py, r: 3.5 }));
  if (projection.length) {
    const start = pts[pts.length - 1];
    const rest = projection.map((p, i) => [x(times[points.length + i]), y(p.value)]);
    svg.append(s('polyline', { class: 'projection', points: [start, ...rest].map((p) => p.join(',')).join(' ') }));
  }
  fig.append(svg);
  if (description) fig.append(h('figcaption', {}, description));
  fig.append(h('table', { class: 'sr-only' },
    h('caption', {}, `${title} (${unit})`),
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Date'), h('th', { scope: 'col' }, unit))),
    h('tbody', {}, points.map((p) => h('tr', {}, h('td', {}, formatDate(p.date)), h('td', {}, String(p.value)))))));
  return fig;
}
