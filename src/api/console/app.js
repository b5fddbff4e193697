// earshot console: a dial pad, live calls (SSE + polling /api/live), history with filters, and a
// call page with its recording, notes and timeline. Plain DOM, no framework, no build step.
// Every value from the API is inserted as text (never as HTML): caller names come from callers.
'use strict';

const TOKEN_KEY = 'earshot.token';
const POLL_MS = 1000;
const PAGE = 25;
const DIALLED_KEY = 'earshot.dialled';
const DIALLED_MAX = 10;
const OUTBOUND_SHOWN = 5;

const state = {
  token: localStorage.getItem(TOKEN_KEY) || '',
  cursor: null,
  filters: {},
  route: null,
  callId: null,
  call: null,
  events: null,
  pollTimer: null,
  noteDirty: false,
};

const $ = (id) => document.getElementById(id);

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// ---- API ---------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (state.token) headers.Authorization = 'Bearer ' + state.token;
  if (options.json !== undefined) {
    headers['Content-Type'] = 'application/json';
    options.body = JSON.stringify(options.json);
  }
  const response = await fetch(path, { method: options.method || 'GET', headers, body: options.body });
  let body = null;
  const type = response.headers.get('Content-Type') || '';
  if (type.includes('application/json')) body = await response.json();
  if (response.status === 401) {
    showLogin(body && body.error ? body.error.message : '');
  }
  if (!response.ok) {
    const error = (body && body.error) || { code: 'http_' + response.status, message: response.statusText };
    throw new ApiError(response.status, error.code, error.message);
  }
  return body;
}

function withToken(path) {
  if (!state.token) return path;
  return path + (path.includes('?') ? '&' : '?') + 'token=' + encodeURIComponent(state.token);
}

// ---- formatting --------------------------------------------------------------------------

