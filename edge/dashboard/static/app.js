// The reference dashboard: subscribes to {prefix}/# over MQTT on WebSockets (mqtt.js) with the viewer's own
// read-only login, validates every message against the contract's JSON Schemas (Ajv, draft 2020-12), and
// shows per device and camera: status (retained, with the attestation), health, the latest window's counts,
// speeds, near-misses as they arrive, and a rolling chart (uPlot). A message that fails validation is listed
// as a violation and never shown as data; there is no per-object detail to show, and none is drawn.
// Everything is built with textContent: nothing received is ever parsed as HTML.
'use strict';

(function () {
  const CLASSES_FALLBACK = ['car', 'bus', 'truck', 'motorcycle', 'bicycle', 'person'];
  const MAX_PAYLOAD_BYTES = 4096;  // the contract's payload rule (edge.payloads.MAX_PAYLOAD_BYTES)
  const MAX_EVENTS = 50;
  const MAX_LOG = 8;
  const MAX_VIOLATIONS = 50;

  const app = {
    config: null, validators: {}, classes: CLASSES_FALLBACK, client: null, link: 'idle', linkText: 'not connected',
    devices: new Map(), violations: 0, historySource: null, everConnected: false,
  };

  // ------------------------------------------------------------------------------------------ DOM helpers
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined) continue;
      if (key === 'class') node.className = value;
      else if (key === 'text') node.textContent = String(value);
      else node.setAttribute(key, String(value));
    }
    node.append(...nodes(children));
    return node;
  }
  function nodes(children) {  // strings become text nodes (never HTML); null and undefined are left out
    return children.filter((c) => c !== null && c !== undefined)
      .map((c) => (typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c));
  }
  function fill(node, ...children) { node.replaceChildren(...nodes(children)); }
  const $ = (id) => document.getElementById(id);
  const fmt = (x, digits) => (x === null || x === undefined ? '–' : Number(x).toFixed(digits === undefined ? 1 : digits));
  const hhmmss = (d) => d.toISOString().slice(11, 19) + 'Z';
  const kb = (n) => (n / 1024).toFixed(1) + ' KB';
  function ago(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    return s < 120 ? s + ' s' : Math.round(s / 60) + ' min';
  }

  // ------------------------------------------------------------------------------------------ start-up
  async function fetchJson(url) {
    const r = await fetch(url, {cache: 'no-store'});
    if (!r.ok) throw new Error(url + ': HTTP ' + r.status);
    return r.json();
  }

  async function loadSchemas() {
    const ajv = new window.ajv2020({allErrors: true, strict: true});
    for (const [kind, url] of Object.entries(app.config.schemas)) {
      const schema = await fetchJson(url);
      app.validators[kind] = {name: url.split('/').pop(), validate: ajv.compile(schema)};
      if (kind === 'metrics') {
        try {
          app.classes = schema.properties.counts.additionalProperties.additionalProperties.propertyNames.enum;
        } catch (e) { app.classes = CLASSES_FALLBACK; }
      }
    }
  }

  async function loadHistory() {
    const note = $('chart-source');
    const hours = app.config.history.hours;
    if (!app.config.history.archive) {
      note.textContent = 'Rolling chart: windows received since this page was loaded (no archive was given to ' +
        'edge dashboard), up to the last ' + hours + ' h.';
      return;
    }
    const h = await fetchJson('history.json');
    app.historySource = h.source;
    for (const p of h.points) {
      const cam = camera(device(p.device), p.camera);
      cam.points.set(p.t, {t: p.t, crossings: p.crossings, near: p.near_misses, partial: p.partial, archived: true});
    }
    note.textContent = 'Rolling chart: the last ' + hours + ' h from the archive ' + h.source + ' (' + h.points.length +
      ' windows from ' + h.files + ' files' + (h.invalid ? ', ' + h.invalid + ' invalid records left out' : '') +
      '), then live windows.';
    note.setAttribute('data-archive-points', String(h.points.length));
    for (const dev of app.devices.values()) renderDevice(dev);
  }

  async function main() {
    app.config = await fetchJson('config.json');
    $('footer').textContent = 'edge ' + app.config.version + ' · broker ' + app.config.broker_url + ' · topics ' +
      app.config.prefix + '/# · every message checked against contract/schemas (schema_version 2) · ' +
      'vendored: mqtt.js 5.16.0, Ajv 8.17.1, uPlot 1.6.32 (MIT)';
    if (app.config.username) $('username').value = app.config.username;
    await loadSchemas();
    await loadHistory();
    $('login').addEventListener('submit', (ev) => {
      ev.preventDefault();
      connect($('username').value, $('password').value);
      $('password').value = '';  // the page keeps no password; mqtt.js holds it for reconnects only
    });
    $('disconnect').addEventListener('click', disconnect);
    setInterval(() => { for (const dev of app.devices.values()) renderStatus(dev); }, 1000);
    setLink('idle', 'not connected: log in with your dashboard account');
    $('connect').disabled = false;  // only now: the schemas are compiled, every message can be checked
    document.body.setAttribute('data-ready', 'true');
  }

  // ------------------------------------------------------------------------------------------ broker link
  function setLink(state, text) {
    app.link = state;
    app.linkText = text;
    const node = $('link');
    node.setAttribute('data-link', state);
    node.textContent = text;
    for (const dev of app.devices.values()) renderStatus(dev);
  }

  function lostLink(why) {
    // Without the broker nothing is known about any device: not "online" from a stale view, not "offline"
    // either. The retained statuses come back on reconnect, and a device re-announces itself when it is back.
    for (const dev of app.devices.values()) {
      if (dev.status) log(dev, 'unknown', why);
      dev.status = null;
    }
  }

  function connect(username, password) {
    disconnect();
    const id = 'dashboard-' + Math.random().toString(16).slice(2, 10);
    setLink('connecting', 'connecting to ' + app.config.broker_url + ' …');
    const client = window.mqtt.connect(app.config.broker_url, {
      protocolVersion: 5, clientId: id, username, password, clean: true, keepalive: 30,
      reconnectPeriod: Math.round(app.config.reconnect_s * 1000), connectTimeout: 10000, resubscribe: false,
    });
    app.client = client;
    client.on('connect', () => {
      app.everConnected = true;
      for (const dev of app.devices.values()) dev.heardSinceConnect = false;
      setLink('connected', 'connected to ' + app.config.broker_url + ' as ' + username);
      client.subscribe(app.config.prefix + '/#', {qos: 1}, (err, granted) => {
        const refused = err || !granted || granted.some((g) => g.qos >= 128 || (g.reasonCode || 0) >= 128);
        if (refused) setLink('refused', 'the broker refused the subscription to ' + app.config.prefix + '/# (ACL)');
      });
    });
    client.on('reconnect', () => setLink('connecting', 'broker connection lost: reconnecting to ' +
      app.config.broker_url + ' …'));
    client.on('close', () => {
      if (app.link === 'connected') {
        lostLink('broker connection lost');
        setLink('lost', 'broker connection lost: device states unknown until it is back');
      }
    });
    client.on('error', (err) => {
      const code = err && err.code;
      if (code === 134 || code === 135 || code === 4 || code === 5) {
        setLink('refused', 'login refused by the broker: ' + err.message);
        client.end(true);
      } else if (app.link !== 'connected') {
        setLink(app.everConnected ? 'lost' : 'connecting', 'broker: ' + (err && err.message ? err.message : err));
      }
    });
    client.on('message', onMessage);
    $('connect').hidden = true;
    $('disconnect').hidden = false;
  }

  function disconnect() {
    if (!app.client) return;
    const client = app.client;
    app.client = null;
    client.removeAllListeners();
    client.end(true);
    lostLink('disconnected');
    $('connect').hidden = false;
    $('disconnect').hidden = true;
    setLink('idle', 'disconnected');
  }

  // ------------------------------------------------------------------------------------------ messages
  function parseTopic(topic) {
    const pre = app.config.prefix + '/';
    if (!topic.startsWith(pre)) return null;
    const parts = topic.slice(pre.length).split('/');
    if (parts.length === 2 && (parts[1] === 'status' || parts[1] === 'health')) {
      return {device: parts[0], camera: null, kind: parts[1]};
    }
    if (parts.length === 3 && ['metrics', 'speeds', 'events'].includes(parts[2])) {
      return {device: parts[0], camera: parts[1], kind: parts[2]};
    }
    return null;
  }

  function describe(errors) {
    // Where and which rule, never the offending value: a value may be exactly what must not be shown.
    return (errors || []).slice(0, 6).map((e) => {
      let text = (e.instancePath || '(top level)') + ' ' + e.message;
      if (e.params && e.params.additionalProperty) text += ': ' + String(e.params.additionalProperty).slice(0, 40);
      return text;
    });
  }

  function violation(topic, schema, problems) {
    app.violations += 1;
    const box = $('violations');
    box.hidden = false;
    $('violation-count').textContent = String(app.violations);
    const list = $('violation-list');
    list.prepend(el('li', {'data-topic': topic}, hhmmss(new Date()) + ' ' + topic + (schema ? ' (' + schema + ')' : '') +
      ': ' + problems.join('; ')));
    while (list.children.length > MAX_VIOLATIONS) list.lastChild.remove();
  }

  function decode(topic, payload, where) {
    if (payload.length > MAX_PAYLOAD_BYTES) {
      violation(topic, where.name, [payload.length + ' bytes, over the contract\'s 4 KB payload rule']);
      return undefined;
    }
    let data;
    try {
      data = JSON.parse(new TextDecoder('utf-8', {fatal: true}).decode(payload));
    } catch (e) {
      violation(topic, where.name, ['not a UTF-8 JSON document']);
      return undefined;
    }
    if (!where.validate(data)) {
      violation(topic, where.name, describe(where.validate.errors));
      return undefined;
    }
    return data;
  }

  function onMessage(topic, payload, packet) {
    const t = parseTopic(topic);
    if (!t) {
      violation(topic, null, ['not a topic of the contract']);
      return;
    }
    const dev = device(t.device);
    if (t.kind === 'status' && payload.length === 0) {  // a cleared retained status
      dev.status = null;
      log(dev, 'unknown', 'retained status cleared');
      renderDevice(dev);
      return;
    }
    const data = decode(topic, payload, app.validators[t.kind]);
    if (data === undefined) return;
    if (data.device !== t.device || (t.camera !== null && data.camera !== t.camera)) {
      violation(topic, app.validators[t.kind].name, ['the payload names another device or camera than its topic']);
      return;
    }
    if (!packet.retain) {
      dev.lastHeard = Date.now();
      dev.heardSinceConnect = true;  // the device itself spoke on this connection: its status is current
    }
    const handler = {status: onStatus, health: onHealth, metrics: onMetrics, speeds: onSpeeds, events: onEvent}[t.kind];
    handler(dev, data, packet.retain, t.camera);
    renderDevice(dev);
  }

  function onStatus(dev, msg, retained) {
    dev.status = {state: msg.state, retained, at: new Date()};
    if (msg.attestation) dev.attestation = msg.attestation;
    else if (msg.state === 'online') dev.attestation = null;  // an online without one (e.g. a replay)
    log(dev, msg.state, retained ? 'retained status' : 'announced live');
  }

  function onHealth(dev, msg) {
    dev.health = msg;
    for (const [name, h] of Object.entries(msg.cameras || {})) camera(dev, name).health = h;
  }

  function onMetrics(dev, msg, retained, cameraName) {
    const cam = camera(dev, cameraName);
    const t = Date.parse(msg.window_start) / 1000;
    if (!cam.metrics || t >= Date.parse(cam.metrics.window_start) / 1000) cam.metrics = msg;
    let crossings = 0;
    for (const perDir of Object.values(msg.counts)) {
      for (const perClass of Object.values(perDir)) for (const n of Object.values(perClass)) crossings += n;
    }
    let near = null;
    if (msg.conflicts) {
      near = 0;
      for (const bySeverity of Object.values(msg.conflicts.by_type)) for (const n of Object.values(bySeverity)) near += n;
    }
    cam.points.set(t, {t, crossings, near, partial: msg.partial, archived: false});
  }

  function onSpeeds(dev, msg, retained, cameraName) {
    const cam = camera(dev, cameraName);
    const old = cam.speeds.get(msg.line);
    if (!old || Date.parse(msg.window_start) >= Date.parse(old.window_start)) cam.speeds.set(msg.line, msg);
  }

  function onEvent(dev, msg, retained, cameraName) {
    const cam = camera(dev, cameraName);
    if (cam.events.some((e) => e.msg_id === msg.msg_id)) return;  // a duplicate delivery
    cam.events.unshift(msg);
    cam.events.sort((a, b) => Date.parse(b.time) - Date.parse(a.time));
    cam.events.length = Math.min(cam.events.length, MAX_EVENTS);
  }

  // ------------------------------------------------------------------------------------------ model
  function device(id) {
    let dev = app.devices.get(id);
    if (!dev) {
      dev = {id, status: null, attestation: undefined, log: [], lastHeard: null, heardSinceConnect: false, health: null,
        cameras: new Map()};
      dev.node = buildDevice(dev);
      app.devices.set(id, dev);
      const main = $('devices');
      $('no-devices').hidden = true;
      const after = [...main.querySelectorAll('.device')].find((n) => n.getAttribute('data-device') > id);
      main.insertBefore(dev.node.root, after || null);
    }
    return dev;
  }

  function camera(dev, name) {
    let cam = dev.cameras.get(name);
    if (!cam) {
      cam = {name, metrics: null, speeds: new Map(), events: [], points: new Map(), health: null, chart: null};
      cam.node = buildCamera(cam);
      dev.cameras.set(name, cam);
      const box = dev.node.cameras;
      const after = [...box.children].find((n) => n.getAttribute('data-camera') > name);
      box.insertBefore(cam.node.root, after || null);
    }
    return cam;
  }

  function log(dev, state, how) {
    dev.log.unshift({at: new Date(), state, how});
    dev.log.length = Math.min(dev.log.length, MAX_LOG);
  }

  function shownState(dev) {
    if (app.link !== 'connected') return ['unknown', 'unknown: no broker connection'];
    if (!dev.status) return ['unknown', 'unknown: no status received'];
    if (dev.status.state !== 'online') return ['offline', 'offline'];
    const last = Math.max(dev.lastHeard || 0, dev.status.at.getTime());
    if (Date.now() - last > app.config.stale_after_s * 1000) return ['silent', 'online, but silent for ' + ago(Date.now() - last)];
    return ['online', 'online'];
  }

  // ------------------------------------------------------------------------------------------ rendering
  function buildDevice(dev) {
    const n = {
      badge: el('span', {class: 'badge', 'data-testid': 'state'}), since: el('span', {class: 'since'}),
      heard: el('span', {class: 'heard'}), attestation: el('div', {class: 'attestation'}),
      health: el('div', {class: 'health'}), log: el('ol', {class: 'status-log'}), cameras: el('div', {class: 'cameras'}),
    };
    n.root = el('section', {class: 'device', 'data-device': dev.id},
      el('header', {}, el('h2', {text: dev.id}), n.badge, n.since, n.heard), n.attestation, n.health, n.log, n.cameras);
    return n;
  }

  function buildCamera(cam) {
    const n = {
      window: el('div', {class: 'window'}), counts: el('div', {class: 'counts-box'}), movements: el('div'),
      conflicts: el('div', {class: 'conflicts'}), speeds: el('div', {class: 'speeds-box'}),
      events: el('ol', {class: 'events'}), chart: el('div', {class: 'chart'}), health: el('div', {class: 'camhealth'}),
    };
    n.root = el('article', {class: 'camera', 'data-camera': cam.name}, el('h3', {text: 'camera ' + cam.name}), n.health,
      n.window, n.counts, n.movements, n.conflicts, n.speeds, el('h3', {text: 'near-misses'}), n.events, n.chart);
    return n;
  }

  function renderDevice(dev) {
    renderStatus(dev);
    renderAttestation(dev);
    renderHealth(dev);
    for (const cam of dev.cameras.values()) renderCamera(cam);
  }

  function renderStatus(dev) {
    const [state, text] = shownState(dev);
    const n = dev.node;
    n.root.setAttribute('data-state', state);
    n.badge.setAttribute('data-state', state);
    n.badge.textContent = text;
    // A retained status is what the broker holds, maybe from before a broker restart: it is confirmed once the
    // device sends anything on this connection (a device sends its health right after every connect).
    const s = dev.status;
    const source = !s ? 'none' : !s.retained ? 'live' : dev.heardSinceConnect ? 'confirmed' : 'retained';
    n.since.textContent = {none: '', live: '(' + (s && s.state) + ' announced live at ' + (s && hhmmss(s.at)) + ')',
      confirmed: '(retained status, confirmed by a message from the device since connecting)',
      retained: '(retained status, as the broker holds it; nothing heard from the device since connecting)'}[source];
    n.since.setAttribute('data-source', source);
    n.heard.textContent = dev.lastHeard ? 'last message ' + ago(Date.now() - dev.lastHeard) + ' ago' : '';
    fill(n.log, ...dev.log.map((e) => el('li', {'data-state': e.state}, hhmmss(e.at) + ' ' + e.state + ' (' + e.how + ')')));
  }

  function renderAttestation(dev) {
    const node = dev.node.attestation;
    const a = dev.attestation;
    if (a === undefined) { fill(node); return; }
    if (a === null) {
      fill(node, 'No attestation in the online status (a replay publishes none; a device always does).');
      return;
    }
    const l = a.effective_limits || {};
    const failed = (a.checks || []).filter((c) => !c.ok).map((c) => c.name);
    fill(node,
      el('strong', {}, 'Attestation: '), 'protocol ', el('span', {'data-testid': 'protocol'}, a.protocol.id),
      ' v' + a.protocol.version + ' · edge ' + a.software.version + ' · model ' + a.model.name + ' · checks ',
      failed.length ? el('span', {class: 'failed'}, 'FAILED: ' + failed.join(', ')) : el('span', {class: 'ok'}, 'all passed'),
      el('br'), 'effective limits: window ' + l.window_s + ' s · audio ' + (l.audio ? 'ON' : 'off') + ' · per-object output ' +
      (l.per_object_output ? 'ON' : 'off') + ' · clips ' + (l.clips_enabled ? 'on' : 'off') + ' (≤ ' + l.max_clip_s +
      ' s each, ' + l.clip_budget_s_per_hour + ' s/h, ' + l.clip_budget_s_per_day + ' s/day, kept ≤ ' + l.retention_days +
      ' days, ' + (l.encrypted_at_rest ? 'encrypted' : 'not encrypted') + ')');
    node.setAttribute('data-limits', JSON.stringify({window_s: l.window_s, max_clip_s: l.max_clip_s,
      retention_days: l.retention_days}));
  }

  function sumKinds(...maps) {
    let n = 0;
    for (const m of maps) for (const v of Object.values(m || {})) n += v;
    return n;
  }

  function renderHealth(dev) {
    const h = dev.health;
    if (!h) { fill(dev.node.health); return; }
    const o = h.outbox, q = h.mqtt;
    fill(dev.node.health,
      el('strong', {}, 'Health '), hhmmss(new Date(h.time)) + ': outbox ',
      el('span', {'data-testid': 'outbox-depth'}, String(o.depth)), ' waiting (' + kb(o.size_bytes) + ' of ' + kb(o.max_bytes) +
      ', oldest ' + fmt(o.oldest_age_s) + ' s), dropped ' + sumKinds(o.dropped_full, o.dropped_ttl, o.dropped_error) +
      ', refused ' + sumKinds(o.rejected) + ' · MQTT sent ' + q.published + ', acked ' + q.acked + ', errors ' + q.errors +
      ', reconnects ', el('span', {'data-testid': 'reconnects'}, String(q.reconnects)), (q.too_large ? ', too large ' + q.too_large : '') +
      (h.cpu_temp_c !== undefined ? ' · CPU ' + fmt(h.cpu_temp_c) + ' °C' : ''),
      h.alarm ? el('div', {class: 'alarm'}, 'alarm: ' + h.alarm) : null);
  }

  function renderCamera(cam) {
    renderCameraHealth(cam);
    renderWindow(cam);
    renderSpeeds(cam);
    renderEvents(cam);
    renderChart(cam);
  }

  function renderCameraHealth(cam) {
    const h = cam.health;
    if (!h) { fill(cam.node.health); return; }
    fill(cam.node.health, el('strong', {}, 'Camera '), el('span', {'data-testid': 'camera-state'}, h.state),
      ' · fps in ', el('span', {'data-testid': 'fps'}, fmt(h.fps_in)), ' / processed ' + fmt(h.fps_out) + ' · frames ' +
      h.frames + ' · drops ', el('span', {'data-testid': 'drops'}, String(h.dropped_frames)), ' · decode errors ' +
      h.decode_errors + ' · restarts ' + h.restarts + (h.frame_age_s !== undefined ? ' · last frame ' + fmt(h.frame_age_s) +
      ' s ago' : '') + ' · clips written ' + h.clips_written + ', dropped ' + h.clips_dropped + ' (budget ' +
      h.clips_dropped_budget + '), ' + fmt(h.clip_s_last_hour, 0) + ' s this hour, ' + fmt(h.clip_s_last_day, 0) +
      ' s today · clip store ', el('span', {'data-testid': 'clip-store'}, kb(h.clip_store_bytes)));
  }

  function countsTable(counts) {
    const head = el('tr', {}, el('th', {}, 'line'), el('th', {}, 'direction'), ...app.classes.map((c) => el('th', {}, c)),
      el('th', {}, 'total'));
    const rows = [];
    for (const [line, perDir] of Object.entries(counts)) {
      for (const [dir, perClass] of Object.entries(perDir)) {
        let total = 0;
        const cells = app.classes.map((c) => {
          const n = perClass[c] || 0;
          total += n;
          return el('td', {'data-class': c}, String(n));
        });
        rows.push(el('tr', {'data-line': line, 'data-direction': dir}, el('td', {}, line), el('td', {}, dir), ...cells,
          el('td', {class: 'total'}, String(total))));
      }
    }
    if (!rows.length) return el('p', {class: 'empty'}, 'no counting lines on this camera');
    return el('table', {class: 'counts'}, el('thead', {}, head), el('tbody', {}, ...rows));
  }

  function movementsTable(movements) {
    if (!movements) return el('span');
    const rows = Object.entries(movements).map(([name, perClass]) => el('tr', {'data-movement': name},
      el('td', {}, name), el('td', {}, app.classes.filter((c) => perClass[c]).map((c) => c + ' ' + perClass[c]).join(', '))));
    return el('table', {class: 'movements'}, el('thead', {}, el('tr', {}, el('th', {}, 'turning movement'),
      el('th', {}, 'by class'))), el('tbody', {}, ...rows));
  }

  function renderWindow(cam) {
    const m = cam.metrics;
    const n = cam.node;
    if (!m) { fill(n.window, 'no window received yet'); return; }
    const h = m.health;
    fill(n.window, el('strong', {}, 'Latest window '), el('span', {'data-testid': 'window-start'}, m.window_start),
      ' · ' + m.window_s + ' s' + (m.partial ? ' (partial: the stream ended)' : '') + ' · ' + h.frames + ' frames, ' +
      fmt(h.fps) + ' fps, ' + h.dropped_frames + ' dropped' + (h.clips_started !== undefined ? ' · clips started ' +
      h.clips_started + ', refused by budget ' + h.clips_dropped_budget : ''));
    n.window.setAttribute('data-window-start', m.window_start);
    fill(n.counts, countsTable(m.counts));
    fill(n.movements, movementsTable(m.movements));
    const c = m.conflicts;
    if (!c) { fill(n.conflicts); return; }
    const parts = Object.entries(c.by_type).map(([type, bySev]) => type + ' ' + Object.entries(bySev).filter(([, v]) => v)
      .map(([sev, v]) => v + ' ' + sev).join(', ')).filter((s) => /\d/.test(s));
    fill(n.conflicts, el('strong', {}, 'Near-misses in the window: '), parts.length ? parts.join(' · ') : 'none',
      ' · vulnerable ' + c.vulnerable + ' · ' + c.vehicles_entering + ' vehicles entering' +
      (c.per_1000_vehicles !== undefined ? ' · ' + fmt(c.per_1000_vehicles) + ' per 1,000' : ''));
  }

  function renderSpeeds(cam) {
    const rows = [];
    for (const rec of [...cam.speeds.values()].sort((a, b) => a.line.localeCompare(b.line))) {
      for (const [dir, perClass] of Object.entries(rec.speeds)) {
        for (const [cls, s] of Object.entries(perClass)) {
          const over = s.p85_kmh !== undefined && s.p85_kmh > rec.speed_limit_kmh;
          rows.push(el('tr', {'data-line': rec.line, 'data-direction': dir, 'data-class': cls}, el('td', {}, rec.line),
            el('td', {}, dir), el('td', {}, cls), el('td', {}, String(s.count)), el('td', {}, String(s.unmeasured)),
            el('td', {}, fmt(s.mean_kmh)), el('td', {}, fmt(s.p50_kmh)),
            el('td', {class: over ? 'over' : '', title: s.p85_kmh === undefined ? 'withheld below the published minimum' : null},
              fmt(s.p85_kmh)), el('td', {}, fmt(rec.speed_limit_kmh, 0)), el('td', {}, String(s.over_limit))));
        }
      }
    }
    if (!rows.length) { fill(cam.node.speeds); return; }
    const head = ['line', 'direction', 'class', 'measured', 'unmeasured', 'mean km/h', 'p50', 'p85 km/h', 'limit', 'over limit'];
    fill(cam.node.speeds, el('table', {class: 'speeds'}, el('thead', {}, el('tr', {}, ...head.map((x) => el('th', {}, x)))),
      el('tbody', {}, ...rows)));
  }

  function renderEvents(cam) {
    if (!cam.events.length) { fill(cam.node.events, el('li', {class: 'empty'}, 'none so far')); return; }
    fill(cam.node.events, ...cam.events.map((e) => el('li', {'data-msg-id': e.msg_id, 'data-type': e.conflict_type},
      el('span', {class: e.severity}, e.severity + ' ' + e.conflict_type.replace('_', '-') + (e.collision ? ' COLLISION' : '')),
      ' ' + e.time + ' · ' + e.road_users.join(' / ') + (e.vulnerable ? ' (vulnerable road user)' : '') +
      ' · TTC ' + fmt(e.ttc_s, 2) + ' s · PET ' + fmt(e.pet_s, 2) + ' s · DRAC ' + fmt(e.drac_mps2) + ' m/s² · speeds ' +
      e.speeds_mps.map((v) => fmt(v * 3.6, 0)).join(' / ') + ' km/h · at (' + e.location_m.join(', ') + ') m' +
      (e.clip ? ' · clip ' + e.clip : ''))));
  }

  function chartData(cam) {
    const all = [...cam.points.values()].sort((a, b) => a.t - b.t);
    if (!all.length) return null;
    const hi = all[all.length - 1].t;
    const lo = hi - app.config.history.hours * 3600;
    const pts = all.filter((p) => p.t >= lo);
    cam.xRange = [lo, hi + 60];  // the last hours up to the newest window, however few windows there are yet
    return [pts.map((p) => p.t), pts.map((p) => p.crossings), pts.map((p) => p.near)];
  }

  function renderChart(cam) {
    const data = chartData(cam);
    if (!data) return;
    cam.node.chart.setAttribute('data-points', String(data[0].length));
    if (cam.chart) { cam.chart.setData(data); return; }
    cam.chart = new window.uPlot({
      title: 'crossings and near-misses per window, last ' + app.config.history.hours + ' h', width: 540, height: 170,
      scales: {x: {time: true, range: () => cam.xRange}},
      series: [{label: 'window (UTC)'},
        {label: 'crossings', stroke: '#2563eb', width: 2, points: {show: true, size: 8, fill: '#2563eb'}},
        {label: 'near-misses', stroke: '#dc2626', width: 2, points: {show: true, size: 8, fill: '#dc2626'}}],
      tzDate: (ts) => window.uPlot.tzDate(new Date(ts * 1000), 'Etc/UTC'),
    }, data, cam.node.chart);
  }

  main().catch((err) => setLink('refused', 'the dashboard could not start: ' + err.message));
})();
