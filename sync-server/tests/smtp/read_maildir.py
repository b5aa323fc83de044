"""Prints the messages of a Maildir (as aiosmtpd's Mailbox handler stored them) as one JSON
array, in delivery order: each with its envelope headers and its text and HTML parts, decoded."""
import json
import mailbox
import sys
from email import policy
from email.parser import BytesParser


def lines(part):
    """A text part's content with the wire's CRLF line ends as plain newlines."""
    return part.get_content().replace("\r\n", "\n") if part else None


def main(path):
    box = mailbox.Maildir(path, create=False)
    out = []
    # Maildir names start with the delivery time.
    for key in sorted(box.keys()):
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
