// lunabase views inside Open MCT: what it lacks for running a base. Plain DOM, no build
// step; every string from the ground goes in through textContent (never innerHTML).

// what each role may do, as the ground's role table says (ground/auth/roles.py); used only when
// /api/auth/me gives no privilege list. Display only: the ground checks every request itself.
const ROLE_PRIVILEGES = {
  viewer: ['read'],
  operator: ['read', 'alarms.manage', 'command', 'displays.manage'],
  commander: ['read', 'alarms.manage', 'command', 'command.hazardous', 'command.approve', 'command.cancel_any',
    'displays.manage'],
  admin: ['read', 'accounts.manage', 'links.manage', 'archive.manage', 'displays.manage']
};

/** May this user do ``privilege``? (A ground without accounts allows everything.) */
export function can(me, privilege) {
  if (!me || me.anonymous) {
    return Boolean(me);
  }
  const privs = me.privileges && me.privileges.length ? me.privileges
    : (me.roles || []).flatMap((r) => ROLE_PRIVILEGES[r] || []);
  return privs.includes(privilege);
}

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) {
      continue;
    }
    if (k === 'class') {
      el.className = v;
    } else if (k.startsWith('on')) {
      el.addEventListener(k.slice(2), v);
    } else if (k === 'dataset') {
      Object.assign(el.dataset, v);
    } else {
      el.setAttribute(k, v === true ? '' : v);
    }
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) {
      continue;
    }
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function fmt(v, digits = 2) {
  if (v === null || v === undefined) {
    return '—';
  }
  if (typeof v === 'number') {
    return Number.isInteger(v) ? String(v) : v.toFixed(digits);
  }
  return String(v);
}

function utc(t) {
  if (!t) {
    return '—';
  }
  return new Date(t * 1000).toISOString().replace('T', ' ').slice(0, 19) + 'Z';
}

function ago(t) {
  if (!t) {
    return '—';
  }
  const s = Math.max(0, Date.now() / 1000 - t);
  return s < 90 ? `${s.toFixed(0)} s ago` : s < 5400 ? `${(s / 60).toFixed(0)} min ago` : `${(s / 3600).toFixed(1)} h ago`;
}

function simpleView(key, name, cssClass, type, make) {
  return {
    key,
    name,
    cssClass,
    canView: (d) => d.type === type,
    view(d) {
      let inst = null;
      return {
        show(el) {
          inst = make(el, d);
        },
        destroy() {
          if (inst && inst.destroy) {
            inst.destroy();
          }
        }
      };
    },
    priority: () => 100
  };
}

export function installViews(openmct, ground, state, ready, helpers) {
  const views = [
    simpleView('lunabase.overview', 'Node overview', 'icon-dataset', 'lunabase.overview',
      (el) => overview(el, ground, state, ready)),
    simpleView('lunabase.commander', 'Command sender', 'icon-activity', 'lunabase.commander',
      (el) => commander(el, ground, state, ready, openmct)),
    simpleView('lunabase.events', 'Event log', 'icon-list-view', 'lunabase.events',
      (el) => events(el, ground, state, ready)),
    simpleView('lunabase.links', 'Links', 'icon-connectivity', 'lunabase.links', (el) => links(el, ground, ready)),
    simpleView('lunabase.seismic', 'Seismic waveform', 'icon-plot-overlay', 'lunabase.seismic',
      (el, d) => seismic(el, ground, d.lunabase.node, openmct))
  ];
  for (const v of views) {
    openmct.objectViews.addProvider(v);
  }
}

// -- node overview (the landing page) ----------------------------------------------------

const STATE_HELP = {
  ONLINE: 'sending telemetry',
  ASLEEP: 'announced sleep; expected back at its next contact (not a fault)',
  STALE: 'should be sending, silent for a few HK periods',
  LOST: 'silent far too long, missed its contact, or its last will arrived',
  UNKNOWN: 'nothing heard yet'
};