function duration(secs) {
  const s = Math.max(0, Math.floor(secs || 0));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${r}` : `${m}:${r}`;
}

function when(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  const today = new Date();
  const sameDay = d.toDateString() === today.toDateString();
  return sameDay
    ? d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' })
    : d.toLocaleString([], { dateStyle: 'medium', timeStyle: 'short' });
}

function levelPercent(dbfs) {
  if (typeof dbfs !== 'number') return 0;
  return Math.max(0, Math.min(100, ((dbfs + 60) / 60) * 100));
}

function toast(message, kind = 'error') {
  let box = $('toast');
  if (!box) {
    box = el('div', { id: 'toast', role: 'status' });
    document.body.append(box);
  }
  box.className = 'toast ' + kind;
  box.textContent = message;
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.hidden = true; }, 4000);
}

function eventText(e) {
  switch (e.type) {
    case 'started': return `Call started (${e.source}) from ${e.caller} to ${e.callee}`;
    case 'answered': return `Answered (${e.codec})`;
    case 'dtmf': return `Key ${e.digit} pressed (${e.via}, ${e.duration_ms} ms)`;
    case 'hold': return e.on ? 'Put on hold' : 'Resumed from hold';
    case 'listen': return e.on ? 'Playing on the speakers' : 'Speakers muted';
    case 'talk_started': return e.takeover ? 'Operator took over (agent ended)' : 'Operator talking';
    case 'talk_stopped': return `Operator stopped talking (${e.reason.replace('_', ' ')})`;
    case 'recording_started': return 'Recording started';
    case 'recording_stopped': return `Recording stopped: ${e.reason}`;
    case 'recording_deleted': return `Recording deleted: ${e.reason}`;
    case 'ended': return `Ended: ${e.reason}`;
    case 'interrupted': return `Interrupted: ${e.reason}`;
    case 'carrier_status': return `Carrier status: ${e.status}`;
    case 'agent_connected': return `Agent connected (${e.connect_ms} ms)`;
    case 'agent_fallback': return `Agent failed (${e.reason}): fallback taken`;
    case 'agent_notice': return `Agent service ${e.kind.replace('_', ' ')}: ${e.code}`;
    case 'transfer_requested': return `Transfer to ${e.to} requested (${e.method.replaceAll('_', ' ')}, by ${e.by.replaceAll('_', ' ')})`;
    case 'transferred': return `Transferred to ${e.to} (${e.method.replaceAll('_', ' ')})`;
    case 'transfer_failed': return `Transfer to ${e.to} failed: ${e.reason.replace('_', ' ')}`;
    case 'transcript': return `${e.speaker === 'agent' ? 'Agent' : 'Caller'}: ${e.text}`;
    default: return e.type;
  }
}

// ---- login -------------------------------------------------------------------------------

function showLogin(message) {
  $('login').hidden = false;
  $('home').hidden = true;
  $('call').hidden = true;
  const err = $('login-error');
  err.hidden = !message || !state.token;
  err.textContent = state.token ? 'That token was refused.' : '';
  $('token').focus();
}

function setupLogin() {
  $('login-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    state.token = $('token').value.trim();
    localStorage.setItem(TOKEN_KEY, state.token);
    $('login').hidden = true;
    $('logout').hidden = !state.token;
    connectEvents();
    route();
  });
  $('logout').hidden = !state.token;
  $('logout').addEventListener('click', () => {
    localStorage.removeItem(TOKEN_KEY);
    state.token = '';
    location.hash = '#/';
    location.reload();
  });
}

// ---- dial pad ----------------------------------------------------------------------------

// The last DIALLED_MAX distinct targets this browser placed a call to, newest first.
function dialled() {
  let list;
  try {
    list = JSON.parse(localStorage.getItem(DIALLED_KEY) || '[]');
  } catch (e) {
    return [];
  }
  return Array.isArray(list) ? list.filter((t) => typeof t === 'string').slice(0, DIALLED_MAX) : [];
}

function remember(target) {
  const list = [target, ...dialled().filter((t) => t !== target)].slice(0, DIALLED_MAX);
  localStorage.setItem(DIALLED_KEY, JSON.stringify(list));
}

function targetList(list, targets) {
  list.replaceChildren(...targets.map((target) => {
    const fill = el('button', { type: 'button', class: 'link number', text: target });
    fill.addEventListener('click', () => { $('dial-to').value = target; $('dial-to').focus(); });
    return el('li', {}, fill);
  }));
}

// Outbound calls among the newest calls of the store (the list API has no direction filter),
// each a link to its page: a record keeps the callee's number or user part, not the whole URI.
function renderOutbound(calls) {
  $('dial-outbound').replaceChildren(...calls.filter((c) => c.direction === 'outbound').slice(0, OUTBOUND_SHOWN)
    .map((c) => el('li', {},
      el('a', { class: 'number', href: '#/calls/' + c.id, text: c.callee }),
      el('span', { class: 'muted', text: ' ' + when(c.started_at) }))));
}

function setupDialPad() {
  const to = $('dial-to');
  for (const key of '123456789*0#+') {
    const button = el('button', { type: 'button', class: 'secondary', dataset: { key }, text: key });
    button.addEventListener('click', () => { to.value += key; });
    $('dial-keys').append(button);
  }
  const erase = el('button', { type: 'button', class: 'secondary', 'aria-label': 'erase', text: '⌫' });
  erase.addEventListener('click', () => { to.value = to.value.slice(0, -1); });
  $('dial-keys').append(erase);
  $('dial-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const target = to.value.trim();
    const trunk = $('dial-trunk').value.trim();
    const error = $('dial-error');
    const button = $('dial-call');
    error.hidden = true;
    button.disabled = true;
    try {
      const call = await api('/api/calls', { method: 'POST', json: trunk ? { to: target, trunk } : { to: target } });
      remember(target);
      targetList($('dial-recent'), dialled());
      location.hash = '#/calls/' + call.id;
    } catch (e) {
      error.textContent = e.message;
      error.hidden = false;
    } finally {
      button.disabled = false;
    }
  });
  targetList($('dial-recent'), dialled());
}

// ---- live calls --------------------------------------------------------------------------

async function refreshLive() {
  let body;
  try {
    body = await api('/api/live');
  } catch (e) {
    return;
  }
  renderLive(body.calls || []);
}

function renderLive(calls) {
  const list = $('live');
  $('live-count').textContent = String(calls.length);
  $('live-empty').hidden = calls.length > 0;
  const seen = new Set();
  for (const call of calls) {
    seen.add(call.id);
    let item = list.querySelector(`li[data-call-id="${call.id}"]`);
    if (!item) {
      item = liveItem(call);
      list.append(item);
    }
    updateLiveItem(item, call);
  }
  for (const item of [...list.children]) {
    if (!seen.has(item.dataset.callId)) item.remove();
  }
}

function liveItem(call) {
  const listen = el('button', { type: 'button', class: 'toggle', dataset: { action: 'listen', id: call.id } });
  listen.addEventListener('click', () => toggleListen(call.id, listen));
  const hangup = el('button', { type: 'button', class: 'danger', dataset: { action: 'hangup', id: call.id }, text: 'Hang up' });
  hangup.addEventListener('click', () => hangUp(call.id, hangup));
  const [ptt, talk] = talkButtons(call.id, call.talk);
  return el('li', { class: 'live-call', dataset: { callId: call.id } },
    el('div', { class: 'who' },
      el('span', { class: 'badge ' + call.source, text: call.source.toUpperCase() }),
      el('a', { class: 'number', href: '#/calls/' + call.id, text: call.caller || 'unknown' }),
      el('span', { class: 'muted arrow', text: '→' }),
      el('span', { class: 'callee', text: call.callee })),
    el('div', { class: 'meta' },
      el('span', { class: 'duration' }),
      el('span', { class: 'codec muted' }),
      el('span', { class: 'state muted' }),
      el('span', { class: 'agent muted' })),
    el('div', { class: 'meter', title: 'caller level', role: 'meter', 'aria-valuemin': '-60', 'aria-valuemax': '0' },
      el('div', { class: 'meter-fill' })),
    el('div', { class: 'buttons' }, listen, ptt, talk, hangup));
}

// Talk-back: the box's microphone on a call. Two modes on the same endpoint: hold to talk
// (pointer or Space/Enter held), or a toggle. One call has the microphone at a time.
function talkButtons(id, on) {
  const ptt = el('button', { type: 'button', class: 'talk-hold', dataset: { action: 'talk-hold', id },
    title: 'Hold to talk through the box microphone', text: 'Hold to talk' });
  const toggle = el('button', { type: 'button', class: 'toggle', dataset: { action: 'talk', id, on: on ? '1' : '0' },
    'aria-pressed': on ? 'true' : 'false', text: on ? 'Talking' : 'Talk' });
  const press = (e) => {
    if (ptt.dataset.held === '1') return;
    e.preventDefault();
    ptt.dataset.held = '1';
    ptt.setAttribute('aria-pressed', 'true');
    setTalk(id, true, toggle);
  };
  const release = () => {
    if (ptt.dataset.held !== '1') return;
    ptt.dataset.held = '';
    ptt.setAttribute('aria-pressed', 'false');
    setTalk(id, false, toggle);
  };
  ptt.addEventListener('pointerdown', press);
  for (const type of ['pointerup', 'pointerleave', 'pointercancel', 'blur']) ptt.addEventListener(type, release);
  ptt.addEventListener('keydown', (e) => { if ((e.key === ' ' || e.key === 'Enter') && !e.repeat) press(e); });
  ptt.addEventListener('keyup', (e) => { if (e.key === ' ' || e.key === 'Enter') release(); });
  toggle.addEventListener('click', () => setTalk(id, toggle.dataset.on !== '1', toggle));
  return [ptt, toggle];
}

function showTalk(toggle, on) {
  toggle.dataset.on = on ? '1' : '0';
  toggle.setAttribute('aria-pressed', on ? 'true' : 'false');
  toggle.textContent = on ? 'Talking' : 'Talk';
}

async function setTalk(id, on, toggle) {
  try {
    const r = await api(`/api/calls/${id}/talk`, { method: 'POST', json: { on } });
    showTalk(toggle, on);
    if (r && r.moved_from) toast('Microphone moved from another call to this one', 'info');
  } catch (e) {
    showTalk(toggle, false);
    toast(e.message);
  }
}

function updateLiveItem(item, call) {
  item.querySelector('.duration').textContent = duration(call.duration_secs);
  item.querySelector('.codec').textContent = call.codec || '—';
  item.querySelector('.state').textContent = call.hold ? 'on hold' : (call.answered ? 'connected' : 'ringing');
  const agent = item.querySelector('.agent');
  agent.textContent = call.agent ? 'agent: ' + call.agent.replace('_', ' ') : '';
  agent.dataset.agent = call.agent || '';
  const fill = item.querySelector('.meter-fill');
  fill.style.width = levelPercent(call.level_dbfs) + '%';
  item.querySelector('.meter').setAttribute('aria-valuenow', String(Math.round(call.level_dbfs)));
  const listen = item.querySelector('[data-action="listen"]');
  listen.setAttribute('aria-pressed', call.listen ? 'true' : 'false');
  listen.textContent = call.listen ? 'Listening' : 'Muted';
  listen.dataset.on = call.listen ? '1' : '0';
  const talk = item.querySelector('[data-action="talk"]');
  if (talk) showTalk(talk, !!call.talk);
}

async function toggleListen(id, button) {
  const on = button.dataset.on !== '1';
  button.disabled = true;
  try {
    await api(`/api/calls/${id}/listen`, { method: 'POST', json: { on } });
    button.dataset.on = on ? '1' : '0';
    button.setAttribute('aria-pressed', on ? 'true' : 'false');
    button.textContent = on ? 'Listening' : 'Muted';
  } catch (e) {
    toast(e.message);
  } finally {
    button.disabled = false;
  }
}

async function hangUp(id, button) {
  if (button.dataset.armed !== '1') {
    button.dataset.armed = '1';
    button.textContent = 'Confirm hang up';
    setTimeout(() => {
      if (button.isConnected) {
        button.dataset.armed = '';
        button.textContent = 'Hang up';
      }
    }, 4000);
    return;
  }
  button.disabled = true;
  try {
    await api(`/api/calls/${id}/hangup`, { method: 'POST' });
    button.textContent = 'Hanging up…';
    toast('Hanging up', 'info');
  } catch (e) {
    toast(e.message);
    button.disabled = false;
  }
}

function transferForm(id) {
  const to = el('input', { type: 'text', name: 'to', placeholder: '+15551234567 or sip:…', 'aria-label': 'Transfer to',
    autocomplete: 'off', required: '', maxlength: '256' });
  const button = el('button', { type: 'submit', dataset: { action: 'transfer', id }, text: 'Transfer' });
  const form = el('form', { class: 'transfer', dataset: { id } }, to, button);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    button.disabled = true;
    try {
      await api(`/api/calls/${id}/transfer`, { method: 'POST', json: { to: to.value.trim() } });
      toast('Transferring', 'info');
    } catch (e) {
      toast(e.message);
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

// ---- history -----------------------------------------------------------------------------

function historyQuery() {
  const params = new URLSearchParams({ limit: String(PAGE) });
  for (const [key, value] of Object.entries(state.filters)) {
    if (value) params.set(key, value);
  }
  if (state.cursor) params.set('cursor', state.cursor);
  return '/api/calls?' + params.toString();
}

async function loadHistory(reset) {
  if (reset) state.cursor = null;
  let body;
  try {
    body = await api(historyQuery());
  } catch (e) {
    if (e.status !== 401) toast(e.message);
    return;
  }
  const tbody = $('history');
  if (reset) tbody.replaceChildren();
  for (const call of body.calls) tbody.append(historyRow(call));
  if (reset && !Object.values(state.filters).some(Boolean)) renderOutbound(body.calls);
  state.cursor = body.next_cursor;
  $('more').hidden = !state.cursor;
  $('history-empty').hidden = tbody.children.length > 0;
}

function historyRow(call) {
  const open = () => { location.hash = '#/calls/' + call.id; };
  const row = el('tr', { class: 'clickable', tabindex: '0', dataset: { callId: call.id } },
    el('td', {}, el('a', { href: '#/calls/' + call.id, text: when(call.started_at) })),
    el('td', {}, el('span', { class: 'badge ' + call.source, text: call.source.toUpperCase() })),
    el('td', { class: 'number', text: call.caller }),
    el('td', { class: 'number', text: call.callee }),
    el('td', { text: call.ended_at || call.live ? duration(call.duration_secs) : '—' }),
    el('td', {}, el('span', { class: 'status ' + call.status, text: call.status })));
  row.addEventListener('click', (ev) => { if (ev.target.tagName !== 'A') open(); });
  row.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') open(); });
  return row;
}

// The webhook outbox: hidden until there is a delivery to show.
async function loadDeliveries() {
  let body;
  try {
    body = await api('/api/webhooks/deliveries?limit=20');
  } catch (e) {
    return;
  }
  const deliveries = body.deliveries || [];
  $('webhooks-panel').hidden = deliveries.length === 0;
  $('deliveries').replaceChildren(...deliveries.map((d) =>
    el('tr', { class: 'delivery ' + d.state },
      el('td', { text: when(d.created_at) }),
      el('td', { text: d.type }),
      el('td', { text: d.host }),
      el('td', { class: 'state', text: d.state }),
      el('td', { text: String(d.attempts) }),
      el('td', { text: d.last_status ? String(d.last_status) : (d.last_error || '—') }),
      el('td', { text: d.next_attempt_at ? when(d.next_attempt_at) : '—' }))));
}

async function loadSummary() {
  const midnight = new Date();
  midnight.setHours(0, 0, 0, 0);
  try {
    const a = await api('/api/analytics?interval=day&since=' + encodeURIComponent(midnight.toISOString()));
    $('summary').textContent =
      `Today: ${a.total} call${a.total === 1 ? '' : 's'}, ${a.answered} answered, average ${duration(a.avg_duration_secs)}`;
  } catch (e) {
    $('summary').textContent = '';
  }
}

function setupFilters() {
  $('filters').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const form = new FormData(ev.target);
    const day = (value, plusDays) => {
      if (!value) return '';
      const [y, m, d] = value.split('-').map(Number);
      return new Date(y, m - 1, d + plusDays).toISOString();
    };
    state.filters = {
      q: form.get('q').trim(),
      source: form.get('source'),
      status: form.get('status'),
      since: day(form.get('since'), 0),
      until: day(form.get('until'), 1),
    };
    loadHistory(true);
  });
  $('more').addEventListener('click', () => loadHistory(false));
}

// ---- one call ----------------------------------------------------------------------------

async function loadCall(id, keepPlayer) {
  let call;
  try {
    call = await api('/api/calls/' + encodeURIComponent(id));
  } catch (e) {
    $('call-title').textContent = e.status === 404 ? 'No such call' : 'Cannot load the call';
    $('call-facts').replaceChildren(el('dd', { text: e.message }));
    return;
  }
  if (state.callId !== id) return;
  state.call = call;
  $('call-title').textContent = `${call.caller} → ${call.callee}`;
  const status = $('call-status');
  status.className = 'status ' + call.status;
  status.textContent = call.status;
  const stats = call.stats || {};
  const facts = [
    ['Source', call.source.toUpperCase()],
    ['Started', when(call.started_at)],
    ['Answered', when(call.answered_at)],
    ['Ended', when(call.ended_at)],
    ['Duration', duration(call.duration_secs)],
    ['End reason', call.end_reason || '—'],
    ['Carrier status', call.carrier_status || '—'],
    ['Codec', call.codec || '—'],
    ['Agent', call.agent ? (call.agent.fallback ? `fell back (${call.agent.fallback})` : `connected in ${call.agent.connect_ms} ms`) : '—'],
    ['Keys pressed', call.dtmf || '—'],
    ['Transferred to', call.transfer ? `${call.transfer.to} (${call.transfer.method.replaceAll('_', ' ')})` : '—'],
    ['Packets in / lost', call.stats ? `${stats.packets_received} / ${stats.packets_lost}` : '—'],
    ['Jitter', call.stats ? `${Number(stats.jitter_ms).toFixed(1)} ms` : '—'],
    ['External id', call.external_id],
  ];
  $('call-facts').replaceChildren(...facts.flatMap(([k, v]) => [el('dt', { text: k }), el('dd', { text: v })]));

  const actions = $('call-actions');
  // The page reloads a live call every 2 s: a destination being typed survives it.
  const typed = actions.querySelector('form.transfer');
  actions.replaceChildren();
  if (call.live && call.live_state) {
    const live = call.live_state;
    const listen = el('button', { type: 'button', class: 'toggle', dataset: { action: 'listen', id: call.id, on: live.listen ? '1' : '0' },
      'aria-pressed': live.listen ? 'true' : 'false', text: live.listen ? 'Listening' : 'Muted' });
    listen.addEventListener('click', () => toggleListen(call.id, listen));
    const hangup = el('button', { type: 'button', class: 'danger', dataset: { action: 'hangup', id: call.id }, text: 'Hang up' });
    hangup.addEventListener('click', () => hangUp(call.id, hangup));
    actions.append(listen, ...talkButtons(call.id, live.talk), hangup, typed && typed.dataset.id === call.id ? typed : transferForm(call.id));
  }

  const rec = call.recording;
  const player = $('player');
  const hasFile = rec && rec.path && rec.state !== 'deleted';
  if (hasFile) {
    const src = withToken(`/api/calls/${call.id}/recording`);
    if (!keepPlayer || !player.getAttribute('src')) player.src = src;
    player.hidden = false;
    $('download').href = withToken(`/api/calls/${call.id}/recording?download=true`);
    $('download').hidden = false;
  } else {
    player.removeAttribute('src');
    player.hidden = true;
    $('download').hidden = true;
  }
  $('recording-note').textContent = !rec ? 'No recording.'
    : rec.state === 'deleted' ? 'Deleted by retention.'
    : rec.state === 'recording' ? 'Still recording.'
    : rec.reason ? `Stopped: ${rec.reason}` : '';

  if (!state.noteDirty) $('note').value = call.note ? call.note.text : '';
  $('note-status').textContent = call.note ? 'Saved ' + when(call.note.updated_at) : '';

  loadTranscript(call.id);

  $('timeline').replaceChildren(...call.events.map((e) =>
    el('li', { class: 'event ' + e.type },
      el('time', { datetime: e.at, text: when(e.at) }),
      el('span', { text: eventText(e) }))));
}

// The transcript, aligned with the recording: a segment's time seeks the player, and the
// segment being played is marked. Text goes in as text, never as HTML.
async function loadTranscript(id) {
  let body;
  try {
    body = await api('/api/calls/' + encodeURIComponent(id) + '/transcript');
  } catch (e) {
    return;
  }
  if (state.callId !== id) return;
  const segments = body.segments || [];
  $('transcript-note').textContent = segments.length ? '' : 'No transcript.';
  $('transcript').replaceChildren(...segments.map((s) => {
    const at = el('button', { type: 'button', class: 'seek', text: duration(s.start_ms / 1000) });
    at.addEventListener('click', () => {
      const player = $('player');
      player.currentTime = s.start_ms / 1000;
      player.play().catch(() => {});
    });
    return el('li', { class: 'segment ' + s.speaker, dataset: { start: String(s.start_ms), end: String(s.end_ms) } },
      at, el('span', { class: 'speaker', text: s.speaker }), el('span', { class: 'text', text: s.text }));
  }));
}

function markPlayedSegment() {
  const ms = $('player').currentTime * 1000;
  for (const li of $('transcript').children) {
    li.classList.toggle('playing', ms >= Number(li.dataset.start) && ms < Number(li.dataset.end));
  }
}

function setupNotes() {
  $('note').addEventListener('input', () => { state.noteDirty = true; });
  $('note-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const id = state.callId;
    $('note-status').textContent = 'Saving…';
    try {
      const saved = await api(`/api/calls/${id}/notes`, { method: 'PUT', json: { note: $('note').value } });
      state.noteDirty = false;
      $('note-status').textContent = saved.note ? 'Saved ' + when(saved.note.updated_at) : 'Note removed';
    } catch (e) {
      $('note-status').textContent = '';
      toast(e.message);
    }
  });
}

// ---- events and routing ------------------------------------------------------------------

let source = null;
let historyTimer = null;

function connectEvents() {
  if (source) source.close();
  source = new EventSource(withToken('/api/events'));
  const conn = $('conn');
  source.onopen = () => { conn.textContent = 'live'; conn.className = 'conn up'; };
  source.onerror = () => { conn.textContent = 'reconnecting…'; conn.className = 'conn down'; };
  source.onmessage = (msg) => {
    let event;
    try { event = JSON.parse(msg.data); } catch (e) { return; }
    onEvent(event);
  };
}

function onEvent(event) {
  if (state.route === 'home') {
    refreshLive();
    if (event.type === 'started' || event.type === 'ended' || event.type === 'interrupted') {
      clearTimeout(historyTimer);
      historyTimer = setTimeout(() => { loadHistory(true); loadSummary(); loadDeliveries(); }, 300);
    }
  } else if (state.route === 'call' && event.call_id === state.callId) {
    loadCall(state.callId, true);
  }
}

function route() {
  if (!$('login').hidden) return;
  if ($('toast')) $('toast').hidden = true;
  const match = location.hash.match(/^#\/calls\/([a-z0-9]+)$/);
  clearInterval(state.pollTimer);
  if (match) {
    state.route = 'call';
    state.callId = match[1];
    state.noteDirty = false;
    $('home').hidden = true;
    $('call').hidden = false;
    $('player').removeAttribute('src');
    $('timeline').replaceChildren();
    $('transcript').replaceChildren();
    loadCall(state.callId, false);
    state.pollTimer = setInterval(() => {
      if (state.call && state.call.live) loadCall(state.callId, true);
    }, 2000);
  } else {
    state.route = 'home';
    state.callId = null;
    $('call').hidden = true;
    $('home').hidden = false;
    refreshLive();
    loadHistory(true);
    loadSummary();
    loadDeliveries();
    let polls = 0;
    state.pollTimer = setInterval(() => {
      refreshLive();
      // Retries settle without call events: look at the outbox every few polls.
      if (++polls % 5 === 0) loadDeliveries();
    }, POLL_MS);
  }
  window.scrollTo(0, 0);
}

document.addEventListener('DOMContentLoaded', () => {
  setupLogin();
  setupDialPad();
  setupFilters();
  setupNotes();
  $('player').addEventListener('timeupdate', markPlayedSegment);
  window.addEventListener('hashchange', route);
  connectEvents();
  route();
});
