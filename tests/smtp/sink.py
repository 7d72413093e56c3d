"""A real SMTP server on loopback for the report tests (aiosmtpd).

Usage: sink.py OUT_DIR [--fail N]
Binds 127.0.0.1 on a free port and prints the port on the first line of stdout. Every message
received is parsed with Python's `email` package (an independent referee of what lettre wrote)
and written to OUT_DIR/NNNN.json: envelope, headers, the text and HTML bodies and each
attachment (filename, content type, decoded text). With --fail N the first N messages are
refused with a transient 451. Exits when stdin closes, so it dies with the test.
"""

import asyncio
import email
import email.policy
import json
import os
import socket
import sys

from aiosmtpd.smtp import SMTP


class Handler:
    def __init__(self, out_dir, fail):
        self.out_dir = out_dir
        self.fail = fail
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        if self.fail > 0:
            self.fail -= 1
            return "451 4.3.0 try again later (scripted)"
        msg = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "subject": str(msg["subject"]),
            "from": str(msg["from"]),
            "to": [str(a) for a in msg.get_all("to", [])],
            "content_type": msg.get_content_type(),
            "text": None,
            "html": None,
            "attachments": [],
        }
        for part in msg.walk():
            if part.is_multipart():
                continue
            if part.get_content_disposition() == "attachment":
                record["attachments"].append(
                    {
                        "filename": part.get_filename(),
                        "content_type": part.get_content_type(),
                        "content": part.get_content() if part.get_content_maintype() == "text" else None,
                    }
                )
            elif part.get_content_type() == "text/plain":
                record["text"] = part.get_content()
            elif part.get_content_type() == "text/html":
                record["html"] = part.get_content()
        path = os.path.join(self.out_dir, "%04d.json" % self.count)
        self.count += 1
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(record, f)
        os.rename(path + ".tmp", path)
        return "250 OK"


async def main():
    out_dir = sys.argv[1]
    fail = int(sys.argv[sys.argv.index("--fail") + 1]) if "--fail" in sys.argv else 0
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    handler = Handler(out_dir, fail)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(handler, hostname="sink.test"), sock=sock)
    print(sock.getsockname()[1], flush=True)
    # Stop when the parent closes stdin (or dies).
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()


if __name__ == "__main__":
    asyncio.run(main())