function overview(el, ground, state, ready) {
  const root = h('div', { class: 'lb-view lb-overview' });
  el.append(root);
  const render = () => {
    const nodes = [...ground.nodes.values()].sort((a, b) => a.node.localeCompare(b.node));
    const rows = nodes.map((n) => h('tr', { class: `lb-node lb-state-${n.state}`, dataset: { node: n.node } },
      h('td', { class: 'lb-node-name' }, n.node),
      h('td', { class: `lb-state lb-state-${n.state}`, title: STATE_HELP[n.state] || '' }, n.state),
      h('td', {}, n.mode || '—'),
      h('td', {}, n.next_contact ? utc(n.next_contact) : '—'),
      h('td', {}, fmt(n.soc, 1), n.soc !== null && n.soc !== undefined ? ' %' : ''),
      h('td', {}, fmt(n.battery_voltage, 3), n.battery_voltage ? ' V' : ''),
      h('td', {}, fmt(n.battery_temp, 1)),
      h('td', {}, fmt(n.electronics_temp, 1)),
      h('td', {}, fmt(n.surface_temp, 1)),
      h('td', { class: `lb-limit lb-limit-${n.limit_state}` }, n.limit_state || 'ok'),
      h('td', {}, String(n.alarms ?? 0)),
      h('td', {}, ago(n.last_contact)),
      h('td', { class: 'lb-reason' }, n.reason || '')));
    root.replaceChildren(
      h('h2', {}, `Site ${state.site}: ${nodes.length} nodes`),
      h('p', { class: 'lb-conn' }, `Ground ${ground.state}`),
      h('table', { class: 'lb-table' },
        h('thead', {}, h('tr', {}, ['Node', 'State', 'Mode', 'Next contact (UTC)', 'Battery', 'Voltage',
          'Batt °C', 'Elec °C', 'Surface °C', 'Limits', 'Alarms', 'Last contact', 'Why'].map((t) => h('th', {}, t)))),
        h('tbody', {}, rows)),
      h('p', { class: 'lb-help' }, 'ASLEEP: the node said when it will be back; STALE: late; LOST: gone. ',
        'Open a node in the tree for its packets and plots.'));
  };
  let pending = false;
  const soon = () => {
    if (!pending) {
      pending = true;
      setTimeout(() => {
        pending = false;
        render();
      }, 250);
    }
  };
  const offs = ['node', 'snapshot', 'state'].map((t) => ground.on(t, soon));
  const timer = setInterval(render, 2000);
  ready.then(render);
  return { destroy: () => { offs.forEach((f) => f()); clearInterval(timer); } };
}

// -- command sender --------------------------------------------------------------------

const INT_RANGES = { u8: [0, 255], u16: [0, 65535], u32: [0, 4294967295], i8: [-128, 127], i16: [-32768, 32767],
  i32: [-2147483648, 2147483647] };

/** Validates one argument as the ground does (wire.dictionary pack_args): type range, min/max, enum. */
export function checkArg(a, raw) {
  if (raw === '' || raw === undefined || raw === null) {
    return { error: `${a.name} is required` };
  }
  const v = Number(raw);
  if (!Number.isFinite(v)) {
    return { error: `${a.name}: not a number` };
  }
  const base = String(a.type);
  const r = INT_RANGES[base];
  if (r) {
    if (!Number.isInteger(v)) {
      return { error: `${a.name}: an integer is expected` };
    }
    if (v < r[0] || v > r[1]) {
      return { error: `${a.name}=${v} does not fit ${base} (${r[0]}..${r[1]})` };
    }
  }
  if (a.min !== null && a.min !== undefined && v < a.min) {
    return { error: `${a.name}=${v} is below its minimum ${a.min}` };
  }
  if (a.max !== null && a.max !== undefined && v > a.max) {
    return { error: `${a.name}=${v} is above its maximum ${a.max}` };
  }
  if (a.enum && !(String(v) in a.enum)) {
    return { error: `${a.name}=${v} is not one of ${Object.values(a.enum).join(', ')}` };
  }
  return { value: v };
}

