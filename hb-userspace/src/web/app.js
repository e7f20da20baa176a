// hb's live view: a snapshot of every node's state (GET /api/v1/fleet),
// kept current by the event stream (GET /api/v1/events?since=CURSOR),
// and what the agent says about itself (GET /api/v1/status, /metrics),
// polled every two seconds. Events are applied in batches, at most one
// per animation frame; each batch is timed and the figures are kept in
// window.hbStats.

import { readEvents } from './stream.js';
import { Grid, STATES } from './grid.js';
import { parseMetrics, total, buckets, quantile, drawBars, drawLines } from './charts.js';

const TOKEN_KEY = 'hb.token';
const POLL_MS = 2000;
// The stream sends a summary every second: this long without a byte, it is dead.
const STALE_MS = 5000;
const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 5000;
// The agent's ring of recent events: a resume further back than this misses some.
const RING = 4096;
// A new agent's last changes shown in the feed (replayed over its snapshot).
const PREFILL = 100;
// Events queued for the next frame past this (a hidden tab gets no
// frames): drop them and load a fresh snapshot instead.
const MAX_PENDING = 200000;
const FEED_KEEP = 1000;
const FEED_SHOW = 100;
const NOT_UP_SHOW = 100;
const NOT_UP_EVERY_MS = 500;
// Per-node maps (names, times) are emptied past this many entries.
const PER_NODE_KEEP = 100000;
const RATE_WINDOW_S = 300;
// Summaries whose counts differ from the page's in a row before it reloads the snapshot.
const MISMATCHES_BEFORE_RESYNC = 3;

const $ = (id) => document.getElementById(id);

class Unauthorized extends Error {}
class Resync extends Error {}

// ---------------------------------------------------------------- requests

function authorization() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function api(path, init = {}) {
  const response = await fetch(path, { ...init, cache: 'no-store', headers: authorization() });
  if (response.status === 401) throw new Unauthorized(path);
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response;
}

// ---------------------------------------------------------------- state

const grid = new Grid($('grid'), $('grid-overlay'));
const model = {
  pid: null,
  cursor: 0, // the last event received
  code: {}, // state name -> code
  counts: [], // per code
  pending: [], // events and summaries for the next frame
  feed: [], // the last FEED_KEEP transitions, oldest first
  recentNotUp: [], // indices of nodes that last left `up`, newest last
  since: new Map(), // node index -> agent Unix ms of its last transition
  names: new Map(), // node id -> name
  silentSince: new Map(), // node id -> agent Unix ms of its last heartbeat (status)
  clockOffset: 0, // agent Unix ms - Date.now()
  mismatches: 0,
  needsResync: false,
  lagged: false,
  notUpDirty: true,
  notUpDrawnAt: 0,
  uptime: null, // {ms, at}
  version: '',
};

// ---------------------------------------------------------------- stats

const durations = [];
const stats = {
  updates: 0,
  events: 0,
  lastMs: 0,
  maxMs: 0,
  fleetLoads: 0,
  fleetMs: 0, // the last snapshot: asked for, received, applied and drawn
  fleetApplyMs: 0, // its last part: applied and drawn
  resyncs: 0,
  resumes: 0,
  reconnects: 0,
  connected: false,
  get medianMs() {
    return percentile(0.5);
  },
  get p95Ms() {
    return percentile(0.95);
  },
  get nodes() {
    return grid.nodes;
  },
  get mode() {
    return grid.mode;
  },
  get perBlock() {
    return grid.perBlock;
  },
  get cursor() {
    return model.cursor;
  },
  get counts() {
    return Object.fromEntries(Object.entries(model.code).map(([name, code]) => [name, model.counts[code]]));
  },
};
window.hbStats = stats;
window.hbGrid = grid;

