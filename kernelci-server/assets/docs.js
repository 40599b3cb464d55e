// KernelCI API documentation: renders this server's OpenAPI document with no third-party code,
// so it works offline. Operations are grouped by tag and show their parameters, request body
// and responses (schemas with their $refs resolved); each has a "try it" form that sends the
// request to this server with the bearer token given at the top (kept in memory only).
// Everything that comes from the document or a response is inserted as text, never as HTML.
'use strict';

const state = { doc: null, token: '', base: '' };

// Builds an element: attributes from `attrs`, children appended (strings become text nodes).
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

// Resolves a local `$ref` (`#/components/schemas/Error`); anything else is returned as is.
function resolve(schema) {
  let s = schema;
  for (let i = 0; s && typeof s === 'object' && typeof s.$ref === 'string' && i < 16; i++) {
    if (!s.$ref.startsWith('#/')) return s;
    s = s.$ref.slice(2).split('/').reduce((o, k) => (o ? o[k.replace(/~1/g, '/').replace(/~0/g, '~')] : undefined), state.doc);
  }
  return s || {};
}

// A one-line description of a schema's type: `string (email)`, `"a" | "b"`, `array of string`.
function typeLabel(schema) {
  const s = resolve(schema);
  if (Array.isArray(s.enum)) return s.enum.map((v) => JSON.stringify(v)).join(' | ');
  if (s.const !== undefined) return JSON.stringify(s.const);
  // Alternatives (derived schemas: an enum with documented variants, an optional `$ref`).
  const alternatives = s.oneOf || s.anyOf;
  if (Array.isArray(alternatives) && !s.type) return alternatives.map((a) => typeLabel(a)).join(' | ');
  let t = Array.isArray(s.type) ? s.type.join(' | ') : (s.type || (s.properties ? 'object' : 'any'));
  if (t === 'array') t = 'array of ' + (s.items ? typeLabel(s.items) : 'any');
  const notes = [];
  if (s.format) notes.push(s.format);
  if (s.pattern) notes.push('pattern ' + s.pattern);
  if (s.minimum !== undefined) notes.push('≥ ' + s.minimum);
  if (s.maximum !== undefined) notes.push('≤ ' + s.maximum);
  if (s.uniqueItems) notes.push('unique');
  if (s.default !== undefined) notes.push('default ' + JSON.stringify(s.default));
  return notes.length ? `${t} (${notes.join(', ')})` : t;
}

// The schema as indented text: one line per property, `*` marking required ones.
function schemaText(schema, indent = '', depth = 0) {
  const s = resolve(schema);
  const props = s.properties || {};
  const names = Object.keys(props);
  if (!names.length || depth > 6) return indent + typeLabel(s) + '\n';
  const required = new Set(s.required || []);
  let out = depth === 0 ? 'object\n' : '';
  for (const name of names) {
    const p = resolve(props[name]);
    out += `${indent}  ${name}${required.has(name) ? '*' : ''}: ${typeLabel(p)}\n`;
    if (p.properties) out += schemaText(p, indent + '  ', depth + 1);
  }
  return out;
}

// A starting value for a request body: the required properties with neutral values.
function example(schema, depth = 0) {
  const s = resolve(schema);
  if (s.default !== undefined) return s.default;
  if (Array.isArray(s.enum)) return s.enum[0];
  const type = Array.isArray(s.type) ? s.type[0] : s.type;
  if (type === 'object' || s.properties) {
    const out = {};
    if (depth < 4) for (const name of s.required || []) out[name] = example((s.properties || {})[name] || {}, depth + 1);
    return out;
  }
  return { array: [], string: '', integer: 0, number: 0, boolean: false, null: null }[type] ?? null;
}

function operations(doc) {
  const ops = [];
  for (const [path, item] of Object.entries(doc.paths || {})) {
    for (const method of ['get', 'post', 'put', 'patch', 'delete']) {
      const op = item[method];
      if (!op) continue;
      const tag = (op.tags && op.tags[0]) || path.split('/').filter(Boolean)[0] || 'root';
      ops.push({ path, method, op, tag });
    }
  }
  return ops;
}

function paramTable(params) {
  if (!params.length) return el('p', { class: 'muted', text: 'No parameters.' });
  return el('table', {},
    el('thead', {}, el('tr', {}, ['Name', 'In', 'Required', 'Type'].map((h) => el('th', { text: h })))),
    el('tbody', {}, params.map((p) => el('tr', {},
      el('td', { class: 'path', text: p.name }), el('td', { text: p.in }),
      el('td', { text: p.required ? 'yes' : 'no' }), el('td', { text: typeLabel(p.schema || {}) })))));
}

