// app.js - the explorer page (API.md, "Explorer"): pick a table and see its
// info and live version, type a token (completion from the tokens
// endpoint) or an id, see its neighbours with the server's scores and a 2-D
// map of the neighbourhood (click a point to re-centre), compare two
// tokens. Everything comes from the public API; the address's #fragment
// keeps the table and the query so back and forward work.

import { Api } from './api.js';
import { cosineGram, gramOfDots, gramOfRows, project2, upperPairs } from './pca.js';
import { drawMap } from './map.js';

const $ = (id) => document.getElementById(id);
const api = new Api();
const TOKEN_KEY = 'embedding-server.read-token';
const POLL_MS = 2000;
const SUGGESTIONS = 12;
const METRICS = ['cosine', 'dot', 'l2'];

const state = {
  tables: [],
  table: null,       // <info> of the chosen table
  center: null,      // {id, token} shown now
  shownVersion: null, // table version the neighbours were computed at
  known: new Map(),  // token -> id seen in answers, for the chosen table
  showSeq: 0,
  polling: false,
  map: null,         // [points, axis labels] drawn last
};

// ---- small helpers ---------------------------------------------------

function status(text, isError = false) {
  $('status').textContent = text;
  $('status').classList.toggle('error', isError);
}

function setError(id, e) {
  $(id).textContent = e ? e.message || String(e) : '';
}

function label(item) {
  return item.token !== undefined ? item.token : `#${item.id}`;
}

function remember(items) {
  for (const t of items) if (t.token !== undefined) state.known.set(t.token, t.id);
}

// A 401 from any call means the token is missing, wrong or changed.
function failed(e, where) {
  if (e && e.name === 'AbortError') return;
  if (e && e.status === 401) {
    askToken(api.token ? 'The server refused this token.' : '');
    return;
  }
  setError(where, e);
}

// ---- auth ------------------------------------------------------------

function askToken(message) {
  document.body.dataset.state = 'auth';
  $('explorer').hidden = true;
  $('auth').hidden = false;
  $('forget').hidden = !api.token;
  $('auth-error').textContent = message;
  status('A read token is needed.');
  $('token').focus();
}

function wireAuth() {
  $('auth-form').addEventListener('submit', (e) => {
    e.preventDefault();
    api.token = $('token').value.trim();
    if ($('remember').checked) sessionStorage.setItem(TOKEN_KEY, api.token);
    else sessionStorage.removeItem(TOKEN_KEY);
    $('token').value = '';
    loadTables();
  });
  $('forget').addEventListener('click', () => {
    api.token = '';
    sessionStorage.removeItem(TOKEN_KEY);
    loadTables();
  });
}

// ---- tables ----------------------------------------------------------

async function loadTables() {
  status('Loading tables…');
  let tables;
  try {
    ({ tables } = await api.tables());
  } catch (e) {
    if (e.status === 401) return askToken(api.token ? 'The server refused this token.' : '');
    if (e.status === 503) {
      status('The tables are still loading…');
      return void setTimeout(loadTables, 1000);
    }
    document.body.dataset.state = 'error';
    return status(e.message, true);
  }
  state.tables = tables;
  $('auth').hidden = true;
  $('explorer').hidden = false;
  $('forget').hidden = !api.token;
  const picker = $('table');
  picker.replaceChildren(...tables.map((t) => new Option(
    `${t.name} (${t.num_embeddings.toLocaleString('en')} × ${t.embedding_dim})`, t.name)));
  status(tables.length ? `${tables.length} table${tables.length > 1 ? 's' : ''}` : 'No tables.');
  await applyHash();
  document.body.dataset.state = 'ready';
  document.body.dataset.readyMs = String(Math.round(performance.now()));
  if (!state.polling) {
    state.polling = true;
    setInterval(poll, POLL_MS);
  }
}

function chooseTable(name) {
  const info = state.tables.find((t) => t.name === name) || state.tables[0];
  if (!info) return false;
  const changed = !state.table || state.table.name !== info.name;
  state.table = info;
  $('table').value = info.name;
  if (changed) {
    state.known.clear();
    state.center = null;
    $('neighbors-card').hidden = $('map-card').hidden = true;
    state.map = null;
    $('pair-result').replaceChildren();
    for (const id of ['query', 'pair-a', 'pair-b']) $(id).value = '';
  }
  const vocab = info.vocab;
  $('query-label').textContent = vocab ? 'Token' : 'Row id';
  $('query').placeholder = vocab ? 'a token, or #id' : `0 to ${info.num_embeddings - 1}`;
  for (const id of ['query', 'pair-a', 'pair-b']) {
    $(id).inputMode = vocab ? 'text' : 'numeric';
    if (id !== 'query') $(id).placeholder = $('query').placeholder;
  }
  showInfo(info);
  return changed;
}