function percentile(q) {
  if (durations.length === 0) return null;
  const sorted = [...durations].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

function record(ms, events) {
  stats.updates += 1;
  stats.events += events;
  stats.lastMs = ms;
  stats.maxMs = Math.max(stats.maxMs, ms);
  durations.push(ms);
  if (durations.length > 2000) durations.shift();
}

// ---------------------------------------------------------------- snapshot

// Loads a fleet snapshot; returns the cursor to resume the stream from.
async function loadFleet() {
  const started = performance.now();
  const response = await api('/api/v1/fleet');
  const bytes = new Uint8Array(await response.arrayBuffer());
  const received = performance.now();
  const newline = bytes.indexOf(10);
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(0, newline)));
  const states = bytes.subarray(newline + 1);
  if (states.length !== header.nodes) throw new Error('the fleet snapshot is cut short');
  // The same agent, not too far behind: resume where this page left off,
  // so the feed misses nothing. A new agent: from a little before the
  // snapshot, so the feed shows its last changes. Replayed changes end in
  // the states the snapshot has (each node's last one is its state now),
  // so the grid is right either way.
  const sameAgent = header.pid === model.pid;
  let resume = header.cursor;
  if (sameAgent && model.cursor <= header.cursor && header.cursor - model.cursor < RING) resume = model.cursor;
  else if (!sameAgent) resume = Math.max(0, header.cursor - PREFILL);
  if (header.pid !== model.pid) model.feed = [];
  model.pid = header.pid;
  model.cursor = resume;
  model.code = Object.fromEntries(header.codes.map((name, code) => [name, code]));
  model.counts = header.codes.map(() => 0);
  for (const code of states) model.counts[code] += 1;
  model.pending = [];
  model.recentNotUp = [];
  model.since.clear();
  model.mismatches = 0;
  model.needsResync = false;
  model.notUpDirty = true;
  grid.load(header.runs, states, header.codes);
  grid.draw();
  renderCounts();
  renderFeedAll();
  $('agent').textContent = `agent ${location.host} · pid ${header.pid}${model.version ? ` · hb ${model.version}` : ''}`;
  $('detector').textContent = `detector: ${header.detector}`;
  $('grid-legend').textContent =
    grid.mode === 'cells'
      ? `${grid.nodes.toLocaleString()} nodes, one cell each`
      : `${grid.nodes.toLocaleString()} nodes, ${grid.perBlock} per pixel block (worst state shown)`;
  stats.fleetLoads += 1;
  stats.fleetMs = performance.now() - started;
  stats.fleetApplyMs = performance.now() - received;
  return resume;
}

// ---------------------------------------------------------------- stream

let stream = null; // {controller} of the open stream

// One connection: a snapshot (unless `fresh` is false: the stream resumes
// where it was), then the stream until it ends or breaks.
async function session(fresh) {
  const since = fresh || model.pid === null ? await loadFleet() : model.cursor;
  const controller = new AbortController();
  stream = { controller };
  const response = await api(`/api/v1/events?since=${since}`, { signal: controller.signal });
  setConnection('live');
  let lastBytes = performance.now();
  const watchdog = setInterval(() => {
    if (performance.now() - lastBytes > STALE_MS) controller.abort();
  }, 1000);
  try {
    await readEvents(response, onEvent, () => {
      lastBytes = performance.now();
    });
  } catch (error) {
    if (model.needsResync) throw new Resync();
    throw error;
  } finally {
    clearInterval(watchdog);
    stream = null;
  }
  if (model.needsResync) throw new Resync();
}

function onEvent({ event, data }) {
  if (event === 'transition') {
    const transition = JSON.parse(data);
    if (transition.cursor <= model.cursor) return; // replayed twice
    model.cursor = transition.cursor;
    model.pending.push(transition);
  } else if (event === 'summary') {
    const summary = JSON.parse(data);
    model.clockOffset = summary.unix_ms - Date.now();
    model.pending.push({ summary });
  } else if (event === 'missed') {
    // The agent's ring no longer holds what this page missed.
    resync();
    return;
  } else if (event === 'lagged') {
    // The agent drops this stream next: the page resumes it at once.
    model.lagged = true;
    return;
  }
  if (model.pending.length > MAX_PENDING) {
    resync();
    return;
  }
  schedule();
}

