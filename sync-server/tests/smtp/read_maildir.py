"""Prints the messages of a Maildir (as aiosmtpd's Mailbox handler stored them) as one JSON
array, in delivery order: each with its envelope headers and its text and HTML parts, decoded."""
import json
import mailbox
import re
import sys
from email import policy
from email.parser import BytesParser


def lines(part):
    """A text part's content with the wire's CRLF line ends as plain newlines."""
    return part.get_content().replace("\r\n", "\n") if part else None


def delivered(key):
    """When a message was delivered, from its Maildir name: `<seconds>.M<microseconds>P<pid>Q<n>…`
    (compared as numbers: the fields are not zero-padded)."""
    seconds, rest = key.split(".", 1)
    found = re.match(r"M(\d+)P\d+Q(\d+)", rest)
    return (int(seconds), int(found.group(1)), int(found.group(2))) if found else (int(seconds), 0, 0)


def main(path):
    box = mailbox.Maildir(path, create=False)
    out = []
    for key in sorted(box.keys(), key=delivered):
        raw = box.get_bytes(key)
        message = BytesParser(policy=policy.default).parsebytes(raw)
        text = message.get_body(preferencelist=("plain",))
        html = message.get_body(preferencelist=("html",))
        out.append({
            "from": str(message["From"]),
            "to": str(message["To"]),
            "subject": str(message["Subject"]),
            "date": str(message["Date"]),
            "text": lines(text),
            "html": lines(html),
        })
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
