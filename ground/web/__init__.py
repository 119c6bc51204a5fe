"""The web console: NASA Open MCT with the lunabase plugin, served by the ground.

``ground.web.routes.WebConsole(server)`` adds to the client interface's aiohttp app:

* ``/`` (redirect) and ``/console/...``: the page, the lunabase plugin (plain ES modules in
  ``ground/web/static``, no build step) with a Content-Security-Policy that allows only this
  origin (and ``blob:`` workers, which Open MCT starts);
* ``/openmct/...``: Open MCT's prebuilt ``dist/`` (npm ``openmct`` 4.2.0, installed by
  ``scripts/setup.sh`` into ``ground/web/node_modules``; ``LUNABASE_OPENMCT_DIST`` overrides);
* ``/api/web/history``: one parameter's history decimated to a plot's pixel width (min/max
  per bucket), ``/api/web/seismic``: a waveform from the archive, ``/api/web/objects``: the
  displays operators make (layouts, plots), persisted in the ops database and shared.

See docs/web-console.md for the plugin's design.
"""

from __future__ import annotations

from ground.web.routes import OPENMCT_VERSION, WebConsole, openmct_dist

__all__ = ["OPENMCT_VERSION", "WebConsole", "openmct_dist"]