// Loads a fresh snapshot (and reopens the stream from it).
function resync() {
  if (model.needsResync) return;
  model.needsResync = true;
  model.pending = [];
  stats.resyncs += 1;
  if (stream) stream.controller.abort();
}

// Connects, and reconnects whenever the stream ends: at once after a lag
// or to reload the snapshot, else after a growing delay, showing
// "disconnected" meanwhile. A new connection loads a fresh snapshot (the
// agent may have restarted) and resumes the stream from this page's
// cursor if the agent is the same one.
async function run() {
  let delay = RETRY_MIN_MS;
  let down = null;
  let fresh = true;
  for (;;) {
    try {
      await session(fresh);
    } catch (error) {
      fresh = true;
      if (error instanceof Unauthorized) {
        setConnection('disconnected', 'the agent wants a token');
        await askToken();
        continue;
      }
      if (error instanceof Resync) continue;
    }
    const wasLive = stats.connected;
    if (wasLive && model.lagged) {
      model.lagged = false;
      fresh = false;
      stats.resumes += 1;
      continue;
    }
    fresh = true;
    stats.reconnects += 1;
    if (wasLive || down === null) {
      down = Date.now();
      delay = RETRY_MIN_MS;
    }
    setConnection('disconnected', `since ${clock(down)}, retrying`);
    await sleep(delay);
    delay = Math.min(RETRY_MAX_MS, delay * 2);
  }
}

function setConnection(state, why = '') {
  const element = $('conn');
  element.dataset.state = state;
  element.textContent = why ? `${state}: ${why}` : state;
  stats.connected = state === 'live';
}

// ---------------------------------------------------------------- frames

let frameAsked = false;

function schedule() {
  if (frameAsked) return;
  frameAsked = true;
  requestAnimationFrame(frame);
}

// Applies what arrived since the last frame and redraws what changed.
function frame() {
  frameAsked = false;
  const started = performance.now();
  const items = model.pending;
  model.pending = [];
  const applied = [];
  for (const item of items) {
    if (item.summary) check(item.summary);
    else if (apply(item)) applied.push(item);
  }
  if (model.feed.length > FEED_KEEP) model.feed.splice(0, model.feed.length - FEED_KEEP);
  grid.draw();
  renderCounts();
  renderFeed(applied);
  if (model.notUpDirty && started - model.notUpDrawnAt >= NOT_UP_EVERY_MS) renderNotUp();
  // An update: a batch of transitions applied and drawn.
  if (applied.length > 0) record(performance.now() - started, applied.length);
  if (model.notUpDirty) setTimeout(schedule, NOT_UP_EVERY_MS);
}

// One transition into the model; false if the page does not know the node.
function apply(transition) {
  const index = grid.indexOf(transition.node_id);
  const code = model.code[transition.event];
  if (index < 0 || code === undefined) {
    // A node added by a reload: the snapshot has it.
    resync();
    return false;
  }
  const old = grid.set(index, code);
  model.counts[old] -= 1;
  model.counts[code] += 1;
  model.since.set(index, transition.unix_ms);
  if (model.since.size > PER_NODE_KEEP) model.since.clear();
  remember(transition.node_id, transition.node);
  if (transition.event !== 'up') {
    model.recentNotUp.push(index);
    if (model.recentNotUp.length > 4 * NOT_UP_SHOW) model.recentNotUp.splice(0, 2 * NOT_UP_SHOW);
  }
  model.notUpDirty = true;
  model.feed.push(transition);
  return true;
}

