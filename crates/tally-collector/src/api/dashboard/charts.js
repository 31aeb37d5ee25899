// Tally dashboard charts: SVG line, bar and funnel charts drawn from data,
// with axes, a shared tooltip and number formats. No dependencies; the DOM
// is built with createElementNS and textContent only (the page's CSP
// forbids inline script and style attributes).
'use strict';

const Charts = (() => {
  const SVG = 'http://www.w3.org/2000/svg';
  const HEIGHT = 280;
  const MARGIN = { top: 16, right: 20, bottom: 44, left: 60 };
  const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  const WEEKDAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];

  // ---- number and date formats -------------------------------------------

  const intFormat = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
  const compactFormat = new Intl.NumberFormat('en-US', { notation: 'compact', maximumFractionDigits: 1 });

  const fmt = {
    /** 12,345 */
    int(n) {
      return n === null || n === undefined || Number.isNaN(n) ? '–' : intFormat.format(n);
    },
    /** 12.3k (axes) */
    compact(n) {
      return Math.abs(n) < 1000 ? intFormat.format(n) : compactFormat.format(n);
    },
    /** 0.1234 → 12.3% */
    percent(ratio, digits = 1) {
      if (ratio === null || ratio === undefined || Number.isNaN(ratio)) return '–';
      return `${(ratio * 100).toFixed(digits)}%`;
    },
    /** milliseconds → 120 ms, 1.5 s, 12 min, 3.2 h, 1.5 d */
    ms(ms) {
      if (ms === null || ms === undefined || Number.isNaN(ms)) return '–';
      if (ms < 1000) return `${Math.round(ms)} ms`;
      return fmt.seconds(ms / 1000);
    },
    /** seconds → 45 s, 12 min, 3.2 h, 1.5 d */
    seconds(s) {
      if (s === null || s === undefined || Number.isNaN(s)) return '–';
      if (s < 60) return `${s < 10 ? s.toFixed(1) : Math.round(s)} s`;
      if (s < 3600) return `${Math.round(s / 60)} min`;
      if (s < 86400) return `${(s / 3600).toFixed(1)} h`;
      return `${(s / 86400).toFixed(1)} d`;
    },
    /**
     * A bucket label of the API (`2026-11-01T14:00:00+01:00`), read as the
     * wall time of the query's zone (not the browser's): `Sun 1 Nov` for a
     * day, `1 Nov 14:00` for an hour.
     */
    bucket(label, interval) {
      const m = /^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2}))?/.exec(label || '');
      if (!m) return String(label);
      const [, y, mo, d, hh, mm] = m;
      const month = MONTHS[Number(mo) - 1];
      if (interval === 'hour' && hh !== undefined) return `${Number(d)} ${month} ${hh}:${mm}`;
      const weekday = WEEKDAYS[new Date(Date.UTC(Number(y), Number(mo) - 1, Number(d))).getUTCDay()];
      return `${weekday} ${Number(d)} ${month}`;
    },
  };

  // ---- DOM helpers ----------------------------------------------------------

  function svgEl(name, attrs, parent) {
    const node = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (parent) parent.appendChild(node);
    return node;
  }

  function htmlEl(name, className, text, parent) {
    const node = document.createElement(name);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    if (parent) parent.appendChild(node);
    return node;
  }

  /** A step of 1, 2 or 5 × 10^k giving about `count` ticks up to `max`. */
  function niceStep(max, count) {
    const raw = Math.max(max, 1) / count;
    const magnitude = 10 ** Math.floor(Math.log10(raw));
    const step = [1, 2, 5, 10].map((f) => f * magnitude).find((s) => s >= raw);
    return Math.max(1, step);
  }

  // ---- tooltip ---------------------------------------------------------------

  function tooltip() {
    return document.getElementById('tooltip');
  }

  /** Shows `title` and `rows` ([{label, value, cls}]) near the pointer. */
  function showTooltip(event, title, rows) {
    const tip = tooltip();
    tip.replaceChildren();
    htmlEl('div', 'tip-title', title, tip);
    for (const row of rows) {
      const line = htmlEl('div', 'tip-row', null, tip);
      htmlEl('span', `swatch ${row.cls || ''}`, null, line);
      htmlEl('span', 'tip-label', row.label, line);
      htmlEl('span', 'tip-value', row.value, line);
    }
    tip.hidden = false;
    const pad = 14;
    const { innerWidth, innerHeight } = window;
    const rect = tip.getBoundingClientRect();
    let x = event.clientX + pad;
    let y = event.clientY + pad;
    if (x + rect.width > innerWidth - 4) x = event.clientX - rect.width - pad;
    if (y + rect.height > innerHeight - 4) y = event.clientY - rect.height - pad;
    tip.style.left = `${Math.max(4, x)}px`;
    tip.style.top = `${Math.max(4, y)}px`;
  }

  function hideTooltip() {
    tooltip().hidden = true;
  }

  // ---- responsive redraw ---------------------------------------------------

  const drawers = new WeakMap();
  const resizeObserver = new ResizeObserver((entries) => {
    for (const entry of entries) {
      const draw = drawers.get(entry.target);
      const width = Math.round(entry.contentRect.width);
      if (draw && width > 0 && width !== draw.width) {
        draw.width = width;
        draw.fn();
      }
    }
  });

  /** Draws with `fn` now and again whenever `container` changes width. */
  function responsive(container, fn) {
    const draw = { fn, width: Math.round(container.clientWidth) };
    drawers.set(container, draw);
    resizeObserver.observe(container);
    fn();
  }

  function widthOf(container) {
    return Math.max(280, Math.round(container.clientWidth) || 640);
  }

  function empty(container, message) {
    container.replaceChildren();
    htmlEl('p', 'empty muted', message, container);
  }

  function legend(container, series) {
    const box = htmlEl('div', 'legend', null, container);
    for (const s of series) {
      const item = htmlEl('span', 'legend-item', null, box);
      htmlEl('span', `swatch ${s.cls}`, null, item);
      htmlEl('span', null, s.name, item);
    }
  }

  // ---- line chart ------------------------------------------------------------

  /**
   * Lines over shared x labels.
   * opts: {labels: [string], series: [{name, values: [number], cls}],
   *        xLabel(label) → string, value(n) → string, title(label) → string,
   *        shade: [boolean] (buckets drawn on a band: days not final yet),
   *        notes: [string | null] (a last tooltip row per bucket)}
   */
  function lineChart(container, opts) {
    responsive(container, () => drawLine(container, opts));
  }

  function drawLine(container, { labels, series, xLabel, value, title, shade, notes }) {
    container.replaceChildren();
    if (!labels.length) {
      empty(container, 'No buckets in this range.');
      return;
    }
    const shaded = (shade || []).some(Boolean);
    legend(container, shaded ? [...series, { name: 'Not final yet', cls: 'not-final' }] : series);
    const width = widthOf(container);
    const plotW = width - MARGIN.left - MARGIN.right;
    const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
    const max = Math.max(0, ...series.flatMap((s) => s.values.map((v) => v || 0)));
    const step = niceStep(max, 4);
    const top = Math.max(step, Math.ceil(max / step) * step);
    const n = labels.length;
    const x = (i) => MARGIN.left + (n === 1 ? plotW / 2 : (i * plotW) / (n - 1));
    const y = (v) => MARGIN.top + plotH - ((v || 0) / top) * plotH;

    const svg = svgEl('svg', {
      width,
      height: HEIGHT,
      viewBox: `0 0 ${width} ${HEIGHT}`,
      class: 'chart-svg',
      role: 'img',
      'aria-label': series.map((s) => `${s.name}: ${s.values.map((v) => value(v)).join(', ')}`).join('; '),
    }, container);

    if (shaded) {
      // A band per bucket that may still grow, behind everything else.
      const half = n === 1 ? plotW / 2 : plotW / (n - 1) / 2;
      const bands = svgEl('g', { class: 'bands not-final' }, svg);
      shade.forEach((on, i) => {
        if (!on) return;
        const left = Math.max(MARGIN.left, x(i) - half);
        const right = Math.min(width - MARGIN.right, x(i) + half);
        svgEl('rect', { x: left, y: MARGIN.top, width: right - left, height: plotH, 'data-index': i }, bands);
      });
    }

    const grid = svgEl('g', { class: 'grid' }, svg);
    for (let v = 0; v <= top + 1e-9; v += step) {
      svgEl('line', { x1: MARGIN.left, x2: width - MARGIN.right, y1: y(v), y2: y(v) }, grid);
      svgEl('text', { x: MARGIN.left - 8, y: y(v), class: 'axis-y', 'dominant-baseline': 'middle', 'text-anchor': 'end' }, grid)
        .textContent = fmt.compact(v);
    }
    const every = Math.max(1, Math.ceil(n / Math.max(2, Math.floor(plotW / 90))));
    const axis = svgEl('g', { class: 'axis-x' }, svg);
    svgEl('line', { x1: MARGIN.left, x2: width - MARGIN.right, y1: y(0), y2: y(0), class: 'baseline' }, axis);
    for (let i = 0; i < n; i += every) {
      const anchor = n === 1 ? 'middle' : i === 0 ? 'start' : i + every >= n && i === n - 1 ? 'end' : 'middle';
      svgEl('text', { x: x(i), y: HEIGHT - MARGIN.bottom + 20, 'text-anchor': anchor }, axis)
        .textContent = xLabel(labels[i]);
    }

    series.forEach((s, si) => {
      const points = s.values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`);
      if (si === 0 && n > 1) {
        svgEl('path', {
          d: `M${x(0)},${y(0)} L${points.join(' L')} L${x(n - 1)},${y(0)} Z`,
          class: `area ${s.cls}`,
        }, svg);
      }
      svgEl('path', { d: `M${points.join(' L')}`, class: `line ${s.cls}` }, svg);
      const dots = svgEl('g', { class: `dots ${s.cls}${n > 62 ? ' sparse' : ''}` }, svg);
      s.values.forEach((v, i) => {
        svgEl('circle', { cx: x(i), cy: y(v), r: 3.5, 'data-index': i, 'data-value': v }, dots);
      });
    });

    const guide = svgEl('line', { class: 'guide', y1: MARGIN.top, y2: MARGIN.top + plotH, x1: 0, x2: 0, visibility: 'hidden' }, svg);
    // The target reaches past the plot on every side so that the pointer on
    // a dot drawn at the plot's edge (the busiest bucket sits on the top
    // edge) still lands on it rather than on the dot's outer half.
    const hover = svgEl('rect', {
      x: MARGIN.left - 10, y: MARGIN.top - 10, width: plotW + 20, height: plotH + 20, class: 'hover-target',
    }, svg);
    hover.addEventListener('mousemove', (event) => {
      const rect = svg.getBoundingClientRect();
      const mx = ((event.clientX - rect.left) * width) / rect.width;
      const i = n === 1 ? 0 : Math.min(n - 1, Math.max(0, Math.round(((mx - MARGIN.left) * (n - 1)) / plotW)));
      guide.setAttribute('x1', x(i));
      guide.setAttribute('x2', x(i));
      guide.setAttribute('visibility', 'visible');
      svg.querySelectorAll('circle.active').forEach((c) => c.classList.remove('active'));
      svg.querySelectorAll(`circle[data-index="${i}"]`).forEach((c) => c.classList.add('active'));
      const rows = series.map((s) => ({ label: s.name, value: value(s.values[i]), cls: s.cls }));
      if (notes && notes[i]) rows.push({ label: 'Not final', value: notes[i], cls: 'not-final' });
      showTooltip(event, title(labels[i]), rows);
    });
    hover.addEventListener('mouseleave', () => {
      guide.setAttribute('visibility', 'hidden');
      svg.querySelectorAll('circle.active').forEach((c) => c.classList.remove('active'));
      hideTooltip();
    });
  }

  // ---- horizontal bar chart --------------------------------------------------

  /**
   * One bar per row, longest first as given.
   * opts: {rows: [{label, value, tip: [{label, value}]}], value(n) → string, cls}
   */
  function barChart(container, opts) {
    responsive(container, () => drawBars(container, opts));
  }

  function drawBars(container, { rows, value, cls }) {
    container.replaceChildren();
    if (!rows.length) {
      empty(container, 'Nothing to show in this range.');
      return;
    }
    const width = widthOf(container);
    const rowH = 30;
    const labelW = Math.min(220, Math.round(width * 0.32));
    const valueW = 90;
    const barW = width - labelW - valueW - 16;
    const height = rows.length * rowH + 8;
    const max = Math.max(1, ...rows.map((r) => r.value));
    const svg = svgEl('svg', { width, height, viewBox: `0 0 ${width} ${height}`, class: 'chart-svg bars', role: 'img',
      'aria-label': rows.map((r) => `${r.label}: ${value(r.value)}`).join('; ') }, container);
    rows.forEach((row, i) => {
      const g = svgEl('g', { class: 'bar-row', transform: `translate(0, ${i * rowH + 4})`, 'data-index': i }, svg);
      const label = svgEl('text', { x: labelW - 10, y: rowH / 2, 'text-anchor': 'end', 'dominant-baseline': 'middle', class: 'bar-label' }, g);
      label.textContent = row.label.length > 30 ? `${row.label.slice(0, 29)}…` : row.label;
      svgEl('rect', { x: labelW, y: 4, width: barW, height: rowH - 8, rx: 3, class: 'bar-track' }, g);
      svgEl('rect', { x: labelW, y: 4, width: Math.max(2, (row.value / max) * barW), height: rowH - 8, rx: 3, class: `bar ${row.cls || cls || 's0'}` }, g);
      svgEl('text', { x: labelW + barW + 8, y: rowH / 2, 'dominant-baseline': 'middle', class: 'bar-value' }, g)
        .textContent = value(row.value);
      g.addEventListener('mousemove', (event) => showTooltip(event, row.label, row.tip || [{ label: 'Value', value: value(row.value) }]));
      g.addEventListener('mouseleave', hideTooltip);
    });
  }

  // ---- funnel chart ------------------------------------------------------------

  /**
   * Vertical columns, one per step, over a faint column the height of
   * step 1, each labelled with its people and conversion.
   * opts: {steps: [{event, people, conversion}]}
   */
  function funnelChart(container, opts) {
    responsive(container, () => drawFunnel(container, opts));
  }

  function drawFunnel(container, { steps }) {
    container.replaceChildren();
    if (!steps.length) {
      empty(container, 'No steps.');
      return;
    }
    const width = widthOf(container);
    const height = 300;
    const top = 40;
    const bottom = 52;
    const plotH = height - top - bottom;
    const slot = (width - 20) / steps.length;
    const colW = Math.min(140, slot * 0.62);
    const first = Math.max(1, steps[0].people);
    const svg = svgEl('svg', { width, height, viewBox: `0 0 ${width} ${height}`, class: 'chart-svg funnel', role: 'img',
      'aria-label': steps.map((s) => `${s.event}: ${s.people} people, ${fmt.percent(s.conversion)}`).join('; ') }, container);
    steps.forEach((step, i) => {
      const cx = 10 + slot * i + slot / 2;
      const h = (step.people / first) * plotH;
      const g = svgEl('g', { class: 'funnel-step', 'data-index': i }, svg);
      svgEl('rect', { x: cx - colW / 2, y: top, width: colW, height: plotH, rx: 4, class: 'bar-track' }, g);
      svgEl('rect', { x: cx - colW / 2, y: top + plotH - h, width: colW, height: Math.max(h, 1.5), rx: 4, class: 'bar s0' }, g);
      svgEl('text', { x: cx, y: top - 22, 'text-anchor': 'middle', class: 'funnel-people' }, g).textContent = `${fmt.int(step.people)}`;
      svgEl('text', { x: cx, y: top - 7, 'text-anchor': 'middle', class: 'funnel-rate' }, g).textContent = fmt.percent(step.conversion);
      const name = step.event.length > 22 ? `${step.event.slice(0, 21)}…` : step.event;
      svgEl('text', { x: cx, y: height - bottom + 20, 'text-anchor': 'middle', class: 'bar-label' }, g).textContent = `${i + 1}. ${name}`;
      if (i > 0) {
        const prev = steps[i - 1].people;
        const kept = prev ? step.people / prev : 0;
        svgEl('text', { x: cx - slot / 2, y: height - bottom + 38, 'text-anchor': 'middle', class: 'funnel-drop' }, g)
          .textContent = `→ ${fmt.percent(kept)}`;
      }
      const tip = [
        { label: 'People', value: fmt.int(step.people) },
        { label: 'Of step 1', value: fmt.percent(step.conversion) },
      ];
      if (i > 0) {
        const prev = steps[i - 1].people;
        tip.push({ label: 'Of previous step', value: fmt.percent(prev ? step.people / prev : 0) });
        tip.push({ label: 'Dropped', value: fmt.int(prev - step.people) });
      }
      g.addEventListener('mousemove', (event) => showTooltip(event, `${i + 1}. ${step.event}`, tip));
      g.addEventListener('mouseleave', hideTooltip);
    });
  }

  return { fmt, lineChart, barChart, funnelChart, hideTooltip };
})();
