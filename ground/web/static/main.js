// Boot: who am I (the ground's session cookie, HttpOnly), a login page if nobody, then
// Open MCT with the lunabase plugin. Nothing is kept in localStorage: the session is the
// ground's cookie, which this script can neither read nor leak.

import { Ground } from './ground.js';
import LunabasePlugin from './plugin.js';
import { can } from './views.js';

const ground = new Ground();
window.lunabaseGround = ground; // for tests and the benchmark: read-only use

async function whoami() {
  try {
    return await ground.get('/api/auth/me');
  } catch (e) {
    if (e.status === 404) {
      // this ground has no accounts (auth not configured): everything is allowed by the server
      return { name: 'operator', roles: ['admin'], privileges: [], anonymous: true };
    }
    if (e.status === 401 || e.status === 403) {
      return null;
    }
    throw e;
  }
}

function login() {
  const form = document.getElementById('lb-login');
  form.hidden = false;
  const err = form.querySelector('.lb-login-error');
  form.username.focus();
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    err.textContent = '';
    try {
      await ground.post('/api/auth/login', { username: form.username.value, password: form.password.value });
      location.reload();
    } catch (e) {
      err.textContent = e.status === 401 ? 'Wrong account or password' : `Login failed: ${e.reason || e.message}`;
    }
  });
}

async function logout() {
  try {
    await ground.post('/api/auth/logout', {});
  } finally {
    location.reload();
  }
}

async function start(me) {
  let station = null;
  try {
    // station time: the remote clock ticks on a node's own time tags (its HK uptime packets)
    const nodes = await ground.get('/api/nodes');
    station = (nodes.find((n) => n.state === 'ONLINE') || nodes[0] || {}).node || null;
  } catch (e) {
    station = null;
  }
  document.getElementById('lb-login').remove(); // Open MCT mounts itself on the body's first element
  const openmct = window.openmct;
  openmct.setAssetPath('/openmct');
  openmct.install(openmct.plugins.Espresso());
  openmct.install(openmct.plugins.UTCTimeSystem());
  const now = Date.now();
  const menuOptions = [
    { name: 'Realtime', timeSystem: 'utc', clock: 'local', clockOffsets: { start: -15 * 60 * 1000, end: 15 * 1000 } },
    { name: 'Fixed', timeSystem: 'utc', bounds: { start: now - 60 * 60 * 1000, end: now } }
  ];
  if (station) {
    openmct.install(openmct.plugins.RemoteClock({ namespace: 'lunabase', key: `tlm.${station}.HK.uptime` }));
    menuOptions.push({ name: `Station time (${station})`, timeSystem: 'utc', clock: 'remote-clock',
      clockOffsets: { start: -15 * 60 * 1000, end: 15 * 1000 } });
  }
  openmct.install(openmct.plugins.Conductor({ menuOptions }));
  openmct.install(openmct.plugins.DisplayLayout({ showAsView: ['summary-widget', 'example.imagery'] }));
  openmct.install(openmct.plugins.SummaryWidget());
  openmct.install(openmct.plugins.LADTable());
  openmct.install(LunabasePlugin(ground, me));
  openmct.user.setProvider({
    getCurrentUser: () => Promise.resolve({ id: me.name, name: me.name, getId: () => me.name, getName: () => me.name }),
    isLoggedIn: () => true,
    hasRole: (role) => Promise.resolve((me.roles || []).includes(role)),
    getPossibleRoles: () => Promise.resolve(me.roles || []),
    canProvideStatusForRole: () => false,
    canSetPollQuestion: () => false
  });
  const who = openmct.indicators.simpleIndicator();
  who.iconClass('icon-person');
  who.text(me.anonymous ? 'no accounts on this ground' : `${me.name} (${(me.roles || []).join(', ')})`);
  who.description(me.anonymous ? 'The ground runs without accounts: anyone who reaches it may command' : 'Click to log out');
  if (!me.anonymous) {
    who.on('click', logout);
  }
  openmct.indicators.add(who);
  // controls the role may not use are hidden by lunabase.css (the ground still refuses them)
  document.body.dataset.roles = (me.roles || []).join(' ');
  document.body.dataset.canAlarms = can(me, 'alarms.manage') ? '1' : '0';
  document.body.dataset.canDisplays = can(me, 'displays.manage') ? '1' : '0';
  document.body.dataset.canCommand = can(me, 'command') ? '1' : '0';
  if (!location.hash || location.hash === '#/' || location.hash === '#') {
    location.hash = '#/browse/lunabase:site/lunabase:overview?tc.mode=local&tc.startDelta=900000&tc.endDelta=15000&tc.timeSystem=utc';
  }
  ground.connect();
  openmct.start();
}

whoami().then((me) => (me ? start(me) : login())).catch((e) => {
  document.body.textContent = `The ground did not answer: ${e.message}`;
});
