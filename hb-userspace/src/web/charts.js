// What the page reads from /metrics (Prometheus text), and its two plots:
// the detection time distribution and transitions per second.

// Parses Prometheus text into name -> [{labels, value}].
export function parseMetrics(text) {
  const series = new Map();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const brace = line.indexOf('{');
    const space = line.lastIndexOf(' ');
    if (space < 0) continue;
    const name = brace >= 0 && brace < space ? line.slice(0, brace) : line.slice(0, space);
    const labels = {};
    if (brace >= 0 && brace < space) {
      const body = line.slice(brace + 1, line.lastIndexOf('}'));
      for (const [, key, value] of body.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
        labels[key] = value.replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
      }
    }
    const value = number(line.slice(space + 1));
    if (!series.has(name)) series.set(name, []);
    series.get(name).push({ labels, value });
  }
  return series;
}

function number(text) {
  if (text === '+Inf') return Infinity;
  if (text === '-Inf') return -Infinity;
  return Number(text);
}

// The sum of a metric's series (those whose labels pass `keep`).
export function total(metrics, name, keep = () => true) {
  return (metrics.get(name) ?? []).filter((s) => keep(s.labels)).reduce((sum, s) => sum + s.value, 0);
}

// A histogram's buckets: [{le, count}] with counts per bucket (not
// cumulative), ascending.
export function buckets(metrics, name) {
  const cumulative = (metrics.get(`${name}_bucket`) ?? [])
    .map((s) => ({ le: number(s.labels.le), value: s.value }))
    .sort((a, b) => a.le - b.le);
  return cumulative.map((b, i) => ({ le: b.le, count: b.value - (i > 0 ? cumulative[i - 1].value : 0) }));
}

// The q-quantile of `buckets`, interpolated within its bucket as
// Prometheus' histogram_quantile does; null without observations.
export function quantile(q, buckets) {
  const count = buckets.reduce((sum, b) => sum + b.count, 0);
  if (count === 0) return null;
  const rank = q * count;
  let below = 0;
  for (let i = 0; i < buckets.length; i++) {
    const { le, count: inside } = buckets[i];
    if (below + inside >= rank && inside > 0) {
      if (!Number.isFinite(le)) return i > 0 ? buckets[i - 1].le : null;
      const lower = i > 0 ? buckets[i - 1].le : 0;
      return lower + (le - lower) * ((rank - below) / inside);
    }
    below += inside;
  }
  return null;
}

// A canvas sized to its css box at the device's pixel ratio; returns its
// 2D context scaled to css pixels, and the css size.
function prepare(canvas) {
  const dpr = Math.max(1, Math.round(window.devicePixelRatio || 1));
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (canvas.width !== width * dpr || canvas.height !== height * dpr) {
    canvas.width = width * dpr;
    canvas.height = height * dpr;
  }
  const context = canvas.getContext('2d');
  context.setTransform(dpr, 0, 0, dpr, 0, 0);
  context.clearRect(0, 0, width, height);
  context.font = '11px system-ui, sans-serif';
  return { context, width, height };
}

const AXIS = '#8a94a6';
const GRIDLINE = '#2b3340';

// Bars: one per bucket, labelled with its upper bound.
export function drawBars(canvas, bars, color) {
  const { context, width, height } = prepare(canvas);
  const bottom = height - 18;
  const most = Math.max(1, ...bars.map((b) => b.count));
  const step = width / Math.max(1, bars.length);
  context.textAlign = 'center';
  bars.forEach((bar, i) => {
    const x = i * step;
    const h = ((bottom - 14) * bar.count) / most;
    context.fillStyle = color;
    context.fillRect(x + 2, bottom - h, step - 4, h);
    context.fillStyle = AXIS;
    context.fillText(Number.isFinite(bar.le) ? `${bar.le}` : '+∞', x + step / 2, height - 4);
    if (bar.count > 0) context.fillText(`${bar.count}`, x + step / 2, bottom - h - 3);
  });
  context.strokeStyle = GRIDLINE;
  context.beginPath();
  context.moveTo(0, bottom + 0.5);
  context.lineTo(width, bottom + 0.5);
  context.stroke();
}

// Lines over the last `windowS` seconds: series [{color, points: [{t, v}]}]
// with t in seconds (any origin, the newest at the right edge at `now`).
export function drawLines(canvas, series, now, windowS) {
  const { context, width, height } = prepare(canvas);
  const left = 40;
  const bottom = height - 16;
  const most = Math.max(1, ...series.flatMap((s) => s.points.map((p) => p.v)));
  const top = niceCeil(most);
  context.strokeStyle = GRIDLINE;
  context.fillStyle = AXIS;
  context.textAlign = 'right';
  for (const fraction of [0, 0.5, 1]) {
    const y = bottom - (bottom - 8) * fraction;
    context.beginPath();
    context.moveTo(left, Math.round(y) + 0.5);
    context.lineTo(width, Math.round(y) + 0.5);
    context.stroke();
    context.fillText(format(top * fraction), left - 4, y + 4);
  }
  context.textAlign = 'center';
  for (let minutes = 0; minutes * 60 <= windowS; minutes++) {
    const x = width - ((width - left) * minutes * 60) / windowS;
    context.fillText(minutes === 0 ? 'now' : `-${minutes} min`, Math.min(width - 14, x), height - 2);
  }
  for (const { color, points } of series) {
    context.strokeStyle = color;
    context.lineWidth = 1.5;
    context.beginPath();
    let drawing = false;
    for (const point of points) {
      if (point.v === null) {
        drawing = false;
        continue;
      }
      const x = width - ((width - left) * (now - point.t)) / windowS;
      const y = bottom - ((bottom - 8) * point.v) / top;
      if (drawing) context.lineTo(x, y);
      else context.moveTo(x, y);
      drawing = true;
    }
    context.stroke();
  }
}

function niceCeil(value) {
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) if (value <= step * power) return step * power;
  return 10 * power;
}

function format(value) {
  if (value >= 10000) return `${Math.round(value / 1000)}k`;
  if (value >= 10 || value === 0) return `${Math.round(value)}`;
  return value.toFixed(1);
}