function showInfo(t) {
  const opt = t.optimizer;
  const optText = opt ? Object.entries(opt).map(([k, v]) => (k === 'name' ? v : `${k} ${v}`)).join(', ') : 'none';
  const rows = [
    ['rows', t.num_embeddings.toLocaleString('en')],
    ['dimension', t.embedding_dim],
    ['dtype', t.dtype],
    ['vocabulary', t.vocab ? 'yes' : 'no (ids only)'],
    ['frozen', t.frozen ? 'yes' : 'no'],
    ['padding_idx', t.padding_idx ?? 'none'],
    ['max_norm', t.max_norm ?? 'none'],
    ['norm_type', t.norm_type],
    ['scale_grad_by_freq', t.scale_grad_by_freq ? 'yes' : 'no'],
    ['optimizer', optText],
    ['version', t.version],
  ];
  if (t.seq !== undefined) rows.push(['seq', t.seq]);
  const shown = new Set(['name', 'num_embeddings', 'embedding_dim', 'dtype', 'vocab', 'frozen',
    'padding_idx', 'max_norm', 'norm_type', 'scale_grad_by_freq', 'optimizer', 'version', 'seq']);
  for (const [k, v] of Object.entries(t)) // fields this page does not know yet
    if (!shown.has(k)) rows.push([k, typeof v === 'object' ? JSON.stringify(v) : v]);
  $('info').replaceChildren(...rows.flatMap(([k, v]) => {
    const dt = document.createElement('dt');
    const dd = document.createElement('dd');
    dt.textContent = k;
    dd.textContent = String(v);
    if (k === 'version') dd.id = 'version';
    return [dt, dd];
  }));
}

// The table's version (and info) while a client trains; the neighbours
// follow when "follow updates" is on.
async function poll() {
  if (document.hidden || !state.table || document.body.dataset.state !== 'ready') return;
  const name = state.table.name;
  let info;
  try {
    info = await api.table(name);
  } catch (e) {
    return failed(e, 'query-error');
  }
  if (!state.table || state.table.name !== name) return;
  const i = state.tables.findIndex((t) => t.name === name);
  if (i >= 0) state.tables[i] = info;
  state.table = info;
  showInfo(info);
  if (state.center && $('live').checked && info.version !== state.shownVersion)
    show(state.center, true);
}

// ---- the query: token or id to {id, token} ---------------------------

async function resolve(text, pickedId) {
  const t = state.table;
  const asId = /^\s*#?(\d+)\s*$/.exec(text);
  if (!t.vocab || (asId && text.trim().startsWith('#'))) {
    const id = asId ? Number(asId[1]) : NaN;
    if (!(id >= 0 && id < t.num_embeddings))
      throw new Error(`"${text}" is not a row id of ${t.name} (0 to ${t.num_embeddings - 1})`);
    return { id };
  }
  if (text === '') throw new Error('Type a token.');
  if (pickedId !== undefined) return { id: pickedId, token: text };
  if (state.known.has(text)) return { id: state.known.get(text), token: text };
  // an exact token sorts first among those it is a prefix of
  const [first] = await api.tokens(t.name, text, 1);
  if (first && first.token === text) {
    remember([first]);
    return first;
  }
  throw new Error(`No token "${text}" in ${t.name}.`);
}

// ---- neighbours and the map ------------------------------------------

function kValue() {
  const k = Math.round(Number($('k').value));
  return Number.isFinite(k) && k >= 1 ? Math.min(k, 100) : 10;
}

async function show(center, quiet = false) {
  const seq = ++state.showSeq;
  const t = state.table;
  const metric = $('metric').value;
  const k = kValue();
  if (!quiet) setError('query-error', null);
  let hits;
  const version = t.version;
  try {
    hits = await api.neighbors(t.name, center.id, k, metric);
  } catch (e) {
    return failed(e, 'query-error');
  }
  if (seq !== state.showSeq) return; // a newer query is on its way
  state.center = center;
  state.shownVersion = version;
  remember(hits);
  showNeighbors(center, hits, metric);
  try {
    await showMap(center, hits, metric, seq);
  } catch (e) {
    if (seq === state.showSeq) failed(e, 'query-error');
  }
}

