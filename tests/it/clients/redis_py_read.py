"""Reads every expected key through one hello-streams instance with redis-py, as a plain
(non-cluster) client would, and reports how many answers were right.

usage: redis_py_read.py PORT PROTOCOL EXPECTED_JSON [USERNAME PASSWORD]
EXPECTED_JSON maps key -> [helloCount, helloTotalCount, mood]. Exit 0 only if all are right.
With REDIS_TLS_CA set (a PEM file), connects with TLS and verifies the server against it.
"""
import json
import os
import sys

import redis


def main():
    port, protocol, expected_path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    username = sys.argv[4] if len(sys.argv) > 4 else None
    password = sys.argv[5] if len(sys.argv) > 5 else None
    expected = json.load(open(expected_path))
    kwargs = {"host": "127.0.0.1", "port": port, "decode_responses": True}
    # protocol 0 means: redis-py's own default (RESP3 in redis-py 8).
    if protocol:
        kwargs["protocol"] = protocol
    if password:
        kwargs["username"], kwargs["password"] = username, password
    tls_ca = os.environ.get("REDIS_TLS_CA")
    if tls_ca:
        kwargs["ssl"], kwargs["ssl_ca_certs"] = True, tls_ca
    client = redis.Redis(**kwargs)
    conn = client.connection_pool.get_connection()
    spoken = conn.protocol
    client.connection_pool.release(conn)
    right, wrong = 0, []
    keys = sorted(expected)
    for key in keys:
        count = client.get(key)
        if count == str(expected[key][0]):
            right += 1
        elif len(wrong) < 5:
            wrong.append({"key": key, "got": count, "want": expected[key][0]})
    # MGET across owners: one command, keys of both instances.
    mget_right = 0
    for i in range(0, len(keys), 100):
        chunk = keys[i:i + 100]
        for key, count in zip(chunk, client.mget(chunk)):
            mget_right += count == str(expected[key][0])
    hash_right = 0
    for key in keys[:200]:
        state = client.hgetall(key)
        want = expected[key]
        hash_right += (
            state.get("helloCount") == str(want[0])
            and state.get("helloTotalCount") == str(want[1])
            and state.get("mood") == want[2]
        )
    missing = client.get("never-seen-key-xyz")
    exists = client.exists(*keys[:50])
    report = {
        "redis_py": redis.__version__,
        "protocol": spoken,
        "tls": bool(tls_ca),
        "keys": len(keys),
        "get_right": right,
        "mget_right": mget_right,
        "hgetall_right": hash_right,
        "hgetall_checked": min(200, len(keys)),
        "missing_is_none": missing is None,
        "exists": exists,
        "wrong": wrong,
    }
    print(json.dumps(report))
    ok = (
        right == len(keys)
        and mget_right == len(keys)
        and hash_right == min(200, len(keys))
        and missing is None
        and exists == min(50, len(keys))
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
