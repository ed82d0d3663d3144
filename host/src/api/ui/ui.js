// The imagefactory page: the images as a tree that moves with the event stream, one
// image opened with its record, build log and kept files, a base image build from a
// pasted template (validated as it is typed), target builds, deletes.
//
// No framework and no build step. Every call goes to the daemon's own REST API; with
// OAuth on, each is signed here (OAuth 1.0a, HMAC-SHA1 through WebCrypto) with the
// consumer key and secret typed into the sign-in form, which stay in sessionStorage.
'use strict';

const API = '/imagefactory';
const COLLECTIONS = { base_image: 'base_images', target_image: 'target_images', provider_image: 'provider_images' };
const FINAL = new Set(['COMPLETE', 'FAILED', 'DELETED', 'DELETEFAILED']);
const state = {
  images: new Map(), // id -> {id, type, status, activity, percent, error, base, target}
  order: [], // ids in the order first seen
  selected: null,
  auth: null, // {key, secret}
  targets: [], // cloud target names from the plugins
};
const $ = (id) => document.getElementById(id);

// ---- OAuth 1.0a (RFC 5849), two-legged, as the daemon checks it ----

function pct(s) {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase());
}

function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

async function oauthHeader(method, url) {
  const u = new URL(url, location.href);
  const oauth = {
    oauth_consumer_key: state.auth.key,
    oauth_nonce: hex(crypto.getRandomValues(new Uint8Array(16))),
    oauth_signature_method: 'HMAC-SHA1',
    oauth_timestamp: String(Math.floor(Date.now() / 1000)),
    oauth_version: '1.0',
  };
  const params = [];
  u.searchParams.forEach((v, k) => params.push([pct(k), pct(v)]));
  for (const [k, v] of Object.entries(oauth)) params.push([pct(k), pct(v)]);
  params.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
  const normalized = params.map((p) => p.join('=')).join('&');
  const base = [method.toUpperCase(), pct(u.origin + u.pathname), pct(normalized)].join('&');
  const te = new TextEncoder();
  const key = await crypto.subtle.importKey('raw', te.encode(pct(state.auth.secret) + '&'), { name: 'HMAC', hash: 'SHA-1' }, false, ['sign']);
  const sig = new Uint8Array(await crypto.subtle.sign('HMAC', key, te.encode(base)));
  oauth.oauth_signature = btoa(String.fromCharCode(...sig));
  return 'OAuth ' + Object.entries(oauth).map(([k, v]) => `${pct(k)}="${pct(v)}"`).join(', ');
}

// ---- HTTP ----

class HttpError extends Error {
  constructor(status, text) {
    super(text.split('\n')[0] || `HTTP ${status}`);
    this.status = status;
  }
}

