// The console's one connection to the ground: JSON over HTTP (same origin, session cookie)
// and the live WebSocket /api/ws, reconnected by itself after the ground goes away.
//
// Live messages are fanned out by type ('param', 'node', 'alarm', 'event', 'command',
// 'link', 'snapshot', 'resync', 'web_object'). Telemetry for subscribed parameters is
// queued per parameter and delivered in batches every FLUSH_MS (Open MCT's
// supportsBatching), so a burst never turns into one redraw per sample.

const FLUSH_MS = 100;
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
    this.ws = null;
    this._retry = 500;
    this._flushTimer = null;
    this.onStateChange = () => {};
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
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    let ws;
    try {
      ws = new WebSocket(`${proto}//${location.host}/api/ws`);
    } catch (e) {
      this._reconnect();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      this._retry = 500;
    };
    ws.onmessage = (ev) => {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch (e) {
        return;
      }
      this._handle(msg);
    };
    ws.onclose = () => {
      if (this.ws === ws) {
        this.ws = null;
        this._setState('disconnected');
        this._reconnect();
      }
    };
    ws.onerror = () => {
      try {
        ws.close();
      } catch (e) {
        /* closed already */
      }
    };
  }

  _reconnect() {
    const delay = this._retry;
    this._retry = Math.min(this._retry * 2, 4000);
    setTimeout(() => this.connect(), delay);
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
      case 'param':
        this._param(msg);
        break;
      case 'node':
        this.nodes.set(msg.node, msg);
        break;
      case 'resync':
        // the ground dropped this client's backlog (it fell behind) and resends a snapshot
        this.resyncs += 1;
        this.dropped = msg.dropped || this.dropped;
        this.lastResync = Date.now();
        break;
      default:
        break;
    }
    this._emit(msg.type, msg);
  }

  _param(msg) {
    const now = this.trace ? performance.timeOrigin + performance.now() : 0;
    for (const [pname, p] of Object.entries(msg.packets || {})) {
      if (this.trace && this.trace.length < 200000) {
        this.trace.push([msg.node, pname, p.ticks, now]); // lunabase bench console: receipt times
      }
      const stamp = p.ticks !== undefined && p.ticks !== null ? ticksToMs(p.ticks) : p.t * 1000;
      for (const [field, value] of Object.entries(p.values || {})) {
        const id = `${msg.node}.${pname}.${field}`;
        const s = this.subs.get(id);
        if (!s || s.lastStamp === stamp) {
          continue; // not subscribed, or the same sample as the last flush (unchanged packet)
        }
        s.lastStamp = stamp;
        s.queue.push({ id, utc: stamp, value, received: p.t * 1000, level: (p.levels || {})[field] || 'ok' });
      }
    }
    if (!this._flushTimer) {
      this._flushTimer = setTimeout(() => this._flush(), FLUSH_MS);
    }
  }

  _flush() {
    this._flushTimer = null;
    for (const s of this.subs.values()) {
      if (!s.queue.length) {
        continue;
      }
      const batch = s.queue;
      s.queue = [];
      s.delivered += batch.length;
      this.delivered[batch[0].id] = s.delivered;
      for (const cb of s.callbacks) {
        try {
          cb(batch);
        } catch (e) {
          console.error('lunabase telemetry callback', e);
        }
      }
    }
  }

  /** Live samples of one parameter, delivered as arrays; returns the unsubscribe function. */
  subscribe(id, callback) {
    let s = this.subs.get(id);
    if (!s) {
      s = { callbacks: new Set(), queue: [], lastStamp: null, delivered: 0 };
      this.subs.set(id, s);
    }
    s.callbacks.add(callback);
    return () => {
      s.callbacks.delete(callback);
      if (!s.callbacks.size) {
        this.subs.delete(id);
      }
    };
  }
}
