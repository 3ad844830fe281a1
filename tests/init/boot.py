#!/usr/bin/env python3
"""Boot one QEMU VM (TCG) and check its serial console, for tests/init/run.sh.

usage: boot.py NAME LOG TIMEOUT_S -- QEMU-ARGS...
  env EXPECT   newline-separated regexes that must all appear, in this order
  env REJECT   newline-separated regexes that must not appear (optional)
  env SEND     "REGEX=>TEXT" lines: when REGEX appears, type TEXT + newline on the serial console
  env MARK     regex whose line gives the "network up" timing (guest uptime and wall time)
  env MONITOR  path of a `-monitor unix:PATH,server,nowait` socket; MONITOR_CMDS (newline-separated)
               are sent to it right after start (e.g. with -S: "set_link n off" then "cont")

The VM must end by itself (poweroff/reboot with -no-reboot) unless EXPECT is met and
KILL_AFTER_EXPECT=1. Prints one summary line; exit status 0 = pass.
"""
import os, re, select, socket, subprocess, sys, time

def main():
    name, log_path, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
    qemu = sys.argv[sys.argv.index("--") + 1:]
    expect = [re.compile(x) for x in os.environ.get("EXPECT", "").splitlines() if x.strip()]
    reject = [re.compile(x) for x in os.environ.get("REJECT", "").splitlines() if x.strip()]
    sends = []
    for line in os.environ.get("SEND", "").splitlines():
        if "=>" in line:
            pat, text = line.split("=>", 1)
            sends.append([re.compile(pat), text, False])
    mark = re.compile(os.environ["MARK"]) if os.environ.get("MARK") else None
    kill_after = os.environ.get("KILL_AFTER_EXPECT") == "1"

    start = time.monotonic()
    p = subprocess.Popen(qemu, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    os.set_blocking(p.stdout.fileno(), False)
    if os.environ.get("MONITOR"):
        monitor(os.environ["MONITOR"], os.environ.get("MONITOR_CMDS", "").splitlines())
    buf, lines, next_expect, mark_info, rejected = b"", [], 0, None, None
    with open(log_path, "w") as log:
        while True:
            elapsed = time.monotonic() - start
            if elapsed > timeout:
                p.kill()
                break
            r, _, _ = select.select([p.stdout], [], [], 0.5)
            chunk = b""
            if r:
                try:
                    chunk = p.stdout.read() or b""
                except BlockingIOError:
                    chunk = b""
            if chunk:
                buf += chunk
                *complete, buf = buf.split(b"\n")
                for raw in complete:
                    line = raw.decode("utf-8", "replace").rstrip("\r")
                    t = time.monotonic() - start
                    log.write(f"{t:8.3f} {line}\n")
                    lines.append(line)
                    if next_expect < len(expect) and expect[next_expect].search(line):
                        next_expect += 1
                    for rx in reject:
                        if rx.search(line) and rejected is None:
                            rejected = line
                    if mark and mark_info is None and mark.search(line):
                        m = re.search(r"\[\s*(\d+\.\d+)\]", line)
                        mark_info = (float(m.group(1)) if m else None, t)
                    for s in sends:
                        if not s[2] and s[0].search(line):
                            s[2] = True
                            time.sleep(0.5)
                            p.stdin.write(s[1].encode() + b"\n")
                            p.stdin.flush()
                log.flush()
                # Prompt-like partial lines (the shell prompt has no newline) can trigger sends too.
                partial = buf.decode("utf-8", "replace")
                for s in sends:
                    if not s[2] and s[0].search(partial):
                        s[2] = True
                        time.sleep(0.5)
                        p.stdin.write(s[1].encode() + b"\n")
                        p.stdin.flush()
            if kill_after and next_expect == len(expect):
                p.kill()
                break
            if p.poll() is not None and not chunk:
                break
    p.wait()
    wall = time.monotonic() - start
    ok = next_expect == len(expect) and rejected is None and (kill_after or p.returncode == 0)
    why = ""
    if next_expect < len(expect):
        why = f"missing /{expect[next_expect].pattern}/"
    elif rejected is not None:
        why = f"rejected line: {rejected}"
    elif not kill_after and p.returncode != 0:
        why = f"qemu exited with {p.returncode} (timeout {timeout:.0f} s?)"
    timing = ""
    if mark_info:
        timing = f" network-up: guest uptime {mark_info[0]} s, wall {mark_info[1]:.1f} s;"
    print(f"{'PASS' if ok else 'FAIL'} {name}:{timing} total {wall:.1f} s; log {log_path}" + (f"; {why}" if why else ""))
    sys.exit(0 if ok else 1)

def monitor(path, cmds):
    for _ in range(100):
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(path)
            break
        except OSError:
            time.sleep(0.1)
    else:
        sys.exit(f"FAIL: cannot connect to the QEMU monitor at {path}")
    for c in cmds:
        s.sendall(c.encode() + b"\n")
        time.sleep(0.3)
    s.close()

main()
