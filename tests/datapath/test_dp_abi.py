"""lb_abi.h (the C header) and lbtui/abi.py describe the same bytes: BCC compiles the header,
and every size and field offset of the tables' key and value types (as clang laid them out)
equals the ctypes mirror; every #define has the same value on both sides."""

from __future__ import annotations

import ctypes as ct
import re
from collections.abc import Iterator

import pytest

from lbtui import abi
from lbtui.datapath.loader import BPF_DIR

# One table per struct, so BCC reports each layout (as its Key or Leaf type).
PROGRAM = b"""
#include "lb_abi.h"
BPF_HASH(t_listen, struct lb_listen_key, struct lb_route, 1);
BPF_HASH(t_lpm, struct lb_lpm_key, struct lb_target, 1);
BPF_HASH(t_ct, struct lb_ct_key, struct lb_ct_value, 1);
BPF_HASH(t_event, __u32, struct lb_event, 1);
BPF_HASH(t_vip, struct lb_vip_key, __u32, 1);
BPF_HASH(t_reason, struct lb_reason_key, __u64, 1);
BPF_ARRAY(t_maglev, struct lb_maglev_table, 1);
"""

TABLES = {                 # abi type -> (table, "Key" | "Leaf")
    abi.ListenKey: ("t_listen", "Key"),
    abi.Route: ("t_listen", "Leaf"),
    abi.LpmKey: ("t_lpm", "Key"),
    abi.Target: ("t_lpm", "Leaf"),
    abi.CtKey: ("t_ct", "Key"),
    abi.CtValue: ("t_ct", "Leaf"),
    abi.Event: ("t_event", "Leaf"),
    abi.VipKey: ("t_vip", "Key"),
    abi.ReasonKey: ("t_reason", "Key"),
    abi.MaglevTable: ("t_maglev", "Leaf"),
}


@pytest.fixture(scope="module")
def compiled(session_datapath: object) -> Iterator[object]:
    from bcc import BPF

    b = BPF(text=PROGRAM, cflags=[f"-I{BPF_DIR}"])
    yield b
    b.cleanup()


def layout(t: type) -> list[tuple[str, int, int]]:
    """(field name, offset, size) for every named field, nested structs and arrays of
    structs flattened with dotted/indexed names. Padding fields BCC adds are skipped."""
    out = []
    for name, ftype, *_ in t._fields_:
        if name.startswith("__pad"):
            continue
        field = getattr(t, name)
        out.append((name, field.offset, field.size))
        if isinstance(ftype, type) and issubclass(ftype, ct.Structure):
            out += [(f"{name}.{n}", field.offset + o, s) for n, o, s in layout(ftype)]
        elem = getattr(ftype, "_type_", None)
        if isinstance(elem, type) and issubclass(elem, ct.Structure):
            size = ct.sizeof(elem)
            for i in range(ftype._length_):
                out += [(f"{name}[{i}].{n}", field.offset + i * size + o, s)
                        for n, o, s in layout(elem)]
    return out


@pytest.mark.parametrize("py_type", TABLES, ids=[t.__name__ for t in TABLES])
def test_python_layout_equals_the_compiled_header(compiled: object, py_type: type) -> None:
    table, side = TABLES[py_type]
    c_type = getattr(compiled[table.encode()], side)  # type: ignore[index]
    assert ct.sizeof(c_type) == ct.sizeof(py_type)
    assert layout(c_type) == layout(py_type)


def test_maglev_tables_of_any_size_keep_the_layout(session_datapath: object) -> None:
    """The loader compiles lb_maglev_table with the pinned map's size (-DLB_MAGLEV_SIZE):
    the header and maglev_table_type agree on other sizes too (one byte per slot)."""
    from bcc import BPF

    b = BPF(text=b'#include "lb_abi.h"\nBPF_ARRAY(t_maglev, struct lb_maglev_table, 1);\n',
            cflags=[f"-I{BPF_DIR}", "-DLB_MAGLEV_SIZE=4093"])
    try:
        leaf = b[b"t_maglev"].Leaf
        assert ct.sizeof(leaf) == ct.sizeof(abi.maglev_table_type(4093)) == 4093
        assert layout(leaf) == layout(abi.maglev_table_type(4093))
    finally:
        b.cleanup()
    for size in (4093, abi.MAGLEV_SIZE, 655373):
        t = abi.maglev_table_type(size)
        assert ct.sizeof(t) == size and t.slot.offset == 0
    assert abi.maglev_table_type(abi.MAGLEV_SIZE) is abi.MaglevTable


def test_sizes_are_the_seeds() -> None:
    for py_type, _c_name, size in abi.LAYOUTS.values():
        assert ct.sizeof(py_type) == size, py_type.__name__
    assert ct.sizeof(abi.SniKey) == 8


def test_conntrack_flags_share_the_first_aligned_u64_for_atomic_or() -> None:
    """lb_ct_fetch_or_flags ORs (bits << 48) into the value's first u64 (little endian)."""
    assert abi.CtValue.flags.offset == 6 and abi.CtValue.flags.size == 2
    v = abi.CtValue()
    ct.c_uint64.from_buffer(v).value |= abi.CT_F_RST << 48
    assert v.flags == abi.CT_F_RST and v.orig_dst_port == 0


def header_defines() -> dict[str, int]:
    """LB_* integer constants of the header: plain numbers and (1 << n)."""
    text = (BPF_DIR / "lb_abi.h").read_text()
    out = {}
    for name, expr in re.findall(r"^#define\s+LB_(\w+)\s+(\S.*?)\s*(?:/\*.*)?$", text, re.M):
        if m := re.fullmatch(r"\(1 << (\d+)\)", expr):
            out[name] = 1 << int(m[1])
        elif expr.isdigit():
            out[name] = int(expr)
    return out


def test_every_header_constant_has_the_same_value_in_python() -> None:
    defines = header_defines()
    assert len(defines) >= 25, sorted(defines)
    missing = {n for n in defines if not hasattr(abi, n)}
    assert not missing, f"lbtui/abi.py lacks {sorted(missing)}"
    assert {n: getattr(abi, n) for n in defines} == defines