/** True when command row ``a`` is an older state of the same command than ``b``: its history
 * (which only grows) is shorter, or as long and last updated earlier. */
export function isOlder(a, b) {
  const na = (a.history || []).length;
  const nb = (b.history || []).length;
  return na < nb || (na === nb && (a.updated || 0) < (b.updated || 0));
}

function stagesOf(c) {
  return (c.history || []).map(([stage, t, reason]) => h('span', { class: `lb-stage lb-stage-${stage}`,
    title: `${utc(t)}${reason ? `: ${reason}` : ''}` }, stage));
}

function commander(el, ground, state, ready, openmct) {
  const me = state.me;
  const mayCommand = can(me, 'command');
  const mayHazard = can(me, 'command.hazardous');
  const mayApprove = can(me, 'command.approve');
  const root = h('div', { class: 'lb-view lb-commander' });
  el.append(root);
  const history = new Map();
  const histBody = h('tbody', {});
  const status = h('div', { class: 'lb-cmd-status', role: 'status' });
  const err = h('div', { class: 'lb-cmd-error', role: 'alert' });
  const renderHistory = () => {
    const rows = [...history.values()].sort((a, b) => b.id - a.id).slice(0, 100);
    histBody.replaceChildren(...rows.map((c) => h('tr', { class: `lb-cmd-row lb-cmd-${c.stage}`, dataset: { id: c.id } },
      h('td', {}, `#${c.id}`), h('td', {}, utc(c.submitted)), h('td', {}, c.node), h('td', {}, c.command),
      h('td', {}, JSON.stringify(c.args || {})), h('td', {}, c.user || ''),
      h('td', { class: 'lb-cmd-stage' }, c.stage), h('td', {}, stagesOf(c)), h('td', { class: 'lb-cmd-reason' }, c.reason || ''),
      h('td', {}, actions(c)))));
  };
  const act = async (c, verb) => {
    try {
      await ground.post(`/api/commands/${c.id}/${verb}`, {});
    } catch (e) {
      status.textContent = `#${c.id} ${verb} refused by the ground: ${e.reason || e.message}`;
    }
  };
  // controls the role may not use are not shown (the ground refuses them anyway)
  function actions(c) {
    const out = [];
    if (mayCommand) {
      out.push(h('button', { class: 'lb-resend', title: 'Fill the form with this command', onclick: () => fill(c) },
        'Edit / resend'));
    }
    if (c.stage === 'AWAITING_APPROVAL' && mayApprove && c.user !== me.name) {
      out.push(h('button', { class: 'lb-approve', onclick: () => act(c, 'approve') }, 'Approve'),
        h('button', { class: 'lb-deny', onclick: () => act(c, 'deny') }, 'Deny'));
    }
    if ((c.stage === 'QUEUED' || c.stage === 'HELD' || c.stage === 'AWAITING_APPROVAL') && mayCommand &&
      (c.user === me.name || can(me, 'command.cancel_any') || me.anonymous)) {
      out.push(h('button', { class: 'lb-cancel-cmd', onclick: () => act(c, 'cancel') }, 'Cancel'));
    }
    return out;
  }
  let fill = () => {};
  let current = null;
  // A command row reaches this view three ways: the WebSocket push of every change, the
  // POST /api/commands answer and GET /api/commands.  They race: a fast node's ACCEPTED and
  // EXECUTED pushes can arrive before the POST answer, which holds the row as it was at
  // release (SENT).  The newest row wins (a row's history only grows), never the last to
  // arrive.  -> the row kept.
  const remember = (c) => {
    const had = history.get(c.id);
    if (had && isOlder(c, had)) {
      return had;
    }
    history.set(c.id, c);
    return c;
  };
  const offCommand = ground.on('command', (c) => {
    const row = remember(c);
    renderHistory();
    if (current && row.id === current) {
      showStatus(row);
    }
  });
  // a resync means the ground dropped pushes meant for this page (command changes among
  // them): ask for the rows again
  const offResync = ground.on('resync', () => refetch());
  async function refetch() {
    try {
      for (const c of await ground.get('/api/commands?limit=100')) {
        remember(c);
      }
    } catch (e) {
      err.textContent = `Command history: ${e.reason || e.message}`;
      return;
    }
    renderHistory();
    if (current && history.has(current)) {
      showStatus(history.get(current));
    }
  }
  const off = () => {
    offCommand();
    offResync();
  };
  function showStatus(c) {
    status.className = `lb-cmd-status lb-cmd-${c.stage}`;
    status.replaceChildren(h('b', {}, `#${c.id} ${c.node} ${c.command}: `), h('span', { class: 'lb-cmd-stage' }, c.stage),
      ' ', ...stagesOf(c), c.reason ? h('span', { class: 'lb-cmd-reason' }, ` ${c.reason}`) : '');
  }

  ready.then(async () => {
    const cmds = state.dictionary.commands;
    const nodeSel = h('select', { class: 'lb-cmd-node', name: 'node' }, state.nodes.map((n) => h('option', { value: n }, n)));
    const cmdSel = h('select', { class: 'lb-cmd-command', name: 'command' }, cmds.map((c) => h('option', {
      value: c.name, disabled: c.hazardous && !mayHazard }, c.name + (c.hazardous ? ' (hazardous)' : '') +
      (c.hazardous && !mayHazard ? ' - needs commander' : ''))));
    const argBox = h('div', { class: 'lb-cmd-args' });
    const desc = h('p', { class: 'lb-cmd-desc' });
    const confirmBox = h('div', { class: 'lb-cmd-confirm', hidden: true });
    const send = h('button', { class: 'lb-send c-button c-button--major', type: 'button' }, 'Send');
    // validity window (seconds from now): held by the ground until not-before, expired after not-after
    const notBefore = h('input', { class: 'lb-not-before', type: 'number', min: 0, step: 'any', placeholder: 'now' });
    const notAfter = h('input', { class: 'lb-not-after', type: 'number', min: 0, step: 'any', placeholder: 'never' });
    const windowRow = h('div', { class: 'lb-cmd-window' }, h('label', {}, 'Release in (s) ', notBefore),
      h('label', {}, 'Expire in (s) ', notAfter));
    let inputs = {};
    const cmdDef = () => cmds.find((c) => c.name === cmdSel.value);
    const renderArgs = () => {
      const c = cmdDef();
      desc.textContent = `${c.description || ''}${c.hazardous ? ' HAZARDOUS: needs confirmation.' : ''}`;
      inputs = {};
      argBox.replaceChildren(...c.args.map((a) => {
        let inp;
        if (a.enum) {
          inp = h('select', { name: a.name, class: 'lb-arg' }, Object.entries(a.enum).map(([v, s]) => h('option', { value: v }, s)));
        } else {
          inp = h('input', { name: a.name, class: 'lb-arg', type: 'number', step: 'any', min: a.min ?? undefined,
            max: a.max ?? undefined, placeholder: c.name === 'TIME_SYNC' ? 'empty: ground time at release' : a.type });
        }
        inputs[a.name] = inp;
        return h('label', { class: 'lb-arg-row' }, h('span', {}, a.name), inp,
          h('small', {}, [a.unit, a.min !== null && a.min !== undefined ? `min ${a.min}` : '', a.max !== null && a.max !== undefined ? `max ${a.max}` : '', a.description]
            .filter(Boolean).join(' · ')));
      }));
      err.textContent = '';
      confirmBox.hidden = true;
    };
    fill = (c) => {
      nodeSel.value = c.node;
      cmdSel.value = c.command;
      renderArgs();
      for (const [k, v] of Object.entries(c.args || {})) {
        if (inputs[k]) {
          inputs[k].value = v;
        }
      }
    };
    cmdSel.addEventListener('change', renderArgs);
    const collect = () => {
      const c = cmdDef();
      const args = {};
      const errors = [];
      const blankOk = c.name === 'TIME_SYNC' && c.args.every((a) => inputs[a.name].value === '');
      if (!blankOk) {
        for (const a of c.args) {
          const res = checkArg(a, inputs[a.name].value);
          if (res.error) {
            errors.push(res.error);
          } else {
            args[a.name] = res.value;
          }
        }
      }
      return { c, args, errors };
    };
    const submit = async (confirm) => {
      const { c, args, errors } = collect();
      if (errors.length) {
        err.textContent = errors.join('; ');
        return;
      }
      err.textContent = '';
      send.disabled = true;
      try {
        const body = { node: nodeSel.value, command: c.name, args, confirm };
        const now = Date.now() / 1000;
        if (notBefore.value !== '') {
          body.not_before = now + Number(notBefore.value);
        }
        if (notAfter.value !== '') {
          body.not_after = now + Number(notAfter.value);
        }
        const row = remember(await ground.post('/api/commands', body));
        current = row.id;
        renderHistory();
        showStatus(row);
        confirmBox.hidden = true;
      } catch (e) {
        // the ground's own words: what it refused and why
        err.textContent = `Refused by the ground: ${e.reason || e.message}`;
      } finally {
        send.disabled = false;
      }
    };
    send.addEventListener('click', () => {
      const { c, errors } = collect();
      if (errors.length) {
        err.textContent = errors.join('; ');
        return;
      }
      if (c.hazardous) {
        confirmBox.hidden = false;
        confirmBox.replaceChildren(
          h('p', {}, `${c.name} on ${nodeSel.value} is hazardous. Send it?`),
          h('button', { class: 'lb-confirm c-button c-button--major', type: 'button', onclick: () => submit(true) },
            `Confirm ${c.name}`),
          h('button', { class: 'lb-cancel c-button', type: 'button', onclick: () => { confirmBox.hidden = true; } }, 'Cancel'));
        return;
      }
      submit(false);
    });
    renderArgs();
    const form = mayCommand
      ? h('div', { class: 'lb-cmd-form' }, h('label', {}, 'Node ', nodeSel), h('label', {}, 'Command ', cmdSel), desc, argBox,
        windowRow, send, confirmBox, err, status)
      : h('p', { class: 'lb-role-note' }, `Your role (${(me.roles || []).join(', ') || 'none'}) may not send commands; `,
        'the history below is read-only.');
    root.replaceChildren(h('h2', {}, 'Command sender'), form, h('h3', {}, 'Command history'),
      h('table', { class: 'lb-table lb-cmd-history' }, h('thead', {}, h('tr', {},
        ['Id', 'Submitted (UTC)', 'Node', 'Command', 'Args', 'By', 'Stage', 'Stages', 'Reason', ''].map((t) => h('th', {}, t)))), histBody));
    await refetch();
  });
  return { destroy: off };
}

