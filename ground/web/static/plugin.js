// The lunabase Open MCT plugin: the base as objects, its telemetry, limits, staleness and
// alarms, and the displays operators save on the ground. See docs/web-console.md.
//
// Object tree (namespace "lunabase"):   site -> node -> packet -> field
//   site               lunabase.site      + Overview, Command sender, Event log, Links
//   node.<n>           lunabase.node      packets, then the seismic waveform
//   packet.<n>.<P>     lunabase.packet    its numeric fields
//   tlm.<n>.<P>.<f>    lunabase.telemetry one parameter (plots, tables, limits)
// Saved displays live in namespace "lunabase-saved" under "Shared displays".

import { ticksToMs } from './ground.js';
import { installViews } from './views.js';

export const NS = 'lunabase';
export const SAVED_NS = 'lunabase-saved';
const PAGE_ROWS = 5000;
const MAX_TABLE_ROWS = 50000;

function id(key) {
  return { namespace: NS, key };
}

/** The dictionary's limits as Open MCT wants them (yellow: WARNING, red: CRITICAL). */
function limitsOf(field) {
  const out = {};
  if (field.yellow) {
    out.WARNING = {
      low: { color: 'yellow', value: field.yellow[0] },
      high: { color: 'yellow', value: field.yellow[1] }
    };
  }
  if (field.red) {
    out.CRITICAL = {
      low: { color: 'red', value: field.red[0] },
      high: { color: 'red', value: field.red[1] }
    };
  }
  return out;
}

/** The limit state of a value: the dictionary's inclusive ranges (outside red = critical). */
export function limitState(field, v) {
  if (v === null || v === undefined || Number.isNaN(v)) {
    return null;
  }
  if (field.red && (v < field.red[0] || v > field.red[1])) {
    return { color: 'red', side: v < field.red[0] ? 'lwr' : 'upr', low: field.red[0], high: field.red[1] };
  }
  if (field.yellow && (v < field.yellow[0] || v > field.yellow[1])) {
    return { color: 'yellow', side: v < field.yellow[0] ? 'lwr' : 'upr', low: field.yellow[0], high: field.yellow[1] };
  }
  return null;
}

