// The console's one connection to the ground: JSON over HTTP (same origin, session cookie)
// and the live WebSocket /api/ws, reconnected by itself after the ground goes away.
//
// State messages on /api/ws are fanned out by type ('param', 'node', 'alarm', 'event',
// 'command', 'link', 'snapshot', 'resync', 'web_object').  Telemetry comes at full rate on
// a second socket, /api/web/live (ground/web/live.py): the console names the parameters
// (and seismic nodes) it shows, the ground sends every sample of them in one batch per
// 100 ms (Open MCT's supportsBatching), and each batch is acknowledged once handed to
// Open MCT: a console that stops acknowledging (busy, slow) gets no more until it does,
// and if its queue on the ground overflows meanwhile the ground drops it and says so
// ('resync'), which the connection indicator shows with a counter.

const EPOCH_2000_MS = Date.UTC(2000, 0, 1);  // the wire epoch (wire/ccsds.py EPOCH_UNIX), in ms
const TICKS_PER_S = 65536;

export function ticksToMs(ticks) {
  return EPOCH_2000_MS + (ticks / TICKS_PER_S) * 1000;
}

export class GroundError extends Error {
  constructor(status, reason) {
    super(reason);
    this.status = status;
    this.reason = reason;
  }
}

// A WebSocket to `path` on this ground that reopens itself after a close (0.5 s, doubling to
// 4 s, back to 0.5 s once open).  `slot` holds the current socket and the retry delay; `on`
// gets open(), message(parsed JSON: a frame that is not JSON is ignored) and close().
function keepSocket(path, slot, on) {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const again = () => {
    const delay = slot.retry;
    slot.retry = Math.min(slot.retry * 2, 4000);
    setTimeout(open, delay);
  };
  const open = () => {
    let ws;
    try {
      ws = new WebSocket(`${proto}//${location.host}${path}`);
    } catch (e) {
      again();
      return;
    }
    slot.ws = ws;
    ws.onopen = () => {
      slot.retry = 500;
      on.open();
    };
    ws.onmessage = (ev) => {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch (e) {
        return;
      }
      on.message(msg);
    };
    ws.onclose = () => {
      if (slot.ws === ws) {
        slot.ws = null;
        on.close();
        again();
      }
    };
    ws.onerror = () => {
      try {
        ws.close();
      } catch (e) {
        /* closed already */
      }
    };
  };
  open();
}

export class Ground {
  constructor() {
    this.state = 'connecting'; // connecting | connected | disconnected
    this.listeners = {}; // type -> Set(fn)
    this.subs = new Map(); // "node.PACKET.field" -> {callbacks:Set, queue:[], lastTicks}
    this.nodes = new Map(); // node -> latest node view
    this.snapshot = null;
    this.resyncs = 0;
    this.dropped = 0;
    this.lastResync = 0;
    this.received = 0; // live messages
    this.delivered = {}; // parameter id -> live samples handed to Open MCT (tests, benchmark)
    this.history = {}; // parameter id -> the last history answer's summary (tests, benchmark)
    this.trace = null; // [node, packet, ticks, receipt ms] per live packet when a benchmark asks
    this.sock = { ws: null, retry: 500 }; // the state socket /api/ws
    this.onStateChange = () => {};
    // the full-rate stream: its socket, what this page follows, counters (tests, benchmark)
    this.live = { ws: null, state: 'connecting', retry: 500, batches: 0, samples: 0, resyncs: 0, dropped: 0,
      paused: false, lastResync: 0 };
    this.seismicSubs = new Map(); // node -> Set(fn)
    this.seismicReceived = {}; // node -> seismic samples received (per axis)
    this.seismicLog = []; // [node, time tag ms, samples, rate] per live seismic batch (tests)
    this.hubResyncs = 0;
    this.hubDropped = 0;
  }

  // -- HTTP ----------------------------------------------------------------------------

  async request(method, path, body, { signal } = {}) {
    const init = { method, credentials: 'same-origin', signal, headers: { Accept: 'application/json' } };
    if (method !== 'GET') {
      // the ground takes state changes as JSON only (a cross-site "simple request" cannot be)
      init.headers['Content-Type'] = 'application/json';
    }
    if (body !== undefined) {
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(path, init);
    let data = null;
    try {
      data = await resp.json();
    } catch (e) {
      data = null;
    }
    if (!resp.ok) {
      const reason = (data && (data.error || data.reason || data.detail)) || `${resp.status} ${resp.statusText}`;
      throw new GroundError(resp.status, reason);
    }
    return data;
  }

  get(path, opts) {
    return this.request('GET', path, undefined, opts);
  }

  post(path, body) {
    return this.request('POST', path, body === undefined ? {} : body);
  }

  // -- live ----------------------------------------------------------------------------

  on(type, fn) {
    if (!this.listeners[type]) {
      this.listeners[type] = new Set();
    }
    this.listeners[type].add(fn);
    return () => this.listeners[type].delete(fn);
  }

  _emit(type, msg) {
    for (const fn of this.listeners[type] || []) {
      try {
        fn(msg);
      } catch (e) {
        console.error('lunabase listener', type, e);
      }
    }
  }

  _setState(s) {
    if (this.state !== s) {
      this.state = s;
      this.onStateChange(s);
      this._emit('state', s);
    }
  }

  connect() {
    const live = this.live;
    keepSocket('/api/web/live', live, {
      open: () => {
        live.state = 'connected';
        // everything this page follows, again after a reconnect
        this._liveSend({ subscribe: [...this.subs.keys()], seismic: [...this.seismicSubs.keys()] });
      },
      message: (msg) => {
        if (msg.type === 'batch') {
          this._batch(msg);
        } else if (msg.type === 'resync') {
          live.resyncs = msg.resyncs;
          live.dropped = msg.dropped;
          this._resynced();
        } else if (msg.type === 'error') {
          console.error('lunabase live stream:', msg.error);
        }
      },
      close: () => {
        live.state = 'disconnected';
      },
    });
    keepSocket('/api/ws', this.sock, {
      open: () => {},
      message: (msg) => this._handle(msg),
      close: () => this._setState('disconnected'),
    });
  }

  // -- the full-rate stream --------------------------------------------------------------

  _liveSend(msg) {
    const ws = this.live.ws;
    if (ws && ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify(msg));
    }
  }