// A summary's counts against the page's: a few differences in a row mean
// the page lost track, and it loads a fresh snapshot.
function check(summary) {
  const differs = summary.states.some(([name, count]) => {
    const code = model.code[name];
    return code !== undefined && model.counts[code] !== count;
  });
  model.mismatches = differs ? model.mismatches + 1 : 0;
  if (model.mismatches >= MISMATCHES_BEFORE_RESYNC) resync();
}

function remember(id, name) {
  if (model.names.size >= PER_NODE_KEEP) model.names.clear();
  model.names.set(id, name);
}

function nameOf(id) {
  return model.names.get(id) ?? `id ${id}`;
}

// ---------------------------------------------------------------- rendering

function renderCounts() {
  for (const [name, code] of Object.entries(model.code)) {
    const element = $(`count-${name}`);
    if (!element) continue;
    const count = model.counts[code];
    const text = count.toLocaleString();
    if (element.textContent !== text) element.textContent = text;
    element.toggleAttribute('data-zero', count === 0);
  }
}

function renderFeed(added) {
  const list = $('feed');
  const filter = $('feed-filter').value;
  const shown = added.filter((t) => !filter || t.event === filter).slice(-FEED_SHOW);
  if (shown.length === 0) return;
  const fragment = document.createDocumentFragment();
  for (let i = shown.length - 1; i >= 0; i--) fragment.append(feedRow(shown[i]));
  list.prepend(fragment);
  while (list.children.length > FEED_SHOW) list.lastElementChild.remove();
}

function renderFeedAll() {
  $('feed').replaceChildren();
  const filter = $('feed-filter').value;
  renderFeed(model.feed.filter((t) => !filter || t.event === filter).slice(-FEED_SHOW));
}

function feedRow(t) {
  const row = document.createElement('li');
  row.dataset.node = t.node;
  row.dataset.event = t.event;
  row.dataset.cursor = t.cursor;
  row.append(
    span('t', clock(t.unix_ms)),
    nodeButton(t.node_id, t.node),
    ' ',
    stateSpan(t.previous),
    ' → ',
    stateSpan(t.event),
  );
  if (t.event === 'down' && t.since_last_heartbeat_ms !== null) {
    row.append(' ', span('meta', `silent ${(t.since_last_heartbeat_ms / 1000).toFixed(2)} s`));
  }
  return row;
}

// The nodes not up: those that changed last first, then the others by id.
function renderNotUp() {
  model.notUpDirty = false;
  model.notUpDrawnAt = performance.now();
  const up = model.code.up;
  const states = grid.states;
  const rows = [];
  const listed = new Set();
  const add = (index) => {
    if (listed.has(index) || states[index] === up) return;
    listed.add(index);
    rows.push(index);
  };
  for (let i = model.recentNotUp.length - 1; i >= 0 && rows.length < NOT_UP_SHOW; i--) add(model.recentNotUp[i]);
  for (let index = 0; index < states.length && rows.length < NOT_UP_SHOW; index++) add(index);
  const notUp = grid.nodes - (model.counts[up] ?? 0);
  $('notup-count').textContent =
    notUp > rows.length ? `${notUp.toLocaleString()} (the first ${rows.length} shown)` : `${notUp.toLocaleString()}`;
  const now = Date.now() + model.clockOffset;
  $('notup').replaceChildren(
    ...rows.map((index) => {
      const id = grid.idAt(index);
      const state = grid.codes[states[index]];
      const row = document.createElement('li');
      row.dataset.node = nameOf(id);
      row.dataset.state = state;
      row.append(stateSpan(state), nodeButton(id, nameOf(id)));
      const since = model.since.get(index);
      const silent = model.silentSince.get(id);
      if (since !== undefined) row.append(' ', span('meta', `for ${duration(now - since)}`));
      else if (silent !== undefined) row.append(' ', span('meta', `silent ${duration(now - silent)}`));
      return row;
    }),
  );
}

