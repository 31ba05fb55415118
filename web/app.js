/*
 * kiln's admin page: the Image Builder over the JSON API (docs/api.md).
 * Plain JavaScript, no build step, no outside URLs. Hash routes:
 *   #/specs                 the list (search, sort, pages; live status)
 *   #/specs/new             create
 *   #/specs/NAME            view (read-only Info + Jobs)
 *   #/specs/NAME/edit       edit: Info tab
 *   #/specs/NAME/jobs       edit: Jobs tab
 *   #/jobs/ID               one job: spec, Dockerfile, live log
 * The admin token is kept in sessionStorage (this browser tab's session).
 * Every piece of outside text goes into the page as text (textContent),
 * never as HTML.
 */
'use strict';

(function () {
  const API = '/api/v1';
  const TOKEN_KEY = 'kiln.adminToken';
  const POLL_MS = 1500;
  const PAGE_SIZE = 50;
  const FINAL = new Set(['Succeeded', 'Failed', 'Cancelled']);
  const KINDS = ['apt', 'conda', 'pip'];
  const KIND_LABEL = { apt: 'APT', conda: 'Conda', pip: 'Pip' };
  const KIND_HINT = {
    apt: 'Debian packages: name, name=version, name/release or name:arch ' +
      '(curl, jq=1.6-2.1, git/bookworm-backports).',
    conda: 'Conda match specs: numpy, numpy>=1.17,<2, numpy=1.17=py38_0, ' +
      'conda-forge::numpy, numpy[version=\'>=1.17\'].',
    pip: 'PEP 508 requirements: requests, requests>=2,<3, pandas[sql]~=2.0, ' +
      'name @ https://host/pkg.whl, markers after ";". Options such as --index-url are refused.',
  };
  const KIND_PLACEHOLDER = {
    apt: 'curl\njq',
    conda: 'numpy>=1.17',
    pip: 'requests>=2\npandas[sql]~=2.0',
  };

  /* ---------------------------------------------------------------- helpers */

  /* h('tag', {attrs}, children...): a DOM element; strings become text. */
  function h(tag, props, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = v;
      else if (k === 'value') el.value = v;
      else if (k === 'checked') el.checked = !!v;
      else if (k === 'dataset') Object.assign(el.dataset, v);
      else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    append(el, kids);
    return el;
  }

  function append(el, kids) {
    for (const kid of kids) {
      if (kid === null || kid === undefined || kid === false) continue;
      if (Array.isArray(kid)) append(el, kid);
      else if (kid instanceof Node) el.appendChild(kid);
      else el.appendChild(document.createTextNode(String(kid)));
    }
  }

  const SVG_NS = 'http://www.w3.org/2000/svg';
  const ICONS = {
    Pending: ['M12 3a9 9 0 1 0 0 18 9 9 0 0 0 0-18zm0 2a7 7 0 1 1 0 14 7 7 0 0 1 0-14z',
      'M11 7h2v5.4l3.3 2-1 1.7-4.3-2.6z'],
    Running: ['M12 3a9 9 0 0 1 9 9h-2.2A6.8 6.8 0 0 0 12 5.2z',
      'M12 3a9 9 0 1 0 9 9h-2.2A6.8 6.8 0 1 1 12 5.2z'],
    Succeeded: ['M12 3a9 9 0 1 0 0 18 9 9 0 0 0 0-18zm-1.2 13.2-4.3-4.3 1.5-1.5 2.8 2.8 5.6-5.6 1.5 1.5z'],
    Failed: ['M12 3a9 9 0 1 0 0 18 9 9 0 0 0 0-18zm3.5 11-1.5 1.5-2-2-2 2L8.5 14l2-2-2-2L10 8.5l2 2 2-2 1.5 1.5-2 2z'],
    Cancelled: ['M12 3a9 9 0 1 0 0 18 9 9 0 0 0 0-18zm0 2a7 7 0 0 1 5.6 11.2L7.8 6.4A7 7 0 0 1 12 5zM6.4 7.8l9.8 9.8A7 7 0 0 1 6.4 7.8z'],
    Unknown: ['M12 3a9 9 0 1 0 0 18 9 9 0 0 0 0-18zm1 14h-2v-2h2zm2.1-6.4-.9.9c-.8.7-1.2 1.2-1.2 2.5h-2v-.5c0-1 .4-1.8 1.2-2.5l1.2-1.3a1.9 1.9 0 0 0-1.4-3.3 2 2 0 0 0-2 2H8a4 4 0 1 1 7.1 2.2z'],
    None: ['M12 3a9 9 0 1 0 0 18 9 9 0 0 0 0-18zm0 2a7 7 0 1 1 0 14 7 7 0 0 1 0-14z'],
  };

  function icon(status) {
    const svg = document.createElementNS(SVG_NS, 'svg');
    svg.setAttribute('viewBox', '0 0 24 24');
    svg.setAttribute('aria-hidden', 'true');
    svg.setAttribute('focusable', 'false');
    svg.setAttribute('class', 'icon');
    const paths = ICONS[status] || ICONS.Unknown;
    paths.forEach((d, i) => {
      const p = document.createElementNS(SVG_NS, 'path');
      p.setAttribute('d', d);
      if (status === 'Running' && i === 1) p.setAttribute('opacity', '0.3');
      svg.appendChild(p);
    });
    return svg;
  }

  /* A status badge: colour, icon and the word (never colour alone). */
  function badge(status) {
    const s = status || 'None';
    return h('span', { class: 'status status-' + s.toLowerCase(), dataset: { status: s } },
      icon(s), h('span', { class: 'status-text', text: status || 'Not built' }));
  }

  function pad(n) { return String(n).padStart(2, '0'); }

  function fmtTime(iso) {
    if (!iso) return '-';
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return iso;
    return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' +
      pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
  }

  function timeEl(iso) {
    if (!iso) return h('span', { class: 'muted', text: '-' });
    return h('time', { datetime: iso, title: iso, text: fmtTime(iso) });
  }

  function fmtDuration(sec) {
    if (sec === null || sec === undefined || !Number.isFinite(sec)) return '-';
    if (sec < 60) return sec.toFixed(sec < 10 ? 1 : 0) + ' s';
    const m = Math.floor(sec / 60);
    const s = Math.round(sec % 60);
    if (m < 60) return m + ' min ' + pad(s) + ' s';
    return Math.floor(m / 60) + ' h ' + pad(m % 60) + ' min';
  }

  function jobDuration(job) {
    if (job.phase === 'Running' && job.startedAt) {
      return Math.max(0, (Date.now() - Date.parse(job.startedAt)) / 1000);
    }
    if (typeof job.durationSeconds === 'number') return job.durationSeconds;
    if (job.startedAt) {
      const end = job.finishedAt ? Date.parse(job.finishedAt) : Date.now();
      return Math.max(0, (end - Date.parse(job.startedAt)) / 1000);
    }
    return null;
  }

  /* DNS-1123 subdomain, as kiln_spec_validate checks a name: '' when fine. */
  function nameProblem(v) {
    if (v === '') return 'a name is required';
    if (v.length > 253) return 'at most 253 characters';
    if (/[A-Z]/.test(v)) return 'must be lower case';
    if (/[^a-z0-9.-]/.test(v)) return 'only lower-case letters, digits, \'-\' and \'.\' are allowed';
    for (const label of v.split('.')) {
      if (label === '') return 'no empty part between dots (no leading, trailing or double \'.\')';
      if (label.length > 63) return 'each part between dots is at most 63 characters';
      if (!/^[a-z0-9]/.test(label) || !/[a-z0-9]$/.test(label)) {
        return 'must start and end with a letter or digit (also around each \'.\')';
      }
    }
    return '';
  }

  function token() { return sessionStorage.getItem(TOKEN_KEY) || ''; }

  class ApiError extends Error {
    constructor(status, body) {
      const e = body && typeof body === 'object' && body.error ? body.error : null;
      super(e && e.message ? e.message : (typeof body === 'string' && body ? body : 'HTTP ' + status));
      this.status = status;
      this.code = e ? e.code : null;
      this.fields = e && Array.isArray(e.fields) ? e.fields : [];
    }
  }

  function authHeaders(extra) {
    return Object.assign({ Authorization: 'Bearer ' + token() }, extra || {});
  }

  /* One API call: JSON in and out; 401 sends the user back to the login box. */
  async function api(method, path, body, opts) {
    const o = opts || {};
    const headers = authHeaders({ Accept: 'application/json' });
    const init = { method, headers, cache: 'no-store', signal: o.signal };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const res = await fetch(API + path, init);
    let data = null;
    if (res.status !== 204) {
      const ct = res.headers.get('Content-Type') || '';
      const text = await res.text();
      if (o.text && res.ok) data = text;
      else if (ct.includes('json') && text) {
        try { data = JSON.parse(text); } catch (e) { data = text; }
      } else data = text;
    }
    if (res.status === 401 && !o.login) {
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin('The admin token was refused: log in again.');
      throw new ApiError(401, data);
    }
    if (!res.ok) throw new ApiError(res.status, data);
    return data;
  }

  function qs(params) {
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) {
      if (v !== '' && v !== null && v !== undefined && v !== false) p.set(k, String(v));
    }
    const s = p.toString();
    return s ? '?' + s : '';
  }

  const enc = encodeURIComponent;

  let toastTimer = 0;
  function toast(msg, kind) {
    const t = document.getElementById('toast');
    t.textContent = msg;
    t.className = 'toast show' + (kind ? ' ' + kind : '');
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { t.className = 'toast'; }, 5000);
  }

  /* A modal confirmation naming what is at stake; resolves true on OK. */
  function confirmDialog(title, text, okLabel) {
    const d = document.getElementById('confirm');
    document.getElementById('confirm-title').textContent = title;
    document.getElementById('confirm-text').textContent = text;
    document.getElementById('confirm-ok').textContent = okLabel || 'OK';
    d.returnValue = '';
    return new Promise((resolve) => {
      d.addEventListener('close', () => resolve(d.returnValue === 'ok'), { once: true });
      d.showModal();
      document.getElementById('confirm-cancel').focus();
    });
  }

  async function copyText(text, button) {
    let ok = false;
    try {
      if (navigator.clipboard && window.isSecureContext) {
        await navigator.clipboard.writeText(text);
        ok = true;
      }
    } catch (e) { ok = false; }
    if (!ok) {
      const ta = h('textarea', { class: 'offscreen', readonly: true, value: text });
      document.body.appendChild(ta);
      ta.select();
      try { ok = document.execCommand('copy'); } catch (e) { ok = false; }
      ta.remove();
      if (button) button.focus();
    }
    if (button) {
      const old = button.dataset.label || button.textContent;
      button.dataset.label = old;
      button.textContent = ok ? 'Copied' : 'Copy failed';
      setTimeout(() => { button.textContent = old; }, 1500);
    }
    toast(ok ? 'Copied ' + text : 'Could not copy: select the text instead', ok ? '' : 'error');
  }

  function imageCell(status, image, label) {
    if (status !== 'Succeeded' || !image) return h('span', { class: 'muted', text: '-' });
    return h('span', { class: 'image' },
      h('code', { class: 'image-url', text: image }),
      h('button', {
        type: 'button', class: 'small copy', 'aria-label': 'Copy image URL' + (label ? ' of ' + label : ''),
        title: 'Copy the image URL', text: 'Copy',
        onclick: (ev) => copyText(image, ev.currentTarget),
      }));
  }

  /*
   * Update a table body in place from `items`: a row is rebuilt only when its
   * signature changed, so polling keeps focus and buttons under the pointer.
   * cache: Map key -> {sig, tr}.
   */
  function syncRows(tbody, cache, items, keyOf, sigOf, make) {
    const want = [];
    const keep = new Set();
    for (const it of items) {
      const key = String(keyOf(it));
      const sig = sigOf(it);
      let r = cache.get(key);
      if (!r || r.sig !== sig) {
        const tr = make(it);
        if (r) {
          const a = document.activeElement;
          const label = r.tr.contains(a) ? a.getAttribute('aria-label') : null;
          r.tr.replaceWith(tr);
          if (r.tr.contains(a)) {
            const f = (label && tr.querySelector('[aria-label="' + CSS.escape(label) + '"]')) || tr.querySelector('a, button');
            if (f) f.focus();
          }
        }
        r = { sig, tr };
        cache.set(key, r);
      }
      keep.add(key);
      want.push(r.tr);
    }
    for (const [k, r] of cache) {
      if (!keep.has(k)) { r.tr.remove(); cache.delete(k); }
    }
    for (const e of tbody.querySelectorAll('tr.empty')) e.remove();
    const cur = Array.from(tbody.children);
    if (cur.length !== want.length || cur.some((tr, i) => tr !== want[i])) {
      for (const tr of want) tbody.appendChild(tr);
    }
  }

  /* ------------------------------------------------------------ view state */

  /* Each route gets a context; leaving the route aborts its timers and streams. */
  let ctx = null;
  function newContext() {
    if (ctx) ctx.close();
    const ac = new AbortController();
    const timers = new Set();
    const c = {
      alive: true,
      signal: ac.signal,
      later(fn, ms) {
        const t = setTimeout(() => { timers.delete(t); if (c.alive) fn(); }, ms);
        timers.add(t);
      },
      close() {
        c.alive = false;
        ac.abort();
        for (const t of timers) clearTimeout(t);
        timers.clear();
      },
    };
    ctx = c;
    return c;
  }

  let registry = null; /* GET /registry */

  async function loadRegistry() {
    try {
      registry = await api('GET', '/registry');
    } catch (e) {
      if (e.status === 401) throw e;
      registry = null;
    }
    renderBanner();
    return registry;
  }

  function buildingDisabled() { return !!registry && registry.configured === false; }

  function renderBanner() {
    const b = document.getElementById('banner');
    b.textContent = '';
    if (!token() || !buildingDisabled()) {
      b.hidden = true;
      return;
    }
    const settings = Array.isArray(registry.settings) ? registry.settings : [];
    append(b, [
      h('strong', { text: (registry.message || 'image registry not found').replace(/^./, (c) => c.toUpperCase()) + '.' }),
      ' Image specs can be saved, but building is disabled until kiln serve is started with a registry. ',
      settings.length ? ['Set: ', settings.map((s, i) => [i ? ', ' : '', h('code', { text: s })]), '.'] : null,
    ]);
    b.hidden = false;
  }

  function setMain(...kids) {
    const m = document.getElementById('main');
    m.textContent = '';
    append(m, kids);
    const h1 = m.querySelector('h1');
    if (h1) {
      h1.setAttribute('tabindex', '-1');
      if (document.activeElement === document.body || !m.contains(document.activeElement)) {
        h1.focus({ preventScroll: true });
      }
    }
  }

  function errorPanel(e, retry) {
    return h('div', { class: 'panel error', role: 'alert' },
      h('p', { text: e.status === 404 ? 'Not found: ' + e.message : 'Something went wrong: ' + e.message }),
      retry ? h('button', { type: 'button', text: 'Try again', onclick: retry }) : null,
      ' ', h('a', { href: '#/specs', text: 'Back to the image specs' }));
  }

  /* ------------------------------------------------------------------ login */

  function showLogin(message) {
    newContext();
    document.getElementById('topnav').hidden = true;
    document.getElementById('banner').hidden = true;
    document.title = 'Log in · kiln';
    const err = h('p', { class: 'field-error', id: 'login-error', role: 'alert', text: message || '' });
    const input = h('input', {
      id: 'login-token', type: 'password', name: 'token', autocomplete: 'current-password',
      required: true, spellcheck: 'false', 'aria-describedby': 'login-hint login-error',
    });
    const form = h('form', { class: 'panel login', id: 'login-form', novalidate: true },
      h('h1', { text: 'Log in' }),
      h('label', { for: 'login-token', text: 'Admin token' }),
      input,
      h('p', { class: 'hint', id: 'login-hint', text: 'The token kiln serve printed when it first started (or KILN_ADMIN_TOKEN). It is kept for this browser session only.' }),
      err,
      h('button', { type: 'submit', class: 'primary', text: 'Log in' }));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const t = input.value.trim();
      if (!t) {
        err.textContent = 'Enter the admin token.';
        input.focus();
        return;
      }
      sessionStorage.setItem(TOKEN_KEY, t);
      try {
        registry = await api('GET', '/registry', undefined, { login: true });
      } catch (e) {
        sessionStorage.removeItem(TOKEN_KEY);
        err.textContent = e.status === 401 ? 'That token was not accepted.' : 'Cannot reach kiln serve: ' + e.message;
        input.select();
        input.focus();
        return;
      }
      if (!location.hash || location.hash === '#/login') location.hash = '#/specs';
      else route();
    });
    setMain(form);
    input.focus();
  }

  /* ------------------------------------------------------------------- list */

  const listState = { q: '', order: 'updated', desc: true, page: 0 };

  function viewList(c) {
    document.title = 'Image specs · kiln';
    const tbody = h('tbody', { id: 'spec-rows' });
    const info = h('span', { class: 'pager-info', id: 'pager-info', 'aria-live': 'polite' });
    const prev = h('button', { type: 'button', id: 'page-prev', text: '‹ Previous' });
    const next = h('button', { type: 'button', id: 'page-next', text: 'Next ›' });
    const live = h('p', { class: 'muted small', id: 'list-state', 'aria-live': 'polite' });
    const search = h('input', {
      type: 'search', id: 'search', value: listState.q, placeholder: 'part of a name',
      autocomplete: 'off', spellcheck: 'false',
    });
    const order = h('select', { id: 'order' },
      h('option', { value: 'name', text: 'Name' }),
      h('option', { value: 'status', text: 'Status' }),
      h('option', { value: 'updated', text: 'Updated' }));
    order.value = listState.order;
    const desc = h('input', { type: 'checkbox', id: 'desc', checked: listState.desc });
    const heads = {};
    function sortHead(key, label) {
      const b = h('button', { type: 'button', class: 'sort', dataset: { key }, text: label });
      b.addEventListener('click', () => {
        if (listState.order === key) listState.desc = !listState.desc;
        else { listState.order = key; listState.desc = key === 'updated'; }
        listState.page = 0;
        syncControls();
        reload();
      });
      heads[key] = h('th', { scope: 'col' }, b);
      return heads[key];
    }
    function syncControls() {
      order.value = listState.order;
      desc.checked = listState.desc;
      for (const [k, th] of Object.entries(heads)) {
        if (k === listState.order) th.setAttribute('aria-sort', listState.desc ? 'descending' : 'ascending');
        else th.removeAttribute('aria-sort');
      }
    }
    const table = h('table', { class: 'specs', id: 'spec-table' },
      h('caption', { class: 'sr-only', text: 'Image specs' }),
      h('thead', {}, h('tr', {},
        sortHead('name', 'Name'), sortHead('status', 'Status'),
        h('th', { scope: 'col', text: 'Image' }), sortHead('updated', 'Updated'),
        h('th', { scope: 'col', text: 'Actions' }))),
      tbody);
    syncControls();

    let timer = 0;
    search.addEventListener('input', () => {
      clearTimeout(timer);
      timer = setTimeout(() => { listState.q = search.value.trim(); listState.page = 0; reload(); }, 250);
    });
    order.addEventListener('change', () => { listState.order = order.value; listState.page = 0; syncControls(); reload(); });
    desc.addEventListener('change', () => { listState.desc = desc.checked; listState.page = 0; syncControls(); reload(); });
    prev.addEventListener('click', () => { if (listState.page > 0) { listState.page--; reload(); } });
    next.addEventListener('click', () => { listState.page++; reload(); });

    setMain(
      h('div', { class: 'titlebar' },
        h('h1', { text: 'Image specs' }),
        h('a', { class: 'button primary', href: '#/specs/new', id: 'new-spec', text: '+ New image spec' })),
      h('div', { class: 'filters', role: 'search' },
        h('div', { class: 'field inline' }, h('label', { for: 'search', text: 'Search by name' }), search),
        h('div', { class: 'field inline' }, h('label', { for: 'order', text: 'Sort by' }), order),
        h('div', { class: 'field inline check' }, desc, h('label', { for: 'desc', text: 'Descending' }))),
      h('div', { class: 'table-wrap' }, table),
      h('nav', { class: 'pager', 'aria-label': 'Pages' }, prev, info, next),
      live);

    const rows = new Map(); /* name -> {sig, tr} */
    let seq = 0;
    let pollTimer = false;

    function rowFor(s) {
      const actions = h('td', { class: 'actions', 'data-label': 'Actions' },
        h('a', { class: 'button small', href: '#/specs/' + enc(s.name), 'aria-label': 'View ' + s.name, text: 'View' }),
        h('a', { class: 'button small', href: '#/specs/' + enc(s.name) + '/edit', 'aria-label': 'Edit ' + s.name, text: 'Edit' }),
        h('button', {
          type: 'button', class: 'small danger', 'aria-label': 'Delete ' + s.name, text: 'Delete',
          onclick: () => deleteSpec(s.name, () => reload()),
        }));
      const st = s.jobId ? h('a', { href: '#/jobs/' + s.jobId, class: 'status-link', title: 'Open the latest build' }, badge(s.status)) : badge(s.status);
      return h('tr', { dataset: { name: s.name } },
        h('th', { scope: 'row', class: 'name', 'data-label': 'Name' },
          h('a', { href: '#/specs/' + enc(s.name), text: s.name }),
          s.description ? h('div', { class: 'muted small desc', text: s.description }) : null),
        h('td', { class: 'status-cell', 'data-label': 'Status' }, st),
        h('td', { class: 'image-cell', 'data-label': 'Image' }, imageCell(s.status, s.image, s.name)),
        h('td', { class: 'updated', 'data-label': 'Updated' }, timeEl(s.updatedAt)),
        actions);
    }

    async function reload() {
      const my = ++seq;
      const params = {
        order: listState.order, desc: listState.desc ? 1 : '', limit: PAGE_SIZE,
        offset: listState.page * PAGE_SIZE, name_contains: listState.q,
      };
      let data;
      try {
        data = await api('GET', '/specs' + qs(params), undefined, { signal: c.signal });
      } catch (e) {
        if (!c.alive || e.name === 'AbortError' || e.status === 401) return;
        live.textContent = 'Could not refresh the list (' + e.message + '); retrying.';
        schedule();
        return;
      }
      if (!c.alive || my !== seq) return;
      const items = Array.isArray(data.items) ? data.items : [];
      const total = typeof data.total === 'number' ? data.total : items.length;
      if (items.length === 0 && total > 0 && listState.page > 0) {
        listState.page = Math.max(0, Math.ceil(total / PAGE_SIZE) - 1);
        reload();
        return;
      }
      live.textContent = '';
      syncRows(tbody, rows, items, (sp) => sp.name,
        (sp) => JSON.stringify([sp.status, sp.image, sp.updatedAt, sp.jobId, sp.description]), rowFor);
      if (items.length === 0) {
        tbody.appendChild(h('tr', { class: 'empty' }, h('td', {
          colspan: '5',
          text: listState.q ? 'No image spec name contains “' + listState.q + '”.' : 'No image specs yet: create one with “New image spec”.',
        })));
      }
      const first = total === 0 ? 0 : listState.page * PAGE_SIZE + 1;
      const last = listState.page * PAGE_SIZE + items.length;
      info.textContent = total === 0 ? '0 specs' : first + '–' + last + ' of ' + total;
      prev.disabled = listState.page === 0;
      next.disabled = last >= total;
      schedule();
    }

    function schedule() {
      if (pollTimer) return;
      pollTimer = true;
      c.later(() => { pollTimer = false; reload(); }, POLL_MS);
    }

    loadRegistry().catch(() => {});
    reload();
  }

  async function deleteSpec(name, after) {
    const ok = await confirmDialog('Delete image spec?',
      'Delete the image spec “' + name + '”? Its builds are cancelled and its build history and logs are removed. Images already pushed stay in the registry.',
      'Delete');
    if (!ok) return false;
    try {
      await api('DELETE', '/specs/' + enc(name));
    } catch (e) {
      if (e.status !== 404) {
        toast('Could not delete ' + name + ': ' + e.message, 'error');
        return false;
      }
    }
    toast('Deleted image spec ' + name);
    if (after) after();
    return true;
  }

  /* ------------------------------------------------------------- spec form */

  /* Spec page: create (name === null), or an existing spec with tabs. */
  function viewSpec(c, name, mode) {
    if (name === null) {
      document.title = 'New image spec · kiln';
      const form = specForm(c, null, false);
      setMain(
        h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, h('a', { href: '#/specs', text: 'Image specs' }), ' / New'),
        h('h1', { text: 'New image spec' }),
        form.el);
      form.focusFirst();
      loadRegistry().then(() => form.registryChanged()).catch(() => {});
      return;
    }
    document.title = name + ' · kiln';
    const readOnly = mode === 'view';
    const tabInfo = h('button', { type: 'button', role: 'tab', id: 'tab-info', 'aria-controls': 'panel-info', text: 'Info' });
    const tabJobs = h('button', { type: 'button', role: 'tab', id: 'tab-jobs', 'aria-controls': 'panel-jobs', text: 'Jobs' });
    const panelInfo = h('section', { role: 'tabpanel', id: 'panel-info', 'aria-labelledby': 'tab-info', tabindex: '0' });
    const panelJobs = h('section', { role: 'tabpanel', id: 'panel-jobs', 'aria-labelledby': 'tab-jobs', tabindex: '0' });
    const headStatus = h('span', { class: 'head-status' });
    const jobs = jobsPanel(c, name, panelJobs);
    let form = null;

    function select(which, push) {
      const info = which === 'info';
      tabInfo.setAttribute('aria-selected', String(info));
      tabJobs.setAttribute('aria-selected', String(!info));
      tabInfo.tabIndex = info ? 0 : -1;
      tabJobs.tabIndex = info ? -1 : 0;
      panelInfo.hidden = !info;
      panelJobs.hidden = info;
      if (info) jobs.stop(); else jobs.start();
      if (push) {
        const target = '#/specs/' + enc(name) + (info ? (readOnly ? '' : '/edit') : '/jobs');
        if (location.hash !== target) history.replaceState(null, '', target);
      }
    }
    for (const t of [tabInfo, tabJobs]) {
      t.addEventListener('click', () => select(t === tabInfo ? 'info' : 'jobs', true));
      t.addEventListener('keydown', (ev) => {
        if (ev.key === 'ArrowRight' || ev.key === 'ArrowLeft' || ev.key === 'Home' || ev.key === 'End') {
          ev.preventDefault();
          const other = t === tabInfo ? tabJobs : tabInfo;
          const target = ev.key === 'Home' ? tabInfo : ev.key === 'End' ? tabJobs : other;
          target.focus();
          select(target === tabInfo ? 'info' : 'jobs', true);
        }
      });
    }

    const actions = h('div', { class: 'title-actions' },
      readOnly ? h('a', { class: 'button', href: '#/specs/' + enc(name) + '/edit', id: 'edit-spec', text: 'Edit' }) : null,
      h('button', {
        type: 'button', class: 'danger', id: 'delete-spec', text: 'Delete',
        onclick: () => deleteSpec(name, () => { location.hash = '#/specs'; }),
      }));

    setMain(
      h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, h('a', { href: '#/specs', text: 'Image specs' }), ' / ' + name),
      h('div', { class: 'titlebar' }, h('h1', {}, name, ' ', headStatus), actions),
      h('div', { class: 'tabs', role: 'tablist', 'aria-label': 'Image spec' }, tabInfo, tabJobs),
      panelInfo, panelJobs);
    select(mode === 'jobs' ? 'jobs' : 'info', false);

    jobs.onSpec = (s) => {
      headStatus.textContent = '';
      headStatus.appendChild(badge(s.status));
    };

    (async () => {
      let spec;
      try {
        await loadRegistry();
        spec = await api('GET', '/specs/' + enc(name), undefined, { signal: c.signal });
      } catch (e) {
        if (!c.alive || e.status === 401) return;
        panelInfo.textContent = '';
        panelInfo.appendChild(errorPanel(e, () => route()));
        return;
      }
      if (!c.alive) return;
      jobs.onSpec(spec);
      form = specForm(c, spec, readOnly, {
        onSaved: (res) => {
          if (res && res.queued) select('jobs', true);
          jobs.refresh();
        },
      });
      panelInfo.appendChild(form.el);
      form.registryChanged();
    })();
  }

  /* The Info form. spec null: create. Returns {el, focusFirst, registryChanged}. */
  function specForm(c, spec, readOnly, hooks) {
    const creating = spec === null;
    const s = spec || { name: '', baseImage: '', pullSecret: null, description: '', packages: {} };
    const ids = (k) => 'f-' + k;
    const errs = {};

    function fieldError(key) {
      errs[key] = h('div', { class: 'field-error', id: ids(key) + '-err', 'aria-live': 'polite' });
      return errs[key];
    }

    const nameIn = h('input', {
      id: ids('name'), name: 'name', value: s.name, required: true, autocomplete: 'off',
      spellcheck: 'false', autocapitalize: 'none', maxlength: '253',
      readonly: !creating || readOnly, 'aria-describedby': ids('name') + '-hint ' + ids('name') + '-err',
    });
    const descIn = h('textarea', { id: ids('description'), name: 'description', rows: '2', maxlength: '4096', value: s.description || '', readonly: readOnly, 'aria-describedby': ids('description') + '-err' });
    const baseIn = h('input', {
      id: ids('baseImage'), name: 'baseImage', value: s.baseImage || '', required: true, list: 'image-suggestions',
      autocomplete: 'off', spellcheck: 'false', autocapitalize: 'none', readonly: readOnly,
      placeholder: 'registry.example.com/team/base:tag',
      'aria-describedby': ids('baseImage') + '-hint ' + ids('baseImage') + '-err',
    });
    const images = h('datalist', { id: 'image-suggestions' });
    const useSecret = h('input', { type: 'checkbox', id: ids('useSecret'), checked: !!s.pullSecret, disabled: readOnly });
    const secretSel = h('select', { id: ids('pullSecret'), name: 'pullSecret', disabled: readOnly || !s.pullSecret, 'aria-describedby': ids('pullSecret') + '-err' });
    if (s.pullSecret) secretSel.appendChild(h('option', { value: s.pullSecret, text: s.pullSecret }));
    useSecret.addEventListener('change', () => { secretSel.disabled = !useSecret.checked; if (useSecret.checked) secretSel.focus(); });

    const pkgIn = {};
    const gutters = {};
    function pkgField(kind) {
      const list = (s.packages && s.packages[kind]) || [];
      const ta = h('textarea', {
        id: ids(kind), name: kind, rows: '5', wrap: 'off', spellcheck: 'false', autocapitalize: 'none',
        autocomplete: 'off', readonly: readOnly, value: Array.isArray(list) ? list.join('\n') : String(list || ''),
        placeholder: readOnly ? '' : KIND_PLACEHOLDER[kind],
        'aria-describedby': ids(kind) + '-hint ' + ids(kind) + '-err',
      });
      const gutter = h('div', { class: 'gutter', 'aria-hidden': 'true' });
      pkgIn[kind] = ta;
      gutters[kind] = { el: gutter, bad: new Set() };
      const sync = () => renderGutter(kind);
      ta.addEventListener('input', () => {
        if (gutters[kind].bad.size) { gutters[kind].bad.clear(); errs[kind].textContent = ''; ta.removeAttribute('aria-invalid'); }
        sync();
      });
      ta.addEventListener('scroll', () => { gutter.scrollTop = ta.scrollTop; });
      const el = h('div', { class: 'field pkg' },
        h('label', { for: ids(kind), text: KIND_LABEL[kind] + ' packages' }),
        h('div', { class: 'lines' }, gutter, ta),
        h('p', { class: 'hint', id: ids(kind) + '-hint', text: 'One per line. ' + KIND_HINT[kind] }),
        fieldError(kind));
      return el;
    }

    function renderGutter(kind) {
      const g = gutters[kind];
      const n = Math.max(1, pkgIn[kind].value.split('\n').length);
      g.el.textContent = '';
      for (let i = 1; i <= n; i++) {
        g.el.appendChild(h('div', { class: g.bad.has(i) ? 'bad' : null, text: String(i) }));
      }
      g.el.scrollTop = pkgIn[kind].scrollTop;
    }

    const nameField = h('div', { class: 'field' },
      h('label', { for: ids('name'), text: 'Name' }), nameIn,
      h('p', { class: 'hint', id: ids('name') + '-hint', text: creating ? 'Lower-case letters, digits, “-” and “.”; starts and ends with a letter or digit. The name cannot be changed later.' : 'The name cannot be changed.' }),
      fieldError('name'));
    const nameOk = h('span', { class: 'name-ok', 'aria-hidden': 'true' });
    if (creating && !readOnly) {
      nameIn.addEventListener('input', () => {
        const p = nameIn.value === '' ? '' : nameProblem(nameIn.value);
        setFieldErrors('name', p ? [{ message: p }] : []);
        nameOk.textContent = !p && nameIn.value ? '✓' : '';
      });
      nameField.querySelector('label').appendChild(nameOk);
    }

    const general = h('div', { class: 'form-errors', id: 'form-errors', role: 'alert', hidden: true });
    const notice = h('div', { class: 'notice', id: 'form-notice', role: 'status', 'aria-live': 'polite', hidden: true });
    const submit = h('button', { type: 'submit', class: 'primary', id: 'save', text: creating ? 'Confirm' : 'Save' });
    const buildNote = h('span', { class: 'muted small', id: 'build-note' });

    const form = h('form', { class: 'spec-form panel', id: 'spec-form', novalidate: true },
      general,
      notice,
      nameField,
      h('div', { class: 'field' }, h('label', { for: ids('description'), text: 'Description (optional)' }), descIn, fieldError('description')),
      h('div', { class: 'field' },
        h('label', { for: ids('baseImage'), text: 'Base image' }), baseIn, images,
        h('p', { class: 'hint', id: ids('baseImage') + '-hint', text: 'An image reference; suggestions come from built images and registered URLs.' }),
        fieldError('baseImage')),
      h('div', { class: 'field secret' },
        h('div', { class: 'check' }, useSecret, h('label', { for: ids('useSecret'), text: 'Use image pull secret' })),
        h('label', { for: ids('pullSecret'), class: 'sr-only', text: 'Pull secret' }),
        secretSel, fieldError('pullSecret')),
      h('fieldset', { class: 'packages' },
        h('legend', { text: 'Packages' }),
        h('p', { class: 'hint', text: 'One package per line; blank lines and lines starting with “#” are ignored. Each kind is installed in its own build step: APT, then Conda, then Pip.' }),
        h('div', { class: 'pkg-grid' }, KINDS.map(pkgField))),
      readOnly ? null : h('div', { class: 'form-actions' },
        submit, ' ',
        h('a', { class: 'button', href: creating ? '#/specs' : '#/specs/' + enc(s.name) + '/jobs', text: 'Cancel' }),
        ' ', buildNote));
    KINDS.forEach(renderGutter);

    function setFieldErrors(key, list) {
      const el = errs[key];
      if (!el) return;
      el.textContent = '';
      const input = key === 'name' ? nameIn : key === 'description' ? descIn : key === 'baseImage' ? baseIn : key === 'pullSecret' ? secretSel : pkgIn[key];
      if (gutters[key]) gutters[key].bad.clear();
      if (!list.length) {
        if (input) input.removeAttribute('aria-invalid');
        if (gutters[key]) renderGutter(key);
        return;
      }
      if (input) input.setAttribute('aria-invalid', 'true');
      const ul = h('ul', {});
      for (const f of list) {
        if (gutters[key] && f.line) gutters[key].bad.add(f.line);
        ul.appendChild(h('li', { dataset: { line: f.line || '' } },
          f.line ? h('strong', { text: 'Line ' + f.line + ': ' }) : null, f.message));
      }
      el.appendChild(ul);
      if (gutters[key]) renderGutter(key);
    }

    function clearErrors() {
      for (const k of Object.keys(errs)) setFieldErrors(k, []);
      general.hidden = true;
      general.textContent = '';
    }

    /* Server field errors: "packages.pip[2]" (line 3) next to the Pip box. */
    function showServerErrors(e) {
      const byKey = {};
      const other = [];
      for (const f of e.fields) {
        const path = String(f.field || '').replace(/^(spec|metadata)\./, '');
        const m = /^(name|baseImage|pullSecret|description|packages\.(apt|conda|pip))\b/.exec(path);
        const key = m ? (m[2] || m[1]) : null;
        const entry = { line: f.line || null, message: f.message || 'invalid' };
        if (key && errs[key]) (byKey[key] = byKey[key] || []).push(entry);
        else other.push((f.field ? f.field + ': ' : '') + entry.message);
      }
      for (const [k, list] of Object.entries(byKey)) setFieldErrors(k, list);
      general.textContent = '';
      const n = e.fields.length;
      append(general, [
        h('p', { text: n ? 'Nothing was saved: ' + (n === 1 ? 'one problem' : n + ' problems') + ' (marked below).' : 'Nothing was saved: ' + e.message }),
        other.length ? h('ul', {}, other.map((t) => h('li', { text: t }))) : null,
      ]);
      general.hidden = false;
      const firstKey = ['name', 'description', 'baseImage', 'pullSecret', ...KINDS].find((k) => byKey[k]);
      const focus = firstKey === 'name' ? nameIn : firstKey === 'baseImage' ? baseIn : firstKey === 'description' ? descIn : firstKey === 'pullSecret' ? secretSel : firstKey ? pkgIn[firstKey] : null;
      if (focus) focus.focus(); else general.focus();
    }

    function body() {
      const b = {
        name: nameIn.value.trim(),
        baseImage: baseIn.value.trim(),
        packages: {},
      };
      const d = descIn.value.trim();
      if (d) b.description = d;
      if (useSecret.checked && secretSel.value) b.pullSecret = secretSel.value;
      for (const k of KINDS) b.packages[k] = pkgIn[k].value;
      return b;
    }

    let busy = false;
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      if (busy || readOnly) return;
      clearErrors();
      notice.hidden = true;
      const b = body();
      const local = [];
      if (creating) {
        const p = nameProblem(b.name);
        if (p) { setFieldErrors('name', [{ message: p }]); local.push(nameIn); }
      }
      if (!b.baseImage) { setFieldErrors('baseImage', [{ message: 'a base image is required' }]); local.push(baseIn); }
      if (useSecret.checked && !secretSel.value) { setFieldErrors('pullSecret', [{ message: 'choose a pull secret (or clear the check box)' }]); local.push(secretSel); }
      if (local.length) {
        general.textContent = 'Nothing was saved: fix the marked fields.';
        general.hidden = false;
        local[0].focus();
        return;
      }
      busy = true;
      submit.disabled = true;
      try {
        if (creating) {
          const res = await api('POST', '/specs', b);
          const saved = res && res.spec ? res.spec : res;
          const nm = saved && saved.name ? saved.name : b.name;
          const msg = res && res.message ? res.message : buildingDisabled() ? 'image registry not found: nothing is built' : 'first build queued';
          toast('Saved image spec ' + nm + ': ' + msg);
          location.hash = '#/specs/' + enc(nm) + '/jobs';
        } else {
          const res = await api('PUT', '/specs/' + enc(s.name), b);
          const msg = res && res.message ? res.message : res && res.queued ? 'build queued' : 'saved';
          notice.textContent = '';
          append(notice, [h('strong', { text: 'Saved. ' }), msg.charAt(0).toUpperCase() + msg.slice(1) + (res && res.queued && res.job ? ' (job ' + res.job.id + ').' : '.')]);
          notice.hidden = false;
          toast('Saved ' + s.name + ': ' + msg);
          if (hooks && hooks.onSaved) hooks.onSaved(res);
        }
      } catch (e) {
        if (e.status === 401) return;
        if (e.status === 409 && creating && e.code !== 'registry_not_found') {
          setFieldErrors('name', [{ message: e.message || 'an image spec with this name already exists' }]);
          general.textContent = 'Nothing was saved: ' + (e.message || 'the name is taken') + '.';
          general.hidden = false;
          nameIn.focus();
        } else if (e.fields.length || e.status === 422) {
          showServerErrors(e);
        } else {
          general.textContent = 'Nothing was saved: ' + e.message;
          general.hidden = false;
        }
      } finally {
        busy = false;
        submit.disabled = false;
      }
    });

    async function fillSuggestions() {
      try {
        const [imgs, secrets] = await Promise.all([
          api('GET', '/images?limit=1000', undefined, { signal: c.signal }),
          api('GET', '/secrets?limit=1000', undefined, { signal: c.signal }),
        ]);
        if (!c.alive) return;
        images.textContent = '';
        const seen = new Set();
        for (const it of (imgs && imgs.items) || []) {
          if (!it.url || seen.has(it.url)) continue;
          seen.add(it.url);
          images.appendChild(h('option', { value: it.url, label: it.source === 'built' ? 'built by kiln' : 'registered' }));
        }
        const cur = secretSel.value;
        secretSel.textContent = '';
        const names = ((secrets && secrets.items) || []).map((x) => x.name);
        if (cur && !names.includes(cur)) names.unshift(cur);
        if (!names.length) secretSel.appendChild(h('option', { value: '', text: '(no pull secrets stored)' }));
        for (const n of names) secretSel.appendChild(h('option', { value: n, text: n }));
        if (cur) secretSel.value = cur;
      } catch (e) { /* suggestions are optional */ }
    }
    if (!readOnly) fillSuggestions();

    return {
      el: form,
      focusFirst() { (creating ? nameIn : baseIn).focus(); },
      registryChanged() {
        buildNote.textContent = buildingDisabled() ? 'No image registry: the spec is saved, nothing is built.' : '';
      },
    };
  }

  /* ------------------------------------------------------------- jobs tab */

  function jobsPanel(c, name, panel) {
    const tbody = h('tbody', { id: 'job-rows' });
    const rebuild = h('button', { type: 'button', id: 'rebuild', text: 'Rebuild' });
    const note = h('span', { class: 'muted small', id: 'jobs-note' });
    const live = h('p', { class: 'muted small', 'aria-live': 'polite' });
    append(panel, [
      h('div', { class: 'toolbar' }, rebuild, ' ', note),
      h('div', { class: 'table-wrap' }, h('table', { class: 'jobs', id: 'job-table' },
        h('caption', { class: 'sr-only', text: 'Builds of ' + name + ', newest first' }),
        h('thead', {}, h('tr', {},
          ['Updated At', 'Image Revision', 'Status', 'Image', 'Duration', 'Actions'].map((t) => h('th', { scope: 'col', text: t })))),
        tbody)),
      live,
    ]);
    rebuild.addEventListener('click', async () => {
      rebuild.disabled = true;
      try {
        const job = await api('POST', '/specs/' + enc(name) + '/rebuild');
        toast('Rebuild queued: job ' + job.id);
      } catch (e) {
        if (e.status !== 401) toast('Cannot rebuild: ' + e.message, 'error');
      }
      rebuild.disabled = false;
      refresh();
    });

    let running = false;
    let pending = false;
    let seq = 0;
    const rows = new Map();

    function jobRow(j) {
      const updated = j.finishedAt || j.startedAt || j.createdAt;
      const cancellable = j.phase === 'Pending' || j.phase === 'Running';
      return h('tr', { dataset: { id: j.id, phase: j.phase } },
        h('td', { 'data-label': 'Updated At' }, timeEl(updated)),
        h('td', { 'data-label': 'Image Revision' }, h('code', { text: (j.spec || name) + ':' + j.revision })),
        h('td', { 'data-label': 'Status' }, badge(j.phase)),
        h('td', { 'data-label': 'Image' }, imageCell(j.phase, j.image, 'job ' + j.id)),
        h('td', { class: 'duration', 'data-label': 'Duration', text: fmtDuration(jobDuration(j)) }),
        h('td', { class: 'actions', 'data-label': 'Actions' },
          h('a', { class: 'button small', href: '#/jobs/' + j.id, 'aria-label': 'View job ' + j.id, text: 'View' }),
          cancellable ? h('button', {
            type: 'button', class: 'small', 'aria-label': 'Cancel job ' + j.id,
            text: j.cancelRequested ? 'Cancelling…' : 'Cancel', disabled: !!j.cancelRequested,
            onclick: (ev) => cancelJob(j.id, ev.currentTarget, refresh),
          }) : null));
    }
    const self = {
      onSpec: null,
      start() { if (!running) { running = true; refresh(); } },
      stop() { running = false; },
      refresh,
    };

    async function refresh() {
      const my = ++seq;
      let data;
      let spec;
      try {
        [data, spec] = await Promise.all([
          api('GET', '/specs/' + enc(name) + '/jobs?limit=' + PAGE_SIZE, undefined, { signal: c.signal }),
          api('GET', '/specs/' + enc(name), undefined, { signal: c.signal }),
        ]);
      } catch (e) {
        if (!c.alive || e.name === 'AbortError' || e.status === 401) return;
        live.textContent = 'Could not refresh the builds (' + e.message + ').';
        schedule();
        return;
      }
      if (!c.alive || my !== seq) return;
      live.textContent = '';
      if (self.onSpec) self.onSpec(spec);
      rebuild.disabled = buildingDisabled();
      note.textContent = buildingDisabled() ? 'Building is disabled: no image registry.' : '';
      const items = (data && data.items) || [];
      syncRows(tbody, rows, items, (j) => j.id,
        (j) => JSON.stringify([j.phase, j.image, j.finishedAt, j.startedAt, j.revision, j.cancelRequested]), jobRow);
      for (const j of items) {
        const d = rows.get(String(j.id)).tr.querySelector('.duration');
        if (d) d.textContent = fmtDuration(jobDuration(j));
      }
      if (!items.length) {
        tbody.appendChild(h('tr', { class: 'empty' }, h('td', { colspan: '6', text: buildingDisabled() ? 'No builds: no image registry is configured.' : 'No builds yet.' })));
      }
      schedule();
    }

    function schedule() {
      if (pending || !running) return;
      pending = true;
      c.later(() => { pending = false; if (running) refresh(); }, POLL_MS);
    }
    return self;
  }

  async function cancelJob(id, button, after) {
    if (button) button.disabled = true;
    try {
      const job = await api('POST', '/jobs/' + id + '/cancel');
      toast(job.phase === 'Cancelled' ? 'Job ' + id + ' cancelled' : 'Cancelling job ' + id + '…');
    } catch (e) {
      if (e.status !== 401) toast('Cannot cancel job ' + id + ': ' + e.message, 'error');
    }
    if (button) button.disabled = false;
    if (after) after();
  }

  /* --------------------------------------------------------------- job view */

  function yamlScalar(v) {
    if (v === null || v === undefined) return 'null';
    const s = String(v);
    if (/^[A-Za-z0-9_./][A-Za-z0-9_./:=<>!~,+@*-]*$/.test(s) && !/: /.test(s) &&
        !/^(null|true|false|yes|no|on|off|~|[-+]?[0-9.]+([eE][-+]?[0-9]+)?)$/i.test(s)) return s;
    return JSON.stringify(s);
  }

  function specText(sp) {
    if (!sp || typeof sp !== 'object') return '';
    const out = [];
    for (const k of ['name', 'description', 'baseImage', 'pullSecret']) {
      if (sp[k] !== undefined && sp[k] !== null && sp[k] !== '') out.push(k + ': ' + yamlScalar(sp[k]));
    }
    const pk = sp.packages || {};
    out.push('packages:');
    for (const k of KINDS) {
      const list = Array.isArray(pk[k]) ? pk[k] : [];
      if (!list.length) out.push('  ' + k + ': []');
      else {
        out.push('  ' + k + ':');
        for (const p of list) out.push('    - ' + yamlScalar(p));
      }
    }
    return out.join('\n') + '\n';
  }

  function viewJob(c, id) {
    document.title = 'Job ' + id + ' · kiln';
    const head = h('span', { class: 'head-status' });
    const title = h('h1', { text: 'Job ' + id });
    const failure = h('div', { class: 'failure', id: 'job-failure', role: 'alert', hidden: true });
    const facts = h('dl', { class: 'facts', id: 'job-facts' });
    const cancel = h('button', { type: 'button', id: 'job-cancel', hidden: true, text: 'Cancel build' });
    const download = h('button', { type: 'button', id: 'job-download', text: 'Download log' });
    const logEl = h('div', { class: 'log', id: 'job-log', role: 'log', 'aria-label': 'Build log', tabindex: '0' });
    const followBtn = h('button', { type: 'button', class: 'small', id: 'log-follow', hidden: true, text: 'Follow the log ↓' });
    const logState = h('span', { class: 'muted small', id: 'log-state', 'aria-live': 'polite' });
    const specPre = h('pre', { class: 'code', id: 'job-spec', tabindex: '0' });
    const dockerPre = h('pre', { class: 'code', id: 'job-dockerfile', tabindex: '0' });
    const crumbs = h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, h('a', { href: '#/specs', text: 'Image specs' }));
    setMain(
      crumbs,
      h('div', { class: 'titlebar' }, h('div', {}, title, ' ', head), h('div', { class: 'title-actions' }, cancel, ' ', download)),
      failure,
      facts,
      h('section', { class: 'panel log-panel', 'aria-labelledby': 'log-title' },
        h('div', { class: 'section-head' }, h('h2', { id: 'log-title', text: 'Build log' }), logState, followBtn),
        logEl),
      h('div', { class: 'two' },
        h('section', { class: 'panel', 'aria-labelledby': 'spec-title' },
          h('h2', { id: 'spec-title', text: 'Spec of this revision (read-only)' }), specPre),
        h('section', { class: 'panel', 'aria-labelledby': 'df-title' },
          h('h2', { id: 'df-title', text: 'Dockerfile' }), dockerPre)));

    let job = null;
    let follow = true;
    let bytes = 0;
    let lines = 0;
    let partial = '';
    let queued = [];
    let flushing = false;

    function atEnd() { return logEl.scrollTop + logEl.clientHeight >= logEl.scrollHeight - 8; }
    logEl.addEventListener('scroll', () => {
      const end = atEnd();
      if (end !== follow) {
        follow = end;
        followBtn.hidden = follow || !job || FINAL.has(job.phase);
        if (job && job.phase === 'Running') logState.textContent = follow ? 'following live' : 'paused: scrolled up';
      }
    });
    followBtn.addEventListener('click', () => {
      follow = true;
      followBtn.hidden = true;
      logEl.scrollTop = logEl.scrollHeight;
      logEl.focus();
    });

    function lineClass(t) {
      if (/^\S+ ! /.test(t)) return 'line err';
      if (/^\S+ \| /.test(t)) return 'line out';
      if (/^\S+ (warning|error)[: ]/i.test(t)) return 'line warn';
      return 'line step';
    }

    function addLines(list) {
      for (const t of list) queued.push(t);
      if (!flushing) {
        flushing = true;
        requestAnimationFrame(flush);
      }
    }

    function flush() {
      flushing = false;
      if (!c.alive || !queued.length) return;
      const frag = document.createDocumentFragment();
      for (const t of queued) frag.appendChild(h('div', { class: lineClass(t), text: t }));
      lines += queued.length;
      queued = [];
      const stick = follow;
      logEl.appendChild(frag);
      if (stick) logEl.scrollTop = logEl.scrollHeight;
      logEl.dataset.lines = String(lines);
    }

    /* Text from ?follow=1 or /log: split into lines, keep the unfinished tail. */
    function addText(text) {
      const all = partial + text;
      const parts = all.split('\n');
      partial = parts.pop();
      if (parts.length) addLines(parts);
    }

    function utf8len(s) { return new TextEncoder().encode(s).length; }

    function renderJob(j) {
      job = j;
      title.textContent = j.name ? 'Job ' + j.name : 'Job ' + j.id;
      document.title = (j.name || 'Job ' + j.id) + ' · kiln';
      head.textContent = '';
      head.appendChild(badge(j.phase));
      crumbs.textContent = '';
      append(crumbs, [h('a', { href: '#/specs', text: 'Image specs' }), ' / ',
        h('a', { href: '#/specs/' + enc(j.spec) + '/jobs', text: j.spec }), ' / job ' + j.id]);
      if (j.error && (j.phase === 'Failed' || j.phase === 'Cancelled' || j.phase === 'Unknown')) {
        failure.textContent = '';
        append(failure, [h('strong', { text: j.phase === 'Failed' ? 'Build failed: ' : j.phase === 'Cancelled' ? 'Cancelled: ' : 'Unknown state: ' }), j.error]);
        failure.className = j.phase === 'Failed' ? 'failure' : 'notice';
        failure.hidden = false;
      } else failure.hidden = true;
      facts.textContent = '';
      const fact = (k, v) => [h('dt', { text: k }), h('dd', {}, v)];
      append(facts, [
        fact('Spec', h('a', { href: '#/specs/' + enc(j.spec) + '/jobs', text: j.spec })),
        fact('Image revision', h('code', { text: j.spec + ':' + j.revision })),
        fact('Status', badge(j.phase)),
        fact('Target image', j.targetImage ? h('code', { text: j.targetImage }) : '-'),
        fact('Image', imageCell(j.phase, j.image, 'job ' + j.id)),
        j.digest ? fact('Digest', h('code', { class: 'digest', text: j.digest })) : null,
        fact('Created', timeEl(j.createdAt)),
        fact('Started', timeEl(j.startedAt)),
        fact('Finished', timeEl(j.finishedAt)),
        fact('Duration', h('span', { id: 'job-duration', text: fmtDuration(jobDuration(j)) })),
        j.attempt > 1 ? fact('Attempt', String(j.attempt)) : null,
      ]);
      const final = FINAL.has(j.phase);
      cancel.hidden = final || j.phase === 'Unknown';
      cancel.disabled = !!j.cancelRequested;
      cancel.textContent = j.cancelRequested ? 'Cancelling…' : 'Cancel build';
      if (final) followBtn.hidden = true;
      if (j.specSnapshot) specPre.textContent = specText(j.specSnapshot);
      if (typeof j.dockerfile === 'string') dockerPre.textContent = j.dockerfile;
      logState.textContent = j.phase === 'Running' ? (follow ? 'following live' : 'paused: scrolled up')
        : j.phase === 'Pending' ? 'waiting for a worker' : '';
    }

    cancel.addEventListener('click', () => cancelJob(id, cancel, () => loadJob()));

    /* The duration of a running build counts up. */
    (function tick() {
      if (job && job.phase === 'Running') {
        const d = document.getElementById('job-duration');
        if (d) d.textContent = fmtDuration(jobDuration(job));
      }
      c.later(tick, 1000);
    })();

    download.addEventListener('click', async () => {
      download.disabled = true;
      try {
        const res = await fetch(API + '/jobs/' + id + '/log?download=1', { headers: authHeaders(), cache: 'no-store' });
        if (res.status === 401) { showLogin('The admin token was refused: log in again.'); return; }
        if (!res.ok) throw new Error('HTTP ' + res.status);
        const blob = await res.blob();
        const url = URL.createObjectURL(blob);
        const a = h('a', { href: url, download: (job && job.name ? job.name : 'job-' + id) + '.log', class: 'offscreen' });
        document.body.appendChild(a);
        a.click();
        a.remove();
        setTimeout(() => URL.revokeObjectURL(url), 30000);
      } catch (e) {
        toast('Cannot download the log: ' + e.message, 'error');
      } finally {
        download.disabled = false;
      }
    });

    async function loadJob() {
      const j = await api('GET', '/jobs/' + id, undefined, { signal: c.signal });
      if (c.alive) renderJob(j);
      return j;
    }

    /* /events: "log" events carry one line each, "phase" events the job. */
    async function streamEvents() {
      const res = await fetch(API + '/jobs/' + id + '/events?from=' + bytes, {
        headers: authHeaders({ Accept: 'text/event-stream' }), cache: 'no-store', signal: c.signal,
      });
      if (res.status === 401) { showLogin('The admin token was refused: log in again.'); return 'stop'; }
      if (!res.ok || !res.body) return 'unsupported';
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      let ev = { event: 'message', data: [] };
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        for (;;) {
          const m = /\r\n|\r|\n/.exec(buf);
          if (!m) break;
          if (m[0] === '\r' && m.index === buf.length - 1) break; /* maybe \r\n split over reads */
          const line = buf.slice(0, m.index);
          buf = buf.slice(m.index + m[0].length);
          if (line === '') {
            if (ev.data.length || ev.event !== 'message') dispatch(ev);
            ev = { event: 'message', data: [] };
          } else if (line[0] !== ':') {
            const i = line.indexOf(':');
            const field = i < 0 ? line : line.slice(0, i);
            let val = i < 0 ? '' : line.slice(i + 1);
            if (val[0] === ' ') val = val.slice(1);
            if (field === 'event') ev.event = val;
            else if (field === 'data') ev.data.push(val);
            else if (field === 'id') ev.id = val;
          }
        }
      }
      return 'ended';
    }

    function dispatch(ev) {
      const data = ev.data.join('\n');
      if (ev.event === 'log' || ev.event === 'message') {
        addLines([data]);
        bytes += utf8len(data) + 1;
      } else if (ev.event === 'phase') {
        try { renderJob(Object.assign({}, job || {}, JSON.parse(data))); } catch (e) { /* ignore a bad event */ }
      }
      if (ev.id && /^[0-9]+$/.test(ev.id)) bytes = Number(ev.id);
    }

    /* ?follow=1: the plain log streamed; the phase by polling. */
    async function streamFollow() {
      const res = await fetch(API + '/jobs/' + id + '/log?follow=1', { headers: authHeaders(), cache: 'no-store', signal: c.signal });
      if (!res.ok || !res.body) return 'unsupported';
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      const poll = async () => {
        try { await loadJob(); } catch (e) { /* next time */ }
        if (c.alive && job && !FINAL.has(job.phase)) c.later(poll, POLL_MS);
      };
      c.later(poll, POLL_MS);
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        addText(value);
      }
      if (partial) { addLines([partial]); partial = ''; }
      return 'ended';
    }

    async function loadWholeLog() {
      const text = await api('GET', '/jobs/' + id + '/log', undefined, { text: true, signal: c.signal });
      if (!c.alive) return;
      logEl.textContent = '';
      lines = 0;
      partial = '';
      addText(typeof text === 'string' ? text : '');
      if (partial) { addLines([partial]); partial = ''; }
    }

    (async () => {
      try {
        await loadRegistry();
        const j = await loadJob();
        if (FINAL.has(j.phase)) {
          await loadWholeLog();
          return;
        }
        let useEvents = true;
        let tries = 0;
        while (c.alive && tries < 20) {
          const r = useEvents ? await streamEvents() : await streamFollow();
          if (r === 'stop' || !c.alive) return;
          if (r === 'unsupported' && useEvents) { useEvents = false; continue; }
          const now = await loadJob();
          if (FINAL.has(now.phase)) {
            if (!useEvents || r === 'unsupported') await loadWholeLog();
            break;
          }
          tries++;
          await new Promise((res) => c.later(res, 1000));
        }
      } catch (e) {
        if (!c.alive || e.name === 'AbortError' || e.status === 401) return;
        if (!job) {
          setMain(h('h1', { text: 'Job ' + id }), errorPanel(e, () => route()));
        } else {
          logState.textContent = 'The live log stopped: ' + e.message;
        }
      }
    })();
  }

  /* ------------------------------------------------------------------ route */

  function route() {
    if (!token()) {
      showLogin('');
      return;
    }
    document.getElementById('topnav').hidden = false;
    renderBanner();
    const c = newContext();
    const path = (location.hash || '#/specs').replace(/^#/, '').split('?')[0];
    const parts = path.split('/').filter(Boolean).map((p) => {
      try { return decodeURIComponent(p); } catch (e) { return p; }
    });
    if (parts[0] === 'specs' && parts.length === 1) return viewList(c);
    if (parts[0] === 'specs' && parts[1] === 'new' && parts.length === 2) return viewSpec(c, null, 'new');
    if (parts[0] === 'specs' && parts.length === 2) return viewSpec(c, parts[1], 'view');
    if (parts[0] === 'specs' && parts.length === 3 && parts[2] === 'edit') return viewSpec(c, parts[1], 'edit');
    if (parts[0] === 'specs' && parts.length === 3 && parts[2] === 'jobs') return viewSpec(c, parts[1], 'jobs');
    if (parts[0] === 'jobs' && parts.length === 2 && /^[0-9]+$/.test(parts[1])) return viewJob(c, parts[1]);
    if (parts[0] === 'login') { location.hash = '#/specs'; return undefined; }
    document.title = 'Not found · kiln';
    setMain(h('h1', { text: 'Page not found' }), h('p', {}, 'No page at ', h('code', { text: location.hash }), '. ', h('a', { href: '#/specs', text: 'Go to the image specs' })));
    return undefined;
  }

  document.addEventListener('DOMContentLoaded', () => {
    document.getElementById('logout').addEventListener('click', () => {
      sessionStorage.removeItem(TOKEN_KEY);
      registry = null;
      showLogin('Logged out.');
    });
    window.addEventListener('hashchange', route);
    route();
  });
})();
