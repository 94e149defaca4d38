"""
Alias expansion: one recipient -> its final targets, the way Postfix's
cleanup (C{virtual_alias_maps}) and local(8) (C{alias_maps}) do it.

Pure logic over the current tables (given as callables so that a reload
swaps them between two expansions, never during one).  C{:include:} files
are read through C{read_include}, which may block: run L{AliasExpander.expand}
in a thread when include files are in use.

C{postmaster} and C{MAILER-DAEMON} are not special here: when the aliases
do not define them the address comes back unchanged (C{expanded} False),
and the recipients stage accepts C{postmaster} in every local domain
(RFC 5321 section 4.5.1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from twisted.logger import Logger

from mailserver.address import Address, parse_mailbox
from mailserver.envelope import CommandTarget, FileTarget
from mailserver.errors import MailError
from mailserver.tables.aliases import AliasEntry, AliasTable, AliasTarget, TargetKind, parse_include

log = Logger(namespace="mailserver.delivery.aliases")

Target = Address | FileTarget | CommandTarget


@dataclass(frozen=True)
class Expansion:
    """
    The result of expanding one recipient.

    @ivar targets: final destinations, each once: an L{Address} (local or
        remote: the router decides), a L{FileTarget} or a L{CommandTarget}.
    @ivar owner: C{owner-NAME} when the alias NAME has an C{owner-NAME}
        alias: the envelope sender (bounce address) for the list's copies.
    @ivar expanded: whether any table matched (False: C{targets} is the
        address itself).
    """

    targets: tuple[Target, ...]
    owner: Address | None = None
    expanded: bool = False


@dataclass(frozen=True)
class _Match:
    """An entry that an address matched, and how."""

    kind: str  # "aliases" or "virtual"
    key: str
    entry: AliasEntry
    domain: str  # domain given to bare names among the targets
    extension: str = ""  # "+ext" to propagate to address targets (virtual, Postfix default)

    @property
    def ident(self) -> tuple[str, str, str]:
        return (self.kind, self.key, self.extension)


# Postfix's class names for allow_mail_to_files / allow_mail_to_commands.
ALIAS, INCLUDE, VIRTUAL = "alias", "include", "virtual"


class AliasExpander:
    """
    Expand recipients through C{virtual_alias_maps} then C{alias_maps}.

    @param aliases: the current C{alias_maps} table (for local domains).
    @param virtual: the current C{virtual_alias_maps} table, or None.
    @param local_domains: whether a domain is delivered here (mydestination,
        virtual_mailbox_domains): only those go through C{alias_maps}.
    @param read_include: the text of an C{:include:} file; OSError if unreadable.
    @param allow_files: C{/file} targets allowed in C{alias_maps}
        (C{"alias" in allow_mail_to_files}).
    @param allow_commands: C{|command} targets allowed in C{alias_maps}
        (C{"alias" in allow_mail_to_commands}).
    @param include_files: C{/file} allowed in C{:include:} files
        (C{"include" in allow_mail_to_files}; Postfix's default: no).
    @param include_commands: likewise for commands.
    @param myorigin: domain given to bare names in virtual results (Postfix
        appends C{$myorigin}); bare names in aliases keep the domain of the
        address being expanded.
    @param max_depth: nesting limit (C{550 5.4.6} beyond it).
    @param max_targets: most targets one recipient expands to
        (C{virtual_alias_expansion_limit}).
    """

    def __init__(
        self,
        aliases: Callable[[], AliasTable],
        virtual: Callable[[], AliasTable | None],
        local_domains: Callable[[str], bool],
        read_include: Callable[[str], str],
        allow_files: bool,
        allow_commands: bool,
        max_depth: int = 20,
        *,
        include_files: bool = False,
        include_commands: bool = False,
        myorigin: str = "",
        max_targets: int = 1000,
    ) -> None:
        self.aliases = aliases
        self.virtual = virtual
        self.local_domains = local_domains
        self.read_include = read_include
        self.allowed = {
            TargetKind.FILE: _classes(allow_files, include_files),
            TargetKind.COMMAND: _classes(allow_commands, include_commands),
        }
        self.max_depth = max_depth
        self.myorigin = myorigin.lower()
        self.max_targets = max_targets

    def expand(self, address: Address, delimiters: str = "") -> Expansion:
        """
        Expand C{address}; C{delimiters} is C{recipient_delimiter}: the full
        local part is looked up first, then the part before the delimiter.

        @raise MailError: 550 5.4.6 for a loop or too deep nesting; 550 5.7.1
            for a file or command target that is not allowed; 451 4.3.0 for
            an unreadable or broken include file or too many targets.
        """
        return _Run(self, self.aliases(), self.virtual(), delimiters).expand(address)


@dataclass
class _Run:
    """The state of one expansion: a consistent snapshot of the tables."""

    expander: AliasExpander
    aliases: AliasTable
    virtual: AliasTable | None
    delimiters: str
    targets: dict[object, Target] = field(default_factory=dict)
    done: set[tuple[str, str, str]] = field(default_factory=set)

    def expand(self, address: Address) -> Expansion:
        match = self.lookup(address)
        if match is None:
            return Expansion((address,))
        self.expand_match(match, [])
        owner = None
        if match.kind == "aliases" and not match.key.startswith("owner-"):
            owner_entry = self.aliases.get("owner-" + match.key)
            if owner_entry is not None:
                owner = Address(owner_entry.name, address.domain)
        return Expansion(tuple(self.targets.values()), owner, True)

    # -- lookups --------------------------------------------------------------------

    def lookup(self, address: Address) -> _Match | None:
        """The entry C{address} matches: virtual first, then aliases for local domains."""
        base = address.base(self.delimiters) if self.delimiters else address
        extension = address.local[len(base.local) :] if base is not address else ""
        local = not address.domain or self.expander.local_domains(address.domain)
        if self.virtual is not None:
            candidates = [(address.key, ""), (base.key, extension)]
            if local and address.domain:
                candidates += [(address.local.lower(), ""), (base.local.lower(), extension)]
            if address.domain:
                candidates.append(("@" + address.domain, ""))
            for key, ext in candidates:
                entry = self.virtual.get(key)
                if entry is not None:
                    domain = self.expander.myorigin or address.domain
                    return _Match("virtual", entry.name, entry, domain, ext)
        if local:
            for candidate in (address, base):
                entry = self.aliases.get(candidate.local)
                if entry is not None:
                    return _Match("aliases", entry.name, entry, address.domain)
        return None

    # -- expansion ------------------------------------------------------------------

    def expand_match(self, match: _Match, path: list[_Match]) -> None:
        path = path + [match]
        if len(path) > self.expander.max_depth:
            raise MailError(
                550, "5.4.6", f"Alias expansion loop: nesting deeper than {self.expander.max_depth} ({_names(path)})"
            )
        self.done.add(match.ident)
        origin = VIRTUAL if match.kind == "virtual" else ALIAS
        for target in match.entry.targets:
            self.target(target, match, path, origin, ())

    def target(
        self, target: AliasTarget, match: _Match, path: list[_Match], origin: str, includes: tuple[str, ...]
    ) -> None:
        kind = target.kind
        if kind in (TargetKind.LOCAL, TargetKind.ADDRESS):
            self.address(_address(target, match), match, path)
        elif kind is TargetKind.INCLUDE:
            self.include(target.value, match, path, origin, includes)
        else:
            self.special(target, match, origin)

    def address(self, address: Address, match: _Match, path: list[_Match]) -> None:
        found = self.lookup(address)
        if found is None or (found.kind, found.key) == (match.kind, match.key):
            # Not an alias, or one that names itself (root: root, other):
            # deliver to the address rather than loop, as Postfix does.
            self.emit(address.key, address)
            return
        if any((found.kind, found.key) == (m.kind, m.key) for m in path):
            raise MailError(550, "5.4.6", f"Alias expansion loop: {_names(path + [found])}")
        if found.ident not in self.done:
            self.expand_match(found, path)

    def include(self, file: str, match: _Match, path: list[_Match], origin: str, includes: tuple[str, ...]) -> None:
        if origin == VIRTUAL:
            log.warn("{key}: :include:{file} is not allowed in virtual_alias_maps", key=match.key, file=file)
            raise MailError(550, "5.7.1", f"Alias {match.key}: :include: not allowed in virtual_alias_maps")
        if file in includes:
            raise MailError(550, "5.4.6", f"Alias expansion loop: {_names(path)} (:include: file includes itself)")
        if len(path) + len(includes) >= self.expander.max_depth:
            raise MailError(
                550, "5.4.6", f"Alias expansion loop: nesting deeper than {self.expander.max_depth} ({_names(path)})"
            )
        try:
            text = self.expander.read_include(file)
        except OSError as error:
            log.error("{key}: cannot read :include:{file}: {error}", key=match.key, file=file, error=str(error))
            raise MailError(451, "4.3.0", f"Alias {match.key}: include file unavailable") from None
        targets, problems = parse_include(text, file)
        for problem in problems:
            log.error("{key}: {problem}", key=match.key, problem=str(problem))
        if any(p.severity == "error" for p in problems):
            raise MailError(451, "4.3.0", f"Alias {match.key}: include file has errors")
        for target in targets:
            self.target(target, match, path, INCLUDE, includes + (file,))

    def special(self, target: AliasTarget, match: _Match, origin: str) -> None:
        """A C{/file} or C{|command} target, if C{origin} allows it."""
        what, parameter = (
            ("files", "allow_mail_to_files") if target.kind is TargetKind.FILE else ("commands", "allow_mail_to_commands")
        )
        if origin not in self.expander.allowed[target.kind]:
            if origin == VIRTUAL:
                parameter = "never from virtual_alias_maps"
            log.warn(
                "{key}: mail to {what} from {origin} is not allowed ({parameter}): {target}",
                key=match.key, what=what, origin=origin, parameter=parameter, target=str(target),
            )  # fmt: skip
            raise MailError(550, "5.7.1", f"Alias {match.key}: delivery to {what} not allowed ({parameter})")
        # Postfix runs these as the alias table's owner; include files'
        # owners are unknown here, so their targets run as default_privs.
        owner = match.entry.owner_uid if origin == ALIAS else None
        if target.kind is TargetKind.FILE:
            self.emit(("file", target.value), FileTarget(target.value, owner))
        else:
            self.emit(("command", target.value), CommandTarget(target.value, owner))

    def emit(self, key: object, target: Target) -> None:
        if key in self.targets:
            return
        if len(self.targets) >= self.expander.max_targets:
            raise MailError(451, "4.3.0", f"Alias expansion exceeds {self.expander.max_targets} addresses")
        self.targets[key] = target


def _classes(alias: bool, include: bool) -> frozenset[str]:
    return frozenset(name for name, on in ((ALIAS, alias), (INCLUDE, include)) if on)


def _address(target: AliasTarget, match: _Match) -> Address:
    """The address a name or address target stands for."""
    if target.kind is TargetKind.LOCAL:
        address = Address(target.value, match.domain)
    else:
        address = parse_mailbox(target.value)
    if match.extension:
        # propagate_unmatched_extensions = canonical, virtual (Postfix's default)
        address = Address(address.local + match.extension, address.domain)
    return address


def _names(path: list[_Match]) -> str:
    return " -> ".join(m.key for m in path)
