#!/usr/bin/env python3
"""SMTP clients for the end-to-end tests, run inside a client namespace.

Every mode prints one JSON object on stdout, for the Rust test to assert on.
  send    - a real message through smtplib (headers + a binary attachment); the exact bytes
            handed to smtplib are written to --out so the test can compare what was delivered
  dialog  - a raw socket conversation: each --line is sent and the reply read; reports when the
            server closes; --pregreet sends the first line before reading the banner
  pipeline - greets with the first --line, then sends the others and QUIT in one write and reads
            one reply for each, split at reply boundaries
  stall   - a client that stops talking (after --line commands and a --partial line) with its
            socket open; reports when the server let go
  bots    - --count sessions refused at EHLO, each doing what a sending MTA does (HELO, QUIT)
  flood   - N concurrent raw sessions greeting with distinct bogus names (bounded in time)
"""
import argparse
import json
import os
import smtplib
import socket
import sys
import threading
import time
from email.message import EmailMessage


def read_reply(sock, timeout):
    """One SMTP reply (possibly multi-line), or None when the server closed, or 'TIMEOUT'."""
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                return data.decode("latin-1") if data else None
            data += chunk
            lines = data.split(b"\r\n")
            for line in lines[:-1]:
                if len(line) >= 4 and line[3:4] == b" ":
                    return data.decode("latin-1")
    except socket.timeout:
        return data.decode("latin-1") if data else "TIMEOUT"
    except ConnectionResetError:
        return data.decode("latin-1") if data else None


def closed_after(sock, timeout):
    """True if the server closes the connection within timeout."""
    sock.settimeout(timeout)
    try:
        return sock.recv(4096) == b""
    except socket.timeout:
        return False
    except ConnectionResetError:
        return True


def dialog(a):
    out = {"banner": None, "replies": [], "closed": False}
    sock = socket.create_connection((a.server, a.port), timeout=a.timeout)
    lines = [l.encode("latin-1").decode("unicode_escape").encode("latin-1") for l in a.line]
    if a.pregreet and lines:
        sock.sendall(lines[0])
        lines = lines[1:]
        out["banner"] = read_reply(sock, a.timeout)
        out["replies"].append(read_reply(sock, a.timeout))
    else:
        out["banner"] = read_reply(sock, a.timeout)
    for line in lines:
        if a.slow:
            time.sleep(a.slow)
        try:
            sock.sendall(line)
        except (BrokenPipeError, ConnectionResetError):
            out["replies"].append(None)
            break
        out["replies"].append(read_reply(sock, a.timeout))
    out["closed"] = closed_after(sock, a.close_wait)
    out["local_port"] = sock.getsockname()[1]
    sock.close()
    print(json.dumps(out))


def read_replies(sock, n, timeout):
    """n SMTP replies read from one stream, split at reply boundaries (several may arrive in one
    segment); a missing one is None."""
    sock.settimeout(timeout)
    replies, current, buf = [], b"", b""
    while len(replies) < n:
        if b"\r\n" not in buf:
            try:
                chunk = sock.recv(65536)
            except (socket.timeout, ConnectionResetError):
                chunk = b""
            if not chunk:
                break
            buf += chunk
            continue
        line, buf = buf.split(b"\r\n", 1)
        current += line + b"\r\n"
        if len(line) < 4 or line[3:4] != b"-":
            replies.append(current.decode("latin-1"))
            current = b""
    return replies + [None] * (n - len(replies))


def pipeline(a):
    """Greets with the first line, then writes every other line in one write (RFC 2920) and
    reads one reply for each, in order; then ends the message (if DATA was accepted) and quits."""
    out = {"banner": None, "replies": [], "closed": False}
    sock = socket.create_connection((a.server, a.port), timeout=a.timeout)
    lines = [l.encode("latin-1").decode("unicode_escape").encode("latin-1") for l in a.line]
    out["banner"] = read_reply(sock, a.timeout)
    sock.sendall(lines[0])
    out["greeting"] = read_reply(sock, a.timeout)
    sock.sendall(b"".join(lines[1:]))
    out["replies"] = read_replies(sock, len(lines) - 1, a.timeout)
    last = out["replies"][-1] or ""
    sock.sendall((b"Subject: pipelined\r\n\r\nhi\r\n.\r\n" if last.startswith("354") else b"") + b"QUIT\r\n")
    out["end"] = read_replies(sock, 2 if last.startswith("354") else 1, a.timeout)
    sock.close()
    print(json.dumps(out))


def stall(a):
    """Sends each --line and reads its reply, then sends --partial without a line end (or
    nothing) and stays silent, socket open; reports how long the server took to close (null if
    it did not within --timeout)."""
    out = {"replies": []}
    sock = socket.create_connection((a.server, a.port), timeout=a.timeout)
    out["banner"] = read_reply(sock, a.timeout)
    for l in a.line:
        sock.sendall(l.encode("latin-1").decode("unicode_escape").encode("latin-1"))
        out["replies"].append(read_reply(sock, a.timeout))
    if a.partial:
        sock.sendall(a.partial.encode())
    started = time.monotonic()
    sock.settimeout(a.timeout)
    tail = b""
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                out["closed_after"] = time.monotonic() - started
                break
            tail += chunk
    except socket.timeout:
        out["closed_after"] = None
    except ConnectionResetError:
        out["closed_after"] = time.monotonic() - started
    out["tail"] = tail.decode("latin-1")
    out["local_port"] = sock.getsockname()[1]
    sock.close()
    print(json.dumps(out))