async function call(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (state.auth) headers.Authorization = await oauthHeader(method, API + path);
  const r = await fetch(API + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  if (!r.ok) {
    if (r.status === 401) showSignin('The daemon refused the request: ' + text.split('\n')[0]);
    throw new HttpError(r.status, text);
  }
  return text && r.headers.get('content-type')?.includes('json') ? JSON.parse(text) : text;
}

async function fetchBlob(path) {
  const headers = state.auth ? { Authorization: await oauthHeader('GET', API + path) } : {};
  const r = await fetch(API + path, { headers });
  if (!r.ok) throw new HttpError(r.status, await r.text());
  return r.blob();
}

// ---- the images ----

function summary(rec, type) {
  return {
    id: rec.id,
    type,
    status: rec.status,
    activity: rec.status_detail?.activity ?? rec.activity ?? '',
    error: rec.status_detail ? rec.status_detail.error : rec.error,
    percent: rec.percent_complete ?? 0,
    base: rec.base_image_id ?? rec.base_image?.id ?? null,
    target: rec.target_image_id ?? rec.target_image?.id ?? null,
  };
}

function upsert(img) {
  if (!state.images.has(img.id)) state.order.push(img.id);
  state.images.set(img.id, Object.assign(state.images.get(img.id) || {}, img));
}

function forget(id) {
  state.images.delete(id);
  state.order = state.order.filter((i) => i !== id);
  if (state.selected === id) closeDetail();
}

async function loadAll() {
  state.images.clear();
  state.order = [];
  for (const [type, coll] of Object.entries(COLLECTIONS)) {
    const list = await call('GET', '/' + coll);
    const ids = (list[coll] || []).map((e) => (e[type] || e).id);
    // A few at a time: a big store should not open hundreds of requests at once.
    for (let i = 0; i < ids.length; i += 8) {
      const recs = await Promise.all(ids.slice(i, i + 8).map((id) => call('GET', `/${coll}/${id}`).catch(() => null)));
      for (const r of recs) if (r) upsert(summary(r[type], type));
    }
  }
  render();
}

function childrenOf(id) {
  return state.order.map((i) => state.images.get(i)).filter((m) => m && (m.type === 'target_image' ? m.base === id : m.target === id));
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined) e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

// Rows are kept per image and only rebuilt when what they show changes, so a row (and
// whatever the user points at in it) stays the same element while other images move.
const rows = new Map(); // id -> {key, element}

function row(img, depth) {
  const key = JSON.stringify([img.status, img.activity, img.error, img.percent, depth, state.selected === img.id]);
  const cached = rows.get(img.id);
  if (cached && cached.key === key) return cached.element;
  const fresh = buildRow(img, depth);
  if (cached) {
    // Keep the element; take the new one's attributes and content.
    for (const a of Array.from(cached.element.attributes)) cached.element.removeAttribute(a.name);
    for (const a of Array.from(fresh.attributes)) cached.element.setAttribute(a.name, a.value);
    cached.element.replaceChildren(...fresh.childNodes);
    cached.key = key;
    return cached.element;
  }
  fresh.addEventListener('click', () => openDetail(img.id));
  rows.set(img.id, { key, element: fresh });
  return fresh;
}

function buildRow(img, depth) {
  const coll = COLLECTIONS[img.type];
  const final = FINAL.has(img.status);
  const r = el(
    'div',
    { class: `row depth-${depth}` + (state.selected === img.id ? ' selected' : ''), role: 'treeitem', 'data-id': img.id, 'data-status': img.status },
    el('span', { class: 'kind' }, img.type.replace('_image', '')),
    el('span', { class: 'id', title: img.id }, img.id.slice(0, 8)),
    el('span', { class: `status s-${img.status}` }, img.status),
    el('progress', { max: '100', value: String(img.percent ?? 0) }),
    el('span', { class: 'activity', title: img.activity }, img.activity),
    el('button', {
      class: 'danger delete',
      title: final ? 'Delete this image' : 'Cancel this build and delete the image',
      onclick: (ev) => { ev.stopPropagation(); removeImage(img); },
    }, final ? 'Delete' : 'Cancel'),
  );
  if (img.error) {
    const err = el('div', { class: 'error' }, img.error + ' ');
    if (img.status === 'FAILED') {
      const link = el('a', { class: 'console-link', href: `${API}/${coll}/${img.id}/files/console.log` }, 'console.log');
      link.addEventListener('click', (ev) => { ev.preventDefault(); ev.stopPropagation(); openDetail(img.id, 'console.log'); });
      err.append(link);
    }
    r.append(err);
  }
  return r;
}

function render() {
  const box = $('images');
  const shown = [];
  const ids = new Set(state.order);
  const roots = state.order.map((i) => state.images.get(i)).filter((m) => m && (m.type === 'base_image' ||
    (m.type === 'target_image' && !ids.has(m.base)) || (m.type === 'provider_image' && !ids.has(m.target))));
  const walk = (img, depth) => {
    shown.push(row(img, depth));
    for (const c of childrenOf(img.id)) walk(c, depth + 1);
  };
  for (const r of roots) walk(r, r.type === 'base_image' ? 0 : 1);
  for (const id of rows.keys()) if (!state.images.has(id)) rows.delete(id);
  // Moves the kept elements into order; only new rows are new elements.
  box.replaceChildren(...shown);
  $('empty').hidden = state.images.size > 0;
}

async function removeImage(img) {
  try {
    await call('DELETE', `/${COLLECTIONS[img.type]}/${img.id}`);
  } catch (e) {
    alert(`Cannot delete ${img.id}: ${e.message}`);
  }
}

// ---- one image ----

function closeDetail() {
  state.selected = null;
  $('detail').hidden = true;
}

async function openDetail(id, file) {
  state.selected = id;
  render();
  await refreshDetail(true);
  if (file) await showFile(id, file);
  $('detail').scrollIntoView({ block: 'nearest' });
}

async function refreshDetail(full) {
  const id = state.selected;
  const img = id && state.images.get(id);
  if (!img) return;
  const coll = COLLECTIONS[img.type];
  const rec = (await call('GET', `/${coll}/${id}`))[img.type];
  if (state.selected !== id) return;
  $('detail').hidden = false;
  $('detail-title').textContent = `${img.type.replace('_', ' ')} ${id}`;
  $('detail-status').replaceChildren(
    el('span', { class: `status s-${rec.status}` }, rec.status), ' ',
    el('progress', { max: '100', value: String(rec.percent_complete ?? 0) }), ' ',
    rec.status_detail?.activity || '',
    rec.status_detail?.error ? el('div', { class: 'error' }, rec.status_detail.error) : null,
  );
  $('detail-parameters').textContent = JSON.stringify(rec.parameters ?? {}, null, 2);
  $('detail-template').textContent = rec.template ?? '';
  $('detail-log').textContent = await call('GET', `/${coll}/${id}/build_log`).catch((e) => `(no build log: ${e.message})`);
  const log = $('detail-log');
  log.scrollTop = log.scrollHeight;
  if (!full) return;
  const actions = [];
  if (img.type === 'base_image' && rec.status === 'COMPLETE' && state.targets.length) {
    const select = el('select', { id: 'target-select' }, ...state.targets.map((t) => el('option', { value: t }, t)));
    actions.push('Target image for ', select, ' ', el('button', {
      id: 'build-target',
      onclick: async () => {
        try {
          await call('POST', '/target_images', { target_image: { base_image_id: id, target: select.value } });
        } catch (e) { alert(`Cannot build the target: ${e.message}`); }
      },
    }, 'Build target'));
  }
  $('detail-actions').replaceChildren(...actions);
  const files = await call('GET', `/${coll}/${id}/files`).then((f) => f.files || []).catch(() => []);
  $('detail-files').replaceChildren(...(files.length ? files.map((f) => el('li', {}, el('a', {
    href: `${API}/${coll}/${id}/files/${encodeURIComponent(f)}`, class: 'file-link',
    onclick: (ev) => { ev.preventDefault(); showFile(id, f); },
  }, f))) : [el('li', { class: 'muted' }, 'none')]));
  $('detail-file').replaceChildren();
  const sbom = files.includes('sbom.spdx.json');
  $('detail-icicle-title').textContent = sbom ? 'SBOM (SPDX)' : 'ICICLE';
  $('detail-icicle').textContent = sbom ? '' : (rec.icicle ?? '(none)');
  if (sbom) $('detail-icicle').textContent = await call('GET', `/${coll}/${id}/files/sbom.spdx.json`).then((t) => typeof t === 'string' ? t : JSON.stringify(t, null, 2)).catch((e) => e.message);
}

async function showFile(id, name) {
  const img = state.images.get(id);
  const blob = await fetchBlob(`/${COLLECTIONS[img.type]}/${id}/files/${encodeURIComponent(name)}`);
  const box = $('detail-file');
  if (blob.type.startsWith('image/')) {
    box.replaceChildren(el('h3', {}, name), el('img', { id: 'file-image', alt: name, src: URL.createObjectURL(blob) }));
  } else {
    box.replaceChildren(el('h3', {}, name), el('pre', { id: 'file-text' }, await blob.text()));
  }
}

// ---- the event stream (fetch, so requests can carry an OAuth header) ----

function parseEvent(block) {
  const ev = { id: null, event: 'message', data: '' };
  for (const line of block.split('\n')) {
    if (line.startsWith(':')) continue;
    const i = line.indexOf(':');
    const field = i < 0 ? line : line.slice(0, i);
    const value = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
    if (field === 'id') ev.id = value;
    else if (field === 'event') ev.event = value;
    else if (field === 'data') ev.data += value;
  }
  return ev.data ? ev : null;
}

let detailTimer = null;
function onEvent(ev) {
  if (ev.event === 'missed') { loadAll(); return; }
  const d = JSON.parse(ev.data);
  if (ev.event === 'deleted') forget(d.id);
  else upsert(summary(d, d.type));
  render();
  if (d.id === state.selected) {
    clearTimeout(detailTimer);
    detailTimer = setTimeout(() => refreshDetail(ev.event !== 'changed' || (d.changed || []).includes('status')).catch(() => {}), 150);
  }
}

async function followEvents() {
  let last = null;
  for (;;) {
    try {
      const path = '/events' + (last ? `?last_event_id=${last}` : '');
      const headers = state.auth ? { Authorization: await oauthHeader('GET', API + path) } : {};
      const r = await fetch(API + path, { headers });
      if (!r.ok) throw new HttpError(r.status, await r.text());
      setLive(true);
      const reader = r.body.getReader();
      const decoder = new TextDecoder();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const ev = parseEvent(buf.slice(0, i));
          buf = buf.slice(i + 2);
          if (ev) {
            if (ev.id) last = ev.id;
            onEvent(ev);
          }
        }
      }
    } catch (e) {
      if (e.status === 401) return;
    }
    setLive(false);
    await new Promise((res) => setTimeout(res, 1000));
  }
}