function responsesList(responses) {
  return el('table', {}, el('tbody', {}, Object.entries(responses || {}).map(([status, r]) => {
    const media = Object.keys(r.content || {});
    const schema = media.length ? r.content[media[0]].schema : null;
    return el('tr', {}, el('td', { class: status.startsWith('2') ? 'status-ok' : 'status-err', text: status }),
      el('td', { text: r.description || '' }),
      el('td', { class: 'muted', text: media.length ? `${media[0]}: ${schema ? typeLabel(schema) : ''}` : '' }));
  })));
}

function showResult(out, text, cls) {
  out.replaceChildren(el('div', { class: cls, text }));
}

// The "try it" form of one operation.
function tryForm(entry) {
  const { path, method, op } = entry;
  const params = op.parameters || [];
  const inputs = params.map((p) => ({ p, input: el('input', { name: p.name, placeholder: `${p.in}${p.required ? ', required' : ''}: ${typeLabel(p.schema || {})}` }) }));
  const media = op.requestBody ? Object.keys(op.requestBody.content || {})[0] : null;
  const bodySchema = media ? op.requestBody.content[media].schema : null;
  const isForm = media === 'application/x-www-form-urlencoded';
  const formFields = isForm ? Object.keys(resolve(bodySchema).properties || {}).map((name) => ({ name, input: el('input', { name, type: /password/.test(name) ? 'password' : 'text' }) })) : [];
  const textarea = media && !isForm ? el('textarea', { name: 'body', spellcheck: 'false' }) : null;
  if (textarea) textarea.value = JSON.stringify(example(bodySchema || {}), null, 2);
  const out = el('div', { class: 'result' });
  const send = el('button', { type: 'submit', class: 'send', text: 'Send' });
  const cancel = el('button', { type: 'button', class: 'cancel hidden', text: 'Cancel' });
  let controller = null;
  cancel.addEventListener('click', () => controller && controller.abort());
  const form = el('form', { class: 'try' }, el('h3', { text: 'Try it' }),
    inputs.map(({ p, input }) => el('label', {}, el('span', { text: p.name }), input)),
    formFields.map(({ name, input }) => el('label', {}, el('span', { text: name }), input)),
    textarea ? el('label', {}, el('span', { text: `body (${media})` }), textarea) : null,
    send, ' ', cancel, out);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    let url = path;
    const query = new URLSearchParams();
    for (const { p, input } of inputs) {
      const v = input.value;
      if (p.in === 'path') {
        if (!v) return showResult(out, `The path parameter ${p.name} is required.`, 'status-err');
        url = url.replace(`{${p.name}}`, encodeURIComponent(v));
      } else if (p.in === 'query' && v !== '') {
        query.append(p.name, v);
      }
    }
    const headers = {};
    if (state.token) headers.Authorization = 'Bearer ' + state.token;
    let body;
    if (textarea) {
      const text = textarea.value.trim();
      if (text) {
        try { JSON.parse(text); } catch (e) { return showResult(out, 'The body is not valid JSON: ' + e.message, 'status-err'); }
        body = text;
        headers['Content-Type'] = 'application/json';
      }
    } else if (isForm) {
      const f = new URLSearchParams();
      for (const { name, input } of formFields) if (input.value !== '') f.append(name, input.value);
      body = f.toString();
      headers['Content-Type'] = 'application/x-www-form-urlencoded';
    }
    const target = state.base + url + (query.toString() ? '?' + query : '');
    controller = new AbortController();
    send.disabled = true;
    cancel.classList.remove('hidden');
    showResult(out, `${method.toUpperCase()} ${target} …`, 'muted');
    try {
      const r = await fetch(target, { method: method.toUpperCase(), headers, body, signal: controller.signal, credentials: 'omit' });
      const type = r.headers.get('content-type') || '';
      let shown;
      if (/json/.test(type)) {
        const text = await r.text();
        try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (_) { shown = text; }
      } else if (/^(text|application\/(javascript|xml))/.test(type) || !type) {
        shown = await r.text();
      } else {
        shown = `(${type}, ${(await r.arrayBuffer()).byteLength} bytes)`;
      }
      out.replaceChildren(
        el('div', { class: (r.ok ? 'status-ok' : 'status-err') + ' response-status', text: `${r.status} ${r.statusText}` }),
        el('div', { class: 'muted', text: `${method.toUpperCase()} ${target} · ${type || 'no content type'}` }),
        el('pre', { class: 'response', text: shown }));
    } catch (e) {
      showResult(out, e.name === 'AbortError' ? 'Cancelled.' : 'Request failed: ' + e.message, 'status-err');
    } finally {
      send.disabled = false;
      cancel.classList.add('hidden');
      controller = null;
    }
  });
  return form;
}