function showNeighbors(center, hits, metric) {
  $('center').textContent = label(center);
  $('center').dataset.id = String(center.id);
  const scores = hits.map((h) => h.score);
  const lo = Math.min(...scores), hi = Math.max(...scores);
  $('neighbors').replaceChildren(...hits.map((h) => {
    const li = document.createElement('li');
    li.dataset.id = String(h.id);
    if (h.token !== undefined) li.dataset.token = h.token;
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'link';
    b.textContent = label(h);
    b.title = `Re-centre on ${label(h)}`;
    b.addEventListener('click', () => navigate(h));
    const id = document.createElement('span');
    id.className = 'id';
    id.textContent = h.token !== undefined ? `#${h.id}` : '';
    const score = document.createElement('span');
    score.className = 'score';
    score.textContent = String(h.score); // as the server wrote it
    const bar = document.createElement('span');
    bar.className = 'bar';
    let f = hi > lo ? (h.score - lo) / (hi - lo) : 1;
    if (metric === 'l2') f = 1 - f; // smaller distances are nearer
    bar.style.width = `${Math.round(15 + 85 * f)}%`;
    li.append(b, id, score, bar);
    return li;
  }));
  $('neighbors-card').hidden = false;
}

// The rows of the query and its neighbours, as a Gram matrix. A lookup
// would renormalize rows of a max_norm table in place, so those are read
// through dot products, which leave the table as it is.
async function gramOf(ids) {
  const t = state.table;
  if (t.max_norm === null || t.max_norm === undefined) {
    const { rows, n, d } = await api.rows(t.name, ids);
    return gramOfRows(rows, n, d);
  }
  const dots = await api.similarity(t.name, upperPairs(ids), 'dot');
  return gramOfDots(dots, ids.length);
}

async function showMap(center, hits, metric, seq) {
  const ids = [center.id, ...hits.map((h) => h.id)];
  let g = await gramOf(ids);
  if (seq !== state.showSeq) return;
  if (metric === 'cosine') g = cosineGram(g, ids.length);
  const { xy, explained } = project2(g, ids.length);
  const items = [center, ...hits];
  const points = items.map((it, i) => ({
    id: it.id,
    token: it.token,
    x: xy[2 * i],
    y: xy[2 * i + 1],
    center: i === 0,
    label: label(it),
    title: i === 0 ? `${label(it)} (the query)` : `${label(it)}: ${metric} ${it.score}`,
  }));
  const pct = (f) => `${(100 * f).toFixed(0)}%`;
  $('map-card').hidden = false; // drawn to its width on screen
  state.map = [points, [`PC1 ${pct(explained[0])}`, `PC2 ${pct(explained[1])}`]];
  redrawMap();
  $('map-note').textContent =
    `PCA of ${label(center)} and its ${hits.length} neighbours` +
    `${metric === 'cosine' ? ' (rows scaled to unit length)' : ''}: the axes hold ` +
    `${pct(explained[0])} and ${pct(explained[1])} of their variance. Click a point to re-centre.`;
}

function redrawMap() {
  if (state.map) drawMap($('map'), ...state.map, (p) => navigate({ id: p.id, token: p.token }));
}

// ---- the address: #t=words&q=gold&m=cosine&k=10 ----------------------

function navigate(center) {
  const q = center.token !== undefined ? center.token : `#${center.id}`;
  if (center.token !== undefined) state.known.set(center.token, center.id);
  $('query').value = q;
  const p = new URLSearchParams({ t: state.table.name, q, m: $('metric').value, k: kValue() });
  const hash = `#${p}`;
  if (location.hash === hash) show(center.token !== undefined ? center : { id: center.id });
  else location.hash = hash; // hashchange runs the query
}

async function applyHash() {
  const p = new URLSearchParams(location.hash.slice(1));
  chooseTable(p.get('t'));
  if (METRICS.includes(p.get('m'))) $('metric').value = p.get('m');
  if (p.get('k')) $('k').value = p.get('k');
  const q = p.get('q');
  if (q === null || !state.table) return;
  $('query').value = q;
  try {
    await show(await resolve(q));
  } catch (e) {
    failed(e, 'query-error');
  }
}

// ---- completion ------------------------------------------------------