function setLive(on) {
  $('live').className = 'live ' + (on ? 'on' : 'off');
  $('live').textContent = on ? 'live' : 'offline';
}

// ---- a new base image ----

let validateTimer = null;
let validated = '';
async function validate() {
  const template = $('template').value;
  const list = $('validation');
  $('build').disabled = true;
  if (!template.trim()) { list.replaceChildren(); list.className = 'errors'; return; }
  let answer;
  try {
    answer = await call('POST', '/validate', { template });
  } catch (e) {
    list.replaceChildren(el('li', {}, e.message));
    return;
  }
  if ($('template').value !== template) return;
  if (answer.valid) {
    list.className = 'errors ok';
    list.replaceChildren(el('li', {}, 'The template is valid.'));
    validated = template;
    $('build').disabled = false;
  } else {
    list.className = 'errors';
    list.replaceChildren(...answer.errors.map((e) => el('li', { class: 'validation-error' }, e.text)));
  }
}

async function build() {
  const template = $('template').value;
  if (template !== validated) return;
  let parameters = {};
  const raw = $('parameters').value.trim();
  if (raw) {
    try { parameters = JSON.parse(raw); } catch (e) { $('build-result').textContent = 'Parameters are not JSON: ' + e.message; return; }
  }
  try {
    const r = await call('POST', '/base_images', { base_image: { template, parameters } });
    upsert(summary(r.base_image, 'base_image'));
    render();
    $('build-result').textContent = 'Started ' + r.base_image.id;
  } catch (e) {
    $('build-result').textContent = e.message;
  }
}

// ---- start ----

function showSignin(message) {
  $('app').hidden = true;
  $('signin').hidden = false;
  $('signin-error').textContent = message || '';
}

async function start() {
  try {
    const plugins = await call('GET', '/plugins');
    state.targets = (plugins.plugins || []).filter((p) => p.type === 'cloud').flatMap((p) => (p.targets || []).map((t) => t[0]));
  } catch (e) {
    if (e.status !== 401) showSignin('Cannot reach the daemon: ' + e.message);
    return;
  }
  $('signin').hidden = true;
  $('app').hidden = false;
  $('whoami').textContent = state.auth ? `signed in as ${state.auth.key}` : '';
  await loadAll();
  followEvents();
}

$('signin-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  state.auth = { key: $('oauth-key').value, secret: $('oauth-secret').value };
  sessionStorage.setItem('imagefactory-oauth', JSON.stringify(state.auth));
  start();
});
$('template').addEventListener('input', () => { clearTimeout(validateTimer); $('build').disabled = true; validateTimer = setTimeout(validate, 250); });
$('build').addEventListener('click', build);

const saved = sessionStorage.getItem('imagefactory-oauth');
if (saved) state.auth = JSON.parse(saved);
start();