function span(className, text) {
  const element = document.createElement('span');
  element.className = className;
  element.textContent = text;
  return element;
}

function stateSpan(state) {
  const element = span('st', state);
  element.dataset.state = state;
  return element;
}

function nodeButton(id, name) {
  const button = document.createElement('button');
  button.className = 'node';
  button.type = 'button';
  button.textContent = name;
  button.addEventListener('click', () => showDetail(String(id)));
  return button;
}

// ---------------------------------------------------------------- header

function renderStatus(status) {
  model.uptime = { ms: status.uptime_ms, at: performance.now() };
  renderUptime();
  const interfaces = status.interfaces ?? [];
  const modes = [...new Set(interfaces.map((i) => i.mode))];
  $('datapath').textContent =
    modes.length === 1 && modes[0] === 'socket'
      ? `socket datapath on ${interfaces.map((i) => i.name).join(', ') || 'all addresses'}`
      : `XDP (${modes.join(', ')}) on ${interfaces.map((i) => i.name).join(', ')}`;
  const brake = status.brake ?? {};
  const banner = $('brake');
  banner.hidden = !brake.engaged;
  if (brake.engaged) {
    banner.textContent =
      `Brake engaged: a partition is suspected. ${brake.held.toLocaleString()} down actions are held ` +
      `(${brake.silent.toLocaleString()} nodes went silent together).`;
  }
  const problems = [];
  if (status.state_file?.error) problems.push(`The state file is not being saved: ${status.state_file.error}`);
  if (status.group && !status.group.quorum) problems.push(`Monitor group ${status.group.name}: no quorum, no group action runs.`);
  $('problem').hidden = problems.length === 0;
  $('problem').textContent = problems.join(' ');
  const group = $('group');
  group.hidden = !status.group;
  if (status.group) {
    const g = status.group;
    group.textContent = `group ${g.name}: ${g.monitor} is ${g.role}${g.leader ? `, leader ${g.leader}` : ''}`;
  }
  const now = Date.now() + model.clockOffset;
  for (const node of status.nodes ?? []) {
    remember(node.id, node.name);
    if (node.since_last_heartbeat_ms !== null) model.silentSince.set(node.id, now - node.since_last_heartbeat_ms);
  }
  if (model.silentSince.size > PER_NODE_KEEP) model.silentSince.clear();
  model.notUpDirty = true;
  schedule();
}

function renderUptime() {
  if (!model.uptime) return;
  const ms = model.uptime.ms + (stats.connected ? performance.now() - model.uptime.at : 0);
  $('uptime').textContent = `up ${duration(ms)}`;
}

const rates = { last: null, total: [], down: [] };

function renderMetrics(text) {
  const metrics = parseMetrics(text);
  const build = metrics.get('hb_build_info')?.[0];
  if (build) model.version = build.labels.version;
  const stalls = total(metrics, 'hb_agent_stalls_total');
  const element = $('stalls');
  element.textContent = `stalls: ${stalls}`;
  element.classList.toggle('warn', stalls > 0);

  const bars = buckets(metrics, 'hb_detection_seconds');
  const count = bars.reduce((sum, b) => sum + b.count, 0);
  drawBars($('detection'), bars.filter((b) => Number.isFinite(b.le) || b.count > 0), STATES.down.color);
  const median = quantile(0.5, bars);
  const p99 = quantile(0.99, bars);
  $('detection-summary').textContent =
    count === 0
      ? '(hb_detection_seconds: no node convicted yet)'
      : `${count} down${count === 1 ? '' : 's'} · median ${seconds(median)} · p99 ${seconds(p99)}`;

  const now = performance.now() / 1000;
  const sample = {
    t: now,
    total: total(metrics, 'hb_transitions_total'),
    down: total(metrics, 'hb_transitions_total', (l) => l.to === 'down'),
  };
  const last = rates.last;
  if (last && sample.total >= last.total) {
    const dt = sample.t - last.t;
    rates.total.push({ t: now, v: (sample.total - last.total) / dt });
    rates.down.push({ t: now, v: (sample.down - last.down) / dt });
  } else if (last) {
    // The agent restarted: its counters began again.
    rates.total.push({ t: now, v: null });
    rates.down.push({ t: now, v: null });
  }
  rates.last = sample;
  for (const series of [rates.total, rates.down]) {
    while (series.length > 0 && series[0].t < now - RATE_WINDOW_S) series.shift();
  }
  const latest = rates.total.at(-1)?.v;
  $('rate-summary').textContent = latest == null ? '' : `now ${latest.toFixed(1)}/s (all) · downs in red`;
  drawLines(
    $('rate'),
    [
      { color: '#8a94a6', points: rates.total },
      { color: STATES.down.color, points: rates.down },
    ],
    now,
    RATE_WINDOW_S,
  );
}

