"""The console's screens: overview, node detail, alarms, commanding, packets, links.

Every screen redraws on a timer (``REFRESH_S``) and only when the model topics it shows
changed, so a burst of pushes costs one redraw.  On-demand reads (latest values, history,
packets, waveform) run as exclusive workers while the screen is visible, never awaited in
a handler, so keys stay responsive whatever the network does.

One module per screen: ``overview`` (1), ``node`` (2), ``alarms`` (3), ``commanding`` (4),
``packets`` (5), ``links`` (6); ``base`` holds what they share.
"""

from ground.console.screens.alarms import AlarmsScreen, ShelveScreen
from ground.console.screens.base import REFRESH_S, BaseScreen
from ground.console.screens.commanding import CommandScreen, ConfirmScreen
from ground.console.screens.links import LinksScreen
from ground.console.screens.node import NodeScreen
from ground.console.screens.overview import OverviewScreen
from ground.console.screens.packets import PacketsScreen

__all__ = ['AlarmsScreen', 'BaseScreen', 'CommandScreen', 'ConfirmScreen', 'LinksScreen', 'NodeScreen', 'OverviewScreen', 'PacketsScreen', 'REFRESH_S', 'ShelveScreen']
