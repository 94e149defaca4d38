"""Pure: Postfix's one-line record of a refused SMTP command."""

from __future__ import annotations

from mailserver.errors import MailError


def reject_line(
    error: MailError, *, client: str, address: str, sender: str = "", recipient: str = "",
    helo: str = "", stage: str = "RCPT", queue_id: str = "NOQUEUE", proto: str = "ESMTP",
) -> str:  # fmt: skip
    """C{NOQUEUE: reject: RCPT from host[addr]: 450 4.2.0 text; from=<s> to=<r> proto=ESMTP helo=<h>}."""
    fields = [f"from=<{sender}>"]
    if recipient:
        fields.append(f"to=<{recipient}>")
    fields.append(f"proto={proto}")
    if helo:
        fields.append(f"helo=<{helo}>")
    return (
        f"{queue_id}: reject: {stage} from {client or 'unknown'}[{address}]:"
        f" {error.code} {error.enhanced} {error.text}; {' '.join(fields)}"
    )