// ---------------------------------------------------------------- polling

let tokenWanted = false;

async function poll() {
  if (tokenWanted) return;
  const [status, metrics] = await Promise.allSettled([
    api('/api/v1/status?limit=100').then((r) => r.json()),
    api('/metrics').then((r) => r.text()),
  ]);
  if (status.status === 'fulfilled') renderStatus(status.value);
  if (metrics.status === 'fulfilled') renderMetrics(metrics.value);
  if (detailKey !== null) showDetail(detailKey, false);
}

// ---------------------------------------------------------------- token

let tokenAnswer = null;

// Asks for the token (once per refusal); resolves when one is entered.
function askToken() {
  tokenWanted = true;
  const refused = sessionStorage.getItem(TOKEN_KEY) !== null;
  sessionStorage.removeItem(TOKEN_KEY);
  $('token-why').textContent = refused
    ? 'The agent refused the token. Enter the one in its [http] token_file.'
    : 'The agent runs with [http] token_file: enter its token. It is kept in this browser tab only (session storage) and sent with every request.';
  const dialog = $('token-dialog');
  if (!dialog.open) dialog.showModal();
  return new Promise((resolve) => {
    tokenAnswer = resolve;
  });
}

$('token-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const token = $('token-input').value.trim();
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  $('token-input').value = '';
  $('token-dialog').close();
  tokenWanted = false;
  if (tokenAnswer) tokenAnswer();
  tokenAnswer = null;
  poll();
});

// ---------------------------------------------------------------- detail

let detailKey = null;

async function showDetail(key, select = true) {
  detailKey = key;
  $('detail-close').hidden = false;
  let detail;
  try {
    detail = await (await api(`/api/v1/nodes/${encodeURIComponent(key)}`)).json();
  } catch (error) {
    if (detailKey !== key || error instanceof Unauthorized) return;
    $('detail-title').textContent = key;
    const missing = error.message.endsWith('HTTP 404');
    $('detail-body').replaceChildren(span('meta', missing ? `no node has the id or name “${key}”` : error.message));
    return;
  }
  if (detailKey !== key) return;
  remember(detail.id, detail.name);
  $('detail-title').textContent = `${detail.name} (id ${detail.id})`;
  const interval = detail.measured_interval_ms;
  const fields = [
    ['state', stateSpan(detail.state)],
    ['address', detail.address ?? '—'],
    ['last heard', detail.since_last_heartbeat_ms === null ? 'never' : `${duration(detail.since_last_heartbeat_ms)} ago`],
    ['in this state', detail.in_state_ms === null ? '—' : duration(detail.in_state_ms)],
    ['down in', detail.down_in_ms === null ? '—' : duration(detail.down_in_ms)],
    ['interval', `${detail.interval_ms} ms advertised`],
    ['measured', interval ? `${interval.mean_ms.toFixed(1)} ± ${interval.sd_ms.toFixed(1)} ms` : '—'],
    ['phi', detail.phi === null ? '— (timeout rule)' : detail.phi.toFixed(2)],
    ['heartbeats', detail.heartbeats.toLocaleString()],
    ['incarnation · sequence', `${detail.incarnation} · ${detail.sequence}`],
    ['source port', detail.source_port],
    ['signed · pinned', `${detail.authenticated ? 'yes' : 'no'} · ${detail.pinned ? 'yes' : 'no'}`],
    ['probe', detail.probe ? `${detail.probe.kind} ${detail.probe.target}` : '—'],
    ['refreshed by', detail.refreshed_by ?? '—'],
  ];
  const list = document.createElement('dl');
  for (const [name, value] of fields) {
    const dt = document.createElement('dt');
    dt.textContent = name;
    const dd = document.createElement('dd');
    dd.append(value);
    list.append(dt, dd);
  }
  const transitions = document.createElement('ol');
  for (const t of [...detail.recent_transitions].reverse()) transitions.append(feedRow(t));
  const heading = document.createElement('h2');
  heading.textContent = detail.recent_transitions.length ? 'Recent transitions' : 'No recent transitions';
  $('detail-body').replaceChildren(list, heading, transitions);
  if (select) grid.select(grid.indexOf(detail.id));
}