// -- event log -----------------------------------------------------------------------------

const SEV_RANK = { DEBUG: 0, INFO: 1, WARNING: 2, ERROR: 3, CRITICAL: 4 };

function events(el, ground, state, ready) {
  const root = h('div', { class: 'lb-view lb-events' });
  el.append(root);
  const rows = [];
  const node = h('select', { class: 'lb-ev-node' }, h('option', { value: '' }, 'all nodes'));
  const kind = h('select', { class: 'lb-ev-kind' }, h('option', { value: '' }, 'all kinds'));
  const sev = h('select', { class: 'lb-ev-sev' }, Object.keys(SEV_RANK).map((s) => h('option', { value: s }, `≥ ${s}`)));
  sev.value = 'DEBUG';
  const text = h('input', { class: 'lb-ev-text', type: 'search', placeholder: 'text contains' });
  const body = h('tbody', {});
  const count = h('span', { class: 'lb-ev-count' });
  const kinds = new Set();
  const render = () => {
    const t = text.value.toLowerCase();
    const min = SEV_RANK[sev.value] ?? 0;
    const shown = rows.filter((e) => (!node.value || e.node === node.value) && (!kind.value || e.kind === kind.value) &&
      (SEV_RANK[e.severity] ?? 1) >= min && (!t || String(e.message).toLowerCase().includes(t))).slice(0, 500);
    count.textContent = `${shown.length} of ${rows.length} events`;
    body.replaceChildren(...shown.map((e) => h('tr', { class: `lb-ev lb-sev-${e.severity}` }, h('td', {}, utc(e.t)),
      h('td', {}, e.severity), h('td', {}, e.kind), h('td', {}, e.node || ''), h('td', {}, e.message))));
  };
  const add = (e, front) => {
    if (!kinds.has(e.kind)) {
      kinds.add(e.kind);
      kind.append(h('option', { value: e.kind }, e.kind));
    }
    if (front) {
      rows.unshift(e);
      if (rows.length > 5000) {
        rows.pop();
      }
    } else {
      rows.push(e);
    }
  };
  for (const c of [node, kind, sev]) {
    c.addEventListener('change', render);
  }
  text.addEventListener('input', render);
  root.append(h('h2', {}, 'Event log'), h('div', { class: 'lb-filters' }, node, kind, sev, text, count),
    h('table', { class: 'lb-table' }, h('thead', {}, h('tr', {}, ['Time (UTC)', 'Severity', 'Kind', 'Node', 'Message']
      .map((t) => h('th', {}, t)))), body));
  let off = () => {};
  ready.then(async () => {
    for (const n of state.nodes) {
      node.append(h('option', { value: n }, n));
    }
    const got = await ground.get('/api/events?limit=1000');
    got.sort((a, b) => b.id - a.id).forEach((e) => add(e, false));
    render();
    off = ground.on('event', (e) => {
      add(e, true);
      render();
    });
  });
  return { destroy: () => off() };
}