def send(a):
    msg = EmailMessage()
    msg["From"] = a.mail_from
    msg["To"] = a.rcpt
    msg["Subject"] = "helo e2e: headers, body and a binary attachment"
    msg["Message-ID"] = "<%s@client.example.org>" % os.urandom(8).hex()
    msg["X-Test-Header"] = "kept as sent"
    msg.set_content("Hello.\n.\n..leading dots survive dot-stuffing\nEnd.\n")
    msg.add_attachment(os.urandom(a.attach_bytes), maintype="application", subtype="octet-stream",
                       filename="random.bin")
    data = msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))
    with open(a.out, "wb") as f:
        f.write(data)
    result = {"ok": False}
    try:
        source = (a.source, 0) if a.source else None
        with smtplib.SMTP(a.server, a.port, local_hostname=a.helo, timeout=a.timeout, source_address=source) as s:
            if a.starttls:
                s.starttls()
                s.ehlo(a.helo)
            refused = s.sendmail(a.mail_from, [a.rcpt], data)
            result = {"ok": not refused, "refused": {k: list(v) for k, v in refused.items()}}
    except smtplib.SMTPException as e:
        result = {"ok": False, "error": repr(e)}
    print(json.dumps(result))


def bots(a):
    """--count sessions, --threads at a time, each as a sending MTA refused at EHLO behaves: EHLO,
    HELO after the 5xx, QUIT, close. Reports how many read the refusal for both."""
    results = []
    lock = threading.Lock()
    todo = list(range(a.count))

    def worker():
        while True:
            with lock:
                if not todo:
                    return
                todo.pop()
            ok = False
            try:
                sock = socket.create_connection((a.server, a.port), timeout=a.timeout)
                read_reply(sock, a.timeout)
                sock.sendall(("EHLO %s\r\n" % a.helo).encode())
                got, helo_sent = "", False
                sock.settimeout(a.timeout)
                while got.count("Bogus HELO") < 2:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    got += chunk.decode("latin-1")
                    if not helo_sent and "Bogus HELO" in got:
                        sock.sendall(("HELO %s\r\n" % a.helo).encode())
                        helo_sent = True
                try:
                    sock.sendall(b"QUIT\r\n")
                except OSError:
                    pass
                ok = got.count("Bogus HELO") >= 2
                sock.close()
            except OSError:
                pass
            with lock:
                results.append(ok)

    threads = [threading.Thread(target=worker) for _ in range(a.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(a.timeout * a.count)
    print(json.dumps({"sessions": len(results), "read_twice": sum(results)}))


def flood(a):
    replies = [None] * a.count
    barrier = threading.Barrier(a.count, timeout=a.timeout)

    def one(i):
        try:
            sock = socket.create_connection((a.server, a.port), timeout=a.timeout)
            read_reply(sock, a.timeout)
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                pass
            # --line: sent before the greeting, each reply read (and not reported).
            for line in a.line:
                sock.sendall(line.encode())
                read_reply(sock, a.timeout)
            sock.sendall(("EHLO " + a.helo_template.format(i=i) + "\r\n").encode())
            replies[i] = read_reply(sock, a.timeout)
            sock.close()
        except OSError as e:
            replies[i] = "ERROR " + repr(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(a.count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(a.timeout * 3)
    print(json.dumps({"replies": replies}))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["dialog", "pipeline", "stall", "send", "flood", "bots"])
    p.add_argument("--server", required=True)
    p.add_argument("--port", type=int, default=25)
    p.add_argument("--timeout", type=float, default=10)
    p.add_argument("--close-wait", type=float, default=2)
    p.add_argument("--line", action="append", default=[])
    p.add_argument("--pregreet", action="store_true")
    p.add_argument("--slow", type=float, default=0)
    p.add_argument("--helo", default="client.example.org")
    p.add_argument("--mail-from", default="sender@client.example.org")
    p.add_argument("--rcpt", default="user@example.com")
    p.add_argument("--attach-bytes", type=int, default=50000)
    p.add_argument("--starttls", action="store_true")
    p.add_argument("--out", default="/dev/null")
    p.add_argument("--source", default=None, help="source address for send")
    p.add_argument("--count", type=int, default=200)
    p.add_argument("--partial", default="")
    p.add_argument("--threads", type=int, default=20)
    p.add_argument("--helo-template", default="bogus{i}")
    a = p.parse_args()
    {"dialog": dialog, "pipeline": pipeline, "stall": stall, "send": send, "flood": flood, "bots": bots}[a.mode](a)


if __name__ == "__main__":
    sys.exit(main())
