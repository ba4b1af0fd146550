"""Writing the config back: minimal edits, comments and order kept, atomic, mode kept
(0600 for a new file)."""

from __future__ import annotations

import copy
import os
import stat
from pathlib import Path

import pytest

from lbtui.control.config import load_config, parse_config, to_dict
from lbtui.control.configfile import atomic_write, render_config, save_config
from lbtui.model import Listener, SniRoute, SourceRoute
from lbtui.targets import TargetGroup, TargetSpec

ROOT = Path(__file__).resolve().parents[2]


def reweigh(holder: Listener, *weights: int) -> None:
    """New weights for a group's targets, built around the rules (a test may want a bad
    sum to reach the writer)."""
    holder.group = TargetGroup(tuple(TargetSpec(t.ip, t.port, w) for t, w in zip(
        holder.group.targets, weights, strict=True)))

TEXT = """\
# operator's header comment
[datapath]
instance = "h2-file"
interfaces = ["c1", "c2"]   # client side
reply_interfaces = ["b1"]

[settings]
sweep_interval = 1.0  # fast sweeps

# the web tier
[[listener]]
port = 80  # http
protocol = "tcp"
targets = [
  { ip = "198.18.101.2", port = 8080, weight = 50 },  # backend1
  { ip = "198.18.102.2", port = 8080, weight = 50 },  # backend2
]

# echo, for tests
[[listener]]
port = 7000
targets = [{ ip = "198.18.101.2", port = 7000 }]

# the office network
[[source_route]]
cidr = "198.18.1.0/24"
targets = [{ ip = "198.18.103.2", port = 8080 }]
"""


def test_unchanged_config_renders_byte_identical() -> None:
    assert render_config(parse_config(TEXT), TEXT) == TEXT
    example = (ROOT / "examples" / "lbtui.toml").read_text()
    assert render_config(parse_config(example), example) == example


def test_weight_edit_changes_only_those_numbers() -> None:
    c = parse_config(TEXT)
    reweigh(c.listeners[0], 0, 100)
    out = render_config(c, TEXT)
    expected = TEXT.replace("port = 8080, weight = 50 },  # backend1",
                            "port = 8080, weight = 0 },  # backend1").replace(
        "port = 8080, weight = 50 },  # backend2", "port = 8080, weight = 100 },  # backend2")
    assert out == expected
    assert to_dict(parse_config(out)) == to_dict(c)


def test_add_and_remove_keep_comments_and_order() -> None:
    c = parse_config(TEXT)
    c.listeners.append(Listener(53, TargetGroup.single("198.18.103.2", 53), "udp", ["c1"]))
    c.sni_routes.append(SniRoute("api.example.com", TargetGroup.single("198.18.103.2", 443)))
    c.settings.connection_timeout = 60
    out = render_config(c, TEXT)
    assert to_dict(parse_config(out)) == to_dict(c)
    for comment in ("# operator's header comment", "# client side", "# fast sweeps",
                    "# the web tier", "# http", "# backend1", "# echo, for tests",
                    "# the office network"):
        assert comment in out
    # New keys go inside their table (before the next table's heading comment), new
    # tables after the existing ones of their kind.
    assert "sweep_interval = 1.0  # fast sweeps\nconnection_timeout = 60\n\n# the web tier" in out
    assert out.index("port = 7000") < out.index("port = 53") < out.index("[[source_route]]")
    assert out.rstrip().endswith('{ ip = "198.18.103.2", port = 443, weight = 100 },\n]')

    # Removing the echo listener takes its heading comment with it, keeps the others.
    d = copy.deepcopy(c)
    d.listeners = [x for x in d.listeners if x.port != 7000]
    out2 = render_config(d, out)
    assert to_dict(parse_config(out2)) == to_dict(d)
    assert "# echo, for tests" not in out2 and "port = 7000" not in out2
    for comment in ("# the web tier", "# backend1", "# the office network"):
        assert comment in out2
    assert "\n\n\n" not in out2


