"""`lunabase flash` flashes the virtual board; the node's telemetry reaches a private broker
and decodes with ground.parse; a second flash uploads nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hil.board import Board
from hil.flash import Broker, flash, node_config, tc_floor
from hil.ground import HilGround
from hil.virtual_board import VirtualBoard
from sim.mosquitto import Mosquitto
from wire.inventory import Inventory

pytestmark = pytest.mark.slow

# `python -m hil` runs the same subcommands as `lunabase` (hil.cli.register) without the other parts
LUNABASE = [sys.executable, "-m", "hil"]


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    return Inventory.generate("hiltest", ["n01", "n02"]).save(tmp_path / "base.toml")


def test_lunabase_flash_cli_then_telemetry_on_the_ground(
    vboard: VirtualBoard, broker: Mosquitto, inventory: Path
) -> None:
    inv = Inventory.load(inventory)
    with HilGround(broker.host, broker.port, inv.site, keys={"n01": inv.node("n01").key}) as ground:
        r = subprocess.run(
            [*LUNABASE, "flash", "--port", vboard.port, "--node", "n01", "--inventory", str(inventory),
             "--broker", f"mqtt://127.0.0.1:{broker.port}", "--birth-timeout", "90"],
            capture_output=True, text=True, timeout=240,
        )  # fmt: skip
        assert r.returncode == 0, f"lunabase flash failed:\n{r.stdout}\n{r.stderr}\n(serial log {vboard.log_path})"
        assert "birth: n01 online" in r.stderr
        assert (vboard.dir / "lib" / "lunanode" / "app.mpy").exists()
        assert not (vboard.dir / "lib" / "lunanode" / "app.py").exists()
        assert (vboard.dir / "main.py").read_bytes() == (Path(__file__).parents[2] / "firmware" / "main.py").read_bytes()
        hk = ground.await_telemetry(lambda s: s.node == "n01" and s.packet == "HK", timeout=60)
        assert hk["boot_count"] >= 1
        ground.await_telemetry(lambda s: s.node == "n01" and s.packet == "POWER", timeout=60)
        assert ground.status["n01"]["state"] == "online"
        assert not ground.rejected


def test_flash_again_uploads_only_what_changed(vboard: VirtualBoard, broker: Mosquitto, inventory: Path) -> None:
    br = Broker("127.0.0.1", broker.port)
    with Board.open(vboard.port) as b:
        first = flash(b, node_config(inventory, "n02", br), br, birth_timeout=90)
        assert "config.json" in first.uploaded and len(first.uploaded) > 10
        assert first.birth and first.birth["state"] == "online"
        # the telecommand counter starts at the flash time: TCs signed before it are replays
        floor = int((vboard.dir / "data" / "tc").read_text())
        assert abs(floor - tc_floor()) < 600
        (vboard.dir / "data" / "tc").write_bytes(b"\x00corrupt")  # re-armed by the next flash
        (vboard.dir / "main.py.tmp").write_bytes(b"print('half an upl")  # an interrupted earlier copy
        again = flash(b, node_config(inventory, "n02", br), br, birth_timeout=90)
        assert again.uploaded == [] and len(again.unchanged) == len(first.uploaded)
        assert not (vboard.dir / "main.py.tmp").exists()
        assert int((vboard.dir / "data" / "tc").read_text()) >= floor
        (vboard.dir / "data" / "tc").write_text(str(floor + 10**6))  # a higher counter is kept
        changed = flash(b, node_config(inventory, "n02", br, extra={"rates.hk_ms": 500}), None)
        assert changed.uploaded == ["config.json"]
        assert (vboard.dir / "data" / "tc").read_text() == str(floor + 10**6)


def test_flash_over_mqtts_uploads_the_ca_and_the_node_verifies_the_broker(
    vboard: VirtualBoard, inventory: Path, tmp_path: Path
) -> None:
    """`--broker mqtts://... --ca ca.crt`: the CA goes onto the board as ca.der, the config says
    tls, and the birth arrives over verified TLS (the flasher's monitor verifies too)."""
    from ground.broker import make_self_signed
    from hil.flash import ca_der

    tls = make_self_signed(tmp_path / "tls")
    with Mosquitto(tls=tls) as b:
        br = Broker.parse(f"mqtts://127.0.0.1:{b.port}", ca=str(tls.cafile))
        cfg = node_config(inventory, "n01", br)
        assert cfg["broker"]["tls"] is True and cfg["broker"]["ca"] == "ca.der"
        with Board.open(vboard.port) as board:
            rep = flash(board, cfg, br, birth_timeout=90, ca=ca_der(tls.cafile))
        assert rep.birth and rep.birth["state"] == "online"
        assert (vboard.dir / "ca.der").read_bytes() == ca_der(tls.cafile)
    with pytest.raises(Exception, match="mqtts needs --ca"):
        Broker.parse("mqtts://127.0.0.1:8883")