// A combobox: typing asks the tokens endpoint for the first tokens with the
// text as prefix; arrows move, Enter or a click picks. input.dataset.id
// holds the id of a picked token until the text changes.
function completion(input, list, onPick) {
  let items = [];
  let active = -1;
  let timer = 0;
  let ctl = null;

  const close = () => {
    list.hidden = true;
    input.setAttribute('aria-expanded', 'false');
    input.removeAttribute('aria-activedescendant');
    active = -1;
  };
  const mark = (i) => {
    active = i;
    [...list.children].forEach((li, j) => li.setAttribute('aria-selected', String(j === i)));
    if (i >= 0) {
      input.setAttribute('aria-activedescendant', list.children[i].id);
      list.children[i].scrollIntoView({ block: 'nearest' });
    }
  };
  const pick = (it) => {
    input.value = it.token;
    input.dataset.id = String(it.id);
    close();
    onPick(it);
  };
  const render = (prefix) => {
    list.replaceChildren(...items.map((it, i) => {
      const li = document.createElement('li');
      li.id = `${list.id}-${i}`;
      li.setAttribute('role', 'option');
      li.dataset.index = String(i);
      li.dataset.token = it.token;
      const b = document.createElement('b');
      b.textContent = it.token.slice(0, prefix.length);
      li.append(b, it.token.slice(prefix.length));
      return li;
    }));
    list.hidden = items.length === 0;
    input.setAttribute('aria-expanded', String(!list.hidden));
    mark(-1);
  };
  const suggest = async () => {
    const t = state.table;
    const prefix = input.value;
    if (!t || !t.vocab || prefix === '' || prefix.startsWith('#')) return close();
    if (ctl) ctl.abort();
    ctl = new AbortController();
    try {
      items = await api.tokens(t.name, prefix, SUGGESTIONS, ctl.signal);
    } catch (e) {
      if (e instanceof URIError) return close(); // half a surrogate pair
      return failed(e, 'query-error');
    }
    if (input.value !== prefix || document.activeElement !== input) return;
    remember(items);
    render(prefix);
  };

  input.addEventListener('input', () => {
    delete input.dataset.id;
    clearTimeout(timer);
    timer = setTimeout(suggest, 60);
  });
  input.addEventListener('keydown', (e) => {
    if (list.hidden) return;
    if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      e.preventDefault();
      const n = items.length;
      mark(e.key === 'ArrowDown' ? (active + 1) % n : (active - 1 + n) % n);
    } else if (e.key === 'Enter' && active >= 0) {
      e.preventDefault();
      pick(items[active]);
    } else if (e.key === 'Escape') {
      close();
    }
  });
  input.addEventListener('blur', close);
  list.addEventListener('pointerdown', (e) => e.preventDefault()); // keep the focus
  list.addEventListener('click', (e) => {
    const li = e.target.closest('li');
    if (li) pick(items[Number(li.dataset.index)]);
  });
}

// ---- pair similarity -------------------------------------------------

async function comparePair() {
  setError('pair-error', null);
  const t = state.table;
  try {
    const a = await resolve($('pair-a').value, pickedId($('pair-a')));
    const b = await resolve($('pair-b').value, pickedId($('pair-b')));
    const scores = await Promise.all(METRICS.map((m) => api.similarity(t.name, [[a.id, b.id]], m)));
    $('pair-result').replaceChildren(...METRICS.flatMap((m, i) => {
      const dt = document.createElement('dt');
      const dd = document.createElement('dd');
      dt.textContent = m;
      dd.textContent = String(scores[i][0]);
      dd.dataset.metric = m;
      return [dt, dd];
    }));
  } catch (e) {
    failed(e, 'pair-error');
  }
}

function pickedId(input) {
  return input.dataset.id !== undefined ? Number(input.dataset.id) : undefined;
}

// ---- start -----------------------------------------------------------

function wire() {
  wireAuth();
  $('table').addEventListener('change', () => {
    chooseTable($('table').value);
    location.hash = `#${new URLSearchParams({ t: state.table.name })}`;
  });
  $('query-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    setError('query-error', null);
    const input = $('query');
    try {
      navigate(await resolve(input.value, pickedId(input)));
    } catch (err) {
      failed(err, 'query-error');
    }
  });
  for (const id of ['metric', 'k'])
    $(id).addEventListener('change', () => { if (state.center) navigate(state.center); });
  completion($('query'), $('query-list'), (it) => navigate(it));
  completion($('pair-a'), $('pair-a-list'), () => $('pair-b').focus());
  completion($('pair-b'), $('pair-b-list'), () => comparePair());
  $('pair-form').addEventListener('submit', (e) => {
    e.preventDefault();
    comparePair();
  });
  window.addEventListener('hashchange', applyHash);
  let width = 0;
  new ResizeObserver(([e]) => { // a new width draws the map again, at its size
    if (Math.abs(e.contentRect.width - width) > 1) { width = e.contentRect.width; redrawMap(); }
  }).observe($('map'));
  document.addEventListener('visibilitychange', () => { if (!document.hidden) poll(); });
}

wire();
api.token = sessionStorage.getItem(TOKEN_KEY) || '';
loadTables();
