// Tally dashboard: login, the API client and the views. Every number on
// the page comes from a token-protected endpoint of the collector
// (docs/query-api.md); the token (a read token, or the admin token, which
// alone sees pipeline health) lives in sessionStorage and goes out as
// `Authorization: Bearer` on every call. Each view records the exact API
// request it showed (the "API:" line under it), so what the page shows can
// be checked against the API by hand or by a test.
'use strict';

(() => {
  const TOKEN_KEY = 'tally.adminToken';
  const VIEWS = ['events', 'active', 'funnel', 'retention', 'breakdown', 'quality', 'health'];
  const MIN_STEPS = 2;
  const MAX_STEPS = 10;
  // Deletion requests the health view lists (the API's newest first).
  const DELETIONS_LIMIT = 100;
  const { fmt } = Charts;

  const state = {
    token: null,
    // 'read' or 'admin', as `GET /v1/me` says.
    role: null,
    view: 'events',
    interval: 'day',
    retentionShow: 'percent',
    topEvents: [],
    // Per view: the parameters its content was loaded with; a view whose
    // parameters changed reloads when shown.
    loadedWith: {},
    retention: null,
    // Bumped on logout and on every reload, so late answers of an older
    // request never overwrite newer content.
    generation: 0,
    // Per view: the number of its latest request (see guarded).
    tickets: {},
  };

  const $ = (selector, root = document) => root.querySelector(selector);
  const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

  function el(name, className, text, parent) {
    const node = document.createElement(name);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    if (parent) parent.appendChild(node);
    return node;
  }

  // ---- API client -----------------------------------------------------------

  class ApiError extends Error {
    constructor(path, status, code, message) {
      super(message);
      this.path = path;
      this.status = status;
      this.code = code;
    }

    /** What the page shows: the request, the status, the collector's words. */
    describe() {
      const path = this.path.split('?')[0];
      if (this.status === 0) return `GET ${path}: ${this.message}`;
      return `GET ${path} failed: ${this.status} ${this.code}: ${this.message}`;
    }
  }

  async function api(path, token = state.token) {
    let response;
    try {
      response = await fetch(path, {
        headers: { Authorization: `Bearer ${token}`, Accept: 'application/json' },
        cache: 'no-store',
        credentials: 'omit',
      });
    } catch (e) {
      throw new ApiError(path, 0, 'network', `the collector cannot be reached (${e.message})`);
    }
    const text = await response.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      body = null;
    }
    if (!response.ok) {
      const error = (body && (body.error || body)) || {};
      const message = error.message || text.slice(0, 200) || response.statusText || 'no message';
      throw new ApiError(path, response.status, error.code || 'error', message);
    }
    if (body === null || typeof body !== 'object') {
      throw new ApiError(path, response.status, 'not_json', 'the answer is not a JSON object');
    }
    return body;
  }

  /**
   * Runs `load` for a view; an expired token logs out, other errors show.
   * Only the latest request of a view may write to it: an older answer
   * arriving late (the user changed the event twice) is dropped.
   */
  async function guarded(section, load) {
    const view = section.dataset.view;
    const ticket = (state.tickets[view] || 0) + 1;
    state.tickets[view] = ticket;
    const generation = state.generation;
    const current = () => generation === state.generation && state.tickets[view] === ticket;
    const error = $(':scope > .error', section);
    section.dataset.state = 'loading';
    section.classList.add('loading');
    try {
      await load(current);
      if (!current()) return;
      error.hidden = true;
      section.dataset.state = 'ready';
    } catch (e) {
      if (!current()) return;
      if (e instanceof ApiError && e.status === 401) {
        logout('The collector no longer accepts this token. Sign in again.');
        return;
      }
      // No stale numbers next to the error: what an earlier request showed
      // is cleared (parts fed by another endpoint, marked
      // data-independent, keep their own state).
      for (const node of $$('.chart, table.data, .cards[id]', section)) {
        if (!node.closest('[data-independent]')) node.replaceChildren();
      }
      for (const node of $$('.stat-value', section)) {
        if (!node.closest('[data-independent]')) setNumber(node, null);
      }
      error.textContent = e instanceof ApiError ? e.describe() : `The page failed: ${e.message}`;
      error.hidden = false;
      section.dataset.state = 'error';
      if (!(e instanceof ApiError)) console.error(e);
    } finally {
      if (current()) section.classList.remove('loading');
    }
  }

  function query(path, params) {
    const parts = [];
    for (const [k, v] of Object.entries(params)) {
      if (v === undefined || v === null || v === '') continue;
      parts.push(`${encodeURIComponent(k)}=${k === 'steps' ? v : encodeURIComponent(v)}`);
    }
    return parts.length ? `${path}?${parts.join('&')}` : path;
  }

  function showQuery(section, paths) {
    const code = $('.query code', section);
    code.textContent = paths.join('\n');
    code.dataset.paths = JSON.stringify(paths);
  }

  // ---- global parameters --------------------------------------------------------

  function browserZone() {
    try {
      return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
    } catch {
      return 'UTC';
    }
  }

  function fillZones() {
    const select = $('#tz');
    const here = browserZone();
    let zones = [];
    try {
      zones = Intl.supportedValuesOf('timeZone');
    } catch {
      zones = [];
    }
    for (const zone of new Set([here, 'UTC', ...zones])) {
      const option = el('option', null, zone === here ? `${zone} (this browser)` : zone, select);
      option.value = zone;
    }
    select.value = here;
  }

  /** from/to (the last N days up to the current minute) and the zone. */
  function window_() {
    const days = Number($('#range').value);
    const to = new Date(Math.ceil(Date.now() / 60000) * 60000);
    const from = new Date(to.getTime() - days * 86400000);
    return { from: from.toISOString(), to: to.toISOString(), tz: $('#tz').value };
  }

  // ---- login and session ----------------------------------------------------------

  function showLogin(message) {
    $('#app').hidden = true;
    $('#tabs').hidden = true;
    $('#global-controls').hidden = true;
    $('#login-view').hidden = false;
    const error = $('#login-error');
    error.textContent = message || '';
    error.hidden = !message;
    $('#token').value = '';
    $('#token').focus();
  }

  function showApp() {
    $('#login-view').hidden = true;
    $('#app').hidden = false;
    $('#tabs').hidden = false;
    $('#global-controls').hidden = false;
  }

  function describeLoginFailure(e) {
    if (!(e instanceof ApiError)) return `Sign-in failed: ${e.message}`;
    if (e.status === 401) return `This token was refused (401 ${e.code}: ${e.message}).`;
    if (e.status === 403) return `This token may not read queries (403 ${e.code}: ${e.message}).`;
    return `Sign-in failed: ${e.describe()}`;
  }

  async function login(event) {
    event.preventDefault();
    const token = $('#token').value.trim();
    if (!token) return;
    const button = $('#login-submit');
    button.disabled = true;
    try {
      const stats = await api('/v1/stats', token);
      const me = await api('/v1/me', token);
      sessionStorage.setItem(TOKEN_KEY, token);
      state.token = token;
      state.role = me.role;
      start(stats);
    } catch (e) {
      showLogin(describeLoginFailure(e));
    } finally {
      button.disabled = false;
    }
  }

  function logout(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = null;
    state.role = null;
    state.generation += 1;
    state.loadedWith = {};
    state.topEvents = [];
    state.retention = null;
    Charts.hideTooltip();
    // Nothing read with the token stays on the page.
    for (const section of $$('.view')) {
      delete section.dataset.state;
      for (const node of $$('.chart, table.data, .cards[id]', section)) node.replaceChildren();
      for (const node of $$('.stat-value', section)) node.textContent = '–';
      for (const node of $$('.error', section)) node.hidden = true;
      $('.query code', section).textContent = '';
    }
    for (const node of $$('#totals .stat-value')) node.textContent = '–';
    delete $('#totals').dataset.state;
    for (const id of ['#events-event', '#retention-event', '#breakdown-event']) $(id).replaceChildren();
    $('#funnel-steps').replaceChildren();
    $('#alerts-webhook').textContent = '';
    $('#health-window').textContent = '';
    $('#quality-window').textContent = '';
    $('#deletions-note').hidden = true;
    showLogin(message);
  }

  /** The views this token may see: pipeline health is the admin's. */
  function allowedViews() {
    return VIEWS.filter((view) => view !== 'health' || state.role === 'admin');
  }

  async function start(stats) {
    for (const node of $$('[data-admin]')) node.hidden = state.role !== 'admin';
    showApp();
    state.generation += 1;
    state.loadedWith = {};
    if (stats) showTotals(stats);
    else loadTotals();
    await loadTopEvents();
    route();
  }

  // ---- totals --------------------------------------------------------------------

  function setNumber(node, value, text) {
    node.dataset.value = value === null || value === undefined ? '' : String(value);
    node.textContent = text === undefined ? fmt.int(value) : text;
  }

  function showTotals(stats) {
    setNumber($('#total-events'), stats.events);
    setNumber($('#total-accepted'), stats.accepted);
    setNumber($('#total-duplicate'), stats.duplicate);
    setNumber($('#total-rejected'), stats.rejected);
    $('#totals').dataset.state = 'ready';
  }

  async function loadTotals() {
    const error = $('#totals-error');
    try {
      showTotals(await api('/v1/stats'));
      error.hidden = true;
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) {
        logout('The collector no longer accepts this token. Sign in again.');
        return;
      }
      error.textContent = e instanceof ApiError ? e.describe() : e.message;
      error.hidden = false;
    }
  }

  // ---- event pickers ----------------------------------------------------------------

  async function loadTopEvents() {
    const { from, to } = window_();
    const error = $('#session-error');
    try {
      const answer = await api(query('/v1/query/top-events', { limit: 100, from, to }));
      state.topEvents = (answer.rows || []).map((r) => r.event);
      error.hidden = true;
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) {
        logout('The collector no longer accepts this token. Sign in again.');
        return;
      }
      state.topEvents = [];
      error.textContent = `Event names could not be listed: ${e instanceof ApiError ? e.describe() : e.message}`;
      error.hidden = false;
    }
    fillEventSelect($('#events-event'), 'All events');
    fillEventSelect($('#retention-event'), 'Any event');
    fillEventSelect($('#breakdown-event'), null);
    resetFunnelSteps();
  }

  function fillEventSelect(select, anyLabel) {
    const previous = select.value;
    select.replaceChildren();
    if (anyLabel) el('option', null, anyLabel, select).value = '';
    const names = new Set(state.topEvents);
    if (previous) names.add(previous);
    for (const name of names) el('option', null, name, select).value = name;
    if (previous && names.has(previous)) select.value = previous;
  }

  // ---- events over time --------------------------------------------------------------

  async function loadEvents(section, current) {
    const w = window_();
    const path = query('/v1/query/events', {
      event: $('#events-event').value, interval: state.interval, from: w.from, to: w.to, tz: w.tz,
    });
    // Days only: whether each day is final (offline devices may still
    // bring events of it), shaded on the chart.
    const finalityPath = state.interval === 'day'
      ? query('/v1/query/finality', { from: w.from, to: w.to, tz: w.tz })
      : null;
    showQuery(section, finalityPath ? [path, finalityPath] : [path]);
    const [answer, finality] = await Promise.all([api(path), finalityPath ? api(finalityPath) : null]);
    if (!current()) return;
    const series = answer.series || [];
    const interval = answer.interval || state.interval;
    const days = new Map(((finality && finality.days) || []).map((d) => [d.day, d]));
    const dayOf = (r) => days.get(r.bucket);
    setNumber($('#events-total-count'), answer.total ? answer.total.count : null);
    setNumber($('#events-total-people'), answer.total ? answer.total.people : null);
    Charts.lineChart($('#events-chart'), {
      labels: series.map((r) => r.bucket),
      series: [
        { name: 'Events', cls: 's0', values: series.map((r) => r.count) },
        { name: 'People', cls: 's1', values: series.map((r) => r.people) },
      ],
      xLabel: (b) => fmt.bucket(b, interval),
      title: (b) => fmt.bucket(b, interval),
      value: fmt.int,
      shade: series.map((r) => Boolean(dayOf(r) && dayOf(r).status !== 'final')),
      notes: series.map((r) => notFinal(dayOf(r))),
    });
    const headers = [interval === 'hour' ? 'Hour' : 'Day', 'Events', 'People'];
    if (finality) headers.push('Final');
    table($('#events-table'), headers,
      series.map((r) => {
        const row = [
          { text: fmt.bucket(r.bucket, interval), value: r.bucket },
          { text: fmt.int(r.count), value: r.count, num: true },
          { text: fmt.int(r.people), value: r.people, num: true },
        ];
        if (finality) {
          const d = dayOf(r);
          row.push({ text: d ? (notFinal(d) || `yes, ${d.final_by}`) : '–', value: d ? d.status : '' });
        }
        return row;
      }));
  }

  /** Why a day (of `/v1/query/finality`) is not final yet, or null. */
  function notFinal(d) {
    if (!d || d.status === 'final') return null;
    if (d.status === 'in_progress') return 'day in progress';
    const count = (n, one, many) => `${fmt.int(n)} ${n === 1 ? one : many}`;
    return `${count(d.waiting_installs, 'install', 'installs')} waiting, ${count(d.pending_events, 'event', 'events')} pending`;
  }

  // ---- active people ---------------------------------------------------------------------

  async function loadActive(section, current) {
    const w = window_();
    const paths = ['day', 'week', 'month'].map((window) => query('/v1/query/active', {
      window, from: w.from, to: w.to, tz: w.tz,
    }));
    const sessionsPath = query('/v1/query/sessions', { interval: 'day', from: w.from, to: w.to, tz: w.tz });
    showQuery(section, [...paths, sessionsPath]);
    const settled = await Promise.allSettled([...paths, sessionsPath].map((p) => api(p)));
    if (!current()) return;
    // Sessions come from their own endpoint: their failure is shown apart
    // and does not hide DAU/WAU/MAU, nor the other way round.
    const sessions = settled[3];
    const sessionsError = $('#sessions-error');
    const sessionsByDay = new Map();
    if (sessions.status === 'rejected') {
      const e = sessions.reason;
      if (e instanceof ApiError && e.status === 401) throw e;
      setNumber($('#active-sessions'), null);
      setNumber($('#active-session-median'), null, '–');
      sessionsError.textContent = e instanceof ApiError ? e.describe() : e.message;
      sessionsError.hidden = false;
    } else {
      const answer = sessions.value;
      setNumber($('#active-sessions'), answer.sessions);
      setNumber($('#active-session-median'), answer.median_length_s, fmt.seconds(answer.median_length_s));
      for (const r of answer.series || []) sessionsByDay.set(r.bucket, r.sessions);
      sessionsError.hidden = true;
    }
    const failed = settled.slice(0, 3).find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
    const [day, week, month] = settled.slice(0, 3).map((r) => r.value);
    const days = (day.series || []).map((r) => r.bucket);
    const byBucket = (answer) => new Map((answer.series || []).map((r) => [r.bucket, r.people]));
    const columns = [byBucket(day), byBucket(week), byBucket(month)];
    const last = (answer) => {
      const series = answer.series || [];
      return series.length ? series[series.length - 1].people : null;
    };
    setNumber($('#active-dau'), last(day));
    setNumber($('#active-wau'), last(week));
    setNumber($('#active-mau'), last(month));
    Charts.lineChart($('#active-chart'), {
      labels: days,
      series: [
        { name: 'DAU', cls: 's0', values: days.map((b) => columns[0].get(b) ?? 0) },
        { name: 'WAU', cls: 's1', values: days.map((b) => columns[1].get(b) ?? 0) },
        { name: 'MAU', cls: 's2', values: days.map((b) => columns[2].get(b) ?? 0) },
      ],
      xLabel: (b) => fmt.bucket(b, 'day'),
      title: (b) => fmt.bucket(b, 'day'),
      value: fmt.int,
    });
    table($('#active-table'), ['Day', 'DAU', 'WAU', 'MAU', 'Sessions'], days.map((b) => [
      { text: fmt.bucket(b, 'day'), value: b },
      ...[...columns, sessionsByDay].map((c) => ({ text: fmt.int(c.get(b) ?? null), value: c.get(b) ?? '', num: true })),
    ]));
  }

  // ---- funnel ------------------------------------------------------------------------------

  function resetFunnelSteps() {
    const list = $('#funnel-steps');
    const chosen = $$('select', list).map((s) => s.value).filter(Boolean);
    list.replaceChildren();
    const steps = chosen.length >= MIN_STEPS ? chosen : state.topEvents.slice(0, 3);
    while (steps.length < MIN_STEPS) steps.push('');
    for (const step of steps) addFunnelStep(step);
  }

  function addFunnelStep(value) {
    const list = $('#funnel-steps');
    if (list.children.length >= MAX_STEPS) return;
    const item = el('li', 'funnel-step-row', null, list);
    const select = el('select', 'funnel-step', null, item);
    select.setAttribute('aria-label', 'Step event');
    const names = new Set(state.topEvents);
    if (value) names.add(value);
    for (const name of names) el('option', null, name, select).value = name;
    select.value = value || '';
    const remove = el('button', 'secondary remove-step', 'Remove', item);
    remove.type = 'button';
    remove.addEventListener('click', () => {
      if (list.children.length > MIN_STEPS) item.remove();
      updateFunnelButtons();
    });
    updateFunnelButtons();
  }

  function updateFunnelButtons() {
    const list = $('#funnel-steps');
    const n = list.children.length;
    $('#funnel-add').disabled = n >= MAX_STEPS;
    for (const button of $$('.remove-step', list)) button.disabled = n <= MIN_STEPS;
  }

  async function loadFunnel(section, current) {
    const steps = $$('#funnel-steps select').map((s) => s.value).filter(Boolean);
    if (steps.length < MIN_STEPS) {
      throw new Error(`pick at least ${MIN_STEPS} steps (the collector lists no events yet?)`);
    }
    const w = window_();
    const path = query('/v1/query/funnel', {
      // A comma inside a name is encoded (%2C); the commas between steps are not.
      steps: steps.map(encodeURIComponent).join(','),
      window_s: $('#funnel-window').value,
      from: w.from,
      to: w.to,
    });
    showQuery(section, [path]);
    const answer = await api(path);
    if (!current()) return;
    const rows = answer.steps || [];
    Charts.funnelChart($('#funnel-chart'), { steps: rows });
    table($('#funnel-table'), ['Step', 'Event', 'People', 'Of step 1', 'Of previous step'], rows.map((r, i) => [
      { text: String(i + 1), value: i + 1 },
      { text: r.event, value: r.event },
      { text: fmt.int(r.people), value: r.people, num: true },
      { text: fmt.percent(r.conversion), value: r.conversion, num: true },
      i === 0
        ? { text: '', value: '' }
        : { text: fmt.percent(rows[i - 1].people ? r.people / rows[i - 1].people : 0), value: '', num: true },
    ]));
  }

  // ---- retention ------------------------------------------------------------------------------

  async function loadRetention(section, current) {
    const w = window_();
    const path = query('/v1/query/retention', {
      days: $('#retention-days').value, event: $('#retention-event').value, from: w.from, to: w.to, tz: w.tz,
    });
    showQuery(section, [path]);
    const answer = await api(path);
    if (!current()) return;
    state.retention = answer;
    drawRetention();
  }

  function drawRetention() {
    const answer = state.retention;
    if (!answer) return;
    const days = Number(answer.days ?? $('#retention-days').value);
    const target = $('#retention-table');
    target.replaceChildren();
    const cohorts = answer.cohorts || [];
    if (!cohorts.length) {
      const row = el('tr', null, null, el('tbody', null, null, target));
      el('td', 'empty muted', 'No cohorts in this range.', row);
      return;
    }
    const head = el('tr', null, null, el('thead', null, null, target));
    el('th', null, 'Cohort', head);
    el('th', 'num', 'People', head);
    for (let d = 0; d <= days; d += 1) el('th', 'num', `Day ${d}`, head);
    const body = el('tbody', null, null, target);
    for (const cohort of cohorts) {
      const row = el('tr', null, null, body);
      el('td', null, fmt.bucket(cohort.day, 'day'), row).dataset.value = cohort.day;
      const size = el('td', 'num', fmt.int(cohort.size), row);
      size.dataset.value = cohort.size;
      const returned = cohort.returned || [];
      for (let d = 0; d <= days; d += 1) {
        const n = returned[d];
        const cell = el('td', 'num heat', null, row);
        if (n === null || n === undefined) {
          cell.classList.add('future');
          cell.dataset.value = '';
          continue;
        }
        const share = cohort.size ? n / cohort.size : 0;
        cell.dataset.value = n;
        cell.classList.add(`heat-${Math.min(10, Math.round(share * 10))}`);
        cell.textContent = state.retentionShow === 'percent' ? fmt.percent(share, 0) : fmt.int(n);
        cell.title = `${fmt.int(n)} of ${fmt.int(cohort.size)} people (${fmt.percent(share)})`;
      }
    }
  }

  // ---- breakdown ---------------------------------------------------------------------------------

  async function loadBreakdown(section, current) {
    const event = $('#breakdown-event').value;
    const by = $('#breakdown-by').value.trim();
    if (!event) throw new Error('pick an event to break down');
    if (!by) throw new Error('name a field to break down by, e.g. properties.plan');
    const w = window_();
    const path = query('/v1/query/breakdown', {
      event, by, limit: $('#breakdown-limit').value, from: w.from, to: w.to,
    });
    showQuery(section, [path]);
    const answer = await api(path);
    if (!current()) return;
    const rows = answer.rows || [];
    const total = rows.reduce((sum, r) => sum + r.count, 0);
    const label = (r) => (r.other ? 'Other' : r.value === null ? '(null)' : String(r.value));
    $('#breakdown-title').textContent = `${answer.event || event} by ${answer.by || by}`;
    Charts.barChart($('#breakdown-chart'), {
      rows: rows.map((r) => ({
        label: label(r),
        value: r.count,
        cls: r.other ? 's3' : 's0',
        tip: [
          { label: 'Events', value: fmt.int(r.count) },
          { label: 'People', value: fmt.int(r.people) },
          { label: 'Share', value: fmt.percent(total ? r.count / total : 0) },
        ],
      })),
      value: fmt.int,
    });
    table($('#breakdown-table'), ['Value', 'Events', 'People', 'Share'], rows.map((r) => [
      { text: label(r), value: r.other ? '' : r.value },
      { text: fmt.int(r.count), value: r.count, num: true },
      { text: fmt.int(r.people), value: r.people, num: true },
      { text: fmt.percent(total ? r.count / total : 0), value: '', num: true },
    ]));
  }

  // ---- data quality ---------------------------------------------------------------------------------

  /** What the tracking plan found in the range (drawn by quality.js). */
  async function loadQuality(section, current) {
    const w = window_();
    const path = query('/v1/quality', { from: w.from, to: w.to });
    showQuery(section, [path]);
    const answer = await api(path);
    if (!current()) return;
    // Counts are kept by the hour of receipt: the API rounds the range out.
    const hour = 3600000;
    const from = Math.floor(Date.parse(w.from) / hour) * hour;
    const to = Math.ceil(Date.parse(w.to) / hour) * hour;
    $('#quality-window').textContent = `Counts cover what arrived from ${new Date(from).toLocaleString()} to ${new Date(to).toLocaleString()} (whole hours of receipt); examples, the range itself.`;
    Quality.draw(answer, { table, card });
  }

  // ---- pipeline health -----------------------------------------------------------------------------

  /** A card whose value is `value` shown as `text`; `level` ok|warn|bad. */
  function card(parent, id, label, value, text, sub, level) {
    const box = el('div', `card stat${level ? ` ${level}` : ''}`, null, parent);
    el('span', 'stat-label', label, box);
    const number = el('span', 'stat-value', null, box);
    number.id = id;
    setNumber(number, value, text);
    if (sub) el('span', 'stat-sub muted', sub, box);
    return box;
  }

  const get = (object, path) => path.split('.').reduce((o, k) => (o == null ? undefined : o[k]), object);

  async function loadHealth(section, current) {
    const w = window_();
    const path = query('/v1/health/pipeline', { from: w.from, to: w.to });
    const deletionsPath = query('/v1/deletions', { limit: DELETIONS_LIMIT });
    showQuery(section, [path, '/v1/alerts', deletionsPath]);
    const [health, alerts, deletions] = await Promise.allSettled(
      [api(path), api('/v1/alerts'), api(deletionsPath)]);
    if (!current()) return;
    if (alerts.status === 'fulfilled') {
      drawAlerts(alerts.value);
      $('#alerts-error').hidden = true;
    } else {
      $('#alerts-table').replaceChildren();
      $('#alerts-webhook').textContent = '';
      const e = alerts.reason;
      if (e instanceof ApiError && e.status === 401) throw e;
      $('#alerts-error').textContent = e instanceof ApiError ? e.describe() : e.message;
      $('#alerts-error').hidden = false;
    }
    // Deletions come from their own endpoint: shown, or their error, apart.
    if (deletions.status === 'fulfilled') {
      drawDeletions(deletions.value);
      $('#deletions-error').hidden = true;
    } else {
      $('#deletions-table').replaceChildren();
      $('#deletions-note').hidden = true;
      const e = deletions.reason;
      if (e instanceof ApiError && e.status === 401) throw e;
      $('#deletions-error').textContent = e instanceof ApiError ? e.describe() : e.message;
      $('#deletions-error').hidden = false;
    }
    if (health.status === 'rejected') {
      $('#health-window').textContent = '';
      throw health.reason;
    }
    drawHealth(health.value);
  }

  function drawHealth(h) {
    const n = (p) => get(h, p);
    const covered = $('#health-window');
    covered.textContent = h.window && h.window.from && h.window.to
      ? `Ingest figures cover what arrived from ${new Date(h.window.from).toLocaleString()} to ${new Date(h.window.to).toLocaleString()} (whole hours of receipt); completeness and fleet queues are as of now.`
      : '';
    const ingest = $('#health-ingest');
    ingest.replaceChildren();
    const lagLevel = (ms) => (ms > 3600000 ? 'warn' : null);
    card(ingest, 'health-ingest-lag-p50', 'Ingest lag p50', n('ingest_lag_ms.p50'), fmt.ms(n('ingest_lag_ms.p50')), 'received − capture time');
    card(ingest, 'health-ingest-lag-p90', 'Ingest lag p90', n('ingest_lag_ms.p90'), fmt.ms(n('ingest_lag_ms.p90')));
    card(ingest, 'health-ingest-lag-p99', 'Ingest lag p99', n('ingest_lag_ms.p99'), fmt.ms(n('ingest_lag_ms.p99')), null, lagLevel(n('ingest_lag_ms.p99')));
    card(ingest, 'health-sync-latency-p50', 'Sync latency p50', n('sync_latency_ms.p50'), fmt.ms(n('sync_latency_ms.p50')), 'from SDK health beacons');
    card(ingest, 'health-sync-latency-p99', 'Sync latency p99', n('sync_latency_ms.p99'), fmt.ms(n('sync_latency_ms.p99')));
    const success = n('batches.success_rate');
    card(ingest, 'health-batch-success-rate', 'Batch success', success, fmt.percent(success),
      `${fmt.int(n('batches.succeeded'))} of ${fmt.int(n('batches.total'))} requests`, success === null || success === undefined ? null : success < 0.99 ? 'warn' : 'ok');

    const quality = $('#health-quality');
    quality.replaceChildren();
    card(quality, 'health-dedup-accepted', 'Accepted', n('dedup.accepted'));
    card(quality, 'health-dedup-duplicates', 'Duplicates', n('dedup.duplicates'));
    const dedup = n('dedup.rate');
    card(quality, 'health-dedup-rate', 'Dedup rate', dedup, fmt.percent(dedup, 2), 'duplicates ÷ (accepted + duplicates)', dedup > 0.1 ? 'warn' : null);
    card(quality, 'health-rejections-total', 'Rejected', n('rejections.total'));
    const rejected = n('rejections.rate');
    card(quality, 'health-rejections-rate', 'Rejection rate', rejected, fmt.percent(rejected, 2), null, rejected > 0.01 ? 'bad' : null);

    const reasons = Object.entries(n('rejections.by_reason') || {}).sort((a, b) => b[1] - a[1]);
    Charts.barChart($('#health-rejections'), {
      rows: reasons.map(([reason, count]) => ({ label: reason, value: count, cls: 's3' })),
      value: fmt.int,
    });
    $$('#health-rejections .bar-row').forEach((row, i) => { row.dataset.reason = reasons[i][0]; });

    const completeness = $('#health-completeness');
    completeness.replaceChildren();
    card(completeness, 'health-completeness-installs', 'Installs', n('completeness.installs'));
    card(completeness, 'health-completeness-gaps', 'Installs with gaps', n('completeness.installs_with_gaps'), undefined, 'missing seq ranges', n('completeness.installs_with_gaps') > 0 ? 'warn' : 'ok');
    card(completeness, 'health-completeness-missing', 'Missing events', n('completeness.missing'), undefined, 'lost in transit, not dropped by policy', n('completeness.missing') > 0 ? 'warn' : 'ok');

    const fleet = $('#health-fleet');
    fleet.replaceChildren();
    card(fleet, 'health-fleet-installs', 'Installs reporting', n('fleet.installs_reporting'));
    card(fleet, 'health-fleet-pending', 'Pending events', n('fleet.pending_events'), undefined, 'not yet sent, across the fleet');
    const age = n('fleet.oldest_pending_age_s');
    card(fleet, 'health-fleet-oldest', 'Oldest pending', age, fmt.seconds(age), null, age > 86400 ? 'warn' : null);
    card(fleet, 'health-fleet-over-24h', 'Oldest pending > 24 h', n('fleet.installs_oldest_pending_over_24h'), undefined, 'installs', n('fleet.installs_oldest_pending_over_24h') > 0 ? 'warn' : null);
    card(fleet, 'health-fleet-persistence', 'Persistence errors', n('fleet.installs_with_persistence_errors'), undefined, 'installs', n('fleet.installs_with_persistence_errors') > 0 ? 'bad' : 'ok');
    card(fleet, 'health-fleet-backoff', 'In backoff', n('fleet.installs_in_backoff'), undefined, 'installs');
  }

  function drawAlerts(answer) {
    const rules = answer.rules || [];
    table($('#alerts-table'), ['Rule', 'State', 'Value', 'Threshold', 'For', 'Since'], rules.map((r) => [
      { text: r.name, value: r.name, sub: r.expr },
      { text: r.state, value: r.state, badge: r.state },
      {
        text: formatRuleValue(r, r.value),
        value: r.value,
        num: true,
        title: r.value === null || r.value === undefined ? 'not evaluated yet, or nothing to measure' : undefined,
      },
      { text: formatRuleValue(r, r.threshold), value: r.threshold, num: true },
      { text: r.for_s ? fmt.seconds(r.for_s) : 'at once', value: r.for_s, num: true },
      { text: r.since ? new Date(r.since).toLocaleString() : '–', value: r.since || '' },
    ]), (tr, i) => { tr.dataset.rule = rules[i].name; tr.dataset.state = rules[i].state; });
    const webhook = answer.webhook || {};
    const parts = [webhook.configured ? 'Webhook configured' : 'No webhook configured (--alert-webhook)'];
    if (webhook.configured) {
      parts.push(webhook.last_delivery ? `last delivery ${new Date(webhook.last_delivery).toLocaleString()}` : 'nothing delivered yet');
      if (webhook.deliveries !== undefined) parts.push(`${fmt.int(webhook.deliveries)} delivered`);
      parts.push(`${fmt.int(webhook.failures || 0)} failed attempts`);
      if (webhook.dropped) parts.push(`${fmt.int(webhook.dropped)} given up`);
    }
    $('#alerts-webhook').textContent = parts.join(' · ');
  }

  /** Deletion requests as `/v1/deletions` lists them, newest first. */
  function drawDeletions(answer) {
    const rows = answer.deletions || [];
    table($('#deletions-table'), ['User', 'Requested', 'Status', 'Events deleted'], rows.map((d) => [
      { text: d.userId, value: d.userId },
      { text: new Date(d.requested_at).toLocaleString(), value: d.requested_at, title: d.requested_at },
      { text: d.status, value: d.status, badge: d.status },
      { text: fmt.int(d.deleted_events), value: d.deleted_events, num: true },
    ]), (tr, i) => { tr.dataset.user = rows[i].userId; }, 'No deletion requests yet.');
    const note = $('#deletions-note');
    note.textContent = `The latest ${fmt.int(DELETIONS_LIMIT)} requests are shown; GET /v1/deletions?limit=N lists more.`;
    note.hidden = rows.length < DELETIONS_LIMIT;
  }

  /** Rules whose value is a count (missing seqs grown), not a share. */
  const COUNT_RULES = new Set(['completeness_gaps_growing']);

  /** A rule's value or threshold: a share as a percentage, a count as a number. */
  function formatRuleValue(rule, value) {
    if (value === null || value === undefined) return '–';
    const share = !COUNT_RULES.has(rule.name) && rule.threshold !== undefined && rule.threshold < 1;
    return share ? fmt.percent(value, 2) : fmt.int(value);
  }

  // ---- tables ------------------------------------------------------------------------------------------

  /**
   * Fills `target` with a header and rows of cells {text, value, num, badge,
   * sub, title}; without rows, one row saying `empty`.
   */
  function table(target, headers, rows, decorate, empty = 'No rows in this range.') {
    target.replaceChildren();
    const head = el('tr', null, null, el('thead', null, null, target));
    headers.forEach((h, i) => el('th', rows[0] && rows[0][i] && rows[0][i].num ? 'num' : null, h, head));
    const body = el('tbody', null, null, target);
    if (!rows.length) {
      const cell = el('td', 'empty muted', empty, el('tr', null, null, body));
      cell.colSpan = headers.length;
      return;
    }
    rows.forEach((cells, i) => {
      const tr = el('tr', null, null, body);
      for (const c of cells) {
        const td = el('td', c.num ? 'num' : null, null, tr);
        if (c.badge) el('span', `badge ${c.badge}`, c.text, td);
        else td.textContent = c.text;
        if (c.sub) el('div', 'cell-sub muted', c.sub, td);
        td.dataset.value = c.value === null || c.value === undefined ? '' : String(c.value);
        if (c.title) td.title = c.title;
      }
      if (decorate) decorate(tr, i);
    });
  }

  // ---- navigation -----------------------------------------------------------------------------------------

  const LOADERS = {
    events: loadEvents,
    active: loadActive,
    funnel: loadFunnel,
    retention: loadRetention,
    breakdown: loadBreakdown,
    quality: loadQuality,
    health: loadHealth,
  };

  /** What a view's content depends on; a change reloads it when shown. */
  function paramsOf(view) {
    const common = [$('#range').value, $('#tz').value];
    switch (view) {
      case 'events': return [...common, $('#events-event').value, state.interval].join('|');
      case 'retention': return [...common, $('#retention-event').value, $('#retention-days').value].join('|');
      default: return common.join('|');
    }
  }

  function load(view, force) {
    const params = paramsOf(view);
    if (!force && state.loadedWith[view] === params) return;
    state.loadedWith[view] = params;
    const section = $(`#view-${view}`);
    guarded(section, (current) => LOADERS[view](section, current));
  }

  function route() {
    const asked = (location.hash || '').replace(/^#\/?/, '');
    state.view = allowedViews().includes(asked) ? asked : 'events';
    for (const section of $$('.view')) section.hidden = section.dataset.view !== state.view;
    for (const tab of $$('#tabs .tab')) {
      const on = tab.dataset.view === state.view;
      tab.classList.toggle('on', on);
      tab.setAttribute('aria-current', on ? 'page' : 'false');
    }
    Charts.hideTooltip();
    if (state.token) load(state.view, false);
  }

  function refreshAll() {
    state.generation += 1;
    state.loadedWith = {};
    loadTotals();
    loadTopEvents().then(route);
  }

  function wire() {
    $('#login-form').addEventListener('submit', login);
    $('#logout').addEventListener('click', () => logout('Signed out.'));
    $('#refresh').addEventListener('click', refreshAll);
    $('#range').addEventListener('change', refreshAll);
    $('#tz').addEventListener('change', () => route());
    for (const tab of $$('#tabs .tab')) {
      tab.addEventListener('click', () => { location.hash = `#/${tab.dataset.view}`; });
    }
    window.addEventListener('hashchange', route);
    $('#events-event').addEventListener('change', () => load('events', false));
    for (const button of $$('#view-events [data-interval]')) {
      button.addEventListener('click', () => {
        state.interval = button.dataset.interval;
        for (const b of $$('#view-events [data-interval]')) b.classList.toggle('on', b === button);
        load('events', false);
      });
    }
    $('#funnel-add').addEventListener('click', () => addFunnelStep(state.topEvents[0] || ''));
    $('#funnel-form').addEventListener('submit', (event) => {
      event.preventDefault();
      load('funnel', true);
    });
    $('#retention-event').addEventListener('change', () => load('retention', false));
    $('#retention-days').addEventListener('change', () => load('retention', false));
    for (const button of $$('#view-retention [data-show]')) {
      button.addEventListener('click', () => {
        state.retentionShow = button.dataset.show;
        for (const b of $$('#view-retention [data-show]')) b.classList.toggle('on', b === button);
        drawRetention();
      });
    }
    $('#breakdown-form').addEventListener('submit', (event) => {
      event.preventDefault();
      load('breakdown', true);
    });
    $('#breakdown-event').addEventListener('change', () => load('breakdown', true));
  }

  function boot() {
    fillZones();
    wire();
    const saved = sessionStorage.getItem(TOKEN_KEY);
    if (!saved) {
      showLogin();
      return;
    }
    state.token = saved;
    Promise.all([api('/v1/stats'), api('/v1/me')])
      .then(([stats, me]) => {
        state.role = me.role;
        start(stats);
      })
      .catch((e) => {
        if (e instanceof ApiError && (e.status === 401 || e.status === 403)) {
          logout('The saved token is no longer accepted. Sign in again.');
        } else {
          // The collector is down or failing: keep the session, show why.
          start(null);
        }
      });
  }

  boot();
})();
