#!/usr/bin/python3
"""Cross-checks svcgate's cluster DNS answers with a second DNS implementation.

dnspython (Debian's python3-dnspython, installed by scripts/setup.sh) sends
every query of an expectation file to a DNS server and decodes the answers
itself: nothing of svcgate's own encoder or decoder is involved. Each case is
asked three times:

  udp       plain UDP query (svcgate's workers answer it in the frame)
  udp+edns  UDP with an EDNS0 OPT record (payload 1232, no options)
  tcp       TCP (svcgate's control-path server, hickory-server, answers it)

and each response must have:

  - the question name exactly as sent, letter case included (the query name
    is written in mixed case, 0x20 style, a different pattern per query);
  - QR set, AA set (unless the case has "aa": false), TC clear, the
    expected RCODE;
  - an OPT record exactly when the query had one (RFC 6891 6.1.1);
  - the expected answer, authority and additional records, compared as sets
    of lines "owner ttl class type rdata" as dnspython renders them (names
    lower-cased; the serial of an SOA written as `*`, since it counts table
    swaps); a case without "additional" does not check that section;
  - the same records over the three transports.

The expectation file (JSON):

  {"cases": [{"qname": "nginx.default.svc.cluster.local.", "qtype": "A",
              "rcode": "NOERROR",
              "answer": ["nginx.default.svc.cluster.local. 5 IN A 198.18.128.9"],
              "authority": [], "additional": []}, ...]}

tests/dns_crosscheck.rs writes one for the bundled example and runs this in a
client namespace; by hand, against a running svcgate (the interpreter is
Debian's /usr/bin/python3, which python3-dnspython installs for):

  scripts/dns-crosscheck.py --server 198.18.128.53 expect.json

Prints one line per case (`ok` or `FAIL` with a diff: `-` expected and
missing, `+` got and not expected; with -v also what the plain UDP query
got), then
`crosscheck cases=N failed=F udp_queries=U tcp_queries=T`; exits 1 if any
case failed, 2 on bad usage.
"""

import argparse
import json
import random
import sys
import time

try:
    import dns.edns
    import dns.flags
    import dns.message
    import dns.name
    import dns.opcode
    import dns.query
    import dns.rcode
    import dns.rdatatype
except ImportError:
    sys.stderr.write("dns-crosscheck: needs dnspython (apt-get install python3-dnspython)\n")
    sys.exit(2)

TRANSPORTS = ("udp", "udp+edns", "tcp")
SECTIONS = ("answer", "authority", "additional")


def mixed_case(name, rng):
    """`name` with each letter's case chosen at random (DNS 0x20)."""
    return "".join(c.upper() if c.isalpha() and rng.random() < 0.5 else c.lower() for c in name)


def normalize(line):
    """A record line with the owner and the data lower-cased (names are
    compared without regard to case), the class and type upper-cased, and
    an SOA's serial written `*` (svcgate counts table swaps in it)."""
    fields = line.split()
    if len(fields) < 4:
        return line
    fields = [fields[0].lower(), fields[1], fields[2].upper(), fields[3].upper()] + [f.lower() for f in fields[4:]]
    if fields[3] == "SOA" and len(fields) >= 7:
        fields[6] = "*"
    return " ".join(fields)


def render(rrsets):
    """The records of a section as sorted, normalized lines."""
    return sorted(normalize(line) for rrset in rrsets for line in rrset.to_text().splitlines())


def ask(server, port, qname, qtype, transport, timeout):
    if transport == "udp+edns":
        q = dns.message.make_query(qname, qtype, use_edns=0, payload=1232)
    else:
        q = dns.message.make_query(qname, qtype)
    if transport == "tcp":
        r = dns.query.tcp(q, server, timeout=timeout, port=port)
    else:
        r = dns.query.udp(q, server, timeout=timeout, port=port)
    return q, r


def observe(q, r, transport, want_aa):
    """What a response says, reduced to comparable values, and header problems."""
    problems = []
    sent = q.question[0].name.to_text()
    got = r.question[0].name.to_text() if r.question else "<no question>"
    if got != sent:
        problems.append(f"question name {got!r}, sent {sent!r} (0x20 case not preserved)")
    if r.opcode() != dns.opcode.QUERY:
        problems.append(f"opcode {dns.opcode.to_text(r.opcode())}")
    for flag, want in ((dns.flags.QR, True), (dns.flags.AA, want_aa), (dns.flags.TC, False)):
        if bool(r.flags & flag) != want:
            problems.append(f"flag {dns.flags.to_text(flag)} {'clear' if want else 'set'}")
    with_opt = r.edns >= 0
    if with_opt != (transport == "udp+edns"):
        problems.append(f"OPT record {'present' if with_opt else 'missing'} in the response")
    seen = {"rcode": dns.rcode.to_text(r.rcode())}
    seen["answer"] = render(r.answer)
    seen["authority"] = render(r.authority)
    seen["additional"] = render(r.additional)
    return seen, problems