def test_removing_the_first_table_keeps_the_next_ones_comment() -> None:
    c = parse_config(TEXT)
    c.listeners = c.listeners[1:]
    out = render_config(c, TEXT)
    assert "# the web tier" not in out and "# http" not in out
    assert "# echo, for tests\n[[listener]]\nport = 7000" in out


def test_membership_changes_keep_the_comments_of_kept_targets() -> None:
    c = parse_config(TEXT)
    c.listeners[0].group = TargetGroup.of([("198.18.102.2", 8080, 70),   # backend1 removed
                                           ("198.18.103.2", 8080, 30)])  # appended
    c.listeners[1].group = TargetGroup.of([("198.18.101.2", 7000, 60),   # weight now needed
                                           ("198.18.102.2", 7000, 40)])
    c.source_routes = [SourceRoute("198.18.1.0/24", TargetGroup.single("198.18.103.2", 8080),
                                   stats=False)]
    out = render_config(c, TEXT)
    assert to_dict(parse_config(out)) == to_dict(c)
    assert ('targets = [\n  { ip = "198.18.102.2", port = 8080, weight = 70 },  # backend2\n'
            '  { ip = "198.18.103.2", port = 8080, weight = 30 },') in out
    assert "# backend1" not in out
    assert ('targets = [{ ip = "198.18.101.2", port = 7000, weight = 60 }, '
            '{ ip = "198.18.102.2", port = 7000, weight = 40 }]') in out
    assert "stats = false" in out


def test_reordered_targets_rewrite_the_array() -> None:
    c = parse_config(TEXT)
    c.listeners[0].group = TargetGroup(tuple(reversed(c.listeners[0].group.targets)))
    out = render_config(c, TEXT)
    assert to_dict(parse_config(out)) == to_dict(c)
    assert ('targets = [\n  { ip = "198.18.102.2", port = 8080, weight = 50 },\n'
            '  { ip = "198.18.101.2", port = 8080, weight = 50 },\n]') in out


def test_fresh_file_from_a_config(tmp_path: Path) -> None:
    c = parse_config(TEXT)
    path = tmp_path / "new.toml"
    save_config(c, path)
    assert to_dict(load_config(path)) == to_dict(c)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.stat().st_uid == os.getuid()


def test_save_is_atomic_and_keeps_the_operators_mode(tmp_path: Path) -> None:
    path = tmp_path / "lbtui.toml"
    path.write_text(TEXT)
    os.chmod(path, 0o640)
    before = path.stat().st_ino
    c = load_config(path)
    c.settings.stats = False
    save_config(c)                                   # default: config.path
    assert path.stat().st_ino != before              # replaced by rename, not rewritten
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert load_config(path).settings.stats is False
    assert "# operator's header comment" in path.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["lbtui.toml"]   # no temp left behind


def test_failed_write_leaves_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    path = tmp_path / "lbtui.toml"
    path.write_text(TEXT)

    def boom(*_a: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        atomic_write(path, "garbage")
    assert path.read_text() == TEXT
    assert [p.name for p in tmp_path.iterdir()] == ["lbtui.toml"]


def test_invalid_config_is_never_written(tmp_path: Path) -> None:
    path = tmp_path / "lbtui.toml"
    path.write_text(TEXT)
    c = load_config(path)
    reweigh(c.listeners[0], 70, 50)                  # sums to 120
    with pytest.raises(ValueError, match="weights sum to 120"):
        save_config(c)
    assert path.read_text() == TEXT


def test_repeated_saves_follow_hand_edits_in_between(tmp_path: Path) -> None:
    """The parsed document kept between saves is used only while the file is unchanged."""
    path = tmp_path / "lbtui.toml"
    path.write_text(TEXT)
    c = load_config(path)
    reweigh(c.listeners[0], 40, 60)
    save_config(c)
    reweigh(c.listeners[0], 30, 70)
    save_config(c)
    assert "weight = 30 },  # backend1" in path.read_text()
    path.write_text(path.read_text().replace("# the web tier", "# the web tier, edited"))
    c = load_config(path)
    c.settings.connection_timeout = 5
    save_config(c)
    text = path.read_text()
    assert "# the web tier, edited" in text and "connection_timeout = 5" in text
    assert to_dict(load_config(path)) == to_dict(c)