function operationView(entry) {
  const { path, method, op } = entry;
  const secured = Array.isArray(op.security) && op.security.length > 0;
  const details = el('details', { class: 'op', id: 'op-' + (op.operationId || `${method}_${path}`), 'data-search': `${method} ${path} ${op.summary || ''}`.toLowerCase() },
    el('summary', {}, el('span', { class: 'method ' + method, text: method.toUpperCase() }),
      el('span', { class: 'path', text: path }), el('span', { text: op.summary || '' }),
      secured ? el('span', { class: 'lock', text: 'token' }) : null));
  let built = false;
  // The body is built when first opened: the document has ~60 operations.
  const build = () => {
    if (built) return;
    built = true;
    const body = el('div', { class: 'op-body' });
    if (op.description) body.append(el('p', { text: op.description }));
    body.append(el('h3', { text: 'Parameters' }), paramTable(op.parameters || []));
    if (op.requestBody) {
      for (const [media, c] of Object.entries(op.requestBody.content || {})) {
        body.append(el('h3', { text: `Request body (${media})` }), el('pre', { class: 'schema', text: schemaText(c.schema || {}) }));
      }
    }
    body.append(el('h3', { text: 'Responses' }), responsesList(op.responses));
    body.append(tryForm(entry));
    details.append(body);
  };
  details.addEventListener('toggle', () => details.open && build());
  details.build = build;
  return details;
}

function render(doc) {
  state.doc = doc;
  const info = doc.info || {};
  document.getElementById('title').textContent = `${info.title || 'API'} ${info.version || ''}`.trim();
  document.getElementById('description').textContent = info.description || '';
  const server = (doc.servers && doc.servers[0] && doc.servers[0].url) || '';
  state.base = new URL(server || '.', location.href).pathname.replace(/\/$/, '');
  const ops = operations(doc);
  const order = (doc.tags || []).map((t) => t.name);
  for (const { tag } of ops) if (!order.includes(tag)) order.push(tag);
  const describe = Object.fromEntries((doc.tags || []).map((t) => [t.name, t.description || '']));
  const container = document.getElementById('tags');
  container.replaceChildren();
  for (const tag of order) {
    const mine = ops.filter((o) => o.tag === tag);
    if (!mine.length) continue;
    container.append(el('section', { class: 'tag', id: 'tag-' + tag, 'data-tag': tag },
      el('h2', {}, tag, ' ', el('span', { class: 'muted', text: `${mine.length} operation${mine.length > 1 ? 's' : ''}${describe[tag] ? ' · ' + describe[tag] : ''}` })),
      mine.map(operationView)));
  }
  openFromHash();
}

// `#op-<operationId>` opens that operation (links can point at one).
function openFromHash() {
  const id = decodeURIComponent(location.hash.slice(1));
  const target = id && document.getElementById(id);
  if (target && target.tagName === 'DETAILS') {
    target.build();
    target.open = true;
    target.scrollIntoView();
  }
}

function setToken(token) {
  state.token = token.trim();
  document.getElementById('token').value = state.token;
  document.getElementById('auth-state').textContent = state.token
    ? 'Token set: every request sends it as Authorization: Bearer.'
    : 'No token: only public operations will answer.';
}

document.getElementById('auth').addEventListener('submit', (ev) => {
  ev.preventDefault();
  setToken(document.getElementById('token').value);
});
document.getElementById('forget').addEventListener('click', () => setToken(''));
document.getElementById('login').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const status = document.getElementById('login-state');
  const form = new URLSearchParams({ username: document.getElementById('login-user').value, password: document.getElementById('login-pass').value });
  try {
    const r = await fetch(state.base + '/user/login', { method: 'POST', body: form, credentials: 'omit' });
    const body = await r.json();
    if (!r.ok) throw new Error(typeof body.detail === 'string' ? body.detail : JSON.stringify(body.detail));
    document.getElementById('login-pass').value = '';
    setToken(body.access_token);
    status.textContent = 'Logged in.';
  } catch (e) {
    status.textContent = 'Login failed: ' + e.message;
  }
});
document.getElementById('filter').addEventListener('input', (ev) => {
  const words = ev.target.value.toLowerCase().split(/\s+/).filter(Boolean);
  for (const section of document.querySelectorAll('section.tag')) {
    let shown = 0;
    for (const op of section.querySelectorAll('details.op')) {
      const hit = words.every((w) => op.dataset.search.includes(w));
      op.classList.toggle('hidden', !hit);
      if (hit) shown++;
    }
    section.classList.toggle('hidden', shown === 0);
  }
});
window.addEventListener('hashchange', openFromHash);

fetch(new URL('openapi.json', location.href), { credentials: 'omit' })
  .then((r) => {
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    return r.json();
  })
  .then(render)
  .catch((e) => {
    document.getElementById('tags').replaceChildren(el('p', { class: 'status-err', text: 'Cannot load the API description: ' + e.message }));
  });
