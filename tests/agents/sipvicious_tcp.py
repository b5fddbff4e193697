"""SIPVicious's own probes over TCP, for tests/sipvicious.rs.

SIPVicious OSS scans over UDP only: svmap and svwar refuse tcp:// targets ("not supported in
SIPVicious OSS"). This sends the requests they build (svhelper.makeRequest: svmap's OPTIONS,
svwar's REGISTER and INVITE for a range of extensions, its friendly-scanner User-Agent) over
TCP, one connection each, from --bind to --target, reads until the connection ends, and prints
one JSON line: connections made, bytes received, and how they ended (reset, eof, timeout).
"""

import argparse
import json
import random
import socket

from sipvicious.libs.svhelper import makeRequest


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bind", required=True)
    parser.add_argument("--target", required=True, help="host:port")
    parser.add_argument("--extensions", default="100-120")
    args = parser.parse_args()
    host, port = args.target.rsplit(":", 1)
    port = int(port)
    low, high = (int(x) for x in args.extensions.split("-"))
    probes = [("OPTIONS", None)] + [
        (method, str(ext)) for ext in range(low, high + 1) for method in ("REGISTER", "INVITE")
    ]
    result = {"probes": len(probes), "connections": 0, "bytes": 0, "reset": 0, "eof": 0,
              "timeout": 0, "connect_failed": 0}
    for method, ext in probes:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((args.bind, 0))
        sock.settimeout(5)
        try:
            sock.connect((host, port))
        except ConnectionResetError:
            # Accepted and reset before connect() returned (loopback is that fast).
            result["connections"] += 1
            result["reset"] += 1
            sock.close()
            continue
        except OSError:
            result["connect_failed"] += 1
            sock.close()
            continue
        result["connections"] += 1
        local_port = sock.getsockname()[1]
        address = '"sipvicious"<sip:%s@%s>' % (ext or "100", host)
        request = makeRequest(method, address, address, host, port,
                              str(random.getrandbits(80)), args.bind,
                              str(random.getrandbits(32)), localport=local_port,
                              extension=ext)
        request = request.replace("SIP/2.0/UDP", "SIP/2.0/TCP")
        try:
            sock.sendall(request.encode())
        except OSError:
            pass
        while True:
            try:
                data = sock.recv(4096)
            except ConnectionResetError:
                result["reset"] += 1
                break
            except socket.timeout:
                result["timeout"] += 1
                break
            except OSError:
                result["reset"] += 1
                break
            if not data:
                result["eof"] += 1
                break
            result["bytes"] += len(data)
        sock.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