def diff(title, want, got):
    out = []
    for line in sorted(set(want) | set(got)):
        if line in want and line not in got:
            out.append(f"    {title}: - {line}")
        elif line in got and line not in want:
            out.append(f"    {title}: + {line}")
    return out


def check_case(case, args, rng, counts):
    qname, qtype = case["qname"], case["qtype"]
    want = {"rcode": case["rcode"]}
    for s in SECTIONS:
        if s in case:
            want[s] = sorted(normalize(line) for line in case[s])
    report = []
    seen_by = {}
    for transport in TRANSPORTS:
        asked = mixed_case(qname, rng)
        try:
            q, r = ask(args.server, args.port, asked, qtype, transport, args.timeout)
        except Exception as e:  # timeout, refused connection, bad response
            report.append(f"  {transport}: {asked} {qtype}: no answer: {type(e).__name__}: {e}")
            continue
        finally:
            counts["tcp" if transport == "tcp" else "udp"] += 1
        seen, problems = observe(q, r, transport, case.get("aa", True))
        seen_by[transport] = seen
        lines = [f"    {p}" for p in problems]
        if seen["rcode"] != want["rcode"]:
            lines.append(f"    rcode: - {want['rcode']}\n    rcode: + {seen['rcode']}")
        for s in SECTIONS:
            if s in want:
                lines += diff(s, want[s], seen[s])
        if lines:
            report.append(f"  {transport}: {asked} {qtype}:")
            report += lines
    # The transports against each other (also for sections not in the case).
    base = seen_by.get("udp")
    for transport, seen in seen_by.items():
        if base is not None and transport != "udp" and seen != base:
            report.append(f"  udp and {transport} differ:")
            if seen["rcode"] != base["rcode"]:
                report.append(f"    rcode: udp {base['rcode']}, {transport} {seen['rcode']}")
            for s in SECTIONS:
                report += diff(s, base[s], seen[s])
    info = []
    if args.verbose and "udp" in seen_by:
        info = [f"  got {s}: {line}" for s in SECTIONS for line in seen_by["udp"][s]]
    return report, info


def wait_ready(case, args, deadline):
    """Asks the first case over UDP until it gets the expected answer."""
    want = sorted(normalize(line) for line in case.get("answer", []))
    while True:
        try:
            q, r = ask(args.server, args.port, case["qname"], case["qtype"], "udp", 1.0)
            if dns.rcode.to_text(r.rcode()) == case["rcode"] and render(r.answer) == want:
                return True
        except Exception:
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("expect", help="expectation file (JSON), - for stdin")
    p.add_argument("--server", required=True, help="DNS server address")
    p.add_argument("--port", type=int, default=53)
    p.add_argument("--timeout", type=float, default=2.0, help="per query, seconds")
    p.add_argument("--wait", type=float, default=0.0,
                   help="first wait up to this many seconds for the first case's answer")
    p.add_argument("--seed", type=int, default=0x20, help="seed of the letter-case patterns")
    p.add_argument("-v", "--verbose", action="store_true", help="also print what each case got")
    args = p.parse_args()
    try:
        f = sys.stdin if args.expect == "-" else open(args.expect)
        cases = json.load(f)["cases"]
    except (OSError, ValueError, KeyError) as e:
        sys.stderr.write(f"dns-crosscheck: {args.expect}: {e}\n")
        return 2
    if not cases:
        sys.stderr.write("dns-crosscheck: no cases\n")
        return 2
    if args.wait > 0 and not wait_ready(cases[0], args, time.monotonic() + args.wait):
        print(f"not ready: {cases[0]['qname']} {cases[0]['qtype']} not answered as expected after {args.wait} s")
    rng = random.Random(args.seed)
    counts = {"udp": 0, "tcp": 0}
    failed = 0
    for case in cases:
        report, info = check_case(case, args, rng, counts)
        failed += bool(report)
        print(f"{'FAIL' if report else 'ok  '} {case['qname']} {case['qtype']} {case['rcode']}")
        for line in report + info:
            print(line)
    print(f"crosscheck cases={len(cases)} failed={failed} udp_queries={counts['udp']} tcp_queries={counts['tcp']}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
