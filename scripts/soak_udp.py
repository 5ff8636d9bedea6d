#!/usr/bin/env python3
"""The UDP side of scripts/soak.sh: a loopback echo server, and a bounded
flow load through ward's forward inbounds. Not a benchmark: it keeps flows
being created, carried and left to idle out while actors are killed.

    soak_udp.py echo PORT...
        echoes every datagram on 127.0.0.1:PORT back to its sender, until
        killed.
    soak_udp.py load SECS RATE FLOWS ADDR...
        for SECS seconds (at most), RATE datagrams a second in all, spread
        over FLOWS client sockets per inbound ADDR (host:port); every
        second a tenth of each inbound's sockets are replaced by new ones
        (new flows; the old ones idle out in ward). At most RATE * SECS
        datagrams. Prints one line: sent, answered, flows opened.
"""
import selectors
import socket
import sys
import time


def echo(ports):
    sel = selectors.DefaultSelector()
    for port in ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", port))
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    print("echo ready", flush=True)
    while True:
        for key, _ in sel.select():
            try:
                data, peer = key.fileobj.recvfrom(65535)
                key.fileobj.sendto(data, peer)
            except (BlockingIOError, ConnectionRefusedError):
                pass


def new_flow(addr):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.connect(addr)
    s.setblocking(False)
    return s


def drain(socks):
    got = 0
    for s in socks:
        while True:
            try:
                s.recv(65535)
                got += 1
            except (BlockingIOError, ConnectionRefusedError):
                break
    return got


def load(secs, rate, flows, addrs):
    pools = [[new_flow(a) for _ in range(flows)] for a in addrs]
    opened = flows * len(addrs)
    budget = int(rate * secs)
    sent = answered = 0
    start = time.monotonic()
    next_churn = start + 1
    payload = b"ward-soak " * 10
    tick = 0.02
    while sent < budget and time.monotonic() - start < secs:
        # Sends what the rate allows up to now, round robin over every flow.
        due = min(budget, int((time.monotonic() - start) * rate))
        everyone = [s for pool in pools for s in pool]
        while sent < due:
            try:
                everyone[sent % len(everyone)].send(payload)
            except (BlockingIOError, ConnectionRefusedError):
                pass
            sent += 1
        answered += drain(everyone)
        if time.monotonic() >= next_churn:
            next_churn += 1
            for pool, addr in zip(pools, addrs):
                for i in range(max(1, flows // 10)):
                    answered += drain([pool[0]])
                    pool.pop(0).close()
                    pool.append(new_flow(addr))
                    opened += 1
        time.sleep(tick)
    time.sleep(0.2)
    answered += drain([s for pool in pools for s in pool])
    print(f"udp load: sent={sent} answered={answered} flows_opened={opened}")


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "echo":
        echo([int(p) for p in sys.argv[2:]])
    elif len(sys.argv) >= 6 and sys.argv[1] == "load":
        addrs = [(a.rsplit(":", 1)[0], int(a.rsplit(":", 1)[1])) for a in sys.argv[5:]]
        load(float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), addrs)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