  _resynced() {
    this.resyncs = this.hubResyncs + this.live.resyncs;
    this.dropped = this.hubDropped + this.live.dropped;
    this.lastResync = Date.now();
    this._emit('resync', { resyncs: this.resyncs, dropped: this.dropped });
  }

  _batch(msg) {
    const live = this.live;
    live.batches += 1;
    const now = performance.timeOrigin + performance.now();
    for (const [id, p] of Object.entries(msg.params || {})) {
      const s = this.subs.get(id);
      if (this.trace && this.trace.length < 200000) {
        const [node, packet] = id.split('.', 2);
        for (const t of p.t) {
          this.trace.push([node, packet, t, now]); // lunabase bench console: receipt times
        }
      }
      if (!s) {
        continue; // unsubscribed while the batch was on its way
      }
      const batch = new Array(p.t.length);
      let i = 0;
      for (const [count, received] of p.r || [[p.t.length, now]]) { // the ground's receipt, per message
        for (let k = 0; k < count && i < p.t.length; k++, i++) {
          batch[i] = { id, utc: p.t[i], value: p.v[i], received };
        }
      }
      live.samples += batch.length;
      s.delivered += batch.length;
      this.delivered[id] = s.delivered;
      for (const cb of s.callbacks) {
        try {
          cb(batch);
        } catch (e) {
          console.error('lunabase telemetry callback', e);
        }
      }
    }
    for (const [node, packets] of Object.entries(msg.seismic || {})) {
      for (const pk of packets) {
        const n = pk.x ? pk.x.length : 0;
        this.seismicReceived[node] = (this.seismicReceived[node] || 0) + n;
        if (this.seismicLog.length < 20000) {
          this.seismicLog.push([node, pk.t, n, pk.rate]); // tests: which batches arrived
        }
      }
      for (const cb of this.seismicSubs.get(node) || []) {
        try {
          cb(packets);
        } catch (e) {
          console.error('lunabase seismic callback', e);
        }
      }
    }
    // handed to Open MCT: the ground may send the next (a page that stops here gets nothing more)
    this._liveSend({ ack: msg.seq });
  }

  /** Every live seismic batch of ``node`` ([{t, rate, x, y, z}, ...]); returns the unsubscribe function. */
  subscribeSeismic(node, callback) {
    let set = this.seismicSubs.get(node);
    if (!set) {
      set = new Set();
      this.seismicSubs.set(node, set);
      this._liveSend({ seismic: [node] });
    }
    set.add(callback);
    return () => {
      set.delete(callback);
      if (!set.size) {
        this.seismicSubs.delete(node);
        this._liveSend({ unsubscribe_seismic: [node] });
      }
    };
  }

  _handle(msg) {
    this.received += 1;
    switch (msg.type) {
      case 'snapshot':
        this.snapshot = msg;
        for (const n of msg.nodes || []) {
          this.nodes.set(n.node, n);
        }
        this._setState('connected');
        break;
      case 'node':
        this.nodes.set(msg.node, msg);
        break;
      case 'resync':
        // the ground dropped this client's backlog (it fell behind) and resends a snapshot
        this.hubResyncs += 1;
        this.hubDropped = msg.dropped || this.hubDropped;
        this._resynced();
        return; // _resynced emitted it
      default:
        break;
    }
    this._emit(msg.type, msg);
  }

  /** Live samples of one parameter, delivered as arrays; returns the unsubscribe function. */
  subscribe(id, callback) {
    let s = this.subs.get(id);
    if (!s) {
      s = { callbacks: new Set(), delivered: 0 };
      this.subs.set(id, s);
      this._liveSend({ subscribe: [id] });
    }
    s.callbacks.add(callback);
    return () => {
      s.callbacks.delete(callback);
      if (!s.callbacks.size) {
        this.subs.delete(id);
        this._liveSend({ unsubscribe: [id] });
      }
    };
  }
}
