// KernelCI read-only viewer: nodes with filters, a node with its children and artifacts,
// and the event feed. Talks to this server's own API (no authentication needed to read).
const api = (path) => fetch('/latest/' + path).then((r) => {
  if (!r.ok) return r.json().then((b) => { throw new Error(JSON.stringify(b.detail || b)); });
  return r.json();
});
const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
const resultCell = (r) => `<td class="${esc(r || '')}">${esc(r || '-')}</td>`;

function nodeRow(n) {
  return `<tr class="clickable" data-id="${esc(n.id)}"><td>${esc(n.kind)}</td><td>${esc(n.name)}</td>` +
    `<td>${esc(n.state)}</td>${resultCell(n.result)}<td>${esc((n.data && n.data.kernel_revision && n.data.kernel_revision.tree) || '')}</td>` +
    `<td>${esc(n.created)}</td></tr>`;
}

async function loadNodes() {
  const form = document.getElementById('filters');
  const params = new URLSearchParams();
  for (const el of form.elements) {
    if (el.name && el.value) params.append(el.name, el.value);
  }
  params.set('limit', '50');
  const status = document.getElementById('status');
  try {
    const page = await api('nodes?' + params.toString());
    document.querySelector('#nodes tbody').innerHTML = page.items.map(nodeRow).join('');
    status.textContent = `${page.items.length} shown of ${page.total}`;
    for (const tr of document.querySelectorAll('#nodes tr.clickable')) {
      tr.addEventListener('click', () => showNode(tr.dataset.id));
    }
  } catch (e) {
    status.textContent = 'Error: ' + e.message;
  }
}

async function showNode(id) {
  const node = await api('node/' + id);
  const children = await api('nodes?parent=' + id + '&limit=200');
  const arts = Object.entries(node.artifacts || {}).map(([k, v]) => `<li><a href="${esc(v)}">${esc(k)}</a></li>`).join('');
  document.getElementById('node').innerHTML =
    `<h2>${esc(node.kind)}: ${esc(node.name)}</h2>` +
    `<p>state <b>${esc(node.state)}</b>, result <span class="${esc(node.result || '')}">${esc(node.result || '-')}</span>` +
    (node.parent ? `, parent <a href="#" data-id="${esc(node.parent)}" class="nodelink">${esc(node.parent)}</a>` : '') + `</p>` +
    `<p class="muted">${esc(node.path.join(' / '))}</p>` +
    `<h2>Artifacts</h2><ul>${arts || '<li class="muted">none</li>'}</ul>` +
    `<h2>Children (${children.total})</h2><table><tbody>${children.items.map(nodeRow).join('')}</tbody></table>` +
    `<h2>Data</h2><pre>${esc(JSON.stringify(node.data, null, 2))}</pre>`;
  for (const el of document.querySelectorAll('#node tr.clickable, #node a.nodelink')) {
    el.addEventListener('click', (ev) => { ev.preventDefault(); showNode(el.dataset.id); });
  }
}

async function loadEvents() {
  try {
    const events = await api('events?channel=node&limit=1000');
    const last = events.slice(-30).reverse();
    document.getElementById('events').innerHTML = last.map((e) =>
      `<li><span class="muted">#${esc(e.sequence_id)} ${esc(e.timestamp)}</span> ${esc(e.data.op)} ` +
      `<a href="#" class="nodelink" data-id="${esc(e.data.id)}">${esc(e.data.kind)} ${esc(e.data.name)}</a> ` +
      `${esc(e.data.state)} <span class="${esc(e.data.result || '')}">${esc(e.data.result || '')}</span></li>`).join('');
    for (const a of document.querySelectorAll('#events a.nodelink')) {
      a.addEventListener('click', (ev) => { ev.preventDefault(); showNode(a.dataset.id); });
    }
  } catch (e) {
    document.getElementById('events').innerHTML = `<li>Error: ${esc(e.message)}</li>`;
  }
}

// Deep links: `/viewer?node_id=ID` opens a node (the URL the KCIDB bridge publishes), and any
// filter field given in the query string (`?kind=test&result=fail`) pre-fills the form.
const query = new URLSearchParams(location.search);
for (const el of document.getElementById('filters').elements) {
  if (el.name && query.has(el.name)) el.value = query.get(el.name);
}
document.getElementById('filters').addEventListener('submit', (ev) => { ev.preventDefault(); loadNodes(); });
loadNodes();
loadEvents();
if (query.get('node_id')) showNode(query.get('node_id')).catch((e) => {
  document.getElementById('node').innerHTML = `<p class="fail">Error: ${esc(e.message)}</p>`;
});
setInterval(loadEvents, 5000);
