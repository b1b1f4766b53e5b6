"""Logs in with a SASL mechanism through Python's imaplib, selects INBOX and logs out.

Usage: sasl_login.py MECHANISM PORT

MECHANISM: CRAM-MD5 (imaplib's own login_cram_md5), SCRAM-SHA-1 or SCRAM-SHA-256 (RFC 5802,
with hashlib and hmac from the standard library, through imaplib.authenticate; the server's
proof is checked, as a real client does). The user is nell / ASecretPassword on 127.0.0.1.
"""

import base64
import hashlib
import hmac
import imaplib
import os
import sys

USER = "nell"
PASSWORD = "ASecretPassword"


def scram(hash_name):
    """An imaplib authobject answering each challenge of a SCRAM exchange."""
    nonce = base64.b64encode(os.urandom(18)).decode()
    bare = "n=%s,r=%s" % (USER, nonce)
    state = {"step": 0}

    def answer(challenge):
        step = state["step"]
        state["step"] += 1
        if step == 0:
            return ("n,," + bare).encode()
        if step == 1:
            server_first = challenge.decode()
            fields = dict(kv.split("=", 1) for kv in server_first.split(","))
            salted = hashlib.pbkdf2_hmac(
                hash_name, PASSWORD.encode(), base64.b64decode(fields["s"]), int(fields["i"])
            )
            client_key = hmac.new(salted, b"Client Key", hash_name).digest()
            stored_key = hashlib.new(hash_name, client_key).digest()
            without_proof = "c=biws,r=" + fields["r"]
            message = ",".join([bare, server_first, without_proof]).encode()
            signature = hmac.new(stored_key, message, hash_name).digest()
            proof = bytes(a ^ b for a, b in zip(client_key, signature))
            state["server_key"] = hmac.new(salted, b"Server Key", hash_name).digest()
            state["message"] = message
            return (without_proof + ",p=" + base64.b64encode(proof).decode()).encode()
        # The server-final-message: the server proves it knows the password, as a real
        # client checks (RFC 5802 5.1: the client MUST verify it).
        expected = hmac.new(state["server_key"], state["message"], hash_name).digest()
        if challenge.decode() != "v=" + base64.b64encode(expected).decode():
            raise SystemExit("the server's SCRAM proof is wrong: %r" % challenge)
        return b""

    return answer


def main():
    mechanism, port = sys.argv[1].upper(), int(sys.argv[2])
    imap = imaplib.IMAP4("127.0.0.1", port)
    if mechanism == "CRAM-MD5":
        imap.login_cram_md5(USER, PASSWORD)
    elif mechanism in ("SCRAM-SHA-1", "SCRAM-SHA-256"):
        imap.authenticate(mechanism, scram(mechanism[6:].replace("-", "").lower()))
    else:
        sys.exit("unknown mechanism " + mechanism)
    typ, data = imap.select("INBOX")
    assert typ == "OK", data
    imap.logout()
    print("%s: logged in, INBOX has %s messages" % (mechanism, data[0].decode()))


if __name__ == "__main__":
    main()
