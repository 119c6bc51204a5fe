import socket

from sim.mosquitto import Mosquitto


def test_private_broker_starts_restarts_and_stops() -> None:
    with Mosquitto() as b:
        socket.create_connection((b.host, b.port), timeout=1).close()
        b.kill()
        assert not b.running
        b.start()
        socket.create_connection((b.host, b.port), timeout=1).close()
        assert "max_queued_messages 0" in b.config_path.read_text()
    assert not b.running
