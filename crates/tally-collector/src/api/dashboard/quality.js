// Tally dashboard: the "Data quality" view. What the tracking plan found in
// the events the store took (`GET /v1/quality`, which a read token may
// call): per event, version, finding, rule and path the events accepted
// with it (flagged) and rejected for it, the unplanned events apart, and
// the newest examples of each. app.js asks for the page's range and hands
// the answer to `Quality.draw` with the helpers every view draws with.
'use strict';

const Quality = (() => {
  const { fmt } = Charts;

  /** A finding in words: `Order Completed v2 · required at /currency`. */
  function label(r) {
    const where = r.rule ? ` · ${r.rule} at ${r.path}` : ` · ${r.finding}`;
    return r.finding === 'unplanned' ? `${r.event} · unplanned` : `${r.event} v${r.version}${where}`;
  }

  const time = (ms) => ({ text: new Date(ms).toLocaleString(), value: ms, title: new Date(ms).toISOString() });
  const count = (n) => ({ text: fmt.int(n), value: n, num: true });
  const sum = (rows, key) => rows.reduce((total, r) => total + (r[key] || 0), 0);

  /**
   * Draws `answer` ({findings, unplanned}); `ui` has the page's
   * `table(target, headers, rows, decorate, empty)` and
   * `card(parent, id, label, value, text, sub, level)`.
   */
  function draw(answer, ui) {
    const findings = answer.findings || [];
    const unplanned = answer.unplanned || [];
    const $ = (id) => document.getElementById(id);

    const totals = $('quality-totals');
    totals.replaceChildren();
    const flagged = sum(findings, 'flagged');
    const rejected = sum(findings, 'rejected');
    ui.card(totals, 'quality-flagged', 'Flagged', flagged, undefined, 'accepted with a finding', flagged > 0 ? 'warn' : 'ok');
    ui.card(totals, 'quality-rejected', 'Rejected', rejected, undefined, 'refused by the plan (enforce)', rejected > 0 ? 'bad' : 'ok');
    ui.card(totals, 'quality-unplanned-events', 'Unplanned events', sum(unplanned, 'flagged') + sum(unplanned, 'rejected'),
      undefined, `${fmt.int(unplanned.length)} ${unplanned.length === 1 ? 'name' : 'names'} not in the plan`);

    Charts.barChart($('quality-chart'), {
      rows: findings.map((r) => ({
        label: label(r),
        value: r.flagged + r.rejected,
        cls: r.rejected > 0 ? 's3' : 's1',
        tip: [
          { label: 'Flagged', value: fmt.int(r.flagged) },
          { label: 'Rejected', value: fmt.int(r.rejected) },
        ],
      })),
      value: fmt.int,
    });

    ui.table($('quality-findings'), ['Event', 'Version', 'Finding', 'Rule', 'Path', 'Flagged', 'Rejected', 'Last seen'],
      findings.map((r) => [
        { text: r.event, value: r.event },
        { text: String(r.version), value: r.version, num: true },
        { text: r.finding, value: r.finding },
        { text: r.rule || '–', value: r.rule },
        { text: r.path || '–', value: r.path },
        count(r.flagged),
        count(r.rejected),
        time(r.last_seen),
      ]), null, 'Nothing found in this range.');

    ui.table($('quality-unplanned'), ['Event', 'Events', 'First seen', 'Last seen'],
      unplanned.map((r) => [
        { text: r.event, value: r.event },
        count(r.flagged + r.rejected),
        time(r.first_seen),
        time(r.last_seen),
      ]), null, 'No unplanned events in this range.');

    // The examples of each row above, in its order, newest first.
    const examples = [...findings, ...unplanned].flatMap((r) => (r.examples || []).map((e) => [r, e]));
    ui.table($('quality-examples'), ['Finding', 'Received', 'Source', 'Message id', 'Outcome', 'Detail'],
      examples.map(([r, e]) => [
        { text: label(r), value: label(r) },
        time(e.received_at),
        { text: e.source, value: e.source },
        { text: e.message_id || '–', value: e.message_id },
        { text: e.rejected ? 'rejected' : 'flagged', value: e.rejected ? 'rejected' : 'flagged', badge: e.rejected ? 'rejected' : 'flagged' },
        { text: e.detail, value: e.detail },
      ]), null, 'No examples in this range.');
  }

  return { draw };
})();
