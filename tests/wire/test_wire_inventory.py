"""The inventory refuses what would weaken telecommand authentication: two nodes with one
key, duplicate ids; and saves its secrets 0600."""

from __future__ import annotations

import stat

import pytest

from wire.inventory import Inventory, InventoryError, Node


def test_two_nodes_with_the_same_key_are_refused(tmp_path):
    inv = Inventory.generate("moon", ["n01", "n02", "n03"])
    inv.save(tmp_path / "inv.toml")
    text = (tmp_path / "inv.toml").read_text()
    k1, k3 = inv.node("n01").key.hex(), inv.node("n03").key.hex()
    (tmp_path / "bad.toml").write_text(text.replace(k3, k1))
    with pytest.raises(InventoryError, match="n01 and n03 have the same telecommand key"):
        Inventory.load(tmp_path / "bad.toml")
    with pytest.raises(InventoryError, match="same telecommand key"):
        Inventory("moon", [Node("a", b"k" * 32, "p"), Node("b", b"k" * 32, "q")])


def test_generated_keys_are_distinct_and_the_file_private(tmp_path):
    inv = Inventory.generate("moon", [f"n{i:02d}" for i in range(20)])
    assert len({n.key for n in inv.nodes}) == 20
    p = inv.save(tmp_path / "inv.toml")
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert Inventory.load(p).node("n07").key == inv.node("n07").key
    p.chmod(0o644)  # loosened by hand: the next save makes it private again
    inv.save(p)
    assert stat.S_IMODE(p.stat().st_mode) == 0o600


def test_duplicate_ids_refused():
    with pytest.raises(InventoryError, match="twice"):
        Inventory("moon", [Node("a", b"k" * 32, "p"), Node("a", b"j" * 32, "q")])


@pytest.mark.parametrize("edit,words", [
    (lambda t: t.replace("hk_period_s = 1.0", 'hk_period_s = "nan"', 1), "hk_period_s"),
    (lambda t: t.replace("hk_period_s = 1.0", "hk_period_s = 0.0", 1), "hk_period_s"),
    (lambda t: t.replace("hk_period_s = 1.0", "hk_period_s = -5.0", 1), "hk_period_s"),
    (lambda t: t.replace('key = "', "key = 12 # ", 1), "inv.toml"),
    (lambda t: t + "\n" + "# padding\n" * 500_000, "larger than"),
])
def test_hostile_inventory_files_are_refused_with_a_reason(tmp_path, edit, words):
    """A malformed inventory is an InventoryError naming the problem, never a traceback or a jam."""
    inv = Inventory.generate("moon", ["n01", "n02"])
    p = tmp_path / "inv.toml"
    inv.save(p)
    p.write_text(edit(p.read_text()))
    with pytest.raises(InventoryError, match=words):
        Inventory.load(p)