const detailHint = $('detail-hint');

$('detail-close').addEventListener('click', () => {
  detailKey = null;
  $('detail-close').hidden = true;
  $('detail-title').textContent = 'Node';
  $('detail-body').replaceChildren(detailHint);
  grid.select(-1);
});

$('search').addEventListener('submit', (event) => {
  event.preventDefault();
  const key = $('search-input').value.trim();
  if (key) showDetail(key);
});

$('feed-filter').addEventListener('change', renderFeedAll);

// ---------------------------------------------------------------- grid input

const overlay = $('grid-overlay');
const tooltip = $('tooltip');

overlay.addEventListener('mousemove', (event) => {
  const block = grid.blockAt(event.offsetX, event.offsetY);
  grid.hover(block);
  if (block < 0) {
    tooltip.hidden = true;
    return;
  }
  const [from, to] = grid.span(block);
  const first = grid.idAt(from);
  const last = grid.idAt(to - 1);
  let text;
  if (to - from === 1) {
    text = `${nameOf(first)} (id ${first}): ${grid.codes[grid.states[from]]}`;
  } else {
    const counts = grid.countsIn(from, to);
    text =
      `ids ${first}–${last} (${to - from} nodes)\n` +
      Object.entries(counts)
        .sort((a, b) => STATES[b[0]].severity - STATES[a[0]].severity)
        .map(([name, n]) => `${n} ${name}`)
        .join(', ');
  }
  tooltip.textContent = text;
  tooltip.hidden = false;
  const box = overlay.getBoundingClientRect();
  tooltip.style.left = `${Math.min(event.offsetX + 12, box.width - tooltip.offsetWidth)}px`;
  tooltip.style.top = `${event.offsetY + 16}px`;
});

overlay.addEventListener('mouseleave', () => {
  grid.hover(-1);
  tooltip.hidden = true;
});

overlay.addEventListener('click', (event) => {
  const block = grid.blockAt(event.offsetX, event.offsetY);
  if (block >= 0) showDetail(String(grid.idAt(grid.worstIndex(block))));
});

let resizing = null;
window.addEventListener('resize', () => {
  clearTimeout(resizing);
  resizing = setTimeout(() => {
    grid.layout();
    grid.draw();
  }, 150);
});

// ---------------------------------------------------------------- helpers

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function clock(unixMs) {
  return new Date(unixMs).toLocaleTimeString([], { hour12: false });
}

function duration(ms) {
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${(ms / 1000).toFixed(1)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

function seconds(value) {
  return value === null ? '—' : `${value.toFixed(2)} s`;
}

// ---------------------------------------------------------------- start

setInterval(poll, POLL_MS);
setInterval(renderUptime, 1000);
poll();
run();