export default function LunabasePlugin(ground, me) {
  return function install(openmct) {
    const state = { dictionary: null, nodes: [], site: 'site', me };
    const ready = Promise.all([ground.get('/api/dictionary'), ground.get('/api/nodes'), ground.get('/api/web/info')])
      .then(([dictionary, nodes, info]) => {
        state.dictionary = dictionary;
        state.nodes = nodes.map((n) => n.node);
        state.site = info.site;
        state.packets = new Map(dictionary.packets.map((p) => [p.name, p]));
        return state;
      });
    ground.on('snapshot', (msg) => {
      const names = (msg.nodes || []).map((n) => n.node);
      for (const n of names) {
        if (!state.nodes.includes(n)) {
          state.nodes.push(n);
        }
      }
    });

    function fieldDef(packet, field) {
      const p = state.packets.get(packet);
      return p && p.fields.find((f) => f.name === field);
    }

    function parse(key) {
      const parts = key.split('.');
      return { kind: parts[0], node: parts[1], packet: parts[2], field: parts.slice(3).join('.') };
    }

    function telemetryObject(node, packet, f) {
      const value = {
        key: 'value',
        name: f.name,
        unit: f.unit || undefined,
        format: f.enum ? 'enum' : 'float',
        hints: { range: 1 }
      };
      if (f.enum) {
        value.enumerations = Object.entries(f.enum).map(([v, s]) => ({ value: Number(v), string: s }));
      }
      const lim = f.red || f.yellow;
      if (lim && Number.isFinite(lim[0]) && Number.isFinite(lim[1]) && Math.abs(lim[1]) < 1e8) {
        value.min = lim[0];
        value.max = lim[1];
      } else if (f.min !== null && f.max !== null && f.min !== undefined && f.max !== undefined) {
        value.min = f.min;
        value.max = f.max;
      }
      return {
        identifier: id(`tlm.${node}.${packet}.${f.name}`),
        name: `${node} ${packet}.${f.name}`,
        type: 'lunabase.telemetry',
        location: `${NS}:packet.${node}.${packet}`,
        lunabase: { node, packet, field: f.name, unit: f.unit, yellow: f.yellow, red: f.red },
        telemetry: {
          values: [
            { key: 'utc', source: 'utc', name: 'Time (node time tag, UTC)', format: 'utc', hints: { domain: 1 } },
            value,
            { key: 'received', source: 'received', name: 'Received (ground)', format: 'utc', hints: { domain: 2 } }
          ]
        }
      };
    }

    const TOOLS = [
      { key: 'overview', name: 'Node overview', type: 'lunabase.overview' },
      { key: 'commands', name: 'Command sender', type: 'lunabase.commander' },
      { key: 'events', name: 'Event log', type: 'lunabase.events' },
      { key: 'links', name: 'Links', type: 'lunabase.links' }
    ];

    // -- types ---------------------------------------------------------------------------
    const types = {
      'lunabase.site': ['lunabase site', 'icon-folder'],
      'lunabase.node': ['lunabase node', 'icon-suitcase'],
      'lunabase.packet': ['lunabase packet', 'icon-dictionary'],
      'lunabase.telemetry': ['lunabase parameter', 'icon-telemetry'],
      'lunabase.overview': ['Node overview', 'icon-dataset'],
      'lunabase.commander': ['Command sender', 'icon-activity'],
      'lunabase.events': ['Event log', 'icon-list-view'],
      'lunabase.links': ['Links', 'icon-connectivity'],
      'lunabase.seismic': ['Seismic waveform', 'icon-plot-overlay']
    };
    for (const [key, [name, cssClass]] of Object.entries(types)) {
      openmct.types.addType(key, { name, description: `${name} (lunabase ground)`, cssClass, creatable: false });
    }

    // -- objects and composition --------------------------------------------------------
    openmct.objects.addRoot(id('site'), openmct.priority.HIGH);
    openmct.objects.addProvider(NS, {
      async get(identifier) {
        await ready;
        const key = identifier.key;
        if (key === 'site') {
          return { identifier, name: `lunabase ${state.site}`, type: 'lunabase.site', location: 'ROOT' };
        }
        const tool = TOOLS.find((t) => t.key === key);
        if (tool) {
          return { identifier, name: tool.name, type: tool.type, location: `${NS}:site` };
        }
        const k = parse(key);
        if (k.kind === 'node') {
          return { identifier, name: k.node, type: 'lunabase.node', location: `${NS}:site`, lunabase: { node: k.node } };
        }
        if (k.kind === 'seismic') {
          return { identifier, name: `${k.node} seismic`, type: 'lunabase.seismic', location: `${NS}:node.${k.node}`,
            lunabase: { node: k.node } };
        }
        if (k.kind === 'packet') {
          return { identifier, name: `${k.node} ${k.packet}`, type: 'lunabase.packet', location: `${NS}:node.${k.node}`,
            lunabase: { node: k.node, packet: k.packet } };
        }
        if (k.kind === 'tlm') {
          const f = fieldDef(k.packet, k.field);
          if (f) {
            return telemetryObject(k.node, k.packet, f);
          }
        }
        return undefined; // Open MCT shows it as missing
      }
    });

    openmct.composition.addProvider({
      appliesTo(d) {
        return d.identifier.namespace === NS && ['lunabase.site', 'lunabase.node', 'lunabase.packet'].includes(d.type);
      },
      async load(d) {
        await ready;
        if (d.type === 'lunabase.site') {
          return [...TOOLS.map((t) => id(t.key)), ...state.nodes.map((n) => id(`node.${n}`))];
        }
        const node = d.lunabase.node;
        if (d.type === 'lunabase.node') {
          const packets = state.dictionary.packets.filter((p) => p.fields.some((f) => !isText(f)));
          const out = packets.map((p) => id(`packet.${node}.${p.name}`));
          if (state.dictionary.packets.some((p) => p.samples)) {
            out.push(id(`seismic.${node}`));
          }
          return out;
        }
        const p = state.packets.get(d.lunabase.packet);
        return p.fields.filter((f) => !isText(f)).map((f) => id(`tlm.${node}.${p.name}.${f.name}`));
      }
    });

    function isText(f) {
      return String(f.type).startsWith('bytes');
    }

    // -- telemetry: history, live, limits, staleness -----------------------------------
    function isTlm(d) {
      return d.type === 'lunabase.telemetry' && d.identifier.namespace === NS;
    }

    function q(params) {
      return Object.entries(params)
        .filter(([, v]) => v !== undefined && v !== null)
        .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`)
        .join('&');
    }

    function datums(d, res) {
      const key = d.identifier.key;
      ground.history[key.slice(4)] = { strategy: res.strategy, points: res.time.length, count: res.count,
        first: res.time.length ? res.time[0] : null, start: res.start, end: res.end, ms: res.ms, source: res.source };
      const out = new Array(res.time.length);
      for (let i = 0; i < res.time.length; i++) {
        out[i] = { id: key, utc: res.time[i] * 1000, value: res.value[i] };
      }
      return out;
    }

    openmct.telemetry.addProvider({
      supportsRequest: isTlm,
      async request(d, options = {}) {
        const { node, packet, field } = d.lunabase;
        const bounds = openmct.time.getBounds();
        const start = (options.start ?? bounds.start) / 1000;
        const end = (options.end ?? bounds.end) / 1000;
        const base = { node, packet, field, start, end: end > start ? end : start + 1 };
        if (options.strategy === 'latest') {
          const res = await ground.get(`/api/web/history?${q({ ...base, strategy: 'latest' })}`, options);
          return datums(d, res);
        }
        if (options.strategy === 'minmax') {
          // one min and one max per pixel, computed by the ground: a week plots as fast as a minute
          const res = await ground.get(`/api/web/history?${q({ ...base, strategy: 'minmax', size: options.size || 1000 })}`,
            options);
          return datums(d, res);
        }
        // tables: every sample, in pages, up to MAX_TABLE_ROWS
        let out = [];
        let from = base.start;
        for (;;) {
          const res = await ground.get(`/api/web/history?${q({ ...base, start: from, strategy: 'page', limit: PAGE_ROWS })}`,
            options);
          out = out.concat(datums(d, res));
          if (!res.more || out.length >= MAX_TABLE_ROWS) {
            break;
          }
          from = res.next;
        }
        return out;
      },
      supportsSubscribe: isTlm,
      supportsBatching: isTlm,
      subscribe(d, callback, options = {}) {
        const batch = options.strategy === 'batch';
        return ground.subscribe(d.identifier.key.slice(4), (items) => callback(batch ? items : items[items.length - 1]));
      },
      supportsLimits(d) {
        return isTlm(d) && Boolean(d.lunabase.yellow || d.lunabase.red);
      },
      getLimitEvaluator(d) {
        const f = d.lunabase;
        return {
          evaluate(datum, valueMetadata) {
            if (valueMetadata && valueMetadata.key !== 'value') {
              return undefined;
            }
            const s = limitState(f, datum.value);
            if (!s) {
              return undefined;
            }
            const name = `${s.color === 'red' ? 'Red' : 'Yellow'} ${s.side === 'lwr' ? 'Low' : 'High'}`;
            return { cssClass: `is-limit--${s.side} is-limit--${s.color}`, name, low: s.low, high: s.high };
          }
        };
      },
      getLimits(d) {
        return { limits: () => Promise.resolve(limitsOf(d.lunabase)) };
      },
      supportsStaleness: isTlm,
      isStale(d) {
        return Promise.resolve(staleness(d.lunabase.node));
      },
      subscribeToStaleness(d, callback) {
        const node = d.lunabase.node;
        let last = staleness(node).isStale;
        callback(staleness(node));
        const off1 = ground.on('node', (n) => {
          if (n.node === node) {
            const s = staleness(node);
            if (s.isStale !== last) {
              last = s.isStale;
              callback(s);
            }
          }
        });
        const off2 = ground.on('state', () => callback(staleness(node)));
        return () => {
          off1();
          off2();
        };
      }
    });

    // ASLEEP is not stale: the node announced its sleep and is within its next contact;
    // STALE and LOST are (and everything is while the ground itself is unreachable)
    function staleness(node) {
      const n = ground.nodes.get(node);
      const st = n ? n.state : 'UNKNOWN';
      return { isStale: ground.state !== 'connected' || st === 'STALE' || st === 'LOST', timestamp: Date.now(), state: st };
    }

    // -- alarms: Open MCT Fault Management, acknowledge and shelve go to the ground -----
    openmct.install(openmct.plugins.FaultManagement());
    const SEV = { red: 'CRITICAL', yellow: 'WARNING' };

    function toFault(a) {
      const sev = SEV[a.severity] || 'WATCH';
      const v = typeof a.value === 'number' ? Number(a.value.toPrecision(6)) : a.value;
      const val = { value: v, rangeCondition: sev, monitoringResult: sev };
      return {
        type: 'alarms',
        fault: {
          id: String(a.id),
          name: `${a.node} ${a.packet}.${a.field}`,
          namespace: `/${a.site}/${a.node}/${a.packet}/${a.field}`,
          severity: sev,
          acknowledged: a.state === 'acknowledged',
          shelved: Boolean(a.shelved_until && a.shelved_until * 1000 > Date.now()),
          // shown as it is by the Fault Management list (and sorted as text): ISO UTC sorts right
          triggerTime: new Date((a.raised_at || a.updated_at || 0) * 1000).toISOString(),
          currentValueInfo: val,
          triggerValueInfo: val,
          shortDescription: `${v ?? ""} ${a.unit || ""} (${a.state}${a.acked_by ? `, acknowledged by ${a.acked_by}` : ""}${a.returned ? ", back in limits" : ""})`,
          seqNum: a.id,
          lunabase: a
        }
      };
    }

    openmct.faults.addProvider({
      supportsRequest: (d) => d.type === 'faultManagement',
      supportsSubscribe: (d) => d.type === 'faultManagement',
      async request() {
        const alarms = await ground.get('/api/alarms?shelved=1');
        return alarms.map(toFault);
      },
      subscribe(d, callback) {
        let timer = null;
        const refresh = () => {
          if (!timer) {
            timer = setTimeout(() => {
              timer = null;
              callback({ type: 'global-alarm-status' });
            }, 250);
          }
        };
        const offs = [ground.on('alarm', refresh), ground.on('snapshot', refresh)];
        return () => offs.forEach((f) => f());
      },
      async acknowledgeFault(fault) {
        try {
          // the ground's audit log records who acknowledged (its schema takes no comment)
          await ground.post(`/api/alarms/${encodeURIComponent(fault.id)}/ack`, {});
          fault.acknowledged = true;
          return { success: true };
        } catch (e) {
          openmct.notifications.error(`Acknowledge refused by the ground: ${e.reason || e.message}`);
          return { success: false };
        }
      },
      async shelveFault(fault, { shelved = true, shelveDuration = 3600000 } = {}) {
        try {
          if (shelved) {
            await ground.post(`/api/alarms/${encodeURIComponent(fault.id)}/shelve`,
              { minutes: Math.max(1, Math.round(shelveDuration / 60000)) });
          } else {
            await ground.post(`/api/alarms/${encodeURIComponent(fault.id)}/unshelve`, {});
          }
          return { success: true };
        } catch (e) {
          openmct.notifications.error(`Shelve refused by the ground: ${e.reason || e.message}`);
          return { success: false };
        }
      },
      getShelveDurations() {
        return [
          { name: '15 Minutes', value: 900000 },
          { name: '1 Hour', value: 3600000 },
          { name: '8 Hours', value: 28800000 },
          { name: '1 Day', value: 86400000 }
        ];
      }
    });

    // -- saved displays: Open MCT objects persisted on the ground, shared by everyone ----
    openmct.install(openmct.plugins.MyItems('Shared displays', SAVED_NS, openmct.priority.HIGH - 1));
    const saved = {
      async get(identifier) {
        try {
          return await ground.get(`/api/web/objects/${encodeURIComponent(identifier.key)}`);
        } catch (e) {
          if (e.status === 404) {
            return undefined;
          }
          throw e;
        }
      },
      async create(obj) {
        return save(obj);
      },
      async update(obj) {
        return save(obj);
      }
    };
    async function save(obj) {
      try {
        await ground.request('PUT', `/api/web/objects/${encodeURIComponent(obj.identifier.key)}`, obj);
        return true;
      } catch (e) {
        openmct.notifications.error(`The ground did not save "${obj.name}": ${e.reason || e.message}`);
        return false;
      }
    }
    openmct.objects.addProvider(SAVED_NS, saved);

    // -- indicators: the ground connection and slow-client resyncs --------------------
    const ind = openmct.indicators.simpleIndicator();
    ind.iconClass('icon-connectivity');
    const show = () => {
      const resynced = ground.lastResync && Date.now() - ground.lastResync < 30000;
      if (ground.state === 'connected') {
        ind.text(resynced ? `Ground: connected, resynced (${ground.resyncs}x, ${ground.dropped} dropped)` : 'Ground: connected');
        ind.statusClass(resynced ? 's-status-warning-lo' : 's-status-on');
        ind.description(resynced
          ? 'This console fell behind; the ground dropped its backlog and resent the current state. Open plots reload the gap from the archive.'
          : 'Live telemetry from the ground');
      } else {
        ind.text(`Ground: ${ground.state}`);
        ind.statusClass('s-status-error');
        ind.description('No live connection to the ground; reconnecting by itself');
      }
      document.body.dataset.ground = ground.state;
    };
    ground.onStateChange = show;
    let reloaded = 0;
    ground.on('resync', () => {
      show();
      document.body.dataset.resyncs = String(ground.resyncs);
      openmct.notifications.alert(`The ground resynced this console (it fell behind): ${ground.dropped} live samples/messages dropped`);
      // refill the gap: re-setting the realtime offsets makes every open plot and table ask
      // for its history again (the archive has every sample); at most every 10 s
      if (Date.now() - reloaded > 10000 && openmct.time.isRealTime && openmct.time.isRealTime()) {
        reloaded = Date.now();
        try {
          openmct.time.setClockOffsets({ ...openmct.time.getClockOffsets() });
        } catch (e) {
          console.error('lunabase: reloading history after a resync failed', e);
        }
      }
    });
    setInterval(show, 5000);
    show();
    openmct.indicators.add(ind);

    installViews(openmct, ground, state, ready, { limitState, ticksToMs });
  };
}
