"""The corpus of bad input: each case is a real ``lbtui`` command line, the exit code it
must give, and words its message must contain. Placeholders are filled in by the test:
{name} (the live instance), {decoy} (a directory outside lbtui's own), {tag}, {vip},
{b1} (a backend), {bad[KEY]} (a broken file made by ``bad_files``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    code: int
    says: str          # a substring of stderr (usage errors) or stdout


INSTANCE_RULE = "is not allowed: 1-32 ASCII letters, digits, '_' or '-'"
LAB_RULE = "is not allowed: 1-20 ASCII letters, digits or '-'"


def case(id: str, line: str | tuple[str, ...], code: int, says: str) -> Case:
    return Case(id, tuple(line.split()) if isinstance(line, str) else line, code, says)


NAMES = [
    case("down-traversal", "down --instance ../../../..{decoy}", 2, INSTANCE_RULE),
    case("down-dotdot", "down --instance ..", 2, INSTANCE_RULE),
    case("down-empty", ("down", "--instance", ""), 2, INSTANCE_RULE),
    case("down-slash", "down --instance {name}/../{name}", 2, INSTANCE_RULE),
    case("down-newline", ("down", "--instance", "{name}\n"), 2, INSTANCE_RULE),
    case("down-too-long", "down --instance " + "x" * 33, 2, INSTANCE_RULE),
    case("ctl-traversal", "ctl --instance ../{name} status", 2, INSTANCE_RULE),
    case("ctl-after-command", "ctl status --instance ../../{decoy}", 2, INSTANCE_RULE),
    case("ctl-edit-traversal", "ctl --instance ../{name} listeners remove 80", 2,
         INSTANCE_RULE),
    case("console-attach", "console --attach ../..{decoy}", 2, INSTANCE_RULE),
    case("lab-down-traversal", "lab down --lab ../..{decoy}", 2, LAB_RULE),
    case("lab-status-space", ("lab", "status", "--lab", "a b"), 2, LAB_RULE),
    case("lab-exec-dotdot", "lab exec --lab=.. lb -- true", 2, LAB_RULE),
    case("lab-up-slash", "lab up --lab x/y", 2, LAB_RULE),
    case("lab-unicode", ("lab", "status", "--lab", "l\u00e4b"), 2, LAB_RULE),
    case("demo-traversal", "demo --headless --lab ../x", 2, LAB_RULE),
    case("serve-instance", "serve --config {bad[instance]}", 2,
         "datapath.instance: instance name '../../../..{decoy}' " + INSTANCE_RULE),
    case("serve-netns", "serve --config {bad[netns]}", 2,
         "datapath.netns: network namespace name '../../proc/1/ns/net' is not allowed"),
    # Lab "<tag>a" must not take lab "<tag>a-b" (namespace lbt-<tag>a-b-client1) with it.
    case("lab-down-prefix", "lab down --lab {tag}a", 0, "nothing to remove"),
]

FILES = [
    case("serve-not-utf8", "serve --config {bad[not_utf8]}", 2, "not UTF-8 text (line "),
    case("serve-deep", "serve --config {bad[deep]}", 2, "nested too deeply"),
    case("serve-huge", "serve --config {bad[huge]}", 2, "larger than 16777216 bytes"),
    case("serve-fifo", "serve --config {bad[fifo]}", 2, "not a regular file"),
    case("serve-directory", "serve --config {bad[directory]}", 2, "not a regular file"),
    case("serve-device", "serve --config /dev/zero", 2, "not a regular file"),
    case("serve-missing", "serve --config {bad[missing]}", 2, "file not found"),
    case("serve-unreadable-syntax", "serve --config {bad[syntax]}", 2, "TOML syntax"),
    case("ctl-config-not-utf8", "ctl --instance {name} --config {bad[not_utf8]} weight "
         "listener 80 {b1}:8080 50", 2, "not UTF-8 text"),
    case("ctl-config-fifo", "ctl --instance {name} --config {bad[fifo]} listeners remove 80",
         2, "not a regular file"),
    case("ctl-config-deep", "ctl --instance {name} --config {bad[deep]} listeners remove 80",
         2, "nested too deeply"),
]

VALUES = [
    case("target-loopback", "ctl --instance {name} listeners add 8081 127.0.0.1:80", 2,
         "127.0.0.1 is a loopback address: it cannot be a target"),
    case("target-link-local", "ctl --instance {name} targets listener 80 169.254.0.1:80", 2,
         "169.254.0.1 is a link-local address"),
    case("target-class-e", "ctl --instance {name} listeners add 8081 240.0.0.1:80", 2,
         "240.0.0.1 is in class E"),
    case("target-this-host", "ctl --instance {name} sources add 198.18.9.0/24 0.0.0.1:80", 2,
         "0.0.0.1 is in 0.0.0.0/8"),
    case("sni-listener-no-address", "ctl --instance {name} listeners add 444 {b1}:8443 "
         "--protocol tcp --sni", 2, "address: is required for SNI listeners"),
    case("sni-listener-any-address", "ctl --instance {name} listeners add 444 {b1}:8443 "
         "--protocol tcp --sni --address 0.0.0.0", 2, "not 0.0.0.0"),
    case("sni-listener-loop", "ctl --instance {name} listeners add 444 {vip}:444 "
         "--protocol tcp --sni --address {vip}", 2, "would connect to itself (a loop)"),
    case("sni-route-loop", "ctl --instance {name} sni add www.loop.test {vip}:443", 2,
         "would connect to itself (a loop)"),
    case("source-route-loop", "ctl --instance {name} sources add 198.18.9.0/24 {vip}:443", 2,
         "would connect to itself (a loop)"),
    case("ifname-control", ("ctl", "--instance", "{name}", "listeners", "add", "8081",
                            "{b1}:8080", "--interface", "c1\x1b[2J"), 2,
         "is not a valid interface name (1-15 bytes"),
    case("ifname-long", "ctl --instance {name} listeners add 8081 {b1}:8080 --interface "
         + "c" * 16, 2, "is not a valid interface name (1-15 bytes"),
    case("sni-ip-literal", "ctl --instance {name} sni add 198.18.0.10 {b1}:8443", 2,
         "the last label is all digits"),
    case("sni-bad-punycode", "ctl --instance {name} sni add xn--abc.test {b1}:8443", 2,
         "is not valid punycode"),
    case("cidr-hostmask", "ctl --instance {name} sources add 198.18.9.0/0.0.0.255 "
         "{b1}:8080", 2, "0.0.0.255 is not a netmask"),
    case("cidr-netmask-host-bits", "ctl --instance {name} sources add "
         "198.18.9.7/255.255.255.0 {b1}:8080", 2, "has host bits set (did you mean "
         "198.18.9.0/24?)"),
]

CORPUS = NAMES + FILES + VALUES

# Bad ClientHellos for the live SNI listener: each connection is refused, nothing else.
HELLOS = {
    "http-not-tls": b"GET / HTTP/1.1\r\nHost: api.safety.test\r\n\r\n",
    "bad-lengths": b"\x16\x03\x01\x00\x30\x01\x00\x00\x2c" + b"\xee" * 0x2c,
    "oversized": b"\x16\x03\x01\x00\x08\x01\x00\x40\x00" + b"\0" * 4,
    "random": bytes(range(256)) * 4,
    "alert-record": b"\x15\x03\x03\x00\x02\x02\x28",
}
