// The webhooks dashboard: a small single page app over the public API of this server.
// Every piece of text from the API goes into the page through textContent or text nodes, never
// through innerHTML, so nothing a webhook or an event carries can run as markup.
'use strict';

(function () {
  const TOKEN_KEY = 'tidings.token';
  const main = document.getElementById('main');
  const live = document.getElementById('live');
  const banner = document.querySelector('.banner');
  const bannerText = banner.querySelector('.banner-text');
  const signOutButton = document.querySelector('[data-test="sign-out"]');
  const workspaceLabel = document.querySelector('[data-test="workspace-name"]');

  const state = {
    token: null,
    workspace: null,
    eventTypes: null,
    // The secret of a webhook just created, shown once on its page.
    createdSecret: null,
    signInMessage: null,
  };
  // Bumped on every screen change so that late answers for an old screen are dropped.
  let screenSeq = 0;
  let pollTimer = null;

  // ---------- DOM helpers ----------

  const LATE_PROPS = new Set(['value', 'checked', 'indeterminate', 'selected']);

  function h(tag, props, ...children) {
    const el = document.createElement(tag);
    const late = [];
    if (props) {
      for (const [key, value] of Object.entries(props)) {
        if (value === null || value === undefined || value === false) continue;
        if (key === 'class') el.className = value;
        else if (key === 'test') el.setAttribute('data-test', value);
        else if (key === 'text') el.textContent = value;
        else if (key.startsWith('on') && typeof value === 'function') {
          el.addEventListener(key.slice(2), value);
        } else if (LATE_PROPS.has(key)) late.push([key, value]);
        else if (key === 'disabled' || key === 'required' || key === 'hidden' || key === 'multiple') {
          el[key] = Boolean(value);
        } else el.setAttribute(key, value === true ? '' : String(value));
      }
    }
    append(el, children);
    for (const [key, value] of late) el[key] = value;
    return el;
  }

  function append(el, ...children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : String(child));
    }
    return el;
  }

  function clear(el) {
    while (el.firstChild) el.removeChild(el.firstChild);
    return el;
  }

  let idCounter = 0;
  function uid(prefix) {
    idCounter += 1;
    return `${prefix}-${idCounter}`;
  }

  function announce(message) {
    live.textContent = '';
    // A fresh text node makes screen readers read the same message twice in a row.
    window.setTimeout(() => { live.textContent = message; }, 30);
  }

  function showBanner(message, kind) {
    bannerText.textContent = message;
    banner.classList.toggle('banner-ok', kind === 'ok');
    banner.hidden = false;
  }

  // A message for the screen about to be shown (a hash change renders asynchronously).
  function flash(message) {
    state.flash = message;
  }

  function hideBanner() {
    banner.hidden = true;
    bannerText.textContent = '';
  }
  banner.querySelector('.banner-close').addEventListener('click', hideBanner);

  function loading(text) {
    return h('p', { class: 'loading', role: 'status' }, h('span', { class: 'spinner', 'aria-hidden': 'true' }), ' ', text);
  }

  // Runs an action with its button disabled and marked busy until the action ends.
  async function busy(button, action) {
    const buttons = Array.isArray(button) ? button : [button];
    for (const b of buttons) {
      if (!b) continue;
      b.disabled = true;
      b.setAttribute('aria-busy', 'true');
      b.classList.add('is-busy');
    }
    try {
      return await action();
    } finally {
      for (const b of buttons) {
        if (!b) continue;
        b.disabled = false;
        b.removeAttribute('aria-busy');
        b.classList.remove('is-busy');
      }
    }
  }

  // ---------- Time and number formatting ----------

  function localTime(iso) {
    if (!iso) return '—';
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return iso;
    return date.toLocaleString();
  }

  function relativeTime(iso) {
    if (!iso) return '';
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return '';
    const seconds = Math.round((date.getTime() - Date.now()) / 1000);
    const abs = Math.abs(seconds);
    let text;
    if (abs < 45) return seconds > 5 ? 'in a few seconds' : 'just now';
    if (abs < 3600) text = `${Math.round(abs / 60)} min`;
    else if (abs < 86400) text = `${Math.round(abs / 3600)} h`;
    else text = `${Math.round(abs / 86400)} d`;
    return seconds > 0 ? `in ${text}` : `${text} ago`;
  }

  function timeEl(iso, withRelative) {
    if (!iso) return h('span', { class: 'muted' }, '—');
    const rel = relativeTime(iso);
    return h('time', { datetime: iso, title: localTime(iso) },
      localTime(iso),
      withRelative !== false && rel ? h('span', { class: 'muted rel' }, ` (${rel})`) : null);
  }

  function percent(rate) {
    if (rate === null || rate === undefined) return '—';
    const value = rate * 100;
    if (value === 100 || value === 0) return `${value}%`;
    return `${value.toFixed(1)}%`;
  }

  const ERROR_KINDS = {
    http_status: 'The endpoint answered with an error status',
    timeout: 'The endpoint did not answer in time',
    connect: 'Could not connect to the endpoint',
    dns: 'The host name could not be found',
    tls: 'The TLS (HTTPS) connection failed',
    ssrf_blocked: 'The address is not allowed',
    redirect: 'The endpoint answered with a redirect, which is not followed',
    other: 'The request failed',
  };

  function errorText(kind, message) {
    const label = kind ? (ERROR_KINDS[kind] || kind.replace(/_/g, ' ')) : null;
    return [label, message].filter(Boolean).join(': ');
  }

  function ms(value) {
    if (value === null || value === undefined) return '—';
    return `${Math.round(value)} ms`;
  }

  function toLocalInput(date) {
    const pad = (n) => String(n).padStart(2, '0');
    return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
  }

  // ---------- API ----------

  class ApiError extends Error {
    constructor(status, code, message, field) {
      super(message);
      this.status = status;
      this.code = code;
      this.field = field || null;
    }
  }

  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    if (state.token) headers.Authorization = `Bearer ${state.token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: 'same-origin',
        cache: 'no-store',
      });
    } catch (e) {
      throw new ApiError(0, 'network', 'The server could not be reached. Check your connection and try again.');
    }
    if (response.status === 204) return null;
    let payload = null;
    const text = await response.text();
    if (text) {
      try { payload = JSON.parse(text); } catch (e) { payload = null; }
    }
    if (response.status === 401) {
      const fromLink = typeof state.token === 'string' && state.token.startsWith('tdp_');
      signOut(state.workspace
        ? 'Your session has ended. Sign in again, or open a new link.'
        : fromLink
          ? 'This dashboard link has expired or is not valid. Ask for a new link, or sign in with a workspace API key.'
          : 'That key was not accepted. Check it and try again, or open a new link.');
      throw new ApiError(401, 'unauthorized', 'Not signed in.');
    }
    if (!response.ok) {
      const err = payload && payload.error ? payload.error : {};
      throw new ApiError(response.status, err.code || 'error',
        err.message || `The request failed (HTTP ${response.status}).`, err.field);
    }
    return payload;
  }

  function wsPath(rest) {
    return `/v1/workspaces/${encodeURIComponent(state.workspace.id)}${rest}`;
  }

  async function loadEventTypes() {
    if (!state.eventTypes) state.eventTypes = await api('GET', '/v1/event-types');
    return state.eventTypes;
  }

  // Shows an error from the API: next to its field when the form has one, else in the banner.
  function reportError(error, form) {
    if (error && error.status === 401) return;
    const message = error && error.message ? error.message : String(error);
    if (form && error && error.field && setFieldError(form, error.field, message)) {
      announce(message);
      return;
    }
    showBanner(message);
  }

  function setFieldError(form, field, message) {
    // "filters.campaign_ids" first, then its parent ("filters", "signing").
    const candidates = [field];
    if (field.includes('.')) candidates.push(field.split('.')[0]);
    for (const name of candidates) {
      const slot = form.querySelector(`[data-error-for="${CSS.escape(name)}"]`);
      if (slot) {
        slot.textContent = message;
        slot.hidden = false;
        const input = form.querySelector(`[data-field="${CSS.escape(name)}"]`);
        if (input) {
          input.setAttribute('aria-invalid', 'true');
          if (typeof input.focus === 'function') input.focus();
          if (typeof input.scrollIntoView === 'function') input.scrollIntoView({ block: 'center' });
        } else {
          slot.scrollIntoView({ block: 'center' });
        }
        return true;
      }
    }
    return false;
  }

  function clearFieldErrors(form) {
    for (const slot of form.querySelectorAll('[data-error-for]')) {
      slot.textContent = '';
      slot.hidden = true;
    }
    for (const input of form.querySelectorAll('[aria-invalid]')) input.removeAttribute('aria-invalid');
  }

  function errorSlot(field) {
    return h('p', { class: 'field-error', 'data-error-for': field, id: `err-${field.replace(/\W/g, '-')}`, hidden: true });
  }

  // ---------- Sign-in ----------

  function readTokenFromHash() {
    const hash = window.location.hash.replace(/^#/, '');
    if (!/(^|[&?/])token=/.test(hash)) return null;
    const params = new URLSearchParams(hash.replace(/^[^?]*\?/, '').replace(/^\//, ''));
    let token = params.get('token');
    if (!token) {
      const match = hash.match(/token=([^&]+)/);
      token = match ? decodeURIComponent(match[1]) : null;
    }
    return token;
  }

  function signOut(message) {
    state.token = null;
    state.workspace = null;
    state.eventTypes = null;
    state.signInMessage = message || null;
    try { sessionStorage.removeItem(TOKEN_KEY); } catch (e) { /* storage may be blocked */ }
    stopPolling();
    signOutButton.hidden = true;
    workspaceLabel.hidden = true;
    renderSignIn();
  }

  signOutButton.addEventListener('click', () => {
    signOut('You are signed out.');
    history.replaceState(null, '', `${window.location.pathname}${window.location.search}`);
  });

  function renderSignIn() {
    screenSeq += 1;
    hideBanner();
    document.title = 'Sign in · Webhooks';
    const inputId = uid('api-key');
    const message = h('p', { class: 'field-error', id: `${inputId}-err`, role: 'alert', hidden: !state.signInMessage },
      state.signInMessage || '');
    const input = h('input', {
      id: inputId, type: 'password', autocomplete: 'off', spellcheck: 'false', required: true,
      test: 'api-key-input', 'aria-describedby': `${inputId}-hint ${inputId}-err`,
    });
    const button = h('button', { type: 'submit', class: 'btn btn-primary', test: 'sign-in' }, 'Sign in');
    const form = h('form', { class: 'panel signin', test: 'sign-in-form', novalidate: true },
      h('h1', { tabindex: '-1' }, 'Sign in to manage your webhooks'),
      h('p', { class: 'muted' }, 'Open the link you were given, or paste a workspace API key.'),
      h('div', { class: 'field' },
        h('label', { for: inputId }, 'API key'),
        input,
        h('p', { class: 'hint', id: `${inputId}-hint` }, 'The key stays in this browser tab and is forgotten when you close it.'),
        message),
      h('div', { class: 'actions' }, button));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const key = input.value.trim();
      if (!key) {
        message.textContent = 'Paste an API key to sign in.';
        message.hidden = false;
        input.focus();
        return;
      }
      message.hidden = true;
      await busy(button, async () => {
        state.token = key;
        const ok = await startSession();
        if (!ok) {
          // startSession already showed the sign-in form again with its message.
          return;
        }
        try { sessionStorage.setItem(TOKEN_KEY, key); } catch (e) { /* storage may be blocked */ }
        if (!/^#\//.test(window.location.hash)) location.hash = '#/webhooks';
        else route();
      });
    });
    clear(main).append(form);
    input.focus();
  }

  // Finds the workspace for the current token; false when the token is not accepted.
  async function startSession() {
    try {
      const list = await api('GET', '/v1/workspaces?limit=1');
      if (!list || !list.data || list.data.length === 0) {
        signOut('This key does not give access to any workspace.');
        return false;
      }
      state.workspace = list.data[0];
      state.signInMessage = null;
      signOutButton.hidden = false;
      workspaceLabel.textContent = state.workspace.name;
      workspaceLabel.hidden = false;
      return true;
    } catch (error) {
      if (error.status !== 401) {
        signOut(error.message);
      }
      return false;
    }
  }

  // ---------- Routing ----------

  function stopPolling() {
    if (pollTimer) window.clearTimeout(pollTimer);
    pollTimer = null;
  }

  // A portal link opened in a tab already showing the dashboard only changes the hash.
  async function adoptLinkToken() {
    const fromLink = readTokenFromHash();
    if (!fromLink) return false;
    try { sessionStorage.setItem(TOKEN_KEY, fromLink); } catch (e) { /* storage may be blocked */ }
    history.replaceState(null, '', `${window.location.pathname}${window.location.search}#/webhooks`);
    state.token = fromLink;
    state.workspace = null;
    state.eventTypes = null;
    if (await startSession()) route();
    return true;
  }

  function route() {
    if (readTokenFromHash()) {
      adoptLinkToken();
      return;
    }
    if (!state.token || !state.workspace) {
      renderSignIn();
      return;
    }
    stopPolling();
    hideBanner();
    if (state.flash) {
      showBanner(state.flash, 'ok');
      state.flash = null;
    }
    screenSeq += 1;
    const seq = screenSeq;
    const path = window.location.hash.replace(/^#/, '') || '/webhooks';
    const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
    if (parts[0] !== 'webhooks') {
      location.replace('#/webhooks');
      return;
    }
    if (parts.length === 1) renderList(seq);
    else if (parts[1] === 'new') renderForm(seq, null);
    else if (parts.length === 2) renderWebhook(seq, parts[1]);
    else if (parts[2] === 'edit') renderForm(seq, parts[1]);
    else if (parts[2] === 'deliveries' && parts[3]) renderDelivery(seq, parts[1], parts[3]);
    else location.replace('#/webhooks');
  }

  function current(seq) {
    return seq === screenSeq;
  }

  // Replaces the screen. A quiet redraw (fresh data for the same screen) keeps scroll and focus.
  function setScreen(title, ...children) {
    let quiet = false;
    if (children.length && children[0] && !(children[0] instanceof Node) && typeof children[0] === 'object' && !Array.isArray(children[0])) {
      quiet = Boolean(children.shift().quiet);
    }
    document.title = `${title} · Webhooks`;
    const scroll = window.scrollY;
    clear(main);
    append(main, children);
    const heading = main.querySelector('h1');
    if (heading) heading.setAttribute('tabindex', '-1');
    if (quiet) {
      window.scrollTo(0, scroll);
      return;
    }
    if (heading) heading.focus({ preventScroll: true });
    window.scrollTo(0, 0);
  }

  function breadcrumb(items) {
    const list = h('ol', { class: 'crumbs' });
    items.forEach(([label, href], i) => {
      list.append(h('li', null, href && i < items.length - 1 ? h('a', { href }, label) : h('span', { 'aria-current': 'page' }, label)));
    });
    return h('nav', { 'aria-label': 'Breadcrumb' }, list);
  }

  function stateBadge(webhookState) {
    const labels = { active: 'Active', paused: 'Paused', disabled: 'Disabled' };
    return h('span', { class: `badge badge-${webhookState}`, test: 'webhook-state', 'data-state': webhookState },
      labels[webhookState] || webhookState);
  }

  function statusBadge(status) {
    const labels = { delivered: 'Delivered', failed: 'Failed', pending: 'Pending', skipped: 'Skipped' };
    return h('span', { class: `badge badge-${status}` }, labels[status] || status);
  }

  // A button that opens another screen (links are kept for breadcrumbs and rows).
  function navButton(label, href, props) {
    const button = h('button', Object.assign({ type: 'button', class: 'btn' }, props || {}), label);
    button.addEventListener('click', () => { location.hash = href; });
    return button;
  }

  function webhookTitle(webhook) {
    return webhook.name && webhook.name.trim() ? webhook.name : webhook.url;
  }

  // ---------- Screen 1: the webhooks list ----------

  async function renderList(seq) {
    const addButton = navButton('Add webhook', '#/webhooks/new', { class: 'btn btn-primary', test: 'add-webhook' });
    const body = h('div', { class: 'list-body' }, loading('Loading webhooks…'));
    setScreen('Webhooks',
      h('div', { class: 'page-head' },
        h('div', null,
          h('h1', null, 'Webhooks'),
          h('p', { class: 'muted' }, 'Send events to your own systems as they happen.')),
        addButton),
      body);

    let webhooks = [];
    try {
      let cursor = null;
      do {
        const page = await api('GET', wsPath(`/webhooks?limit=500${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`));
        webhooks = webhooks.concat(page.data);
        cursor = page.next_cursor;
      } while (cursor && current(seq));
    } catch (error) {
      if (!current(seq)) return;
      clear(body).append(h('p', { class: 'empty' }, 'The webhooks could not be loaded.'));
      reportError(error);
      return;
    }
    if (!current(seq)) return;

    if (webhooks.length === 0) {
      clear(body).append(h('div', { class: 'panel empty-state', test: 'empty-webhooks' },
        h('h2', null, 'No webhooks yet'),
        h('p', { class: 'muted' }, 'Add a webhook to receive events such as new sales or updated contacts at a URL of your choice.'),
        navButton('Add your first webhook', '#/webhooks/new', { class: 'btn btn-primary', test: 'add-first-webhook' })));
      return;
    }

    const list = h('ul', { class: 'hook-list', test: 'webhook-list' });
    const head = h('div', { class: 'hook-list-head', 'aria-hidden': 'true' },
      h('span', null, 'Webhook'), h('span', null, 'State'), h('span', null, 'Event types'), h('span', null, 'Success (24 h)'));
    for (const webhook of webhooks) {
      const rate = h('span', { class: 'rate muted', test: 'success-rate' }, '…');
      const shown = webhook.event_types.slice(0, 3);
      const more = webhook.event_types.length - shown.length;
      list.append(h('li', null,
        h('a', { class: 'hook-row', href: `#/webhooks/${encodeURIComponent(webhook.id)}`, test: 'webhook-row', 'data-id': webhook.id },
          h('span', { class: 'hook-main' },
            h('span', { class: 'hook-name' }, webhookTitle(webhook)),
            h('span', { class: 'hook-url mono' }, webhook.url)),
          h('span', { class: 'hook-state' }, stateBadge(webhook.state)),
          h('span', { class: 'hook-types' },
            h('span', { class: 'cell-label' }, 'Event types: '),
            h('span', { class: 'count' }, `${webhook.event_types.length} `),
            h('span', { class: 'muted' }, shown.join(', ') + (more > 0 ? ` and ${more} more` : ''))),
          h('span', { class: 'hook-rate' }, h('span', { class: 'cell-label' }, 'Success (24 h): '), rate))));
      api('GET', wsPath(`/webhooks/${encodeURIComponent(webhook.id)}/summary`)).then((summary) => {
        rate.textContent = percent(summary.success_rate);
        rate.classList.toggle('muted', summary.success_rate === null || summary.success_rate === undefined);
        if (summary.success_rate !== null && summary.success_rate !== undefined) {
          rate.classList.add(summary.success_rate >= 0.95 ? 'rate-good' : summary.success_rate >= 0.8 ? 'rate-warn' : 'rate-bad');
        }
      }).catch(() => { rate.textContent = '—'; });
    }
    clear(body).append(h('div', { class: 'panel panel-flush' }, head, list));
  }

  // ---------- Screen 2: create and edit ----------

  function groupTitle(group) {
    if (!group) return 'Other';
    return group.charAt(0).toUpperCase() + group.slice(1).replace(/[_-]/g, ' ');
  }

  function splitIds(text) {
    return text.split(',').map((s) => s.trim()).filter(Boolean);
  }

  async function renderForm(seq, webhookId) {
    const editing = Boolean(webhookId);
    const title = editing ? 'Edit webhook' : 'Add webhook';
    setScreen(title,
      breadcrumb([['Webhooks', '#/webhooks'], [title]]),
      h('h1', null, title),
      loading(editing ? 'Loading webhook…' : 'Loading event types…'));

    let types;
    let webhook = null;
    try {
      [types, webhook] = await Promise.all([
        loadEventTypes(),
        editing ? api('GET', wsPath(`/webhooks/${encodeURIComponent(webhookId)}`)) : Promise.resolve(null),
      ]);
    } catch (error) {
      if (!current(seq)) return;
      main.querySelector('.loading').replaceWith(h('p', { class: 'empty' }, editing ? 'This webhook could not be loaded.' : 'The event types could not be loaded.'));
      reportError(error);
      return;
    }
    if (!current(seq)) return;

    const values = webhook || {
      name: '', description: '', url: '', event_types: [],
      filters: { campaign_ids: [], client_ids: [], agent_ids: [], category_ids: [] },
      headers: {}, signing: { scheme: 'standard' }, payload_format: 'envelope', timeout_ms: 10000, state: 'active',
    };
    const form = h('form', { class: 'form', test: 'webhook-form', novalidate: true });

    function textField(field, label, opts) {
      const id = uid(`f-${field}`);
      const input = h(opts.multiline ? 'textarea' : 'input', {
        id, type: opts.multiline ? null : (opts.type || 'text'), name: field, 'data-field': field,
        test: `field-${opts.testName || field}`, value: opts.value, placeholder: opts.placeholder,
        inputmode: opts.inputmode, min: opts.min, max: opts.max, step: opts.step, rows: opts.multiline ? 2 : null,
        autocomplete: 'off', spellcheck: opts.spellcheck === false ? 'false' : null,
        required: opts.required,
        'aria-describedby': [opts.hint ? `${id}-hint` : null, `err-${field.replace(/\W/g, '-')}`].filter(Boolean).join(' '),
      });
      return {
        input,
        el: h('div', { class: `field ${opts.class || ''}` },
          h('label', { for: id }, label, opts.optional ? h('span', { class: 'optional' }, ' (optional)') : null),
          input,
          opts.hint ? h('p', { class: 'hint', id: `${id}-hint` }, opts.hint) : null,
          errorSlot(field)),
      };
    }

    // Basics
    const name = textField('name', 'Name', { value: values.name, optional: true, placeholder: 'e.g. CRM sync' });
    const url = textField('url', 'Endpoint URL', {
      value: values.url, type: 'url', required: true, placeholder: 'https://example.com/webhooks/tidings',
      spellcheck: false, hint: 'Events are sent here with an HTTP POST.',
    });
    const description = textField('description', 'Description', { value: values.description, optional: true, multiline: true });

    // Event types grouped by group, with a select-all box per group.
    const groups = new Map();
    for (const type of types) {
      const key = type.group || 'other';
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push(type);
    }
    const selected = new Set(values.event_types);
    const typeCount = h('span', { class: 'muted', 'aria-live': 'polite' });
    const typeBoxes = [];
    const groupEls = [];
    function syncGroup(all, boxes) {
      const on = boxes.filter((b) => b.checked).length;
      all.checked = on === boxes.length && on > 0;
      all.indeterminate = on > 0 && on < boxes.length;
    }
    function syncCount() {
      const on = typeBoxes.filter((b) => b.checked).length;
      typeCount.textContent = `${on} selected`;
    }
    for (const [group, list] of groups) {
      const allId = uid(`group-${group}`);
      const all = h('input', { type: 'checkbox', id: allId, test: `group-${group}`, 'data-group': group });
      const boxes = [];
      const items = h('ul', { class: 'type-list' });
      for (const type of list) {
        const id = uid('type');
        const box = h('input', {
          type: 'checkbox', id, name: 'event_types', value: type.name, test: `type-${type.name}`,
          checked: selected.has(type.name), 'aria-describedby': type.description ? `${id}-desc` : null,
        });
        box.addEventListener('change', () => { syncGroup(all, boxes); syncCount(); });
        boxes.push(box);
        typeBoxes.push(box);
        items.append(h('li', { class: 'check' },
          box,
          h('label', { for: id },
            h('span', { class: 'mono type-name' }, type.name),
            type.description ? h('span', { class: 'hint type-desc', id: `${id}-desc`, title: type.description }, type.description) : null)));
      }
      all.addEventListener('change', () => {
        for (const b of boxes) b.checked = all.checked;
        all.indeterminate = false;
        syncCount();
      });
      syncGroup(all, boxes);
      groupEls.push(h('fieldset', { class: 'type-group' },
        h('legend', { class: 'visually-hidden' }, groupTitle(group)),
        h('div', { class: 'check group-head' },
          all,
          h('label', { for: allId }, h('strong', null, groupTitle(group)), h('span', { class: 'muted' }, ` · select all ${list.length}`))),
        items));
    }
    syncCount();
    const typesSection = h('fieldset', { class: 'section', 'data-field': 'event_types', tabindex: '-1' },
      h('legend', null, 'Event types ', typeCount),
      h('p', { class: 'hint' }, 'Choose which events this webhook receives.'),
      errorSlot('event_types'),
      h('div', { class: 'type-groups' }, groupEls));

    // Filters
    const filters = values.filters || {};
    const filterDefs = [
      ['campaign_ids', 'Campaign ids'], ['client_ids', 'Client ids'], ['agent_ids', 'Agent ids'], ['category_ids', 'Category ids'],
    ];
    const filterInputs = {};
    const filterFields = filterDefs.map(([key, label]) => {
      const field = textField(`filters.${key}`, label, {
        value: (filters[key] || []).join(', '), testName: key, placeholder: 'Any', spellcheck: false,
      });
      filterInputs[key] = field.input;
      return field.el;
    });
    const filtersSection = h('fieldset', { class: 'section' },
      h('legend', null, 'Filters'),
      h('p', { class: 'hint' }, 'Only send events for these ids, separated by commas. Leave a box empty to receive events for all of them.'),
      errorSlot('filters'),
      h('div', { class: 'grid-2' }, filterFields));

    // Custom headers
    const headerRows = h('div', { class: 'header-rows', test: 'header-rows' });
    function addHeaderRow(nameValue, valueValue, focus) {
      const nameId = uid('hname');
      const valueId = uid('hvalue');
      const nameInput = h('input', { id: nameId, type: 'text', class: 'header-name', test: 'header-name', value: nameValue || '', placeholder: 'X-Api-Key', autocomplete: 'off', spellcheck: 'false' });
      const valueInput = h('input', { id: valueId, type: 'text', class: 'header-value', test: 'header-value', value: valueValue || '', autocomplete: 'off', spellcheck: 'false' });
      const row = h('div', { class: 'header-row' },
        h('div', { class: 'field' }, h('label', { for: nameId }, 'Header name'), nameInput),
        h('div', { class: 'field' }, h('label', { for: valueId }, 'Value'), valueInput));
      const remove = h('button', { type: 'button', class: 'btn btn-quiet', test: 'remove-header', 'aria-label': 'Remove this header' }, 'Remove');
      remove.addEventListener('click', () => {
        row.remove();
        announce('Header removed.');
        addHeaderButton.focus();
      });
      row.append(remove);
      headerRows.append(row);
      if (focus) nameInput.focus();
    }
    const addHeaderButton = h('button', { type: 'button', class: 'btn', test: 'add-header' }, 'Add header');
    addHeaderButton.addEventListener('click', () => addHeaderRow('', '', true));
    for (const [k, v] of Object.entries(values.headers || {})) addHeaderRow(k, v, false);
    const headersSection = h('fieldset', { class: 'section', 'data-field': 'headers', tabindex: '-1' },
      h('legend', null, 'Custom headers'),
      h('p', { class: 'hint' }, 'Sent with every request, for example to authenticate with your endpoint.'),
      errorSlot('headers'),
      headerRows,
      h('div', null, addHeaderButton));

    // Delivery settings
    const schemeId = uid('scheme');
    const scheme = h('select', { id: schemeId, 'data-field': 'signing.scheme', test: 'field-signing-scheme', value: values.signing.scheme || 'standard' },
      h('option', { value: 'standard' }, 'Standard Webhooks (webhook-signature header)'),
      h('option', { value: 'hmac-sha256' }, 'HMAC-SHA256 in one header'));
    const sigHeader = textField('signing.header', 'Signature header name', {
      value: values.signing.header || '', testName: 'signing-header', placeholder: 'x-tidings-signature', spellcheck: false,
      hint: 'Leave empty for x-tidings-signature.',
    });
    function syncScheme() { sigHeader.el.hidden = scheme.value !== 'hmac-sha256'; }
    scheme.addEventListener('change', syncScheme);
    syncScheme();

    const formatId = uid('format');
    const format = h('select', { id: formatId, 'data-field': 'payload_format', test: 'field-payload_format', value: values.payload_format || 'envelope' },
      h('option', { value: 'envelope' }, 'Envelope (type, timestamp and data)'),
      h('option', { value: 'data' }, 'Data only'));
    const timeout = textField('timeout_ms', 'Timeout (ms)', {
      value: String(values.timeout_ms || 10000), type: 'number', min: 1000, max: 30000, step: 500, inputmode: 'numeric',
      hint: 'How long to wait for your endpoint to answer, 1000 to 30000 ms.',
    });

    let stateControl = null;
    let stateField;
    if (values.state === 'disabled') {
      stateField = h('div', { class: 'field' },
        h('span', { class: 'label' }, 'State'),
        h('p', null, stateBadge('disabled'), ' ', h('span', { class: 'muted' }, 'Enable it from the webhook page.')));
    } else {
      const stateId = uid('state');
      stateControl = h('select', { id: stateId, 'data-field': 'state', test: 'field-state', value: values.state || 'active' },
        h('option', { value: 'active' }, 'Active: send events'),
        h('option', { value: 'paused' }, 'Paused: keep events and send them when resumed'));
      stateField = h('div', { class: 'field' }, h('label', { for: stateId }, 'State'), stateControl, errorSlot('state'));
    }

    const deliverySection = h('fieldset', { class: 'section' },
      h('legend', null, 'Delivery'),
      h('div', { class: 'grid-2' },
        h('div', { class: 'field' }, h('label', { for: schemeId }, 'Signing scheme'), scheme, errorSlot('signing.scheme'), errorSlot('signing')),
        sigHeader.el,
        h('div', { class: 'field' }, h('label', { for: formatId }, 'Payload format'), format, errorSlot('payload_format')),
        timeout.el,
        stateField),
      errorSlot('retry_schedule'),
      errorSlot('rate_limit_per_s'));

    const save = h('button', { type: 'submit', class: 'btn btn-primary', test: 'save-webhook' }, editing ? 'Save changes' : 'Create webhook');
    const cancel = navButton('Cancel', editing ? `#/webhooks/${encodeURIComponent(webhookId)}` : '#/webhooks', { test: 'cancel-edit' });
    const actions = h('div', { class: 'actions sticky-actions' }, save, cancel);
    if (editing) {
      const del = h('button', { type: 'button', class: 'btn btn-danger push-right', test: 'delete-webhook' }, 'Delete webhook');
      del.addEventListener('click', () => confirmDelete(webhook, del));
      actions.append(del);
    }

    append(form,
      h('section', { class: 'panel' },
        h('h2', null, 'Endpoint'),
        url.el, name.el, description.el),
      h('section', { class: 'panel' }, typesSection),
      h('section', { class: 'panel' }, filtersSection),
      h('section', { class: 'panel' }, headersSection),
      h('section', { class: 'panel' }, deliverySection),
      actions);

    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      clearFieldErrors(form);
      hideBanner();
      const headers = {};
      for (const row of headerRows.querySelectorAll('.header-row')) {
        const k = row.querySelector('.header-name').value.trim();
        const v = row.querySelector('.header-value').value;
        if (k) headers[k] = v.trim();
      }
      const signing = { scheme: scheme.value };
      if (scheme.value === 'hmac-sha256' && sigHeader.input.value.trim()) signing.header = sigHeader.input.value.trim();
      const timeoutValue = timeout.input.value.trim();
      const body = {
        name: name.input.value.trim(),
        description: description.input.value.trim(),
        url: url.input.value.trim(),
        event_types: typeBoxes.filter((b) => b.checked).map((b) => b.value),
        filters: {
          campaign_ids: splitIds(filterInputs.campaign_ids.value),
          client_ids: splitIds(filterInputs.client_ids.value),
          agent_ids: splitIds(filterInputs.agent_ids.value),
          category_ids: splitIds(filterInputs.category_ids.value),
        },
        headers,
        signing,
        payload_format: format.value,
      };
      if (timeoutValue) {
        const n = Number(timeoutValue);
        if (!Number.isInteger(n) || n < 0) {
          setFieldError(form, 'timeout_ms', 'Enter the timeout as a whole number of milliseconds.');
          return;
        }
        body.timeout_ms = n;
      }
      if (stateControl) body.state = stateControl.value;
      if (!body.url) {
        setFieldError(form, 'url', 'Enter the URL events are sent to.');
        return;
      }
      await busy(save, async () => {
        try {
          if (editing) {
            await api('PATCH', wsPath(`/webhooks/${encodeURIComponent(webhookId)}`), body);
            announce('Webhook saved.');
            flash('Your changes were saved.');
            location.hash = `#/webhooks/${encodeURIComponent(webhookId)}`;
          } else {
            const created = await api('POST', wsPath('/webhooks'), body);
            state.createdSecret = { id: created.id, secret: created.secret };
            announce('Webhook created.');
            location.hash = `#/webhooks/${encodeURIComponent(created.id)}`;
          }
        } catch (error) {
          reportError(error, form);
        }
      });
    });

    setScreen(title,
      breadcrumb(editing
        ? [['Webhooks', '#/webhooks'], [webhookTitle(webhook), `#/webhooks/${encodeURIComponent(webhookId)}`], ['Edit']]
        : [['Webhooks', '#/webhooks'], ['Add webhook']]),
      h('h1', null, editing ? `Edit ${webhookTitle(webhook)}` : 'Add webhook'),
      form);
  }

  // ---------- Dialogs ----------

  // A modal dialog; resolves with the value of the confirm callback, or null when cancelled.
  function openDialog({ title, body, confirmLabel, confirmClass, confirmTest, cancelTest, onConfirm }) {
    return new Promise((resolve) => {
      const titleId = uid('dlg-title');
      const confirm = h('button', { type: 'submit', class: `btn ${confirmClass || 'btn-primary'}`, test: confirmTest }, confirmLabel);
      const cancel = h('button', { type: 'button', class: 'btn', test: cancelTest || 'cancel-dialog' }, 'Cancel');
      const form = h('form', { method: 'dialog', novalidate: true },
        h('h2', { id: titleId }, title),
        body,
        h('div', { class: 'actions' }, confirm, cancel));
      const dialog = h('dialog', { class: 'dialog', 'aria-labelledby': titleId }, form);
      const previous = document.activeElement;
      let result = null;
      cancel.addEventListener('click', () => dialog.close());
      form.addEventListener('submit', async (event) => {
        event.preventDefault();
        await busy([confirm, cancel], async () => {
          try {
            result = await onConfirm(form);
            if (result !== undefined && result !== false) dialog.close();
          } catch (error) {
            reportError(error, form);
            if (!error.field || !form.querySelector(`[data-error-for="${CSS.escape(error.field)}"]`)) dialog.close();
          }
        });
      });
      dialog.addEventListener('close', () => {
        dialog.remove();
        if (previous && document.contains(previous)) previous.focus();
        resolve(result === false || result === undefined ? null : result);
      });
      document.body.append(dialog);
      dialog.showModal();
      const first = form.querySelector('input, select') || cancel;
      first.focus();
    });
  }

  async function confirmDelete(webhook, button) {
    const done = await openDialog({
      title: 'Delete this webhook?',
      body: h('p', null, 'Nothing more will be sent to ', h('span', { class: 'mono break' }, webhook.url),
        '. Its delivery history is deleted too. This cannot be undone.'),
      confirmLabel: 'Delete webhook',
      confirmClass: 'btn-danger',
      confirmTest: 'confirm-delete',
      cancelTest: 'cancel-delete',
      onConfirm: async () => {
        await api('DELETE', wsPath(`/webhooks/${encodeURIComponent(webhook.id)}`));
        return true;
      },
    });
    if (done) {
      flash(`The webhook ${webhookTitle(webhook)} was deleted.`);
      if (location.hash === '#/webhooks') route();
      else location.hash = '#/webhooks';
      announce('Webhook deleted.');
    } else if (button && document.contains(button)) {
      button.focus();
    }
  }

  // ---------- Clipboard ----------

  async function copyText(text, button) {
    let ok = false;
    try {
      if (navigator.clipboard && window.isSecureContext) {
        await navigator.clipboard.writeText(text);
        ok = true;
      }
    } catch (e) { ok = false; }
    if (!ok) {
      const area = h('textarea', { class: 'visually-hidden', readonly: true, 'aria-hidden': 'true' });
      area.value = text;
      document.body.append(area);
      area.select();
      try { ok = document.execCommand('copy'); } catch (e) { ok = false; }
      area.remove();
      if (button) button.focus();
    }
    if (button) {
      const label = button.textContent;
      button.textContent = ok ? 'Copied' : 'Copy failed';
      window.setTimeout(() => { button.textContent = label; }, 1600);
    }
    announce(ok ? 'Copied to the clipboard.' : 'Could not copy. Select the text and copy it by hand.');
  }

  function secretBox(secret, testName) {
    const copy = h('button', { type: 'button', class: 'btn', test: 'copy-secret' }, 'Copy');
    copy.addEventListener('click', () => copyText(secret, copy));
    return h('div', { class: 'secret-box' },
      h('code', { class: 'mono secret', test: testName || 'secret-value' }, secret),
      copy);
  }

  // ---------- Screen 3: one webhook ----------

  function dl(pairs) {
    const list = h('dl', { class: 'props' });
    for (const [term, value] of pairs) {
      if (value === null || value === undefined) continue;
      list.append(h('div', null, h('dt', null, term), h('dd', null, value)));
    }
    return list;
  }

  async function renderWebhook(seq, webhookId) {
    setScreen('Webhook', breadcrumb([['Webhooks', '#/webhooks'], ['Webhook']]), loading('Loading webhook…'));
    let webhook;
    let types;
    try {
      [webhook, types] = await Promise.all([
        api('GET', wsPath(`/webhooks/${encodeURIComponent(webhookId)}`)),
        loadEventTypes().catch(() => []),
      ]);
    } catch (error) {
      if (!current(seq)) return;
      const loader = main.querySelector('.loading');
      const text = error.status === 404 ? 'This webhook does not exist, or was deleted.' : 'This webhook could not be loaded.';
      if (loader) loader.replaceWith(h('div', { class: 'panel empty-state' }, h('h1', null, 'Webhook not found'), h('p', null, text), h('a', { href: '#/webhooks' }, 'Back to webhooks')));
      if (error.status !== 404) reportError(error);
      return;
    }
    if (!current(seq)) return;
    const hookPath = wsPath(`/webhooks/${encodeURIComponent(webhook.id)}`);
    const typeInfo = new Map(types.map((t) => [t.name, t]));

    // Once-only secret after creating.
    let createdPanel = null;
    if (state.createdSecret && state.createdSecret.id === webhook.id) {
      const secret = state.createdSecret.secret;
      state.createdSecret = null;
      createdPanel = h('section', { class: 'panel panel-success', test: 'created-secret' },
        h('h2', null, 'Webhook created'),
        h('p', null, 'This is the signing secret. Use it to check that requests come from us. Copy it now; you can reveal it again later on this page.'),
        secretBox(secret, 'created-secret-value'));
    }

    // Header and state controls
    const stateActions = h('div', { class: 'actions' });
    const edit = navButton('Edit', `#/webhooks/${encodeURIComponent(webhook.id)}/edit`, { test: 'edit-webhook' });
    if (webhook.state === 'disabled') {
      const enable = h('button', { type: 'button', class: 'btn btn-primary', test: 'enable-webhook' }, 'Enable webhook');
      enable.addEventListener('click', () => busy(enable, async () => {
        try {
          await api('POST', `${hookPath}/enable`);
          announce('Webhook enabled.');
          flash('The webhook is enabled. Deliveries that were waiting are sent now.');
          route();
        } catch (error) { reportError(error); }
      }));
      stateActions.append(enable);
    } else {
      const pausing = webhook.state === 'active';
      const toggle = h('button', { type: 'button', class: 'btn', test: pausing ? 'pause-webhook' : 'resume-webhook' }, pausing ? 'Pause' : 'Resume');
      toggle.addEventListener('click', () => busy(toggle, async () => {
        try {
          await api('PATCH', hookPath, { state: pausing ? 'paused' : 'active' });
          announce(pausing ? 'Webhook paused.' : 'Webhook resumed.');
          route();
        } catch (error) { reportError(error); }
      }));
      stateActions.append(toggle);
    }
    stateActions.append(edit);

    let disabledNote = null;
    if (webhook.state === 'disabled') {
      const reason = webhook.disabled_reason === 'gone'
        ? 'Your endpoint answered 410 Gone (gone).'
        : `${webhook.disabled_reason || 'Deliveries kept failing.'}`;
      disabledNote = h('div', { class: 'callout callout-bad', test: 'disabled-reason' },
        h('strong', null, 'This webhook is disabled. '),
        reason,
        ' New events are recorded as skipped, not sent. After enabling it, send them with “Send deliveries again” for skipped deliveries.');
    } else if (webhook.state === 'paused') {
      disabledNote = h('div', { class: 'callout' }, h('strong', null, 'Paused. '), 'Events are kept and sent when you resume the webhook.');
    }

    const filters = webhook.filters || {};
    const filterText = [['Campaigns', filters.campaign_ids], ['Clients', filters.client_ids], ['Agents', filters.agent_ids], ['Categories', filters.category_ids]]
      .filter(([, ids]) => ids && ids.length)
      .map(([label, ids]) => `${label}: ${ids.join(', ')}`);
    const headerNames = Object.keys(webhook.headers || {});
    const health = webhook.health || {};
    const settings = h('section', { class: 'panel', test: 'webhook-settings' },
      h('h2', null, 'Settings'),
      dl([
        ['URL', h('span', { class: 'mono break' }, webhook.url)],
        webhook.description ? ['Description', webhook.description] : [null, null],
        ['Event types', h('ul', { class: 'tag-list' }, webhook.event_types.map((t) => h('li', { class: 'tag mono' }, t)))],
        ['Filters', filterText.length ? h('ul', { class: 'plain' }, filterText.map((t) => h('li', null, t))) : h('span', { class: 'muted' }, 'All events')],
        ['Custom headers', headerNames.length ? h('span', { class: 'mono' }, headerNames.join(', ')) : h('span', { class: 'muted' }, 'None')],
        ['Signing', webhook.signing.scheme === 'hmac-sha256'
          ? `HMAC-SHA256 in ${webhook.signing.header || 'x-tidings-signature'}` : 'Standard Webhooks'],
        ['Payload', webhook.payload_format === 'data' ? 'Data only' : 'Envelope'],
        ['Timeout', `${webhook.timeout_ms} ms`],
        ['Last success', timeEl(health.last_success_at)],
        health.last_failure_at ? ['Last failure', h('span', null, timeEl(health.last_failure_at), health.last_failure_reason ? h('span', { class: 'block muted' }, health.last_failure_reason) : null)] : [null, null],
        health.failing_since ? ['Failing since', h('span', null, timeEl(health.failing_since), h('span', { class: 'block muted' }, `${health.failures_since_success} failed ${health.failures_since_success === 1 ? 'attempt' : 'attempts'} in a row`))] : [null, null],
        ['Created', timeEl(webhook.created_at)],
      ].filter(([k]) => k)));

    const del = h('button', { type: 'button', class: 'btn btn-danger', test: 'delete-webhook' }, 'Delete webhook');
    del.addEventListener('click', () => confirmDelete(webhook, del));
    const danger = h('section', { class: 'panel panel-danger' },
      h('h2', null, 'Delete'),
      h('p', { class: 'muted' }, 'Stop all deliveries to this URL and delete its history.'),
      del);

    setScreen(webhookTitle(webhook),
      breadcrumb([['Webhooks', '#/webhooks'], [webhookTitle(webhook)]]),
      h('div', { class: 'page-head' },
        h('div', { class: 'min0' },
          h('h1', null, webhookTitle(webhook), ' ', stateBadge(webhook.state)),
          h('p', { class: 'mono muted break' }, webhook.url)),
        stateActions),
      disabledNote,
      createdPanel,
      h('div', { class: 'columns' },
        h('div', { class: 'col' }, settings, summaryPanel(hookPath)),
        h('div', { class: 'col' }, testPanel(hookPath, webhook, typeInfo), secretPanel(hookPath), retriggerPanel(hookPath, seq))),
      deliveriesPanel(seq, webhook),
      danger);
    if (createdPanel) createdPanel.querySelector('[data-test="copy-secret"]').focus();
  }

  function panelHead(title, ...extra) {
    return h('div', { class: 'panel-head' }, h('h2', null, title), extra.length ? h('div', { class: 'panel-tools' }, extra) : null);
  }

  function testPanel(hookPath, webhook, typeInfo) {
    const selectId = uid('test-type');
    const names = webhook.event_types.length ? webhook.event_types : Array.from(typeInfo.keys());
    const select = h('select', { id: selectId, test: 'test-event-type', 'data-field': 'event_type' },
      names.map((n) => h('option', { value: n }, n)));
    const send = h('button', { type: 'submit', class: 'btn btn-primary', test: 'send-test' }, 'Send test');
    const result = h('div', { class: 'result', test: 'test-result', 'aria-live': 'polite', hidden: true });
    const form = h('form', { class: 'panel', test: 'test-panel', novalidate: true },
      panelHead('Send a test'),
      h('p', { class: 'muted' }, 'Sends an example event to your endpoint now. Tests are not counted in the success rate.'),
      h('div', { class: 'inline-form' },
        h('div', { class: 'field grow' }, h('label', { for: selectId }, 'Event type'), select, errorSlot('event_type')),
        send),
      result);
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      clearFieldErrors(form);
      clear(result).append(loading('Sending…'));
      result.hidden = false;
      await busy(send, async () => {
        try {
          const answer = await api('POST', `${hookPath}/test`, { event_type: select.value });
          clear(result);
          result.setAttribute('data-status', answer.status);
          append(result,
            h('div', { class: 'result-line' },
              statusBadge(answer.status),
              h('span', { test: 'test-status-code' }, answer.status_code ? `HTTP ${answer.status_code}` : 'No response'),
              h('span', { class: 'muted', test: 'test-latency' }, `${answer.duration_ms} ms`)),
            answer.error_message || answer.error_kind
              ? h('p', { class: 'error-text' }, errorText(answer.error_kind, answer.error_message)) : null,
            answer.response_excerpt
              ? h('div', null, h('p', { class: 'label' }, 'Response'), h('pre', { class: 'code', test: 'test-response' }, answer.response_excerpt))
              : h('p', { class: 'muted' }, 'The response had no body.'));
          announce(`Test ${answer.status}${answer.status_code ? `, HTTP ${answer.status_code}` : ''}, ${answer.duration_ms} ms.`);
        } catch (error) {
          result.hidden = true;
          clear(result);
          reportError(error, form);
        }
      });
    });
    return form;
  }

  function secretPanel(hookPath) {
    const body = h('div', { class: 'secret-body' });
    const reveal = h('button', { type: 'button', class: 'btn', test: 'reveal-secret', 'aria-expanded': 'false' }, 'Reveal');
    const rotate = h('button', { type: 'button', class: 'btn', test: 'rotate-secret' }, 'Rotate');
    let shown = false;

    function showSecret(view) {
      clear(body);
      append(body,
        secretBox(view.secret, 'secret-value'),
        h('p', { class: 'hint' }, 'Key id ', h('span', { class: 'mono' }, view.key_id)),
        view.previous
          ? h('p', { class: 'hint', test: 'previous-secret' }, 'The previous secret (key id ', h('span', { class: 'mono' }, view.previous.key_id),
            ') keeps signing until ', timeEl(view.previous.expires_at), '.')
          : null);
      shown = true;
      reveal.textContent = 'Hide';
      reveal.setAttribute('aria-expanded', 'true');
    }

    reveal.addEventListener('click', () => {
      if (shown) {
        clear(body);
        shown = false;
        reveal.textContent = 'Reveal';
        reveal.setAttribute('aria-expanded', 'false');
        return;
      }
      busy(reveal, async () => {
        try {
          showSecret(await api('GET', `${hookPath}/secret`));
          announce('Secret shown.');
        } catch (error) { reportError(error); }
      });
    });

    rotate.addEventListener('click', async () => {
      const inputId = uid('grace');
      const view = await openDialog({
        title: 'Rotate the signing secret?',
        body: h('div', null,
          h('p', null, 'A new secret is made now. The old one keeps signing alongside it for the grace period, so you can update your endpoint without losing requests.'),
          h('div', { class: 'field' },
            h('label', { for: inputId }, 'Grace period (hours)'),
            h('input', { id: inputId, type: 'number', min: 0, max: 168, step: 1, value: '24', test: 'rotate-grace', 'data-field': 'grace_period_s', inputmode: 'numeric' }),
            h('p', { class: 'hint' }, '0 to 168 hours (7 days). 0 stops the old secret at once.'),
            errorSlot('grace_period_s'))),
        confirmLabel: 'Rotate secret',
        confirmTest: 'confirm-rotate',
        cancelTest: 'cancel-rotate',
        onConfirm: async (form) => {
          clearFieldErrors(form);
          const hours = Number(form.querySelector('input').value);
          if (!Number.isFinite(hours) || hours < 0 || hours > 168) {
            setFieldError(form, 'grace_period_s', 'Enter a number of hours from 0 to 168.');
            return false;
          }
          return api('POST', `${hookPath}/secret/rotate`, { grace_period_s: Math.round(hours * 3600) });
        },
      });
      if (view) {
        showSecret(view);
        announce('The secret was rotated.');
        showBanner('A new signing secret is in use.', 'ok');
      }
    });

    return h('section', { class: 'panel', test: 'secret-panel' },
      panelHead('Signing secret'),
      h('p', { class: 'muted' }, 'Every request is signed with this secret so your endpoint can check it came from us.'),
      h('div', { class: 'actions' }, reveal, rotate),
      body);
  }

  function summaryPanel(hookPath) {
    const selectId = uid('period');
    const select = h('select', { id: selectId, test: 'summary-period' },
      h('option', { value: '24' }, 'Last 24 hours'),
      h('option', { value: '168' }, 'Last 7 days'),
      h('option', { value: '720' }, 'Last 30 days'));
    const body = h('div', { test: 'summary', 'aria-live': 'polite' });

    async function load() {
      clear(body).append(loading('Loading figures…'));
      const until = new Date();
      const since = new Date(until.getTime() - Number(select.value) * 3600 * 1000);
      try {
        const s = await api('GET', `${hookPath}/summary?since=${encodeURIComponent(since.toISOString())}&until=${encodeURIComponent(until.toISOString())}`);
        const total = s.counts.delivered + s.counts.failed + s.counts.pending + s.counts.skipped;
        clear(body);
        append(body,
          h('div', { class: 'stats' },
            stat('Success rate', percent(s.success_rate), 'summary-success-rate'),
            stat('Deliveries', String(total), 'summary-total'),
            stat('Latency p50', ms(s.latency.p50_ms), 'summary-p50'),
            stat('Latency p95', ms(s.latency.p95_ms), 'summary-p95')),
          h('ul', { class: 'counts' },
            ['delivered', 'failed', 'pending', 'skipped'].map((k) =>
              h('li', { test: `summary-count-${k}` }, statusBadge(k), h('span', { class: 'count' }, String(s.counts[k]))))),
          dl([
            ['Last success', timeEl(s.last_success_at)],
            ['Last failure', s.last_failure
              ? h('span', null, timeEl(s.last_failure.at), s.last_failure.reason ? h('span', { class: 'block muted' }, s.last_failure.reason) : null)
              : h('span', { class: 'muted' }, '—')],
          ]));
      } catch (error) {
        clear(body).append(h('p', { class: 'muted' }, 'The figures could not be loaded.'));
        reportError(error);
      }
    }

    select.addEventListener('change', load);
    load();
    return h('section', { class: 'panel' },
      panelHead('Summary', h('label', { for: selectId, class: 'visually-hidden' }, 'Period'), select),
      body);
  }

  function stat(label, value, test) {
    return h('div', { class: 'stat' }, h('span', { class: 'stat-value', test }, value), h('span', { class: 'stat-label' }, label));
  }

  function retriggerPanel(hookPath) {
    const now = new Date();
    const sinceId = uid('since');
    const untilId = uid('until');
    const statusId = uid('rstatus');
    const since = h('input', { id: sinceId, type: 'datetime-local', test: 'retrigger-since', 'data-field': 'since', value: toLocalInput(new Date(now.getTime() - 24 * 3600 * 1000)) });
    // Left empty, the period runs until the moment of sending.
    const until = h('input', { id: untilId, type: 'datetime-local', test: 'retrigger-until', 'data-field': 'until' });
    const status = h('select', { id: statusId, test: 'retrigger-status', 'data-field': 'status' },
      h('option', { value: 'failed' }, 'Failed'),
      h('option', { value: 'skipped' }, 'Skipped'));
    const button = h('button', { type: 'submit', class: 'btn', test: 'retrigger' }, 'Send again');
    const result = h('p', { class: 'result', test: 'retrigger-result', 'aria-live': 'polite', hidden: true });
    const form = h('form', { class: 'panel', novalidate: true },
      panelHead('Send deliveries again'),
      h('p', { class: 'muted' }, 'Queue failed or skipped deliveries from a period once more, for example after fixing your endpoint.'),
      h('div', { class: 'grid-2' },
        h('div', { class: 'field' }, h('label', { for: sinceId }, 'From'), since, errorSlot('since')),
        h('div', { class: 'field' }, h('label', { for: untilId }, 'To (empty: now)'), until, errorSlot('until')),
        h('div', { class: 'field' }, h('label', { for: statusId }, 'Deliveries that'), status, errorSlot('status'))),
      h('div', { class: 'actions' }, button),
      result);
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      clearFieldErrors(form);
      const sinceDate = new Date(since.value);
      const untilDate = until.value ? new Date(until.value) : null;
      if (!since.value || Number.isNaN(sinceDate.getTime())) {
        setFieldError(form, 'since', 'Choose when the period starts.');
        return;
      }
      const body = { since: sinceDate.toISOString(), status: status.value };
      if (untilDate && !Number.isNaN(untilDate.getTime())) body.until = untilDate.toISOString();
      await busy(button, async () => {
        try {
          const answer = await api('POST', `${hookPath}/retrigger`, body);
          const n = answer.retriggered;
          result.textContent = n === 0
            ? 'No deliveries matched, nothing was queued.'
            : `${n} ${n === 1 ? 'delivery was' : 'deliveries were'} queued again.`;
          result.setAttribute('data-count', String(n));
          result.hidden = false;
        } catch (error) {
          reportError(error, form);
        }
      });
    });
    return form;
  }

  function deliveriesPanel(seq, webhook) {
    const filterId = uid('dstatus');
    const filter = h('select', { id: filterId, test: 'delivery-status-filter' },
      h('option', { value: '' }, 'All statuses'),
      h('option', { value: 'delivered' }, 'Delivered'),
      h('option', { value: 'failed' }, 'Failed'),
      h('option', { value: 'pending' }, 'Pending'),
      h('option', { value: 'skipped' }, 'Skipped'));
    const refresh = h('button', { type: 'button', class: 'btn', test: 'refresh-deliveries' }, 'Refresh');
    const more = h('button', { type: 'button', class: 'btn', test: 'load-more-deliveries', hidden: true }, 'Load more');
    const tbody = h('tbody');
    const table = h('table', { class: 'table', test: 'deliveries' },
      h('caption', { class: 'visually-hidden' }, 'Recent deliveries'),
      h('thead', null, h('tr', null,
        h('th', { scope: 'col' }, 'Event type'),
        h('th', { scope: 'col' }, 'Status'),
        h('th', { scope: 'col' }, 'Status code'),
        h('th', { scope: 'col' }, 'Attempts'),
        h('th', { scope: 'col' }, 'Created'))),
      tbody);
    const status = h('div', { class: 'table-status', role: 'status' });
    let cursor = null;
    let loaded = [];

    function rowFor(d) {
      const href = `#/webhooks/${encodeURIComponent(webhook.id)}/deliveries/${encodeURIComponent(d.id)}`;
      const row = h('tr', { test: 'delivery-row', 'data-status': d.status, 'data-id': d.id, class: 'clickable' },
        h('td', { 'data-label': 'Event type' },
          h('a', { href, class: 'mono' }, d.event_type),
          d.is_test ? h('span', { class: 'tag tag-small' }, 'test') : null),
        h('td', { 'data-label': 'Status' }, statusBadge(d.status),
          d.status === 'pending' && d.next_attempt_at ? h('span', { class: 'block muted small' }, `next ${relativeTime(d.next_attempt_at) || 'now'}`) : null),
        h('td', { 'data-label': 'Status code' }, d.last_status_code ? String(d.last_status_code) : (d.last_error_kind ? h('span', { class: 'muted', title: errorText(d.last_error_kind) }, d.last_error_kind.replace(/_/g, ' ')) : '—')),
        h('td', { 'data-label': 'Attempts' }, String(d.attempt_count)),
        h('td', { 'data-label': 'Created' }, timeEl(d.created_at)));
      row.addEventListener('click', (event) => {
        if (event.target.closest('a')) return;
        location.hash = href;
      });
      return row;
    }

    async function load(reset, button) {
      if (reset) {
        cursor = null;
      }
      const params = new URLSearchParams({ webhook_id: webhook.id, limit: '50' });
      if (filter.value) params.set('status', filter.value);
      if (!reset && cursor) params.set('cursor', cursor);
      if (reset && loaded.length === 0) {
        clear(status).append(loading('Loading deliveries…'));
      }
      return busy(button ? [button, more] : [more], async () => {
        try {
          const page = await api('GET', wsPath(`/deliveries?${params}`));
          if (!current(seq)) return;
          if (reset) {
            loaded = [];
            clear(tbody);
          }
          loaded = loaded.concat(page.data);
          for (const d of page.data) tbody.append(rowFor(d));
          cursor = page.next_cursor || null;
          more.hidden = !cursor;
          clear(status);
          table.hidden = loaded.length === 0;
          if (loaded.length === 0) {
            status.append(h('p', { class: 'empty', test: 'empty-deliveries' },
              filter.value ? `No ${filter.value} deliveries.` : 'No deliveries yet. They appear here once events are sent to this webhook; try Send test.'));
          }
          schedulePoll();
        } catch (error) {
          if (!current(seq)) return;
          clear(status).append(h('p', { class: 'muted' }, 'The deliveries could not be loaded.'));
          reportError(error);
        }
      });
    }

    // Refresh the first page quietly: often while a delivery is still pending (so it turns delivered
    // or failed), less often otherwise (so new deliveries appear).
    function schedulePoll() {
      stopPolling();
      if (!current(seq) || loaded.length > 50) return;
      const delay = loaded.some((d) => d.status === 'pending') ? 3000 : 10000;
      pollTimer = window.setTimeout(() => {
        if (!current(seq)) return;
        if (document.hidden || tbody.contains(document.activeElement)) schedulePoll();
        else load(true);
      }, delay);
    }

    filter.addEventListener('change', () => { loaded = []; load(true); });
    refresh.addEventListener('click', () => load(true, refresh).then(() => announce('Deliveries refreshed.')));
    more.addEventListener('click', () => load(false, more));
    table.hidden = true;
    load(true);

    return h('section', { class: 'panel', test: 'deliveries-panel' },
      panelHead('Recent deliveries', h('label', { for: filterId, class: 'visually-hidden' }, 'Status'), filter, refresh),
      table,
      status,
      h('div', { class: 'actions center' }, more));
  }

  // ---------- Screen 4: one delivery ----------

  function headersTable(headers) {
    const names = Object.keys(headers || {});
    if (!names.length) return h('p', { class: 'muted' }, 'None');
    return h('dl', { class: 'headers mono' }, names.map((n) => h('div', null, h('dt', null, n), h('dd', null, headers[n]))));
  }

  async function renderDelivery(seq, webhookId, deliveryId, quiet) {
    const hookHref = `#/webhooks/${encodeURIComponent(webhookId)}`;
    if (!quiet) setScreen('Delivery', breadcrumb([['Webhooks', '#/webhooks'], ['Webhook', hookHref], ['Delivery']]), loading('Loading delivery…'));
    let d;
    let webhook = null;
    try {
      [d, webhook] = await Promise.all([
        api('GET', wsPath(`/deliveries/${encodeURIComponent(deliveryId)}`)),
        api('GET', wsPath(`/webhooks/${encodeURIComponent(webhookId)}`)).catch(() => null),
      ]);
    } catch (error) {
      if (!current(seq)) return;
      const loader = main.querySelector('.loading');
      if (loader) loader.replaceWith(h('div', { class: 'panel empty-state' }, h('h1', null, 'Delivery not found'),
        h('p', null, error.status === 404 ? 'This delivery does not exist, or was deleted with its webhook.' : 'This delivery could not be loaded.'),
        h('a', { href: hookHref }, 'Back to the webhook')));
      if (error.status !== 404) reportError(error);
      return;
    }
    if (!current(seq)) return;

    const retry = h('button', { type: 'button', class: 'btn btn-primary', test: 'retry-delivery' }, 'Retry now');
    retry.addEventListener('click', () => busy(retry, async () => {
      try {
        await api('POST', wsPath(`/deliveries/${encodeURIComponent(d.id)}/retry`));
        announce('The delivery is queued to be sent again.');
        showBanner('The delivery is queued to be sent again.', 'ok');
        await renderDelivery(seq, webhookId, deliveryId, true);
      } catch (error) { reportError(error); }
    }));

    const attempts = h('ol', { class: 'attempts', test: 'attempts' });
    const ordered = d.attempts.slice().sort((a, b) => b.number - a.number);
    for (const a of ordered) {
      const ok = a.status_code && a.status_code >= 200 && a.status_code < 300;
      attempts.append(h('li', { class: 'panel attempt', test: 'attempt', 'data-number': String(a.number) },
        h('div', { class: 'attempt-head' },
          h('h3', null, `Attempt ${a.number}`),
          h('span', { class: `badge ${ok ? 'badge-delivered' : 'badge-failed'}`, test: 'attempt-status-code' },
            a.status_code ? `HTTP ${a.status_code}` : 'No response'),
          h('span', { class: 'muted' }, `${a.duration_ms} ms`),
          h('span', { class: 'muted push-right' }, timeEl(a.started_at))),
        a.error_kind || a.error_message
          ? h('p', { class: 'error-text', test: 'attempt-error' }, errorText(a.error_kind, a.error_message)) : null,
        h('div', { class: 'grid-2' },
          h('div', null, h('h4', null, 'Request headers'), headersTable(a.request_headers)),
          h('div', null, h('h4', null, 'Response headers'), headersTable(a.response_headers))),
        h('h4', null, 'Response body'),
        a.response_excerpt ? h('pre', { class: 'code', test: 'attempt-response' }, a.response_excerpt) : h('p', { class: 'muted' }, 'Empty')));
    }

    const title = `${d.event_type} delivery`;
    const event = d.event || {};
    const focusedTest = quiet && document.activeElement ? document.activeElement.getAttribute('data-test') : null;
    setScreen(title, { quiet },
      breadcrumb([['Webhooks', '#/webhooks'], [webhook ? webhookTitle(webhook) : 'Webhook', hookHref], ['Delivery']]),
      h('div', { class: 'page-head' },
        h('div', { class: 'min0' },
          h('h1', null, h('span', { class: 'mono' }, d.event_type), ' ', h('span', { test: 'delivery-status', 'data-status': d.status }, statusBadge(d.status))),
          h('p', { class: 'muted mono small break' }, d.id)),
        h('div', { class: 'actions' }, retry, navButton('Back to webhook', hookHref, { test: 'back-to-webhook' }))),
      h('section', { class: 'panel' },
        dl([
          ['Status', statusBadge(d.status)],
          ['Attempts', String(d.attempt_count)],
          ['Last status code', d.last_status_code ? String(d.last_status_code) : '—'],
          ['Next attempt', d.next_attempt_at ? timeEl(d.next_attempt_at) : h('span', { class: 'muted' }, d.status === 'pending' ? 'Soon' : 'None')],
          ['Created', timeEl(d.created_at)],
          ['Event occurred', timeEl(event.occurred_at)],
          ['Event id', h('span', { class: 'mono break' }, event.id || d.event_id)],
          d.is_test ? ['Kind', 'Test send'] : [null, null],
        ].filter(([k]) => k))),
      h('section', { class: 'panel' },
        h('h2', null, 'Event data'),
        h('pre', { class: 'code', test: 'event-data' }, JSON.stringify(event.data, null, 2))),
      h('section', null,
        h('h2', { class: 'section-title' }, `Attempts (${d.attempts.length})`),
        d.attempts.length ? attempts : h('p', { class: 'panel empty' }, 'Not sent yet.')));

    if (quiet) {
      const again = focusedTest ? main.querySelector(`[data-test="${CSS.escape(focusedTest)}"]`) : null;
      if (again) again.focus();
    }
    if (d.status === 'pending') pollDelivery(seq, webhookId, d, 0);
  }

  // While a delivery waits, look again every few seconds and redraw only when something changed.
  function pollDelivery(seq, webhookId, d, round) {
    stopPolling();
    if (round > 100) return;
    pollTimer = window.setTimeout(async () => {
      if (!current(seq)) return;
      if (document.hidden) {
        pollDelivery(seq, webhookId, d, round);
        return;
      }
      try {
        const fresh = await api('GET', wsPath(`/deliveries/${encodeURIComponent(d.id)}`));
        if (!current(seq)) return;
        if (fresh.status !== d.status || fresh.attempt_count !== d.attempt_count || fresh.updated_at !== d.updated_at) {
          renderDelivery(seq, webhookId, d.id, true);
          if (fresh.status !== 'pending') announce(`The delivery is now ${fresh.status}.`);
        } else {
          pollDelivery(seq, webhookId, d, round + 1);
        }
      } catch (error) { /* the next manual refresh shows the problem */ }
    }, 2000);
  }

  // ---------- Start ----------

  async function boot() {
    window.addEventListener('hashchange', route);
    if (await adoptLinkToken()) return;
    let token = null;
    try { token = sessionStorage.getItem(TOKEN_KEY); } catch (e) { token = null; }
    if (!token) {
      renderSignIn();
      return;
    }
    state.token = token;
    if (await startSession()) route();
  }

  boot();
})();