// -- links --------------------------------------------------------------------------------

function links(el, ground, ready) {
  const root = h('div', { class: 'lb-view lb-links' });
  el.append(root);
  const render = (ls) => {
    const names = Object.keys(ls).sort();
    root.replaceChildren(h('h2', {}, 'Links'), h('table', { class: 'lb-table' },
      h('thead', {}, h('tr', {}, ['Node', 'Packets/s', 'Bytes/s', 'Packets', 'Messages', 'Errors by reason', 'Rejected B',
        'Gaps', 'Missing', 'Duplicates'].map((t) => h('th', {}, t)))),
      h('tbody', {}, names.map((n) => {
        const l = ls[n];
        const errs = Object.entries(l.errors || {}).map(([k, v]) => `${k}: ${v}`).join(', ') || 'none';
        return h('tr', { dataset: { node: n } }, h('td', {}, n), h('td', {}, fmt(l.packets_per_s, 1)), h('td', {}, fmt(l.bytes_per_s, 0)),
          h('td', {}, fmt(l.packets)), h('td', {}, fmt(l.messages)), h('td', { class: errs === 'none' ? '' : 'lb-bad' }, errs),
          h('td', {}, fmt(l.rejected_bytes)), h('td', {}, fmt(l.gaps)), h('td', {}, fmt(l.missing ?? 0)), h('td', {}, fmt(l.duplicates)));
      }))));
  };
  const off = ground.on('link', (m) => render(m.links || {}));
  ready.then(async () => render(await ground.get('/api/links')));
  return { destroy: off };
}

