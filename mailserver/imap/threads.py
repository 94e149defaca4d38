"""
Pure: THREAD=ORDEREDSUBJECT and THREAD=REFERENCES (RFC 5256).

Both take L{sorting.Message}s (sent date, base subject, Message-ID and
references cached in the folder index) and return a forest of
L{Node}s; L{render} turns it into the THREAD response's text.  Nothing
here recurses, so a reference chain as long as the folder cannot
exhaust the stack.
"""

from __future__ import annotations

from typing import Sequence

from mailserver.imap.sorting import Message, fields_of, sent_of

ALGORITHMS = ("ORDEREDSUBJECT", "REFERENCES")


class Node:
    """A thread container: a message, or a dummy (C{message} None) holding children."""

    __slots__ = ("message", "parent", "children")

    def __init__(self, message: Message | None = None) -> None:
        self.message = message
        self.parent: Node | None = None
        self.children: list[Node] = []

    def add(self, child: "Node") -> None:
        if child.parent is not None:
            child.parent.children.remove(child)
        child.parent = self
        self.children.append(child)

    def is_ancestor_of(self, other: "Node") -> bool:
        if not self.children:
            return other is self  # a leaf: the common case, no walk up a long chain
        node = other
        while node is not None:  # bounded: parent links never form a loop
            if node is self:
                return True
            node = node.parent
        return False

    def first_message(self) -> Message | None:
        """This message, or for a dummy its first child's (after sorting)."""
        node: Node | None = self
        while node is not None and node.message is None:
            node = node.children[0] if node.children else None
        return node.message if node is not None else None


def _date_key(node: Node) -> tuple[float, int]:
    message = node.first_message()
    return (sent_of(message), message.seq) if message is not None else (0.0, 0)


def _preorder(roots: list[Node]) -> list[Node]:
    """Every node under C{roots}, each before its children (no recursion)."""
    order: list[Node] = []
    stack = list(roots)
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(node.children)
    return order


def _sort_all(roots: list[Node]) -> None:
    """Sort every sibling set by sent date, deepest first (a dummy sorts as its first child)."""
    for node in reversed(_preorder(roots)):
        node.children.sort(key=_date_key)
    roots.sort(key=_date_key)


def ordered_subject(messages: Sequence[Message]) -> list[Node]:
    """Threads of messages sharing a base subject: the first is the parent of all others."""
    ordered = sorted(messages, key=lambda m: (fields_of(m).get("subject") or "", sent_of(m), m.seq))
    roots: list[Node] = []
    current: Node | None = None
    subject = None
    for message in ordered:
        base = fields_of(message).get("subject") or ""
        node = Node(message)
        if current is not None and base == subject:
            current.add(node)
        else:
            current, subject = node, base
            roots.append(node)
    roots.sort(key=_date_key)
    return roots


def references(messages: Sequence[Message]) -> list[Node]:
    """The REFERENCES algorithm (RFC 5256 section 3, after JWZ)."""
    table: dict[str, Node] = {}
    containers: list[Node] = []
    for message in sorted(messages, key=lambda m: m.seq):
        # (1A) the message's container; no or a duplicate Message-ID: its own
        fields = fields_of(message)
        msgid = fields.get("id")
        node = table.get(msgid) if msgid else None
        if node is None or node.message is not None:
            node = Node(message)
            if msgid and msgid not in table:
                table[msgid] = node
        else:
            node.message = message
        containers.append(node)
        # (1B) link the references in order, never making a loop
        refs = list(fields.get("refs") or ())
        previous: Node | None = None
        for ref in refs:
            ref_node = table.get(ref)
            if ref_node is None:
                ref_node = table[ref] = Node()
                containers.append(ref_node)
            if (
                previous is not None
                and ref_node.parent is None
                and ref_node is not previous
                and not ref_node.is_ancestor_of(previous)
            ):
                previous.add(ref_node)
            previous = ref_node
        # (1C) the last reference is the parent: an earlier message's guess
        # is dropped even when this one cannot be linked without a loop
        if node.parent is not None:
            node.parent.children.remove(node)
            node.parent = None
        if previous is not None and previous is not node and not node.is_ancestor_of(previous):
            previous.add(node)
    # (2) the root set
    roots = [n for n in containers if n.parent is None]
    roots = list(dict.fromkeys(roots))
    # (3) prune dummies, deepest first
    roots = _prune(roots)
    # (4) sort, then (5) merge roots by base subject
    _sort_all(roots)
    roots = _group_by_subject(roots)
    # (6) sort every level again
    _sort_all(roots)
    return roots


def _prune(roots: list[Node]) -> list[Node]:
    top: list[Node] = list(roots)
    for node in reversed(_preorder(roots)):  # children before their parents
        if node.message is not None:
            continue
        parent = node.parent
        if not node.children:
            if parent is not None:
                parent.children.remove(node)
                node.parent = None
            else:
                top.remove(node)
            continue
        if parent is not None:
            position = parent.children.index(node)
            kids = list(node.children)
            for kid in kids:
                kid.parent = parent
            parent.children[position:position + 1] = kids
            node.children = []
            node.parent = None
        elif len(node.children) == 1:
            kid = node.children[0]
            kid.parent = None
            node.children = []
            top[top.index(node)] = kid
    return top


def _subject_of(node: Node) -> tuple[str, bool, bool]:
    message = node.first_message()
    if message is None:
        return "", False, node.message is None
    fields = fields_of(message)
    return fields.get("subject") or "", bool(fields.get("reply")), node.message is None


def _group_by_subject(roots: list[Node]) -> list[Node]:
    subjects: dict[str, Node] = {}
    for node in roots:
        subject, reply, dummy = _subject_of(node)
        if not subject:
            continue
        old = subjects.get(subject)
        if old is None:
            subjects[subject] = node
            continue
        _, old_reply, old_dummy = _subject_of(old)
        if (dummy and not old_dummy) or (old_reply and not reply and not old_dummy):
            subjects[subject] = node
    out: list[Node | None] = list(roots)
    position = {id(n): i for i, n in enumerate(roots)}
    for node in roots:
        subject, reply, dummy = _subject_of(node)
        holder = subjects.get(subject) if subject else None
        if holder is None or holder is node:
            continue
        _, holder_reply, holder_dummy = _subject_of(holder)
        if holder_dummy and dummy:
            for kid in list(node.children):
                holder.add(kid)
        elif holder_dummy or (not holder_reply and reply):
            holder.add(node)
        elif dummy:
            node.add(holder)
            out[position[id(holder)]] = None
            subjects[subject] = node
            continue
        else:
            merged = Node()
            where = position[id(holder)]
            merged.add(holder)
            merged.add(node)
            out[where] = merged
            position[id(merged)] = where
            subjects[subject] = merged
        out[position[id(node)]] = None
    return [n for n in out if n is not None]


def render(roots: Sequence[Node], uid: bool) -> bytes:
    """The THREAD response's data: ``(3 6 (4 23)(44 7 96))...``, UIDs or sequence numbers."""
    out: list[str] = []
    stack: list[Node | str] = list(reversed(roots))
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
            continue
        node = item
        out.append("(")
        first = True
        while True:
            if node.message is not None:
                number = node.message.uid if uid else node.message.seq
                out.append(str(number) if first else f" {number}")
                first = False
            if len(node.children) == 1:
                node = node.children[0]
                continue
            break
        stack.append(")")
        if node.children:
            if not first:
                out.append(" ")
            stack.extend(reversed(node.children))
    return "".join(out).encode("ascii")
