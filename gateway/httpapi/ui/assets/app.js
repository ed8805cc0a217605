// occupancyd status page. Plain JavaScript, no framework, no build step.
//
// Data: /v1/status (gateway), /v1/tree (the space tree, one level at a time, and
// search), /v1/spaces/{id}/counts (a day's curve), /v1/dpus (sensor health),
// /v1/rejections (dead letters), and /v1/stream (live occupancy, Server-Sent Events).
// No string is parsed as HTML: everything from the gateway goes into the page as text.
(() => {
  'use strict';

  const PAGE = 200;               // tree rows fetched per level and page
  const STREAM_ALL_UNDER = 2000;  // up to this many spaces the stream carries them all
  const STREAM_MAX_IDS = 400;     // otherwise: the spaces on screen, at most this many
  const POLL_STATUS = 5000;
  const POLL_LISTS = 15000;
  const POLL_CURVE = 60000;
  const SENSORS_ALL_UNDER = 300;  // up to this many DPUs the sensor list shows them all
  const SMALL_BUILDING = 40;      // up to this many spaces the tree opens whole

  // ---------------------------------------------------------------- helpers

  const $ = (id) => document.getElementById(id);

  // h builds an element: h('div', {class: 'x', text: 'y', onclick: fn}, child...).
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    for (const k of kids) if (k != null) el.append(k);
    return el;
  }
  const SVG = 'http://www.w3.org/2000/svg';
  function s(tag, attrs, ...kids) {
    const el = document.createElementNS(SVG, tag);
    setAttrs(el, attrs);
    for (const k of kids) if (k != null) el.append(k);
    return el;
  }
  function setAttrs(el, attrs) {
    if (!attrs) return;
    for (const [k, v] of Object.entries(attrs)) {
      if (v == null || v === false) continue;
      if (k === 'text') el.textContent = v;
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : v);
    }
  }

  const nf = new Intl.NumberFormat();
  const nf1 = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
  const fmtInt = (n) => (n == null ? '–' : nf.format(n));
  const fmtRate = (r) => (r == null ? '–' : r >= 100 ? nf.format(Math.round(r)) : nf1.format(r));
  const pct = (u) => Math.round(u * 100) + ' %';

  function fmtAge(ms) {
    if (ms == null || isNaN(ms)) return '–';
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 5) return 'just now';
    if (s < 60) return s + ' s ago';
    const m = Math.round(s / 60);
    if (m < 60) return m + ' min ago';
    const hr = Math.round(m / 60);
    if (hr < 48) return hr + ' h ago';
    return Math.round(hr / 24) + ' d ago';
  }
  function fmtDuration(sec) {
    sec = Math.max(0, Math.floor(sec));
    const d = Math.floor(sec / 86400), hr = Math.floor(sec / 3600) % 24, m = Math.floor(sec / 60) % 60;
    if (d > 0) return d + ' d ' + hr + ' h';
    if (hr > 0) return hr + ' h ' + m + ' min';
    if (m > 0) return m + ' min';
    return sec + ' s';
  }
  function fmtSkew(ms) {
    if (ms == null) return '–';
    const a = Math.abs(ms), sign = ms < 0 ? '−' : '+';
    if (a < 1000) return sign + a + ' ms';
    if (a < 120000) return sign + nf1.format(a / 1000) + ' s';
    if (a < 7200000) return sign + Math.round(a / 60000) + ' min';
    return sign + nf1.format(a / 3600000) + ' h';
  }
  const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  const fmtTime = (iso) => (iso ? timeFmt.format(new Date(iso)) : '–');
  const dayTimeFmt = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit' });
  // fmtWhen is an instant: the time of day within the last 20 hours, else the date too.
  const fmtWhen = (iso, now) => (!iso ? '–' : now - Date.parse(iso) < 20 * 3600e3 ? fmtTime(iso) : dayTimeFmt.format(new Date(iso)));
  // dayHM is a time of the space's day as HH:MM from the day's start (the first
  // bucket starts at the space's local midnight), so the curve reads in the
  // building's time wherever the browser is.
  const dayHM = (t, t0) => {
    const m = Math.max(0, Math.round((Date.parse(t) - t0) / 60000));
    return String(Math.floor(m / 60)).padStart(2, '0') + ':' + String(m % 60).padStart(2, '0');
  };
  const utilClass = (u) => (u >= 0.9 ? 'full' : u >= 0.7 ? 'warn' : 'ok');

  function bar(util, big) {
    const b = h('div', { class: 'bar ' + utilClass(util) + (big ? ' big-bar' : '') }, h('span'));
    b.firstChild.style.width = Math.min(100, Math.max(0, util * 100)) + '%';
    return b;
  }
  function setBar(b, util) {
    b.className = 'bar ' + utilClass(util) + (b.classList.contains('big-bar') ? ' big-bar' : '');
    b.firstChild.style.width = Math.min(100, Math.max(0, util * 100)) + '%';
  }

  // ---------------------------------------------------------------- API

  class AuthError extends Error {}

  async function api(path) {
    const r = await fetch(path, { credentials: 'same-origin', headers: { Accept: 'application/json' } });
    if (r.status === 401) throw new AuthError('token needed');
    let body = null;
    try { body = await r.json(); } catch (_) { /* not JSON */ }
    if (!r.ok) throw new Error((body && body.error) || r.status + ' ' + r.statusText);
    return { body, headers: r.headers };
  }

  // quietly runs a loader and shows trouble where it belongs instead of the console.
  async function quietly(fn, onError) {
    try {
      await fn();
    } catch (e) {
      if (e instanceof AuthError) { needLogin(); return; }
      if (onError) onError(e);
    }
  }

  // ---------------------------------------------------------------- state

  const state = {
    status: null,
    nodes: new Map(),   // space id -> node
    roots: null,        // ids of the top level, once loaded
    rootTotal: 0,
    selected: null,     // space id
    path: [],           // selected space's ancestors [{space, name}], root first
    buckets: null,
    timers: [],
    started: false,
    lastTotals: null,   // events accepted and rejected at the last status
  };

  // A node is one space in the tree: its latest occupancy object plus tree state.
  function upsert(o, parent) {
    let n = state.nodes.get(o.space);
    if (!n) {
      n = { id: o.space, parent: parent, kids: null, total: 0, expanded: false, el: null };
      state.nodes.set(o.space, n);
    }
    if (parent !== undefined) n.parent = parent;
    n.name = o.name || o.space;
    n.occ = o.occupancy;
    n.cap = o.capacity || 0;
    n.util = o.utilization;
    n.updated = o.updated;
    n.settled = o.settled_until;
    if (o.children != null) n.children = o.children;
    return n;
  }

  // ---------------------------------------------------------------- gateway

  const REASONS = {
    starting: 'starting',
    broker_disconnected: 'not connected to the MQTT broker',
    not_subscribed: 'connected, not yet subscribed',
    storage_full: 'storage full: events are not acknowledged',
    storage_error: 'storage error: events are not acknowledged',
  };

  async function loadStatus() {
    const { body: st } = await api('/v1/status');
    const before = state.status;
    state.status = st;
    if (before && state.roots && (before.spaces !== st.spaces || before.dpus !== st.dpus)) {
      // A new topology version (SIGHUP): the tree again, from the top.
      state.nodes.clear();
      quietly(loadRoots);
    }
    document.title = st.gateway + ' · occupancyd';
    $('gw-id').textContent = 'gateway ' + st.gateway;
    const ready = $('ready');
    if (st.ready) {
      ready.className = 'pill pill-ok';
      ready.textContent = 'ready';
    } else {
      ready.className = 'pill pill-bad';
      ready.textContent = 'not ready' + (st.reason ? ': ' + st.reason : '');
    }
    const notice = $('notice');
    if (!st.ready) {
      notice.hidden = false;
      notice.textContent = 'Not ready — ' + (st.message || REASONS[st.reason] || st.reason || 'unknown reason') + '.';
    } else notice.hidden = true;

    const b = st.broker || {};
    const conn = $('f-broker');
    conn.textContent = b.connected ? (b.subscribed ? 'connected' : 'connected, subscribing') : 'disconnected';
    conn.className = b.connected && b.subscribed ? 'ok-text' : 'bad-text';
    $('f-broker-sub').textContent = (b.embedded ? 'embedded ' : '') + (b.address || '');

    const ev = st.events || {};
    $('f-rate').textContent = fmtRate(ev.accepted_per_s) + ' accepted';
    const rj = $('f-rate-sub');
    rj.textContent = fmtRate(ev.rejected_per_s) + ' rejected';
    rj.className = 'sub' + (ev.rejected_per_s > 0 ? ' warn-text' : '');

    $('f-settled').textContent = fmtTime(st.settled_until);
    $('f-settled-sub').textContent = st.settled_until ? fmtAge(Date.now() - Date.parse(st.settled_until)).replace('ago', 'behind') : '';

    $('f-size').textContent = fmtInt(st.spaces) + ' spaces';
    const quiet = st.quiet_dpus;
    $('f-size-sub').textContent = fmtInt(st.dpus) + ' sensors' + (quiet ? ' · ' + fmtInt(quiet) + ' quiet' : '');
    $('f-size-sub').className = 'sub' + (quiet ? ' warn-text' : '');

    // New events or rejections, or a sensor gone quiet: the sensor and rejection
    // lists follow at once.
    const ev2 = st.events || {};
    if (state.lastTotals && (ev2.accepted_total !== state.lastTotals[0] || ev2.rejected_total !== state.lastTotals[1] ||
        before && before.quiet_dpus !== st.quiet_dpus)) {
      quietly(loadDPUs);
      if (state.selected) quietly(() => loadSpaceDPUs(state.selected));
      if (ev2.rejected_total !== state.lastTotals[1]) quietly(loadRejections);
    }
    state.lastTotals = [ev2.accepted_total, ev2.rejected_total];

    $('f-uptime').textContent = fmtDuration(st.uptime_s);
    const ver = 'occupancyd ' + (st.version || 'dev') + (st.commit ? ' (' + st.commit.slice(0, 12) + ')' : '');
    $('f-version').textContent = 'since ' + fmtTime(st.started);
    $('foot-version').textContent = ver;
    $('printed').textContent = 'Printed ' + new Date().toLocaleString();
    $('signout').hidden = st.access !== 'token';
    connectStream(); // the stream's filter depends on the building's size
  }

  // ---------------------------------------------------------------- tree

  const chevron = () => s('svg', { viewBox: '0 0 10 10', 'aria-hidden': 'true' },
    s('path', { d: 'M3 1.5 6.8 5 3 8.5', fill: 'none', stroke: 'currentColor', 'stroke-width': '1.6', 'stroke-linecap': 'round', 'stroke-linejoin': 'round' }));

  function rowFor(n) {
    const li = h('li', { role: 'treeitem', 'data-space': n.id });
    const twisty = h('button', {
      class: 'twisty' + (n.children ? '' : ' leaf'), type: 'button', tabindex: '-1',
      'aria-label': 'Show or hide what is inside ' + n.name,
      onclick: (e) => { e.stopPropagation(); toggle(n); },
    }, chevron());
    const count = h('span', { class: 'count' }, h('b'), h('span', { class: 'cap' }));
    const meta = h('div', { class: 'meta' }, h('span', { class: 'id mono', text: n.id }));
    const row = h('div', {
      class: 'row', tabindex: '0',
      onclick: () => select(n.id),
      onkeydown: (e) => rowKey(e, n),
    }, twisty, h('span', { class: 'name', text: n.name }), count, meta);
    li.append(row);
    n.el = li;
    if (n.children) li.setAttribute('aria-expanded', n.expanded ? 'true' : 'false');
    paintRow(n);
    return li;
  }

  function paintRow(n, bump) {
    const li = n.el;
    if (!li) return;
    const row = li.firstChild;
    row.classList.toggle('selected', state.selected === n.id);
    li.setAttribute('aria-selected', state.selected === n.id ? 'true' : 'false');
    const count = row.querySelector('.count');
    count.firstChild.textContent = fmtInt(n.occ);
    count.lastChild.textContent = n.cap ? ' / ' + fmtInt(n.cap) : '';
    const meta = row.querySelector('.meta');
    let b = meta.querySelector('.bar');
    let p = meta.querySelector('.pct');
    if (n.cap) {
      if (!b) { b = bar(n.util); p = h('span', { class: 'pct' }); meta.append(b, p); }
      else setBar(b, n.util);
      p.textContent = pct(n.util);
    } else if (b) { b.remove(); p.remove(); }
    if (bump) {
      count.classList.remove('bump');
      void count.offsetWidth; // restart the animation
      count.classList.add('bump');
    }
  }

  function rowKey(e, n) {
    if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); select(n.id); }
    else if (e.key === 'ArrowRight' && n.children && !n.expanded) { e.preventDefault(); toggle(n); }
    else if (e.key === 'ArrowLeft' && n.expanded) { e.preventDefault(); toggle(n); }
    else if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      e.preventDefault();
      const rows = [...$('tree').querySelectorAll('.row')];
      const i = rows.indexOf(e.currentTarget);
      const next = rows[i + (e.key === 'ArrowDown' ? 1 : -1)];
      if (next) next.focus();
    }
  }

  // loadLevel fetches one page of a level: the roots (parent '') or a space's children.
  async function loadLevel(parent, offset) {
    const q = new URLSearchParams({ limit: PAGE, offset: offset || 0 });
    if (parent) q.set('parent', parent);
    const { body } = await api('/v1/tree?' + q);
    const ids = body.spaces.map((o) => upsert(o, parent || null).id);
    return { ids, total: body.total };
  }

  function moreButton(parent, have, total, ul) {
    const li = h('li', { class: 'more' });
    li.append(h('button', {
      class: 'link', type: 'button', text: 'Show ' + fmtInt(Math.min(PAGE, total - have)) + ' more of ' + fmtInt(total),
      onclick: () => quietly(async () => {
        li.remove();
        const { ids, total: t } = await loadLevel(parent, have);
        const list = parent ? state.nodes.get(parent).kids : state.roots;
        for (const id of ids) { list.push(id); ul.append(rowFor(state.nodes.get(id))); }
        if (list.length < t) ul.append(moreButton(parent, list.length, t, ul));
        connectStream();
      }),
    }));
    return li;
  }

  async function loadRoots() {
    const tree = $('tree');
    const { ids, total } = await loadLevel('', 0);
    state.roots = ids;
    state.rootTotal = total;
    tree.replaceChildren(...ids.map((id) => rowFor(state.nodes.get(id))));
    if (ids.length < total) tree.append(moreButton('', ids.length, total, tree));
    $('tree-empty').hidden = total > 0;
    // A small building opens whole, so every number shows at once; a large one opens
    // a lone top level.
    if (state.status && state.status.spaces <= SMALL_BUILDING) await expandAll(ids);
    else if (total <= 3) for (const id of ids) { const n = state.nodes.get(id); if (n.children && n.children <= 12) await expand(n); }
  }

  async function expandAll(ids) {
    for (const id of ids) {
      const n = state.nodes.get(id);
      if (!n.children) continue;
      await expand(n);
      await expandAll(n.kids);
    }
  }

  async function expand(n) {
    if (!n.children || n.expanded) return;
    n.expanded = true;
    n.el.setAttribute('aria-expanded', 'true');
    let ul = n.el.querySelector(':scope > ul');
    if (!ul) {
      ul = h('ul', { role: 'group' });
      n.el.append(ul);
    }
    if (n.kids === null) {
      ul.replaceChildren(h('li', { class: 'loading', text: 'loading…' }));
      try {
        const { ids, total } = await loadLevel(n.id, 0);
        n.kids = ids;
        n.total = total;
      } catch (e) {
        n.expanded = false;
        n.el.setAttribute('aria-expanded', 'false');
        ul.remove();
        throw e;
      }
      ul.replaceChildren(...n.kids.map((id) => rowFor(state.nodes.get(id))));
      if (n.kids.length < n.total) ul.append(moreButton(n.id, n.kids.length, n.total, ul));
    }
    ul.hidden = false;
    connectStream();
  }

  function collapse(n) {
    n.expanded = false;
    n.el.setAttribute('aria-expanded', 'false');
    const ul = n.el.querySelector(':scope > ul');
    if (ul) ul.hidden = true;
    connectStream();
  }

  function toggle(n) {
    if (n.expanded) collapse(n);
    else quietly(() => expand(n), (e) => flash('Could not open ' + n.name + ': ' + e.message));
  }

  // reveal opens the tree along path (ancestors, root first) down to id.
  async function reveal(id, path) {
    for (const p of path) {
      let n = state.nodes.get(p.space);
      if (!n || !n.el) return; // not on screen (a later page of a long level)
      await expand(n);
    }
    const n = state.nodes.get(id);
    if (n && n.el) n.el.firstChild.scrollIntoView({ block: 'nearest' });
  }

  // ---------------------------------------------------------------- search

  let searchSeq = 0;
  async function search(q) {
    const seq = ++searchSeq;
    const res = $('results');
    if (!q) {
      res.hidden = true;
      $('tree').hidden = false;
      return;
    }
    const { body } = await api('/v1/tree?' + new URLSearchParams({ q, limit: 50 }));
    if (seq !== searchSeq || $('search').value.trim() !== q) return; // a newer search, or none
    $('tree').hidden = true;
    res.hidden = false;
    if (!body.spaces.length) {
      res.replaceChildren(h('p', { class: 'muted empty', text: 'No space matches “' + q + '”.' }));
      return;
    }
    const items = body.spaces.map((o) => {
      const path = o.path || [];
      return h('button', {
        class: 'result', type: 'button',
        onclick: () => {
          // A search still on its way must not open the results again.
          clearTimeout(searchTimer);
          searchSeq++;
          $('search').value = '';
          res.hidden = true;
          $('tree').hidden = false;
          select(o.space, path);
        },
      },
      h('div', { class: 'line' }, h('span', { class: 'name', text: o.name }),
        h('span', { class: 'count' }, h('b', { text: fmtInt(o.occupancy) }), h('span', { class: 'cap', text: o.capacity ? ' / ' + fmtInt(o.capacity) : '' }))),
      h('div', { class: 'path', text: [...path.map((p) => p.name), o.space].join(' › ') }));
    });
    if (body.total > body.spaces.length) {
      items.push(h('p', { class: 'muted empty', text: fmtInt(body.total) + ' spaces match; the first ' + body.spaces.length + ' are shown.' }));
    }
    res.replaceChildren(...items);
  }

  // ---------------------------------------------------------------- detail

  async function select(id, path) {
    const prev = state.selected;
    state.selected = id;
    if (prev && state.nodes.get(prev)) paintRow(state.nodes.get(prev));
    history.replaceState(null, '', '#space=' + encodeURIComponent(id));
    $('detail-empty').hidden = true;
    $('detail-body').hidden = false;
    $('chart').replaceChildren();
    state.buckets = null;
    if (!path) path = ancestorsOf(id);
    state.path = path;
    const n = state.nodes.get(id);
    if (n) { paintRow(n); paintDetail(n); }
    await quietly(async () => {
      if (!n || n.parent === undefined) {
        // Not in the tree yet (a link or a search): ask for it and its path.
        const { body } = await api('/v1/tree?' + new URLSearchParams({ q: id, limit: 50 }));
        const hit = body.spaces.find((o) => o.space === id);
        if (!hit) { flash('There is no space “' + id + '”.'); return; }
        state.path = hit.path || [];
        const parent = state.path.length ? state.path[state.path.length - 1].space : null;
        paintDetail(upsert(hit, parent));
      }
      paintCrumbs();
      await reveal(id, state.path);
      connectStream();
      await Promise.all([loadCurve(id), loadSpaceDPUs(id)]);
    }, (e) => flash(e.message));
    if (window.matchMedia('(max-width: 899px)').matches) $('detail').scrollIntoView({ behavior: 'smooth', block: 'start' });
  }

  function ancestorsOf(id) {
    const out = [];
    let n = state.nodes.get(id);
    while (n && n.parent) {
      const p = state.nodes.get(n.parent);
      if (!p) break;
      out.unshift({ space: p.id, name: p.name });
      n = p;
    }
    return out;
  }

  function paintCrumbs() {
    const c = $('crumbs');
    const kids = [];
    state.path.forEach((p, i) => {
      if (i) kids.push(h('span', { class: 'sep', text: '›' }));
      kids.push(h('button', { type: 'button', text: p.name, onclick: () => select(p.space, state.path.slice(0, i)) }));
    });
    c.replaceChildren(...kids);
  }

  function paintDetail(n) {
    $('d-name').textContent = n.name;
    $('d-id').textContent = n.id;
    $('d-occ').textContent = fmtInt(n.occ);
    $('d-unit').textContent = n.occ === 1 ? 'person' : 'people';
    const b = $('d-bar');
    if (n.cap) {
      $('d-cap').textContent = 'of ' + fmtInt(n.cap) + ' · ' + pct(n.util) + ' full';
      b.hidden = false;
      setBar(b, n.util);
    } else {
      $('d-cap').textContent = 'no capacity set';
      b.hidden = true;
    }
    $('d-updated').textContent = 'changed ' + fmtAge(Date.now() - Date.parse(n.updated)) + ' · settled until ' + fmtTime(n.settled);
  }

  $('d-close').addEventListener('click', () => {
    const prev = state.selected;
    state.selected = null;
    if (prev && state.nodes.get(prev)) paintRow(state.nodes.get(prev));
    history.replaceState(null, '', location.pathname);
    $('detail-body').hidden = true;
    $('detail-empty').hidden = false;
    connectStream();
  });

  async function loadCurve(id) {
    const { body } = await api('/v1/spaces/' + encodeURIComponent(id) + '/counts?interval=5m');
    if (state.selected !== id) return;
    state.buckets = body;
    let ins = 0, outs = 0, peak = null, peakAt = null;
    for (const b of body) {
      ins += b.entrances;
      outs += b.exits;
      if (peak === null || b.max > peak) { peak = b.max; peakAt = b.start; }
    }
    $('d-in').textContent = fmtInt(ins);
    $('d-out').textContent = fmtInt(outs);
    const max = $('d-max');
    const t0 = body.length ? Date.parse(body[0].start) : 0;
    max.replaceChildren(fmtInt(peak), peak > 0 ? h('span', { class: 'small', text: 'at ' + dayHM(peakAt, t0) }) : null);
    if (body.length) {
      const day = new Date(t0 + 12 * 3600 * 1000); // midday of the space's day
      $('d-day').textContent = day.toLocaleDateString(undefined, { weekday: 'long', day: 'numeric', month: 'long' }) + ', 5-minute steps';
    }
    drawChart();
  }

  // drawChart draws today's buckets: the min/max band, the occupancy line (the value
  // at each bucket's end), the capacity and the current time, in pixels of the box.
  function drawChart() {
    const box = $('chart');
    const bs = state.buckets;
    const n = state.nodes.get(state.selected);
    if (!bs || !n) return;
    const W = Math.max(260, box.clientWidth || 600);
    const H = Math.round(Math.min(240, Math.max(170, W * 0.36)));
    const m = { l: 34, r: 10, t: 12, b: 24 };
    const iw = W - m.l - m.r, ih = H - m.t - m.b;
    const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, width: W, height: H, 'aria-hidden': 'true' });
    if (!bs.length) {
      svg.append(s('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'chart-empty', text: 'No data for today yet.' }));
      box.replaceChildren(svg);
      return;
    }
    const t0 = Date.parse(bs[0].start);
    const t1 = t0 + 24 * 3600 * 1000;
    // The scale follows the day's values; the capacity joins it when it is near
    // enough to tell something (a lobby of 30 with 5 people keeps its detail).
    let top = 4;
    for (const b of bs) top = Math.max(top, b.max, b.occupancy);
    if (n.cap && n.cap <= top * 2) top = Math.max(top, n.cap);
    top = niceTop(top * 1.08);
    const x = (t) => m.l + ((t - t0) / (t1 - t0)) * iw;
    const y = (v) => m.t + ih - (v / top) * ih;

    const grid = s('g', { class: 'grid' });
    const axis = s('g', { class: 'axis' });
    const step = niceStep(top);
    for (let v = 0; v <= top + 1e-9; v += step) {
      grid.append(s('line', { x1: m.l, x2: W - m.r, y1: y(v), y2: y(v) }));
      axis.append(s('text', { x: m.l - 6, y: y(v) + 4, 'text-anchor': 'end', text: fmtInt(v) }));
    }
    const every = W < 420 ? 6 : 3;
    for (let hr = 0; hr <= 24; hr += every) {
      const t = t0 + hr * 3600 * 1000;
      axis.append(s('text', { x: x(t), y: H - 6, 'text-anchor': hr === 0 ? 'start' : hr === 24 ? 'end' : 'middle', text: String(hr).padStart(2, '0') + ':00' }));
    }
    svg.append(grid, axis);

    // band: max along the top, min back along the bottom, as steps per bucket
    let top1 = '', bot = '';
    for (const b of bs) {
      const a = x(Date.parse(b.start)), e = x(Date.parse(b.end));
      top1 += `${a.toFixed(1)},${y(b.max).toFixed(1)} ${e.toFixed(1)},${y(b.max).toFixed(1)} `;
      bot = `${e.toFixed(1)},${y(b.min).toFixed(1)} ${a.toFixed(1)},${y(b.min).toFixed(1)} ` + bot;
    }
    svg.append(s('polygon', { class: 'band', points: top1 + bot }));

    if (n.cap && n.cap <= top) {
      svg.append(s('g', { class: 'cap' },
        s('line', { x1: m.l, x2: W - m.r, y1: y(n.cap), y2: y(n.cap) }),
        s('text', { x: W - m.r, y: y(n.cap) - 4, 'text-anchor': 'end', text: 'capacity ' + fmtInt(n.cap) })));
    }

    // the line starts at the day's first value carried in, then each bucket's end value
    const first = bs[0];
    const carried = first.occupancy - first.entrances + first.exits;
    const pts = [[x(t0), y(Math.max(0, carried))]];
    for (const b of bs) pts.push([x(Math.min(Date.parse(b.end), Date.now())), y(b.occupancy)]);
    const line = s('polyline', { class: 'line', points: pts.map((p) => p[0].toFixed(1) + ',' + p[1].toFixed(1)).join(' '), 'data-points': pts.length });
    svg.append(line);
    const last = pts[pts.length - 1];
    const nowX = x(Date.now());
    if (nowX < W - m.r) svg.append(s('line', { class: 'nowline', x1: nowX, x2: nowX, y1: m.t, y2: m.t + ih }));
    svg.append(s('circle', { class: 'last', cx: last[0], cy: last[1], r: 4 }));

    // the value under the pointer
    const cursor = s('g', { class: 'cursor', visibility: 'hidden' }, s('line', { y1: m.t, y2: m.t + ih }), s('circle', { r: 3.5 }));
    svg.append(cursor);
    const tip = h('div', { class: 'tip', hidden: true });
    const hover = (ev) => {
      const r = svg.getBoundingClientRect();
      const px = ((ev.clientX - r.left) / r.width) * W;
      const t = t0 + ((px - m.l) / iw) * (t1 - t0);
      let best = null;
      for (const b of bs) if (Date.parse(b.start) <= t) best = b;
      if (!best || px < m.l || t > Date.parse(bs[bs.length - 1].end)) { cursor.setAttribute('visibility', 'hidden'); tip.hidden = true; return; }
      const cx = x(Math.min(Date.parse(best.end), Date.now())), cy = y(best.occupancy);
      cursor.setAttribute('visibility', 'visible');
      cursor.firstChild.setAttribute('x1', cx); cursor.firstChild.setAttribute('x2', cx);
      cursor.lastChild.setAttribute('cx', cx); cursor.lastChild.setAttribute('cy', cy);
      tip.hidden = false;
      tip.textContent = dayHM(best.start, t0) + '–' + dayHM(best.end, t0) + ' · ' + fmtInt(best.occupancy) +
        (best.min !== best.max ? ' (' + fmtInt(best.min) + '–' + fmtInt(best.max) + ')' : '') +
        ' · +' + fmtInt(best.entrances) + ' −' + fmtInt(best.exits);
      tip.style.left = (cx / W) * 100 + '%';
      tip.style.top = (cy / H) * r.height + 'px';
    };
    svg.addEventListener('pointermove', hover);
    svg.addEventListener('pointerdown', hover);
    svg.addEventListener('pointerleave', () => { cursor.setAttribute('visibility', 'hidden'); tip.hidden = true; });
    box.replaceChildren(svg, tip);
    box.setAttribute('aria-label', 'Occupancy today: now ' + fmtInt(n.occ) + ', peak ' + $('d-max').firstChild.textContent);
  }

  function niceStep(top) {
    const raw = top / 4;
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const f of [1, 2, 2.5, 5, 10]) if (f * p >= raw) return Math.max(1, f * p);
    return 10 * p;
  }
  function niceTop(v) { const st = niceStep(v); return Math.ceil(v / st) * st; }

  let resizeTimer = 0;
  window.addEventListener('resize', () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(drawChart, 150); });

  // ---------------------------------------------------------------- sensors

  // dpuTable lists sensors: a table where there is room, stacked rows where there is
  // not (the style sheet decides by the width of its box).
  function dpuTable(rows, opts) {
    if (!rows.length) return h('p', { class: 'none', text: opts.empty });
    const now = Date.now();
    const cols = [['c-id', 'Sensor'], ['c-door', 'Doorway'], ['c-last', 'Last event'], ['num stat', 'Clock skew'],
      ['num stat', 'Gaps'], ['num stat', 'Parked'], ['num stat', 'Rejected'], ['num stat', 'Accepted']];
    const head = h('tr', null, ...cols.map(([c, t]) => h('th', { class: c, text: t })));
    const stat = (label, text, warn) => h('td', { class: 'num stat' + (warn ? ' warn-text' : ''), 'data-label': label, text });
    const body = rows.map((d) => {
      const age = d.last_event ? now - Date.parse(d.last_event) : null;
      // Health: a quiet sensor says so, and since when (GET /v1/dpus quiet_since).
      const since = d.quiet_since;
      return h('tr', { class: d.quiet ? 'quiet' : null, 'data-dpu': d.dpu },
        h('td', { class: 'c-id' }, h('span', { class: 'mono', text: d.dpu }),
          d.quiet ? h('span', { class: 'tag quiet', text: 'quiet', title: since ? 'quiet since ' + new Date(since).toLocaleString() : 'quiet' }) : null,
          d.kind && d.kind !== 'events' ? h('span', { class: 'tag', text: d.kind }) : null,
          d.quiet && since ? h('span', { class: 'sub-line quiet-since', 'data-since': since,
            text: 'quiet since ' + fmtWhen(since, now) + ' (' + fmtDuration((now - Date.parse(since)) / 1000) + ')' }) : null),
        h('td', { class: 'c-door' }, d.doorway_name || d.doorway || '–', h('span', { class: 'sub-line', text: direction(d) })),
        h('td', { class: 'c-last', title: d.last_event || 'never' }, d.last_event ? fmtAge(age) : h('span', { class: 'muted', text: 'never' })),
        stat('skew', d.last_event ? fmtSkew(d.clock_skew_ms) : '–', Math.abs(d.clock_skew_ms || 0) >= 5000),
        stat('gaps', fmtInt(d.gaps), d.gaps > 0),
        stat('parked', fmtInt(d.parked), d.parked > 0),
        stat('rejected', fmtInt(d.rejected), d.rejected > 0),
        stat('accepted', fmtInt(d.accepted)));
    });
    return h('table', { class: 'stack' }, h('thead', null, head), h('tbody', null, ...body));
  }

  function spaceName(id) {
    if (!id) return 'outside';
    const n = state.nodes.get(id);
    return n ? n.name : id;
  }
  function direction(d) {
    if (d.plus_space === undefined && d.minus_space === undefined) return '';
    return spaceName(d.minus_space) + ' → ' + spaceName(d.plus_space);
  }

  async function loadSpaceDPUs(id) {
    const { body } = await api('/v1/dpus?' + new URLSearchParams({ space: id }));
    if (state.selected !== id) return;
    body.sort(byQuiet);
    $('d-dpus').replaceChildren(dpuTable(body, { where: true, empty: 'No sensor counts this space directly.' }));
  }

  const byQuiet = (a, b) => (b.quiet ? 1 : 0) - (a.quiet ? 1 : 0) || (a.dpu < b.dpu ? -1 : a.dpu > b.dpu ? 1 : 0);

  // The sensor list: every sensor of a building up to SENSORS_ALL_UNDER of them; past
  // that, a campus's 100,000 are listed only on request (the first 200 by id), and a
  // space's own sensors show with the space.
  let sensorRows = [];
  let sensorsAsked = false;
  async function loadDPUs() {
    const st = state.status;
    const all = !st || st.dpus <= SENSORS_ALL_UNDER;
    const hint = $('dpus-hint');
    if (!all && !sensorsAsked) {
      hint.textContent = fmtInt(st.dpus) + ' in all' + (st.quiet_dpus ? ' · ' + fmtInt(st.quiet_dpus) + ' quiet' : '');
      $('dpu-filter').hidden = true;
      $('dpus').replaceChildren(h('p', { class: 'none' }, 'Too many to list here: open a space to see the sensors on its doorways, or ',
        h('button', { class: 'link', type: 'button', text: 'list the first 200', onclick: () => { sensorsAsked = true; quietly(loadDPUs); } }), '.'));
      return;
    }
    const { body, headers } = await api('/v1/dpus?' + new URLSearchParams({ limit: all ? SENSORS_ALL_UNDER : 200 }));
    body.sort(byQuiet);
    sensorRows = body;
    $('dpu-filter').hidden = false;
    const total = Number(headers.get('X-Total-Count') || body.length);
    const quiet = body.filter((d) => d.quiet).length;
    hint.textContent = (all ? fmtInt(total) : 'the first ' + fmtInt(body.length) + ' of ' + fmtInt(total) + ' by id') + (quiet ? ' · ' + fmtInt(quiet) + ' quiet, listed first' : '');
    paintDPUs();
  }
  function paintDPUs() {
    const f = $('dpu-filter').value.trim().toLowerCase();
    const rows = f ? sensorRows.filter((d) => d.dpu.toLowerCase().includes(f) || (d.doorway || '').toLowerCase().includes(f)) : sensorRows;
    $('dpus').replaceChildren(dpuTable(rows, { where: true, empty: f ? 'No sensor matches.' : 'No sensors configured.' }));
  }
  $('dpu-filter').addEventListener('input', paintDPUs);

  // ---------------------------------------------------------------- rejections

  async function loadRejections() {
    const { body } = await api('/v1/rejections?limit=20');
    const box = $('rejections');
    if (!body.length) { box.replaceChildren(h('p', { class: 'none', text: 'Nothing rejected. Every message so far was an event.' })); return; }
    const now = Date.now();
    const rows = body.map((r) => h('tr', null,
      h('td', { class: 'c-when', title: r.time, text: fmtAge(now - Date.parse(r.time)) }),
      h('td', { class: 'c-reason' }, h('span', { class: 'tag reason', text: r.reason }), r.count > 1 ? h('span', { class: 'sub-line', text: fmtInt(r.count) + ' events' }) : null),
      h('td', { class: 'c-topic' }, h('span', { class: 'mono', text: r.topic || '–' }), r.detail ? h('span', { class: 'sub-line', text: r.detail }) : null),
      h('td', { class: 'c-payload' }, r.payload ? h('details', null, h('summary', { text: 'payload' }), h('pre', { text: r.payload })) : null)));
    box.replaceChildren(h('table', { class: 'stack rej' },
      h('thead', null, h('tr', null, h('th', { text: 'When' }), h('th', { text: 'Reason' }), h('th', { text: 'Topic and detail' }), h('th', { text: 'Payload' }))),
      h('tbody', null, ...rows)));
  }

  // ---------------------------------------------------------------- live stream

  let es = null, streamKey = null, retryTimer = 0, curveTimer = 0;

  // streamFilter: null for every space (a small building), else the ids on screen.
  function streamFilter() {
    const st = state.status;
    if (!st) return undefined;
    if (st.spaces <= STREAM_ALL_UNDER) return null;
    const ids = new Set();
    if (state.selected) ids.add(state.selected);
    for (const li of $('tree').querySelectorAll('li[data-space]')) {
      if (ids.size >= STREAM_MAX_IDS) break;
      if (li.offsetParent !== null) ids.add(li.dataset.space);
    }
    return [...ids].sort();
  }

  let streamDebounce = 0;
  function connectStream() {
    clearTimeout(streamDebounce);
    streamDebounce = setTimeout(openStream, 150);
  }
  function openStream() {
    const f = streamFilter();
    if (f === undefined) return;
    const key = f === null ? '*' : f.join(',');
    if (es && key === streamKey && es.readyState !== EventSource.CLOSED) return;
    if (es) es.close();
    streamKey = key;
    if (f !== null && f.length === 0) { es = null; setLive('off'); return; }
    es = new EventSource('/v1/stream' + (f === null ? '' : '?space=' + f.join(',')));
    es.addEventListener('occupancy', (e) => onOccupancy(JSON.parse(e.data)));
    es.onopen = () => setLive('on');
    es.onerror = () => {
      if (es.readyState === EventSource.CLOSED) {
        // refused (limit, token): try again later, after checking the status
        setLive('retry');
        clearTimeout(retryTimer);
        retryTimer = setTimeout(() => quietly(async () => { await loadStatus(); streamKey = null; openStream(); }), 10000);
      } else setLive('retry'); // the browser reconnects by itself
    };
  }
  function setLive(mode) {
    const l = $('live');
    l.className = 'live' + (mode === 'on' ? ' on' : mode === 'retry' ? ' retry' : '');
    $('live-text').textContent = mode === 'on' ? 'live' : mode === 'retry' ? 'reconnecting' : 'offline';
  }

  function onOccupancy(o) {
    const n = state.nodes.get(o.space);
    if (!n) return;
    const changed = n.occ !== o.occupancy || n.cap !== (o.capacity || 0);
    upsert(o);
    paintRow(n, changed);
    if (state.selected === o.space) {
      paintDetail(n);
      if (changed) { clearTimeout(curveTimer); curveTimer = setTimeout(() => quietly(() => loadCurve(o.space)), 3000); }
    }
  }

  // ---------------------------------------------------------------- start, login

  let noticeTimer = 0;
  function flash(msg) {
    const el = $('notice');
    el.hidden = false;
    el.textContent = msg;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => { if (state.status && state.status.ready) el.hidden = true; }, 8000);
  }

  function needLogin() {
    stop();
    $('login').hidden = false;
    $('gateway').hidden = true;
    for (const el of document.querySelectorAll('.columns, main > section.card:not(#login):not(#gateway)')) el.hidden = true;
    $('ready').className = 'pill pill-wait';
    $('ready').textContent = 'locked';
    $('token').focus();
  }

  $('login-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const err = $('login-error');
    err.hidden = true;
    const token = $('token').value;
    let r;
    try {
      r = await fetch('/v1/session', {
        method: 'POST', credentials: 'same-origin',
        headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ token }),
      });
    } catch (x) {
      err.hidden = false; err.textContent = 'The gateway did not answer: ' + x.message; return;
    }
    if (!r.ok) {
      let msg = 'That token is not the gateway’s.';
      if (r.status !== 401) { try { msg = (await r.json()).error; } catch (_) { msg = r.status + ' ' + r.statusText; } }
      err.hidden = false; err.textContent = msg; return;
    }
    $('token').value = '';
    $('login').hidden = true;
    $('gateway').hidden = false;
    for (const el of document.querySelectorAll('.columns, main > section.card')) if (el.id !== 'login') el.hidden = false;
    start();
  });

  $('signout').addEventListener('click', async () => {
    try { await fetch('/v1/session', { method: 'DELETE', credentials: 'same-origin' }); } catch (_) { /* reload anyway */ }
    location.reload();
  });

  function every(ms, fn) {
    state.timers.push(setInterval(() => { if (!document.hidden) quietly(fn); }, ms));
  }

  function stop() {
    state.started = false;
    for (const t of state.timers) clearInterval(t);
    state.timers = [];
    if (es) { es.close(); es = null; streamKey = null; }
    setLive('off');
  }

  async function start() {
    if (state.started) return;
    state.started = true;
    await quietly(async () => {
      await loadStatus();
      await loadRoots();
      const m = /^#space=(.+)$/.exec(location.hash);
      if (m) await select(decodeURIComponent(m[1]));
      await Promise.all([loadDPUs(), loadRejections()]);
    }, (e) => flash('The gateway did not answer as expected: ' + e.message));
    if (!state.started) return; // login needed
    every(POLL_STATUS, loadStatus);
    every(POLL_LISTS, loadDPUs);
    every(POLL_LISTS, loadRejections);
    every(POLL_CURVE, async () => { if (state.selected) await loadCurve(state.selected); });
    every(POLL_LISTS, async () => { if (state.selected) await loadSpaceDPUs(state.selected); });
  }

  let searchTimer = 0;
  $('search').addEventListener('input', (e) => {
    clearTimeout(searchTimer);
    const q = e.target.value.trim();
    searchTimer = setTimeout(() => quietly(() => search(q), (x) => flash('Search failed: ' + x.message)), 180);
  });
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && state.started) quietly(async () => { await loadStatus(); await Promise.all([loadDPUs(), loadRejections()]); });
  });

  start();
})();