// -- seismic waveform -------------------------------------------------------------------------

const AXIS_COLORS = ['#4fc3f7', '#ffb74d', '#aed581'];

function seismic(el, ground, node, openmct) {
  const root = h('div', { class: 'lb-view lb-seismic' });
  const canvas = h('canvas', { class: 'lb-seismic-canvas', width: 1000, height: 360 });
  const info = h('p', { class: 'lb-seismic-info' });
  root.append(h('h2', {}, `${node} seismic (three axes)`), info, canvas);
  el.append(root);
  let alive = true;
  const draw = (d, live) => {
    const w = (canvas.width = Math.max(300, root.clientWidth - 20 || 1000));
    const ht = canvas.height;
    const ctx = canvas.getContext('2d');
    ctx.fillStyle = '#111';
    ctx.fillRect(0, 0, w, ht);
    const axes = d.axes || ['x', 'y', 'z'];
    const n = (d.time && d.time.length) || (d[axes[0]] || []).length;
    if (!n) {
      info.textContent = `${node}: no seismic samples ${live ? 'in the last 30 s' : 'in this time range'}`;
      return;
    }
    const lane = ht / axes.length;
    axes.forEach((a, i) => {
      const lo = d[`${a}_min`];
      const hi = d[`${a}_max`];
      const vals = d[a] || [];
      const all = lo ? lo.concat(hi) : vals;
      let m = 1e-9;
      for (const v of all) {
        m = Math.max(m, Math.abs(v));
      }
      const y = (v) => lane * i + lane / 2 - (v / m) * (lane / 2 - 4);
      ctx.strokeStyle = AXIS_COLORS[i % 3];
      ctx.beginPath();
      const count = lo ? lo.length : vals.length;
      // x by time when the samples have times (a gap stays a gap), else by index
      const ts = d.time && d.time.length === count ? d.time : null;
      const t0 = ts ? ts[0] : 0;
      const span = ts ? Math.max(1e-9, ts[count - 1] - t0) : 1;
      const gap = d.rate ? 2.5 / d.rate : Infinity;
      for (let k = 0; k < count; k++) {
        const x = ts ? ((ts[k] - t0) / span) * (w - 1) : (k / Math.max(1, count - 1)) * (w - 1);
        if (lo) {
          ctx.moveTo(x, y(lo[k]));
          ctx.lineTo(x, y(hi[k]));
        } else if (k === 0 || (ts && ts[k] - ts[k - 1] > gap)) {
          ctx.moveTo(x, y(vals[k]));
        } else {
          ctx.lineTo(x, y(vals[k]));
        }
      }
      ctx.stroke();
      ctx.fillStyle = '#ccc';
      ctx.fillText(`${a} ±${m.toFixed(2)} ${d.unit || ''}`, 6, lane * i + 12);
    });
    const how = d.decimated ? ' (min/max per pixel)' : d.decimation > 1 ? ` (means of ${d.decimation})` : '';
    info.textContent = `${live ? 'live, last 30 s' : 'archive'}: ${d.count ?? n} samples at ${d.rate ?? '?'} Hz${how}`;
    canvas.dataset.samples = String(d.count ?? n);
  };
  // live: a rolling LIVE_S window fed by every sample of the full-rate stream, seeded from
  // the archive; archive (fixed time): min/max per pixel from the ground
  const LIVE_S = 30;
  let buf = null; // {time: [s], x: [], y: [], z: []}
  let unsub = null;
  let rate = null;
  let received = 0;
  let dirty = false;
  const axesOf = () => ['x', 'y', 'z'];
  const redraw = () => {
    if (!alive || !buf) {
      return;
    }
    dirty = false;
    const axes = axesOf();
    const n = buf.time.length;
    const w = Math.max(300, root.clientWidth - 20 || 1000);
    let d = { axes, rate, unit: buf.unit, count: n, time: buf.time };
    if (n > 2 * w) { // min/max per pixel: every sample counts, the canvas draws w columns
      d = { axes, rate, unit: buf.unit, count: n, decimated: true, time: [] };
      for (const a of axes) {
        d[`${a}_min`] = [];
        d[`${a}_max`] = [];
      }
      const t0 = buf.time[0];
      const span = Math.max(1e-9, buf.time[n - 1] - t0);
      let col = -1;
      for (let k = 0; k < n; k++) {
        const c = Math.min(w - 1, Math.floor(((buf.time[k] - t0) / span) * w));
        if (c !== col) {
          col = c;
          d.time.push(buf.time[k]);
          for (const a of axes) {
            d[`${a}_min`].push(buf[a][k]);
            d[`${a}_max`].push(buf[a][k]);
          }
        } else {
          const j = d.time.length - 1;
          for (const a of axes) {
            const v = buf[a][k];
            if (v < d[`${a}_min`][j]) d[`${a}_min`][j] = v;
            if (v > d[`${a}_max`][j]) d[`${a}_max`][j] = v;
          }
        }
      }
    } else {
      for (const a of axes) {
        d[a] = buf[a];
      }
    }
    draw(d, true);
    canvas.dataset.received = String(received);
  };
  const onLive = (packets) => {
    if (!buf) {
      buf = { time: [], x: [], y: [], z: [] };
      if (packets.length) {
        seed(packets[0].t / 1000); // the archive holds everything before the first live batch
      }
    }
    for (const p of packets) {
      rate = p.rate;
      const n = (p.x || []).length;
      received += n;
      for (let i = 0; i < n; i++) {
        buf.time.push(p.t / 1000 + i / p.rate);
      }
      for (const a of axesOf()) {
        const v = p[a] || [];
        for (let i = 0; i < v.length; i++) {
          buf[a].push(v[i]);
        }
      }
    }
    const newest = buf.time[buf.time.length - 1];
    let cut = 0;
    while (cut < buf.time.length && buf.time[cut] < newest - LIVE_S) {
      cut++;
    }
    if (cut) {
      buf.time.splice(0, cut);
      for (const a of axesOf()) {
        buf[a].splice(0, cut);
      }
    }
    if (!dirty) {
      dirty = true;
      setTimeout(redraw, 250); // at most 4 redraws a second, whatever the rate
    }
  };
  // the LIVE_S before the first live batch from the archive (every sample): ingest archives
  // a packet before it streams it, so asked now the archive has all of them, none missing
  const seed = async (until) => {
    try {
      const d = await ground.get(`/api/web/seismic?node=${encodeURIComponent(node)}&start=${until - LIVE_S}&end=${until}&size=20000`);
      if (alive && buf && d.time && !d.decimated) {
        const k = d.time.findIndex((t) => t >= until - 1e-6);
        const upto = k < 0 ? d.time.length : k;
        buf.time = d.time.slice(0, upto).concat(buf.time);
        for (const a of axesOf()) {
          buf[a] = (d[a] || []).slice(0, upto).concat(buf[a]);
        }
        buf.unit = d.unit;
        rate = rate || d.rate;
        redraw();
      }
    } catch (e) {
      info.textContent = `${node}: ${e.reason || e.message}`;
    }
  };
  const startLive = () => {
    buf = null;
    received = 0;
    if (!unsub) {
      unsub = ground.subscribeSeismic(node, onLive);
    }
    draw({ axes: axesOf() }, true); // 'no samples' until the first batch
  };
  const stopLive = () => {
    if (unsub) {
      unsub();
      unsub = null;
    }
  };
  const tick = async () => {
    if (!alive) {
      return;
    }
    const live = openmct.time.isRealTime ? openmct.time.isRealTime() : Boolean(openmct.time.clock());
    if (live) {
      if (!unsub) {
        startLive();
      }
      return;
    }
    stopLive();
    try {
      const b = openmct.time.getBounds();
      const d = await ground.get(`/api/web/seismic?node=${encodeURIComponent(node)}&start=${b.start / 1000}&end=${b.end / 1000}&size=${canvas.width}`);
      draw(d, false);
    } catch (e) {
      info.textContent = `${node}: ${e.reason || e.message}`;
    }
  };
  tick();
  const onBounds = (b, isTick) => {
    if (!isTick) {
      tick();
    }
  };
  openmct.time.on('boundsChanged', onBounds);
  return {
    destroy() {
      alive = false;
      stopLive();
      openmct.time.off('boundsChanged', onBounds);
    }
  };
}
